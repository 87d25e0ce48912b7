"""Is the exported ONNX model faster to run than the generated scripts' own models? A benchmark,
not a test.

    .venv/bin/python bench/inference.py [--spec cifar10 --spec digits] [--rounds 7]
        [--calls 100] [--batches 20] [--batch 32] [--threads N] [--ort-threads 0] [--no-keras]

For each spec (default specs/cifar10.cnn and specs/digits.cnn) it gets the models the way a user
does: `compile_file(...).spec`; the weights `cnnspec.export.initial_weights(spec, 0)` in the
canonical layout, with every BatchNorm's gamma, beta, running mean and running variance then
drawn at random (seeded) so that BatchNorm is not the identity; those weights saved with
`safetensors.numpy.save_file`. The sides, on the CPU, all with the same weights:

(a) onnxruntime: `cnnspec.export.export(spec, weights)` in an `InferenceSession` on the
    CPUExecutionProvider, graph_optimization_level ORT_ENABLE_ALL, intra-op threads
    `--ort-threads` (default 0: onnxruntime's own choice, one per physical core), otherwise
    default options; `session.run(None, {"image": x})` on an NCHW float32 numpy array;
(b) PyTorch eager: the PyTorch backend's `emit`, imported, `build_model()`, `load_weights`,
    `eval()`; `net(x)` (probabilities) under `torch.inference_mode()` on an NCHW tensor;
(c) Keras direct call: the Keras backend's `emit`, imported, `build_model()`, `load_weights`;
    `model(x, training=False)` on an NHWC tf.Tensor made once;
(d) Keras predict: the same model, `model.predict(x, verbose=0)` on the NHWC numpy array;
(e) onnxruntime fp16: `export(..., fp16=True)` (float16 weights and arithmetic, float32 I/O);
(f) onnxruntime int8: `cnnspec.quantize.quantize_int8` of (a)'s model as `cnnspec export --int8`
    makes it (static QDQ, per-channel 7-bit weights, the classifier in float32), calibrated on
    the throughput batch. For information, with the CPU's int8 instructions printed beside it:
    onnxruntime's uint8 x int8 kernels gain little on AVX2 without VNNI, more with AVX-512
    VNNI or AMX; what int8 always gives is a quarter of the file, and a model for
    TensorRT-style int8 engines.

Keras runs in a worker subprocess that this script starts and drives block by block, so that
TensorFlow's and PyTorch's thread pools and allocators never share a process; the worker sets
TensorFlow's intra- and inter-op threads to `--threads` (default PyTorch's own default, which
this process uses). onnxruntime and PyTorch share this process.

The inputs are uniform random [0, 1) images (what the scripts feed the network after
rescaling), made once per batch size. Two measurements per side: latency at batch 1, the
median milliseconds of one call over a block of `--calls` calls, each call timed on its own;
throughput at batch `--batch`, images per second over a block of `--batches` calls. Every
block starts with one untimed call, so that the previous side's spinning thread pools have
gone quiet before the timing starts. Each side first runs untimed warm-up calls (and the Keras
worker traces both of its paths before it reports ready), then `--rounds` rounds, in each
round one block per side and batch size, the order of the sides rotating from round to round
so that drift in the machine's load does not favour one of them. Medians are over the rounds'
figures, ranges are theirs; ratios are of the medians, and the ratio of the best rounds is
printed too, as the least disturbed case. The goals (CIFAR-10 is the one that counts; the
digits model is printed with the same verdicts for information): onnxruntime at least 1.5x as
fast as PyTorch eager at batch 1, and at least as fast (1.0x) at batch 32. onnxruntime
against Keras is for information.

Two checks: (1) the BatchNormalization nodes left in onnxruntime's optimised graph: a second
session with the same options writes its optimised model (`optimized_model_filepath`), which
is loaded with `onnx.load` and its op types counted; the goal is none. (2) the four sides'
probabilities at batch `--batch` agree with onnxruntime's: the largest absolute difference.

Wall times on a shared machine are noisy: read the medians, and the range beside them. With the
defaults it takes about three minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnnspec.compiler import compile_file  # noqa: E402
from cnnspec.ir import Spec  # noqa: E402

SPECS = {"cifar10": ROOT / "specs" / "cifar10.cnn", "digits": ROOT / "specs" / "digits.cnn"}
SEED = 0
WARMUP_CALLS = 10
AGREE = 1e-4  # probabilities: the largest absolute difference still called agreement
SIDES = {
    "ort": "(a) onnxruntime fp32",
    "torch": "(b) PyTorch eager",
    "keras_call": "(c) Keras model(x)",
    "keras_predict": "(d) Keras predict",
    "ort_fp16": "(e) onnxruntime fp16",
    "ort_int8": "(f) onnxruntime int8",
}
# Reduced precision is compared with fp32 onnxruntime on its own, looser footing.
REDUCED = {"ort_fp16": 1e-2, "ort_int8": 5e-2}
KERAS_SIDES = ("keras_call", "keras_predict")

# A block: (batch size, calls) -> the seconds of each timed call.
Block = Callable[[int, int], list[float]]


def compiled(path: Path) -> Spec:
    compilation = compile_file(path)
    if not compilation.ok or compilation.spec is None:
        sys.exit(f"{path} does not compile: {list(compilation.diagnostics)}")
    return compilation.spec


def generated_script(folder: Path, spec: Spec, stem: str, backend: str) -> ModuleType:
    """Emit `spec` for `backend`, write the script into `folder` and import it."""
    emit = importlib.import_module(f"cnnspec.backends.{backend}").emit
    name = f"{stem}_{backend}"
    path = folder / f"{name}.py"
    path.write_text(emit(spec, f"{stem}.cnn"))
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    # Registered like any imported module (AutoGraph and inspect look it up).
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module


def bench_weights(spec: Spec) -> dict[str, np.ndarray]:
    """`initial_weights(spec, 0)` with random BatchNorm parameters and statistics."""
    from cnnspec import export as onnx_export

    weights = onnx_export.initial_weights(spec, SEED)
    rng = np.random.default_rng(SEED + 1)
    draws = {
        "running_mean": lambda shape: rng.normal(0.0, 0.5, shape),
        "running_var": lambda shape: rng.uniform(0.5, 2.0, shape),
        "weight": lambda shape: rng.uniform(0.5, 1.5, shape),
        "bias": lambda shape: rng.normal(0.0, 0.2, shape),
    }
    for node in spec.model.nodes:
        if node.layer.kind != "batchnorm":
            continue
        for suffix, draw in draws.items():
            key = f"{node.name}.{suffix}"
            weights[key] = draw(weights[key].shape).astype(np.float32)
    return weights


def ort_session(model_bytes: bytes, threads: int, optimized: Path | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
        # Its warning that the NCHWc layout makes the file hardware specific is expected.
        options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def op_counts(nodes: Any) -> Counter[str]:
    return Counter(f"{n.op_type}({n.domain})" if n.domain else n.op_type for n in nodes)


def timed(call: Callable[[], object], calls: int) -> list[float]:
    """Seconds of each of `calls` calls, after one untimed call."""
    call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def images(shape: tuple[int, int, int], batch: int, seed: int) -> np.ndarray:
    """Random rescaled images, NCHW float32, from the spec's (H, W, C) input."""
    h, w, c = shape
    return np.random.default_rng(seed).random((batch, c, h, w), dtype=np.float32)


