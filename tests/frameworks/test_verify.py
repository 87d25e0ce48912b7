"""`cnnspec verify`: Keras, PyTorch and onnxruntime fed the same weights and inputs.

For every shipped spec, with trained-like weights (random BatchNorm statistics, written by the
generated PyTorch script), every pair agrees within 1e-4 and the command exits 0. A tolerance no
float32 computation meets makes it exit 1 and name the first layer where the outputs part. A
framework that is not installed is reported and skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cnnspec import export as onnx_export
from cnnspec import verify
from tests.conftest import ROOT, SPECS
from tests.frameworks.scripts import checked_spec, shipped_spec, tensorflow_noise
from tests.frameworks.test_onnx_export import torch_weights
from tests.test_cli import no_traceback, run

pytestmark = pytest.mark.frameworks


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_verify_passes_on_every_shipped_spec(path: Path, tmp_path: Path) -> None:
    spec = shipped_spec(path)
    _, weights = torch_weights(spec, tmp_path)
    report = verify.run_verify(spec, onnx_export.load_weights(weights), 1e-4)
    assert report.skipped == {}
    assert [(c.first, c.second) for c in report.comparisons] == [
        ("keras", "pytorch"),
        ("keras", "onnx"),
        ("pytorch", "onnx"),
    ]
    assert report.passed(1e-4), report


def test_verify_command_is_quiet_and_passes(tmp_path: Path) -> None:
    """The whole command on a shipped spec: the table, the verdict, and on stderr nothing of
    TensorFlow's start-up logging (CUDA probing, oneDNN notices, absl's warning)."""
    path = ROOT / "specs" / "digits.cnn"
    _, weights = torch_weights(shipped_spec(path), tmp_path)
    # As a user runs it: without the test run's own TF_CPP_MIN_LOG_LEVEL.
    result = run("verify", str(path), "--weights", str(weights), unset=("TF_CPP_MIN_LOG_LEVEL",))
    assert result.returncode == 0, result.stdout + result.stderr
    for pair in ("keras vs pytorch", "keras vs onnx", "pytorch vs onnx"):
        assert pair in result.stdout
    assert result.stdout.count(" ok") == 4
    counts = "parameters: 45,546 (45,354 trainable) in the checker, keras and pytorch  ok"
    assert counts in result.stdout
    assert "equivalent: every pair agrees within the tolerance" in result.stdout
    assert tensorflow_noise(result.stderr) == [], result.stderr
    no_traceback(result)


def test_verify_fails_and_locates_beyond_the_tolerance(tmp_path: Path) -> None:
    spec = ROOT / "specs" / "cifar10.cnn"
    _, weights = torch_weights(checked_spec(path=spec), tmp_path)
    result = run("verify", str(spec), "--weights", str(weights), "--tolerance", "1e-12")
    assert result.returncode == 1
    assert "DIFFERENT" in result.stdout
    assert "first layer that differs: " in result.stdout
    no_traceback(result)


def test_a_missing_backend_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = checked_spec(path=ROOT / "specs" / "digits.cnn")
    real = verify._available
    monkeypatch.setattr(verify, "_available", lambda package: package != "torch" and real(package))
    report = verify.run_verify(spec, onnx_export.initial_weights(spec, 0), 1e-4)
    assert report.skipped == {"pytorch": "torch is not installed"}
    assert [(c.first, c.second) for c in report.comparisons] == [("keras", "onnx")]
    assert report.passed(1e-4)
