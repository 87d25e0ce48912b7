"""`cnnspec export`: ONNX built from the checked IR, checked, and equal to PyTorch.

For every shipped spec and example and for 50 hypothesis-generated specs: the generated PyTorch
script's model (BatchNorm statistics randomised) writes `weights.safetensors`; the exporter
builds the ONNX model from the IR with those weights; `onnx.checker.check_model(full_check=True)`
passes; under onnxruntime (CPU) its output equals the PyTorch model's in eval mode within 1e-4
at batch sizes 1 and 5 (the batch dimension is dynamic), and the NHWC-input variant gives the
same numbers on transposed input. The command writes atomically and never over a foreign file.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("hypothesis")

import onnx
import onnxruntime
import torch
from hypothesis import given, settings
from onnx import numpy_helper

from cnnspec import export as onnx_export
from cnnspec.ir import Spec
from tests.conftest import ROOT, SPECS
from tests.frameworks.scripts import checked_spec, load_script, shipped_spec, write_script
from tests.fuzzing import examples
from tests.test_cli import no_traceback, run, write
from tests.test_property import Case, specs

pytestmark = pytest.mark.frameworks

SOURCES = [*SPECS, ROOT / "examples" / "staged_finetune.cnn"]


def torch_weights(spec: Spec, directory: Path, seed: int = 0) -> tuple[object, Path]:
    """The generated PyTorch model with non-trivial BatchNorm statistics, and its exported
    canonical weights."""
    module = load_script(write_script(spec, directory, "pytorch"))
    torch.manual_seed(seed)
    net = module.build_model()
    generator = torch.Generator().manual_seed(seed)
    for child in net.modules():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            n = child.num_features
            with torch.no_grad():
                child.weight.copy_(0.5 + torch.rand(n, generator=generator))
                child.bias.copy_(torch.randn(n, generator=generator) * 0.5)
                child.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                child.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=generator))
    path = directory / "weights.safetensors"
    module.export_weights(net, path)
    return net.eval(), path


def largest_difference(spec: Spec, directory: Path) -> float:
    net, path = torch_weights(spec, directory)
    weights = onnx_export.load_weights(path)
    model = onnx_export.export(spec, weights)
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    nhwc = onnx_export.export(spec, weights, input_layout="nhwc")
    nhwc_session = onnxruntime.InferenceSession(
        nhwc.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    assert spec.model.input_shape is not None
    h, w, c = spec.model.input_shape
    worst = 0.0
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(0, 1, (batch, c, h, w)).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()  # type: ignore[operator]
        (got,) = session.run(None, {"image": x})
        (got_nhwc,) = nhwc_session.run(None, {"image": x.transpose(0, 2, 3, 1).copy()})
        assert got.shape == expected.shape == got_nhwc.shape
        worst = max(worst, float(np.abs(got - expected).max()))
        worst = max(worst, float(np.abs(got_nhwc - expected).max()))
    return worst


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_export_equals_pytorch(path: Path, tmp_path: Path) -> None:
    assert largest_difference(shipped_spec(path), tmp_path) <= 1e-4


@settings(max_examples=examples(50))
@given(specs())
def test_generated_specs_export_exactly(case: Case) -> None:
    spec = checked_spec(case.text)
    with tempfile.TemporaryDirectory() as directory:
        difference = largest_difference(spec, Path(directory))
    assert difference <= 1e-4, (difference, case)


def test_metadata_describes_the_input(tmp_path: Path) -> None:
    spec = checked_spec(path=ROOT / "specs" / "cifar10.cnn")
    model = onnx_export.export(spec, onnx_export.initial_weights(spec, 0))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["cnnspec.spec_name"] == "cifar10_cnn"
    assert props["cnnspec.input_size"] == "[32, 32, 3]"
    assert props["cnnspec.rescale"] == repr(1 / 255)
    assert "airplane" in props["cnnspec.class_names"]
    assert props["cnnspec.spec_sha256"] == spec.sha256


# ---- the command -------------------------------------------------------------------------


def test_export_command_writes_and_refuses(tmp_path: Path) -> None:
    spec = ROOT / "specs" / "digits.cnn"
    target = tmp_path / "digits.onnx"
    first = run("export", str(spec), "-o", str(target))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"wrote {target} (ONNX opset 18, 45,546 parameters")
    assert "no --weights" in first.stderr
    again = run("export", str(spec), "-o", str(target))
    assert again.stdout.startswith("unchanged ")

    foreign = write(tmp_path, "mine.onnx", "not a model")
    refused = run("export", str(spec), "-o", str(foreign))
    assert refused.returncode == 1
    assert "was not generated by cnnspec" in refused.stderr
    assert foreign.read_text() == "not a model"
    no_traceback(refused)


def test_export_with_weights_that_do_not_fit(tmp_path: Path) -> None:
    cifar = checked_spec(path=ROOT / "specs" / "cifar10.cnn")
    _, path = torch_weights(cifar, tmp_path)
    result = run(
        "export",
        str(ROOT / "specs" / "digits.cnn"),
        "-w",
        str(path),
        "-o",
        str(tmp_path / "x.onnx"),
    )
    assert result.returncode == 1
    assert "does not fit digits_cnn" in result.stderr
    no_traceback(result)
    broken = write(tmp_path, "broken.safetensors", "garbage")
    unreadable = run(
        "export",
        str(ROOT / "specs" / "digits.cnn"),
        "-w",
        str(broken),
        "-o",
        str(tmp_path / "y.onnx"),
    )
    assert unreadable.returncode == 1
    assert "cannot read" in unreadable.stderr
    no_traceback(unreadable)


def test_export_needs_neither_tensorflow_nor_torch(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from unittest import mock\n"
        "import cnnspec.cli\n"
        f"argv = ['cnnspec', 'export', {str(ROOT / 'specs' / 'cifar10.cnn')!r},"
        f" '-o', {str(tmp_path / 'm.onnx')!r}]\n"
        "with mock.patch.object(sys, 'argv', argv):\n"
        "    try:\n"
        "        cnnspec.cli.main()\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, exit.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'torch'))\n"
        "print(loaded)\n"
    )
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "m.onnx").exists()


def test_no_batchnorm_survives_onnxruntime_optimisation(tmp_path: Path) -> None:
    """CIFAR-10 puts every batchnorm after an activation, where onnxruntime cannot fold it into
    the layer before; the exporter folds the one before a dense layer into that layer, and
    onnxruntime turns the convolutional ones into per-channel convolutions."""
    spec = checked_spec(path=ROOT / "specs" / "cifar10.cnn")
    _, path = torch_weights(spec, tmp_path)
    model = onnx_export.export(spec, onnx_export.load_weights(path))
    assert [n.op_type for n in model.graph.node].count("BatchNormalization") == 3
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    optimised = onnx.load(str(tmp_path / "optimised.onnx"))
    assert "BatchNormalization" not in {n.op_type for n in optimised.graph.node}


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_fp16_export_is_within_1e_2(path: Path, tmp_path: Path) -> None:
    spec = shipped_spec(path)
    _, weights_path = torch_weights(spec, tmp_path)
    weights = onnx_export.load_weights(weights_path)
    full = onnx_export.export(spec, weights)
    half = onnx_export.export(spec, weights, fp16=True)
    onnx.checker.check_model(half, full_check=True)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)
    assert spec.model.input_shape is not None
    h, w, c = spec.model.input_shape
    x = np.random.default_rng(0).normal(0, 1, (4, c, h, w)).astype(np.float32)
    outputs = [
        onnxruntime.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"image": x}
        )[0]
        for m in (full, half)
    ]
    assert outputs[1].dtype == np.float32
    assert float(np.abs(outputs[0] - outputs[1]).max()) <= 1e-2
    props = {p.key: p.value for p in half.metadata_props}
    assert props["cnnspec.precision"] == "float16"
    assert onnx_export.model_state(half.SerializeToString()) == "generated"


@pytest.mark.library  # slow: `make test-library` runs it
def test_int8_digits_within_one_point_of_fp32(tmp_path: Path) -> None:
    """Train the digits model with the generated PyTorch script, export it in float32 and in
    int8 calibrated on the bundled digits, and score both on the script's own test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from tests.frameworks.scripts import run_script

    spec_path = ROOT / "specs" / "digits.cnn"
    script = write_script(checked_spec(path=spec_path), tmp_path, "pytorch")
    out = tmp_path / "run"
    trained = run_script(script, "--output-dir", str(out))
    assert trained.returncode == 0, trained.stderr[-2000:]
    weights = out / "weights.safetensors"
    accuracy = {}
    for name, extra in (("fp32", []), ("int8", ["--int8", "--calibration-data", "digits"])):
        target = tmp_path / f"{name}.onnx"
        result = run("export", str(spec_path), "-w", str(weights), "-o", str(target), *extra)
        assert result.returncode == 0, result.stderr
        assert "WARNING" not in result.stderr
        digits = load_digits()
        _, x_test, _, y_test = train_test_split(
            digits.images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
        )
        x = (x_test / 16).reshape(-1, 1, 8, 8).astype(np.float32)
        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        accuracy[name] = float((session.run(None, {"image": x})[0].argmax(1) == y_test).mean())
    model = onnx.load(str(tmp_path / "int8.onnx"))
    assert "QuantizeLinear" in {n.op_type for n in model.graph.node}
    assert accuracy["fp32"] >= 0.95
    assert accuracy["int8"] >= accuracy["fp32"] - 0.01, accuracy
    # What keeps that true on every CPU: 7-bit weights, so that uint8 x int8 pairs summed into
    # int16 (VPMADDUBSW, x86 without VNNI) cannot saturate: 255 * 64 * 2 < 32767 ...
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quantized = [a for a in initializers.values() if a.dtype == np.int8]
    assert quantized and all(a.min() >= -64 and a.max() <= 64 for a in quantized)
    # ... and the classifier in float32: its Gemm reads a float kernel, and no Quantize follows.
    classifier = next(n for n in model.graph.node if n.name == "head_dense_2")
    assert initializers[classifier.input[1]].dtype == np.float32
    # The same trained weights and calibration images give the same file.
    again = tmp_path / "again.onnx"
    extra = ["--int8", "--calibration-data", "digits", "--force"]
    assert (
        run("export", str(spec_path), "-w", str(weights), "-o", str(again), *extra).returncode == 0
    )
    assert again.read_bytes() == (tmp_path / "int8.onnx").read_bytes()


