"""Is the generated Keras input pipeline fast enough? A benchmark, not a test.

    .venv/bin/python bench/keras_pipeline.py [--batches 120] [--images 3072] [--epochs 5]

It compiles specs/cifar10.cnn the way a user does (`compile_file`, then the Keras backend's
`emit`), writes the script to a temporary folder and imports it. The data is synthetic and
CIFAR-shaped: random uint8 (N, 32, 32, 3) images and int labels 0-9; batch size 64. Measured
side by side on the same machine in one run:

(1) training-input throughput, images per second, with the spec's augmentation (rotation 15
    degrees, shift 0.1/0.1, horizontal flip, zoom 0.1, fill nearest):
    (a) the generated `tf.data` pipeline, `make_datasets(splits)["train"]`, each batch
        materialised as a tensor;
    (b) the reference tutorial's `tf.keras.preprocessing.image.ImageDataGenerator(...).flow`
        on rescaled float32 images and one-hot labels, with the same augmentation.
    Each round times `--batches` batches after a few untimed warm-up batches (a fresh tf.data
    iterator per round; one ImageDataGenerator iterator throughout). Rounds alternate a and b;
    the ratio is of the medians. The goal: tf.data at least 2x ImageDataGenerator.
(2) seconds per epoch of `model.fit` on the generated CIFAR-10 model (`build_model()`, Adam
    lr 1e-3, categorical cross-entropy, accuracy, as the script compiles it), fed by
    (a) the live-augmented generated pipeline on `--images` images;
    (b) the same number of already prepared float32 images and one-hot labels,
        `from_tensor_slices(...).batch(64).prefetch(AUTOTUNE)`, no augmentation.
    Same steps per epoch, one model per side, one untimed warm-up epoch each, then `--epochs`
    timed epochs each, one `fit` call per epoch in the order a b b a a b ... so that drift in
    the machine's load does not favour one side. An epoch is timed from Keras's
    on_epoch_begin to on_epoch_end (iterator creation and shuffling included, `fit`'s own
    set-up not). The ratio is of the medians. The goal: live at most 1.1x pre-materialised.

Wall times on a shared machine are noisy: read the medians, and the range beside them; the
ratio of the best epochs is printed too, as the least disturbed case. With the defaults it takes
about a minute and a half on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

# Quiet TensorFlow's start-up logging: it must be set before the import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnnspec.backends import keras as keras_backend  # noqa: E402
from cnnspec.compiler import compile_file  # noqa: E402

SPEC = ROOT / "specs" / "cifar10.cnn"
BATCH = 64
CLASSES = 10
WARMUP_BATCHES = 5
SEED = 0


def generated_script(folder: Path) -> ModuleType:
    """Compile and emit specs/cifar10.cnn, write the script into `folder` and import it."""
    compilation = compile_file(SPEC)
    if not compilation.ok or compilation.spec is None:
        sys.exit(f"{SPEC} does not compile: {list(compilation.diagnostics)}")
    path = folder / "cifar10_keras.py"
    path.write_text(keras_backend.emit(compilation.spec, "cifar10.cnn"))
    module_spec = importlib.util.spec_from_file_location("cifar10_keras", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    # Registered like any imported module: AutoGraph looks the module up to convert its code.
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module


def synthetic(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random CIFAR-shaped uint8 images and int labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, CLASSES, size=count, dtype=np.int64)


def prepared(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rescaled float32 images and one-hot labels, as the tutorial feeds its generator."""
    return images.astype("float32") / 255, np.eye(CLASSES, dtype="float32")[labels]


def time_batches(batches: Iterator[Any], count: int) -> float:
    """Seconds to draw `count` batches after WARMUP_BATCHES untimed ones."""
    for _ in range(WARMUP_BATCHES):
        next(batches)
    start = time.perf_counter()
    for _ in range(count):
        images, _labels = next(batches)
        assert images.shape[0] == BATCH
    return time.perf_counter() - start


