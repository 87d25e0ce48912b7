"""Is the generated PyTorch training loop as fast as a hand-written one? A benchmark, not a test.

    .venv/bin/python bench/torch_train.py [--images 2048] [--rounds 7] [--threads N] [--no-keras]

It compiles specs/cifar10.cnn the way a user does (`compile_file`, then the PyTorch backend's
`emit`), writes the script to a temporary folder and imports it. The data is synthetic and
CIFAR-shaped: `--images` random uint8 (N, 32, 32, 3) images and int labels 0-9; batch size 64;
on the CPU. Measured side by side on the same machine in one run, in training images per second
over one whole epoch (`--images` images, every batch full):

(a) the generated `run_epoch(net, net.logits, loader, device, optimizer)`, generator=None, so no
    augmentation: the script's own DataLoader (`make_loaders`, uint8 NCHW, shuffled), `prepare`
    per batch, `data_loss` + `l2_penalty`, and its bookkeeping (loss total, probabilities kept
    for the metrics, tqdm, which is off when stderr is not a terminal);
(b) a plain hand-written loop over the same `Net` (`build_model()`): the same images converted
    once to float NCHW tensors by the script's `prepare` (rescaled), a seeded `randperm` per
    epoch, then per batch `F.cross_entropy(net.logits(x), y) + l2_penalty(net)`,
    `optimizer.zero_grad(); loss.backward(); optimizer.step()`, and nothing else;
(c) (a) with augmentation: `generator=torch.Generator().manual_seed(0)`, so `prepare` runs the
    spec's `augment` (rotation 15 degrees, shift 0.1/0.1, horizontal flip, zoom 0.1, nearest);
(d) the generated Keras script's `model.fit` for one epoch on its `tf.data` pipeline without
    augmentation: `make_datasets` of the same images under a split name other than "train",
    which rescales and one-hot encodes but neither shuffles nor augments; compiled as its
    `train()` compiles it (Adam lr 1e-3, categorical cross-entropy, accuracy). Keras runs in a
    worker subprocess that this script starts and drives epoch by epoch, so TensorFlow's and
    PyTorch's thread pools and allocators never share a process; the worker sets TensorFlow's
    intra- and inter-op threads to the PyTorch process's `torch.get_num_threads()`.

Every PyTorch side has its own model, built after `torch.manual_seed(0)` (so the same initial
weights), and its own Adam as the script's `train()` builds it (lr 1e-3, betas (0.9, 0.999),
eps 1e-7). A PyTorch epoch is timed around the whole call (iterator creation included); a Keras
epoch from on_epoch_begin to on_epoch_end (`fit`'s own set-up not included). Each side trains one
untimed warm-up epoch, then `--rounds` timed epochs; the order of the sides rotates from round to
round so that drift in the machine's load does not favour one of them. Ratios are of the medians.
The goals: generated / hand-written at least 0.95; augmentation costs at most 10%, i.e. augmented
/ plain generated at least 0.90. PyTorch / Keras is for information.

Wall times on a shared machine are noisy: read the medians, and the range beside them; the
ratio of the best epochs is printed too, as the least disturbed case. With the defaults it takes
about two minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnnspec.compiler import compile_file  # noqa: E402

SPEC = ROOT / "specs" / "cifar10.cnn"
BATCH = 64
CLASSES = 10
SEED = 0
AUGMENT_REPEATS = 200
SIDES = {
    "generated": "(a) generated run_epoch",
    "hand": "(b) hand-written loop",
    "augmented": "(c) generated, augmented",
    "keras": "(d) Keras fit, tf.data",
}


def generated_script(folder: Path, backend: str) -> ModuleType:
    """Compile and emit specs/cifar10.cnn for `backend`, write the script into `folder` and
    import it."""
    compilation = compile_file(SPEC)
    if not compilation.ok or compilation.spec is None:
        sys.exit(f"{SPEC} does not compile: {list(compilation.diagnostics)}")
    emit = importlib.import_module(f"cnnspec.backends.{backend}").emit
    name = f"cifar10_{backend}"
    path = folder / f"{name}.py"
    path.write_text(emit(compilation.spec, "cifar10.cnn"))
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    # Registered like any imported module (AutoGraph, pickling and inspect look it up).
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module


def synthetic(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random CIFAR-shaped uint8 images and int labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, CLASSES, size=count, dtype=np.int64)


def adam(net: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer as the generated `train()` builds it."""
    parameters = [p for p in net.parameters() if p.requires_grad]
    return torch.optim.Adam(parameters, lr=0.001, betas=(0.9, 0.999), eps=1e-07)