def test_int8_needs_calibration_data(tmp_path: Path) -> None:
    spec = str(ROOT / "specs" / "digits.cnn")
    missing = run("export", spec, "--int8", "-o", str(tmp_path / "a.onnx"))
    assert missing.returncode == 2 and "--calibration-data" in missing.stderr
    wrong = run(
        "export",
        str(ROOT / "specs" / "cifar10.cnn"),
        "--int8",
        "--calibration-data",
        "digits",
        "-o",
        str(tmp_path / "b.onnx"),
    )
    assert wrong.returncode == 1
    assert "fits only 8x8x1 models" in wrong.stderr
    no_traceback(wrong)


def test_padding_before_a_pool_survives_onnxruntime_optimisation(tmp_path: Path) -> None:
    """A zero_pad's Pad before a pooling layer keeps its zeros under onnxruntime's full
    optimisation (its PadFusion would make them -inf, or leave them out of the average, or
    refuse the model outright); with an opset older than 18 the export says why it cannot."""
    path = ROOT / "tests" / "regressions" / "zero_pad_before_pools.cnn"
    spec = checked_spec(path=path)
    model = onnx_export.export(spec, onnx_export.initial_weights(spec, 0))
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    onnxruntime.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    optimised = onnx.load(str(tmp_path / "optimised.onnx"))
    assert [n.op_type for n in optimised.graph.node].count("Pad") == 3
    result = run("export", str(path), "--opset", "17", "-o", str(tmp_path / "old.onnx"))
    assert result.returncode == 1
    assert "needs --opset 18 or later" in result.stderr
    no_traceback(result)
    assert not (tmp_path / "old.onnx").exists()