def throughput(script: ModuleType, batches: int, rounds: int) -> dict[str, list[float]]:
    """Images per second, per round, of the generated tf.data pipeline and the tutorial's
    ImageDataGenerator."""
    images, labels = synthetic((WARMUP_BATCHES + batches) * BATCH, SEED)
    dataset = script.make_datasets({"train": (images, labels)}, BATCH)["train"]
    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=15,
        width_shift_range=0.1,
        height_shift_range=0.1,
        horizontal_flip=True,
        zoom_range=0.1,
        fill_mode="nearest",
    )
    flow = generator.flow(*prepared(images, labels), batch_size=BATCH, seed=SEED)
    # tf.data yields eager tensors: the batch is computed by the time the loop gets it.
    sides: dict[str, Callable[[], Iterator[Any]]] = {
        "tf.data": lambda: iter(dataset),
        "ImageDataGenerator": lambda: flow,
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(rounds):
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for name in order:
            rates[name].append(batches * BATCH / time_batches(sides[name](), batches))
    return rates


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.times.append(time.perf_counter() - self.start)


def compiled_model(script: ModuleType) -> keras.Model:
    """The spec's model, compiled as the generated `train()` compiles it."""
    keras.utils.set_random_seed(SEED)
    model = script.build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


def epoch_times(script: ModuleType, count: int, epochs: int) -> dict[str, list[float]]:
    """Seconds per timed epoch of model.fit, live-augmented against pre-materialised."""
    images, labels = synthetic(count, SEED + 1)
    datasets = {
        "live": script.make_datasets({"train": (images, labels)}, BATCH)["train"],
        "pre": tf.data.Dataset.from_tensor_slices(prepared(images, labels))
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE),
    }
    models = {name: compiled_model(script) for name in datasets}
    timers = {name: EpochTimer() for name in datasets}
    for name, dataset in datasets.items():  # warm-up: tracing, first iterator
        models[name].fit(dataset, epochs=1, shuffle=False, verbose=0)
    order = ["live", "pre", "pre", "live"] * epochs
    for name in order[: 2 * epochs]:
        models[name].fit(
            datasets[name], epochs=1, shuffle=False, verbose=0, callbacks=[timers[name]]
        )
    return {name: timer.times for name, timer in timers.items()}


def spread(values: list[float], digits: int) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batches", type=int, default=120, help="timed batches per throughput round"
    )
    parser.add_argument("--rounds", type=int, default=4, help="throughput rounds per side")
    parser.add_argument(
        "--images", type=int, default=3072, help="training images per epoch (a multiple of 64)"
    )
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per side")
    args = parser.parse_args(argv)
    if args.images % BATCH or args.images <= 0:
        parser.error(f"--images must be a positive multiple of {BATCH}")
    if min(args.batches, args.rounds, args.epochs) <= 0:
        parser.error("--batches, --rounds and --epochs must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    system = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    print(
        f"python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__} on {system}; wall times, shared machine: noisy"
    )
    # The folder stays while the script runs: AutoGraph reads its source to convert it.
    with tempfile.TemporaryDirectory() as tmp:
        script = generated_script(Path(tmp))
        print(f"script: emit(compile_file({SPEC.relative_to(ROOT)})), batch size {BATCH}")
        run(script, args)


def run(script: ModuleType, args: argparse.Namespace) -> None:

    rates = throughput(script, args.batches, args.rounds)
    print(
        f"\n(1) training input, images/s: {args.batches} batches per round after "
        f"{WARMUP_BATCHES} warm-up, {args.rounds} rounds per side, alternating"
    )
    print("    pipeline                         median        range")
    labels = {
        "tf.data": "(a) generated tf.data",
        "ImageDataGenerator": "(b) ImageDataGenerator.flow",
    }
    for name, label in labels.items():
        median = statistics.median(rates[name])
        print(f"    {label:30} {median:8.0f}  {spread(rates[name], 0):>11}")
    input_ratio = statistics.median(rates["tf.data"]) / statistics.median(
        rates["ImageDataGenerator"]
    )
    verdict = "met" if input_ratio >= 2 else "NOT met"
    print(f"    tf.data / ImageDataGenerator: {input_ratio:.2f}x (goal >= 2x: {verdict})")

    steps = args.images // BATCH
    times = epoch_times(script, args.images, args.epochs)
    print(
        f"\n(2) model.fit, seconds per epoch: {args.images} images, {steps} steps, "
        f"1 warm-up + {args.epochs} timed epochs per side, alternating"
    )
    print("    input                            median        range   per step (median)")
    labels = {"live": "(a) live-augmented tf.data", "pre": "(b) pre-materialised tensors"}
    for name, label in labels.items():
        median = statistics.median(times[name])
        print(
            f"    {label:30} {median:8.2f}  {spread(times[name], 2):>11}"
            f"   {median / steps * 1000:5.0f} ms"
        )
    epoch_ratio = statistics.median(times["live"]) / statistics.median(times["pre"])
    best_ratio = min(times["live"]) / min(times["pre"])
    verdict = "met" if epoch_ratio <= 1.1 else "NOT met"
    print(
        f"    live / pre-materialised: {epoch_ratio:.2f}x (goal <= 1.1x: {verdict}); "
        f"best epochs: {best_ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