def fresh_model(script: ModuleType) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return script.build_model()


def torch_sides(script: ModuleType, count: int) -> dict[str, Callable[[], float]]:
    """For each PyTorch side, a function that trains one epoch and returns its seconds."""
    images, labels = synthetic(count, SEED)
    loader = script.make_loaders({"train": (images, labels)}, BATCH, SEED)["train"]
    device = torch.device("cpu")

    def generated(augmented: bool) -> Callable[[], float]:
        net = fresh_model(script)
        optimizer = adam(net)
        generator = torch.Generator().manual_seed(0) if augmented else None

        def epoch() -> float:
            start = time.perf_counter()
            script.run_epoch(net, net.logits, loader, device, optimizer, generator=generator)
            return time.perf_counter() - start

        return epoch

    # (b): the images prepared once, as the script's prepare() does per batch.
    inputs = script.prepare(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), device)
    targets = torch.from_numpy(labels)
    hand_net = fresh_model(script)
    hand_optimizer = adam(hand_net)
    order = torch.Generator().manual_seed(SEED)

    def hand() -> float:
        start = time.perf_counter()
        hand_net.train()
        permutation = torch.randperm(count, generator=order)
        for first in range(0, count, BATCH):
            batch = permutation[first : first + BATCH]
            x, y = inputs[batch], targets[batch]
            loss = F.cross_entropy(hand_net.logits(x), y) + script.l2_penalty(hand_net)
            hand_optimizer.zero_grad()
            loss.backward()
            hand_optimizer.step()
        return time.perf_counter() - start

    return {"generated": generated(False), "hand": hand, "augmented": generated(True)}


