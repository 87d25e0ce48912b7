"""How fast is `cnnspec check`? A benchmark, not a test.

    .venv/bin/python bench/check_speed.py

Measures, side by side on the same machine in one run:

(a) a whole `cnnspec check specs/cifar10.cnn` process (the installed console script, as a user
    runs it), against a bare `python -c pass`;
(b) a whole Python process that builds the same CIFAR-10 model in Keras and prints
    `model.summary()`, which is what you would otherwise run to see its shapes and parameters;
(c) how in-process compilation scales with depth (125 to 1000 layers), and a whole
    `cnnspec check` process on the 1000-layer spec.

(a) and (b) run interleaved: in each of ROUNDS rounds one Keras process, then CHECKS_PER_ROUND
check processes and as many bare interpreters, so that drift in the machine's load touches
both sides alike; the ratio is Keras's median over cnnspec's. The goals: a check process's
median at most 200 ms, and at least 40 times faster than Keras.

It first byte-compiles cnnspec (`python -m compileall -q cnnspec`): an installed package ships
its bytecode, but a checkout run with PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every
module in every process. Wall times on a shared machine are noisy: read the medians, and the
minimums as the best case. Takes about a minute.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnnspec.compiler import compile_text  # noqa: E402

ROUNDS = 5
CHECKS_PER_ROUND = 4
COMPILE_RUNS = 7
DEEP_RUNS = 5
DEPTHS = (125, 250, 500, 1000)

# The reference tutorial's Sequential model, layer for layer what specs/cifar10.cnn describes.
# It prints the wall time of `import keras` (which brings in TensorFlow) on stderr, and the
# parameter counts for a cross-check against cnnspec.
KERAS_SCRIPT = """
import sys, time
start = time.perf_counter()
import keras
from keras import layers, regularizers
imported = time.perf_counter()

def conv(filters):
    return layers.Conv2D(filters, 3, padding="same", activation="relu",
                         kernel_regularizer=regularizers.l2(1e-4))