def test_exports_keep_to_their_own_files(tmp_path: Path) -> None:
    """Each precision has its own default file, and weights initialised from the seed never
    replace an export of trained weights without --force."""
    from safetensors.numpy import save_file

    spec_path = tmp_path / "digits.cnn"
    spec_path.write_text((ROOT / "specs" / "digits.cnn").read_text())
    weights = tmp_path / "weights.safetensors"
    save_file(onnx_export.initial_weights(checked_spec(path=spec_path), 7), str(weights))
    build = tmp_path / "build"

    def export_(*args: str) -> subprocess.CompletedProcess[str]:
        return run("export", str(spec_path), *args, cwd=tmp_path)

    assert export_("-w", str(weights)).returncode == 0
    assert export_("-w", str(weights), "--fp16").returncode == 0
    assert sorted(p.name for p in build.iterdir()) == ["digits.fp16.onnx", "digits.onnx"]
    trained = (build / "digits.onnx").read_bytes()
    seeded = export_()
    assert seeded.returncode == 1
    assert "holds an export of trained weights" in seeded.stderr
    assert (build / "digits.onnx").read_bytes() == trained
    no_traceback(seeded)
    assert export_("--force").returncode == 0
    props = {p.key: p.value for p in onnx.load(str(build / "digits.onnx")).metadata_props}
    assert props["cnnspec.weights"] == "seed 0"


def test_a_keras_model_file_is_not_weights(tmp_path: Path) -> None:
    fake = tmp_path / "model.keras"
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    result = run(
        "export",
        str(ROOT / "specs" / "digits.cnn"),
        "-w",
        str(fake),
        "-o",
        str(tmp_path / "x.onnx"),
    )
    assert result.returncode == 1
    assert "is a Keras model file, not cnnspec's weights" in result.stderr
    assert "weights.safetensors" in result.stderr
    no_traceback(result)