@dataclass
class Case:
    """One spec with its weights, inputs and in-process sides."""

    stem: str
    spec: Spec
    weights_path: Path
    inputs: dict[int, np.ndarray]  # batch size -> NCHW
    onnx_ops: Counter[str]
    optimized_ops: Counter[str]
    blocks: dict[str, Block]
    outputs: dict[str, Callable[[np.ndarray], np.ndarray]]
    file_bytes: dict[str, int]  # "fp32", "int8": the serialised model's size


def prepare_case(stem: str, folder: Path, batches: tuple[int, ...], ort_threads: int) -> Case:
    import onnx
    import torch
    from safetensors.numpy import save_file

    from cnnspec import export as onnx_export

    spec = compiled(SPECS[stem])
    assert spec.model.input_shape is not None
    weights = bench_weights(spec)
    weights_path = folder / f"{stem}.safetensors"
    save_file(weights, str(weights_path))
    inputs = {b: images(spec.model.input_shape, b, SEED + b) for b in batches}
    for batch, array in inputs.items():
        np.save(folder / f"{stem}_{batch}.npy", array)

    model = onnx_export.export(spec, weights)
    model_bytes = model.SerializeToString()
    optimized = folder / f"{stem}_optimized.onnx"
    ort_session(model_bytes, ort_threads, optimized)
    optimized_ops = op_counts(onnx.load(str(optimized)).graph.node)
    session = ort_session(model_bytes, ort_threads)

    # Reduced precision: fp16 weights and arithmetic; static int8 (QDQ) calibrated on the
    # throughput batch, the same uniform [0, 1) images every side is timed on.
    from cnnspec.quantize import classifier_nodes, quantize_int8

    half = ort_session(
        onnx_export.export(spec, weights, fp16=True).SerializeToString(), ort_threads
    )
    calibration = inputs[max(inputs)]
    int8_model = quantize_int8(model, calibration, "image", classifier_nodes(spec.model))
    int8 = ort_session(int8_model.SerializeToString(), ort_threads)
    file_bytes = {"fp32": len(model_bytes), "int8": len(int8_model.SerializeToString())}

    def reduced_block(reduced: Any) -> Block:
        def run(batch: int, calls: int) -> list[float]:
            feed = {"image": inputs[batch]}
            return timed(lambda: reduced.run(None, feed), calls)

        return run

    script = generated_script(folder, spec, stem, "pytorch")
    net = script.build_model()
    script.load_weights(net, weights_path)
    net.eval()
    tensors = {b: torch.from_numpy(array) for b, array in inputs.items()}

    def ort_block(batch: int, calls: int) -> list[float]:
        feed = {"image": inputs[batch]}
        return timed(lambda: session.run(None, feed), calls)

    def torch_block(batch: int, calls: int) -> list[float]:
        x = tensors[batch]
        with torch.inference_mode():
            return timed(lambda: net(x), calls)

    def torch_output(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return Case(
        stem,
        spec,
        weights_path,
        inputs,
        op_counts(model.graph.node),
        optimized_ops,
        {
            "ort": ort_block,
            "torch": torch_block,
            "ort_fp16": reduced_block(half),
            "ort_int8": reduced_block(int8),
        },
        {
            "ort": lambda x: session.run(None, {"image": x})[0],
            "torch": torch_output,
            "ort_fp16": lambda x: half.run(None, {"image": x})[0],
            "ort_int8": lambda x: int8.run(None, {"image": x})[0],
        },
        file_bytes,
    )


class KerasWorker:
    """The Keras sides in a subprocess (this file with --keras-worker): one line per request."""

    def __init__(self, folder: Path, stems: list[str], threads: int, log: IO[str]) -> None:
        command = [sys.executable, __file__, "--keras-worker", f"--folder={folder}"]
        command += [f"--spec={stem}" for stem in stems] + [f"--threads={threads}"]
        self.log = log
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        self.info = ""

    def ask(self, request: str | None) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        if request is not None:
            self.process.stdin.write(request + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.log.seek(0)
            tail = self.log.read()[-3000:]
            sys.exit(f"the Keras worker failed ({self.process.returncode}):\n{tail}")
        return line.strip()

    def ready(self) -> None:
        """Wait until the worker has built its models and warmed both paths up."""
        self.info = self.ask(None)

    def block(self, stem: str, side: str) -> Block:
        def run(batch: int, calls: int) -> list[float]:
            return [float(t) for t in self.ask(f"time {stem} {side} {batch} {calls}").split()]

        return run

    def outputs(self, stem: str, batch: int, path: Path) -> dict[str, np.ndarray]:
        self.ask(f"outputs {stem} {batch} {path}")
        with np.load(path) as saved:
            return {side: saved[side] for side in KERAS_SIDES}

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def keras_worker(folder: Path, stems: list[str], threads: int) -> None:
    """The subprocess: build each spec's Keras model with the saved weights, warm up its direct
    call and predict on the saved inputs, print one line about itself, then serve requests:
    "time STEM SIDE BATCH CALLS" prints the seconds of each timed call; "outputs STEM BATCH
    PATH" saves both paths' probabilities to PATH (.npz) and prints "ok"."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    models: dict[str, Any] = {}
    arrays: dict[tuple[str, int], np.ndarray] = {}
    tensors: dict[tuple[str, int], Any] = {}
    for stem in stems:
        script = generated_script(folder, compiled(SPECS[stem]), stem, "keras")
        model = script.build_model()
        script.load_weights(model, folder / f"{stem}.safetensors")
        models[stem] = model
        for path in folder.glob(f"{stem}_*.npy"):
            batch = int(path.stem.rsplit("_", 1)[1])
            nhwc = np.ascontiguousarray(np.load(path).transpose(0, 2, 3, 1))
            arrays[stem, batch], tensors[stem, batch] = nhwc, tf.constant(nhwc)

    def call(stem: str, side: str, batch: int) -> Callable[[], Any]:
        model = models[stem]
        if side == "keras_call":
            x = tensors[stem, batch]
            return lambda: model(x, training=False)
        array = arrays[stem, batch]
        return lambda: model.predict(array, verbose=0)

    for stem, batch in arrays:  # warm-up: tracing, predict's function
        for side in KERAS_SIDES:
            timed(call(stem, side, batch), WARMUP_CALLS)
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{intra} intra-op / {inter} inter-op threads",
        flush=True,
    )
    for line in sys.stdin:
        words = line.split()
        if words[0] == "time":
            stem, side, batch, calls = words[1], words[2], int(words[3]), int(words[4])
            times = timed(call(stem, side, batch), calls)
            print(" ".join(f"{t:.7f}" for t in times), flush=True)
        elif words[0] == "outputs":
            stem, batch = words[1], int(words[2])
            model, array = models[stem], arrays[stem, batch]
            saved = {
                "keras_call": np.asarray(model(tensors[stem, batch], training=False)),
                "keras_predict": model.predict(array, verbose=0),
            }
            np.savez(words[3], **saved)
            print("ok", flush=True)


def measure(
    blocks: dict[str, Block], rounds: int, sizes: dict[int, int]
) -> dict[str, dict[int, list[list[float]]]]:
    """Per side and batch size, one block of call times per round, the order rotating."""
    names = list(blocks)
    for name in names:  # warm-up
        for batch in sizes:
            blocks[name](batch, WARMUP_CALLS)
    result: dict[str, dict[int, list[list[float]]]] = {n: {b: [] for b in sizes} for n in names}
    for index in range(rounds):
        shift = index % len(names)
        for batch, calls in sizes.items():
            for name in names[shift:] + names[:shift]:
                result[name][batch].append(blocks[name](batch, calls))
    return result


def int8_instructions() -> str:
    """What this CPU offers onnxruntime's int8 kernels, from /proc/cpuinfo's flags."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        return "CPU flags unknown"
    if "amx_int8" in flags:
        return "AMX"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "VNNI"
    return "AVX2 without VNNI" if "avx2" in flags else "no AVX2"


def verdict(ratio: float, goal: float) -> str:
    return f"goal >= {goal:.1f}x: {'met' if ratio >= goal else 'NOT met'}"


def report(
    case: Case,
    times: dict[str, dict[int, list[list[float]]]],
    agreement: dict[str, float],
    args: argparse.Namespace,
) -> None:
    spec = case.spec
    assert spec.model.input_shape is not None
    h, w, c = spec.model.input_shape
    print(f"\n{case.stem}: {SPECS[case.stem].relative_to(ROOT)}, input {h}x{w}x{c}")
    latency = {n: [statistics.median(t) * 1000 for t in b[1]] for n, b in times.items()}
    rates = {n: [args.batch * len(t) / sum(t) for t in b[args.batch]] for n, b in times.items()}
    print(
        f"    latency, batch 1, ms per call (median of {args.calls} calls per round)   "
        f"throughput, batch {args.batch}, images/s ({args.batches} calls per round)"
    )
    print("    side                      median          range       median          range")
    for name in times:
        lat, rate = latency[name], rates[name]
        print(
            f"    {SIDES[name]:22} {statistics.median(lat):9.3f} "
            f"{min(lat):7.3f}-{max(lat):<7.3f} {statistics.median(rate):9.0f} "
            f"{min(rate):7.0f}-{max(rate):<7.0f}"
        )

    def speedup(other: str) -> tuple[float, float, float, float]:
        """onnxruntime against `other`: latency (medians, best rounds), throughput (same)."""
        return (
            statistics.median(latency[other]) / statistics.median(latency["ort"]),
            min(latency[other]) / min(latency["ort"]),
            statistics.median(rates["ort"]) / statistics.median(rates[other]),
            max(rates["ort"]) / max(rates[other]),
        )

    one, one_best, many, many_best = speedup("torch")
    print(
        f"    onnxruntime / PyTorch eager, batch 1 latency: {one:.2f}x faster "
        f"({verdict(one, 1.5)}); best rounds: {one_best:.2f}x"
    )
    print(
        f"    onnxruntime / PyTorch eager, batch {args.batch} throughput: {many:.2f}x "
        f"({verdict(many, 1.0)}); best rounds: {many_best:.2f}x"
    )
    int8_rate = statistics.median(rates["ort_int8"]) / statistics.median(rates["ort"])
    speed = "faster" if int8_rate >= 1.1 else "no faster" if int8_rate >= 0.9 else "slower"
    print(
        f"    onnxruntime int8 / fp32, batch {args.batch} throughput: {int8_rate:.2f}x: "
        f"{speed} on this CPU ({int8_instructions()}); fp16 / fp32: "
        f"{statistics.median(rates['ort_fp16']) / statistics.median(rates['ort']):.2f}x"
    )
    fp32_size, int8_size = case.file_bytes["fp32"], case.file_bytes["int8"]
    print(
        f"    model file: fp32 {fp32_size / 1024:,.0f} KiB, int8 {int8_size / 1024:,.0f} KiB "
        f"({fp32_size / int8_size:.1f}x smaller)"
    )
    for name in KERAS_SIDES:
        if name in times:
            one, _, many, _ = speedup(name)
            print(
                f"    onnxruntime / {SIDES[name][4:]}: {one:.2f}x at batch 1, {many:.2f}x at "
                f"batch {args.batch} (for information)"
            )
    left = case.optimized_ops.get("BatchNormalization", 0)
    print(
        f"    BatchNormalization nodes: {case.onnx_ops.get('BatchNormalization', 0)} exported, "
        f"{left} in onnxruntime's optimised graph (goal 0: {'met' if left == 0 else 'NOT met'})"
    )
    for label, ops in (("exported", case.onnx_ops), ("optimised", case.optimized_ops)):
        listed = ", ".join(f"{op} {count}" for op, count in sorted(ops.items()))
        print(f"      {label} ops: {listed}")
    exact = {n: d for n, d in agreement.items() if n not in REDUCED}
    worst = max(exact.values())
    diffs = ", ".join(f"{SIDES[n][4:]} {d:.1e}" for n, d in exact.items())
    print(
        f"    outputs at batch {args.batch}, max |p - onnxruntime's p|: {diffs} "
        f"({'agree' if worst <= AGREE else 'DISAGREE'}, tolerance {AGREE:g})"
    )
    for name, tolerance in REDUCED.items():
        ok = "within" if agreement[name] <= tolerance else "OUTSIDE"
        print(f"      {SIDES[name][4:]}: {agreement[name]:.1e} ({ok} {tolerance:g})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec",
        action="append",
        choices=sorted(SPECS),
        help="a spec to measure, repeatable (default: cifar10 and digits)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per side")
    parser.add_argument("--calls", type=int, default=100, help="batch-1 calls per block")
    parser.add_argument("--batches", type=int, default=20, help="large-batch calls per block")
    parser.add_argument("--batch", type=int, default=32, help="the throughput batch size")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch.set_num_threads, and TensorFlow's intra/inter-op threads (default: "
        "PyTorch's own default)",
    )
    parser.add_argument(
        "--ort-threads",
        type=int,
        default=0,
        help="onnxruntime's intra_op_num_threads (default 0: onnxruntime's own choice)",
    )
    parser.add_argument("--no-keras", action="store_true", help="leave out the Keras sides")
    parser.add_argument("--keras-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.spec = list(dict.fromkeys(args.spec or ["cifar10", "digits"]))
    if min(args.rounds, args.calls, args.batches, args.threads or 1) <= 0 or args.batch <= 1:
        parser.error("--rounds, --calls, --batches and --threads must be positive, --batch > 1")
    if args.ort_threads < 0:
        parser.error("--ort-threads must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.keras_worker:
        keras_worker(args.folder, args.spec, args.threads)
        return
    # Imported here, not in the Keras worker, which keeps TensorFlow to itself.
    import onnxruntime as ort
    import torch

    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    system = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs "
        f"(int8 instructions: {int8_instructions()})"
    )
    print(
        f"python {platform.python_version()}, PyTorch {torch.__version__}, onnxruntime "
        f"{ort.__version__} on {system}; wall times, shared machine: noisy"
    )
    ort_threads = args.ort_threads or "default"
    print(
        f"torch.get_num_threads() = {torch.get_num_threads()}; onnxruntime intra-op threads: "
        f"{ort_threads}, ORT_ENABLE_ALL, CPUExecutionProvider; {args.rounds} rounds, order "
        "rotating; Keras in a worker subprocess"
    )
    sizes = {1: args.calls, args.batch: args.batches}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile("w+") as log:
        folder = Path(tmp)
        cases = [prepare_case(stem, folder, tuple(sizes), args.ort_threads) for stem in args.spec]
        worker = None if args.no_keras else KerasWorker(folder, args.spec, args.threads, log)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # each distinct warning once
            try:
                if worker is not None:
                    worker.ready()
                    print(f"Keras worker: {worker.info}")
                for case in cases:
                    blocks = dict(case.blocks)
                    if worker is not None:
                        blocks |= {side: worker.block(case.stem, side) for side in KERAS_SIDES}
                    times = measure(blocks, args.rounds, sizes)
                    x = case.inputs[args.batch]
                    reference = case.outputs["ort"](x)
                    outputs = {name: case.outputs[name](x) for name in ("torch", *REDUCED)}
                    if worker is not None:
                        saved = folder / f"{case.stem}_outputs.npz"
                        outputs |= worker.outputs(case.stem, args.batch, saved)
                    agreement = {
                        n: float(np.abs(out - reference).max()) for n, out in outputs.items()
                    }
                    report(case, times, agreement, args)
            finally:
                if worker is not None:
                    worker.close()
        notes = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
        for note in notes:
            print(f"note, warned while measuring: {note}")
    print(f"\n{time.perf_counter() - start:.0f} s measuring")


if __name__ == "__main__":
    main()