model = keras.Sequential([
    keras.Input(shape=(32, 32, 3)),
    conv(32), layers.BatchNormalization(), conv(32), layers.MaxPooling2D(2), layers.Dropout(0.25),
    conv(64), layers.BatchNormalization(), conv(64), layers.MaxPooling2D(2), layers.Dropout(0.25),
    conv(128), layers.BatchNormalization(), layers.MaxPooling2D(2), layers.Dropout(0.25),
    layers.Flatten(),
    layers.Dense(512, activation="relu", kernel_regularizer=regularizers.l2(1e-4)),
    layers.BatchNormalization(), layers.Dropout(0.5),
    layers.Dense(10, activation="softmax"),
])
model.summary()
trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
print(f"PARAMS {model.count_params()} {trainable}")
print(f"IMPORT_SECONDS {imported - start:.6f}", file=sys.stderr)
"""


def run(args: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(args)}\n{result.stderr[-2000:]}")
    return elapsed, result


def timed(args: list[str], runs: int) -> tuple[list[float], subprocess.CompletedProcess[str]]:
    """One untimed warm-up (file cache), then `runs` timed runs."""
    _, result = run(args)
    times = []
    for _ in range(runs):
        elapsed, result = run(args)
        times.append(elapsed)
    return times, result


def deep_spec(layers: int) -> str:
    """`layers` explicit layers: conv2d/batchnorm/relu in blocks of 30, then a two-layer head."""
    pattern = ("conv2d(16, padding=same)", "batchnorm()", "relu()")
    body = [pattern[i % 3] for i in range(layers - 2)]
    blocks = [
        f"  block s{start // 30 + 1} {{\n"
        + "".join(f"    {item}\n" for item in body[start : start + 30])
        + "  }\n"
        for start in range(0, len(body), 30)
    ]
    return (
        f"model deep{layers} {{\n"
        "  input 32x32x3\n"
        + "".join(blocks)
        + "  head { global_avg_pool()  dense(10, activation=softmax) }\n"
        "}\n"
    )


def seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.0f} ms" if value >= 0.1 else f"{value * 1000:.1f} ms"


def millis(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def main() -> None:
    python = sys.executable
    system = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    print(f"python {platform.python_version()} on {system}; wall times, shared machine: noisy")
    print("byte-compiling cnnspec first: python -m compileall -q cnnspec")
    run([python, "-m", "compileall", "-q", "cnnspec"])

    # (a) and (b), interleaved round by round.
    console = Path(python).with_name("cnnspec")
    check_args = [str(console), "check", "specs/cifar10.cnn"]
    if not console.exists():
        check_args = [python, "-m", "cnnspec", "check", "specs/cifar10.cnn"]
    keras_args = [python, "-c", KERAS_SCRIPT]
    for args in (check_args, keras_args, [python, "-c", "pass"]):
        run(args)  # warm-up: the file cache
    bare: list[float] = []
    check: list[float] = []
    keras_times: list[float] = []
    keras_imports: list[float] = []
    for _ in range(ROUNDS):
        elapsed, result = run(keras_args)
        keras_times.append(elapsed)
        imported = [line for line in result.stderr.splitlines() if line.startswith("IMPORT_")]
        keras_imports.append(float(imported[-1].split()[1]))
        for _ in range(CHECKS_PER_ROUND):
            check.append(run(check_args)[0])
            bare.append(run([python, "-c", "pass"])[0])
    check_result = run(check_args)[1]
    print(f"\n(a) cnnspec check specs/cifar10.cnn  x{len(check)}")
    print(f"    {check_result.stdout.strip()}")
    check_median = statistics.median(check)
    print(f"    median {seconds(check_median)}, min {seconds(min(check))}")
    print(f"    (bare `python -c pass`: median {seconds(statistics.median(bare))})")
    cifar_text = (ROOT / "specs" / "cifar10.cnn").read_text()
    compile_text(cifar_text)  # warm-up
    in_process = []
    for _ in range(COMPILE_RUNS):
        start = time.perf_counter()
        compile_text(cifar_text)
        in_process.append(time.perf_counter() - start)
    print(f"    in process, compile_text alone: median {millis(statistics.median(in_process))}")

    print(f"\n(b) python -c <build the CIFAR-10 model in Keras; model.summary()>  x{ROUNDS}")
    params_line = next(line for line in result.stdout.splitlines() if line.startswith("PARAMS "))
    keras_total, keras_trainable = (int(n) for n in params_line.split()[1:])
    ours = compile_text(cifar_text, "specs/cifar10.cnn")
    assert ours.spec is not None
    params = ours.spec.model.params
    agree = (keras_total, keras_trainable) == (params.total, params.trainable)
    print(
        f"    Keras: {keras_total:,} params ({keras_trainable:,} trainable); "
        f"cnnspec: {params.total:,} ({params.trainable:,}): {'agree' if agree else 'DIFFER'}"
    )
    keras_median = statistics.median(keras_times)
    print(f"    median {seconds(keras_median)}, min {seconds(min(keras_times))}")
    print(f"    of which `import keras`: median {seconds(statistics.median(keras_imports))}")
    ratio = keras_median / check_median
    print(
        f"    keras / cnnspec (medians): {ratio:.0f}x (goal >= 40x: "
        f"{'met' if ratio >= 40 else 'NOT met'}); cnnspec median {seconds(check_median)} "
        f"(goal <= 200 ms: {'met' if check_median <= 0.2 else 'NOT met'})"
    )

    # (c) scaling with depth, in process.
    print(
        f"\n(c) compile_text on generated specs, after a warm-up, for >= {COMPILE_RUNS} runs and 0.5 s"
    )
    print("    layers    median       min   per layer (min)   runs")
    compile_runs: dict[int, int] = {}
    compile_times: dict[int, float] = {}
    compile_medians: dict[int, float] = {}
    texts: dict[int, str] = {}
    for depth in DEPTHS:
        text = texts[depth] = deep_spec(depth)
        compilation = compile_text(text)
        assert compilation.ok and compilation.spec is not None, list(compilation.diagnostics)
        assert len(compilation.spec.model.nodes) == depth, len(compilation.spec.model.nodes)
        gc.collect()
        runs: list[float] = []
        # At least COMPILE_RUNS runs and half a second, so small specs get enough samples.
        while len(runs) < COMPILE_RUNS or sum(runs) < 0.5:
            start = time.perf_counter()
            compile_text(text)
            runs.append(time.perf_counter() - start)
        compile_runs[depth] = len(runs)
        # Like timeit, the scaling figures use the best run: the least disturbed by other work.
        compile_times[depth] = min(runs)
        compile_medians[depth] = statistics.median(runs)
        per_layer = compile_times[depth] / depth * 1e6
        print(
            f"    {depth:6d} {millis(compile_medians[depth]):>9} {millis(compile_times[depth]):>9}"
            f"   {per_layer:5.0f} us {len(runs):12d}"
        )
    low, high = DEPTHS[0], DEPTHS[-1]
    growth = compile_times[high] / compile_times[low]
    scale = high // low
    print(f"    {high}/{low} layers: time x{growth:.1f} for x{scale} the layers (linear: x{scale})")

    with tempfile.TemporaryDirectory() as tmp:
        deep_path = Path(tmp) / f"deep{high}.cnn"
        deep_path.write_text(texts[high])
        deep_args = [*check_args[:-1], str(deep_path)]
        deep, result = timed(deep_args, DEEP_RUNS)
    print(f"\n    cnnspec check deep{high}.cnn  x{DEEP_RUNS}")
    print(f"    {result.stdout.strip().replace(str(deep_path), f'deep{high}.cnn')}")
    print(f"    median {seconds(statistics.median(deep))}, min {seconds(min(deep))}")

    # Summary, ready to paste into a README.
    print("\n## Figures\n")
    print("| measurement | median | min | runs |")
    print("|---|---:|---:|---:|")

    def row(label: str, times: list[float]) -> None:
        median, best = seconds(statistics.median(times)), seconds(min(times))
        print(f"| {label} | {median} | {best} | {len(times)} |")

    row("`python -c pass` (interpreter start-up)", bare)
    row("`cnnspec check specs/cifar10.cnn` (whole process)", check)
    row("&nbsp;&nbsp;of which compiling (in process, `compile_text`)", in_process)
    row("Keras: build the CIFAR-10 model, `model.summary()` (whole process)", keras_times)
    row("&nbsp;&nbsp;of which `import keras`", keras_imports)
    row(f"`cnnspec check` on a {high}-layer spec (whole process)", deep)
    print(f"| **Keras / cnnspec** (medians) | **{ratio:.0f}x** | | |")
    print()
    print("| layers | `compile_text` (median) | min | per layer (min) | runs |")
    print("|---:|---:|---:|---:|---:|")
    for depth in DEPTHS:
        per_layer = compile_times[depth] / depth * 1e6
        median, best = millis(compile_medians[depth]), millis(compile_times[depth])
        print(f"| {depth} | {median} | {best} | {per_layer:.0f} us | {compile_runs[depth]} |")
    print(f"| {high} / {low} | | x{growth:.1f} (linear: x{scale}) | | |")


if __name__ == "__main__":
    main()