class KerasWorker:
    """The Keras side in a subprocess (this file with --keras-worker): one line per request."""

    def __init__(self, count: int, threads: int, log: IO[str]) -> None:
        command = [sys.executable, __file__, "--keras-worker", f"--images={count}"]
        command.append(f"--threads={threads}")
        self.log = log
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        self.info = ""

    def reply(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.log.seek(0)
            tail = self.log.read()[-3000:]
            sys.exit(f"the Keras worker failed ({self.process.returncode}):\n{tail}")
        return line.strip()

    def ready(self) -> None:
        """Wait until the worker has built its model and trained its warm-up epoch."""
        self.info = self.reply()

    def epoch(self) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write("epoch\n")
        self.process.stdin.flush()
        return float(self.reply())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def keras_worker(count: int, threads: int) -> None:
    """The subprocess: build the generated Keras script's model and plain pipeline, train one
    warm-up epoch, print one line about itself, then train one epoch per "epoch" read from
    stdin and print its seconds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:  # AutoGraph reads the script's source
        script = generated_script(Path(tmp), "keras")
        images, labels = synthetic(count, SEED)
        dataset = script.make_datasets({"plain": (images, labels)}, BATCH)["plain"]
        keras.utils.set_random_seed(SEED)
        model = script.build_model()
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=0.001),
            loss=keras.losses.CategoricalCrossentropy(),
            metrics=["accuracy"],
        )
        times: list[float] = []

        class EpochTimer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                times.append(time.perf_counter() - self.start)

        def epoch() -> float:
            model.fit(dataset, epochs=1, shuffle=False, verbose=0, callbacks=[EpochTimer()])
            return times[-1]

        epoch()  # warm-up: tracing, the first iterator
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
        print(
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
            f"{intra} intra-op / {inter} inter-op threads",
            flush=True,
        )
        while sys.stdin.readline().strip() == "epoch":
            print(f"{epoch():.6f}", flush=True)


def augment_seconds(script: ModuleType) -> tuple[float, float]:
    """Median seconds of `prepare` on one batch, with augmentation and without."""
    images, _ = synthetic(BATCH, SEED)
    batch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(AUGMENT_REPEATS + 1):
        for augmented in (True, False):
            start = time.perf_counter()
            script.prepare(batch, device, generator if augmented else None)
            times[augmented].append(time.perf_counter() - start)
    # The first call of each is a warm-up.
    return statistics.median(times[True][1:]), statistics.median(times[False][1:])


def measure(
    sides: dict[str, Callable[[], float]], rounds: int, count: int
) -> dict[str, list[float]]:
    """Images per second, one epoch per side per round, the order rotating each round."""
    names = list(sides)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(count / sides[name]())
    return rates


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def verdict(ratio: float, goal: float) -> str:
    return f"goal >= {goal:.2f}: {'met' if ratio >= goal else 'NOT met'}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=2048, help="training images per epoch (a multiple of 64)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed epochs per side")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch.set_num_threads, and TensorFlow's intra/inter-op threads (default: "
        "PyTorch's own default)",
    )
    parser.add_argument("--no-keras", action="store_true", help="leave out (d), the Keras side")
    parser.add_argument("--keras-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.images % BATCH or args.images <= 0:
        parser.error(f"--images must be a positive multiple of {BATCH}")
    if args.rounds <= 0 or args.threads <= 0:
        parser.error("--rounds and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.keras_worker:
        keras_worker(args.images, args.threads)
        return
    torch.set_num_threads(args.threads)
    system = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    print(
        f"python {platform.python_version()}, PyTorch {torch.__version__} on {system}; "
        "wall times, shared machine: noisy"
    )
    print(
        f"torch.get_num_threads() = {torch.get_num_threads()}, "
        f"get_num_interop_threads() = {torch.get_num_interop_threads()}; device cpu; "
        f"tqdm {'on' if sys.stderr.isatty() else 'off'} (stderr "
        f"{'is' if sys.stderr.isatty() else 'is not'} a terminal)"
    )
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile("w+") as log:
        worker = None if args.no_keras else KerasWorker(args.images, args.threads, log)
        script = generated_script(Path(tmp), "pytorch")
        print(f"scripts: emit(compile_file({SPEC.relative_to(ROOT)})), batch size {BATCH}")
        sides = torch_sides(script, args.images)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # each distinct warning once
            for epoch in sides.values():  # warm-up, while the Keras worker starts
                epoch()
            if worker is not None:
                worker.ready()
                print(f"Keras worker: {worker.info}")
                sides["keras"] = worker.epoch
            try:
                rates = measure(sides, args.rounds, args.images)
            finally:
                if worker is not None:
                    worker.close()
            augment = augment_seconds(script)
        report(rates, augment, args)
        notes = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
        for note in notes:
            print(f"note, warned while training: {note}")


def report(
    rates: dict[str, list[float]], augment: tuple[float, float], args: argparse.Namespace
) -> None:
    steps = args.images // BATCH
    print(
        f"\ntraining throughput, images/s: {args.images} images, {steps} steps per epoch, "
        f"1 warm-up + {args.rounds} timed epochs per side, order rotating"
    )
    print("    side                           median        range   per step (median)")
    for name, rate in rates.items():
        median = statistics.median(rate)
        print(
            f"    {SIDES[name]:28} {median:8.0f}  {spread(rate):>11}"
            f"   {BATCH / median * 1000:5.0f} ms"
        )

    def ratio(top: str, bottom: str) -> tuple[float, float]:
        medians = statistics.median(rates[top]) / statistics.median(rates[bottom])
        return medians, max(rates[top]) / max(rates[bottom])

    generated, best = ratio("generated", "hand")
    print(
        f"    generated / hand-written: {generated:.3f} ({verdict(generated, 0.95)}); "
        f"best epochs: {best:.3f}"
    )
    augmented, best = ratio("augmented", "generated")
    print(
        f"    augmented / plain generated: {augmented:.3f}, augmentation costs "
        f"{(1 - augmented) * 100:.1f}% ({verdict(augmented, 0.90)}); best epochs: {best:.3f}"
    )
    with_it, without = augment
    step = BATCH / statistics.median(rates["generated"])
    print(
        f"    augmentation alone: prepare() {with_it * 1000:.2f} ms per batch augmented, "
        f"{without * 1000:.2f} ms plain: {(with_it - without) / step * 100:.1f}% of a "
        f"{step * 1000:.0f} ms step"
    )
    if "keras" in rates:
        keras, best = ratio("generated", "keras")
        print(
            f"    PyTorch generated / Keras generated: {keras:.2f}x "
            f"(for information); best epochs: {best:.2f}x"
        )


if __name__ == "__main__":
    main()
