"""Every bug the semantic campaign (tests/campaign.py, `make fuzz`) has found, as a fixed case.

Each spec in tests/regressions/ says in its comment what went wrong. The checker must accept it,
and the generated Keras and PyTorch models and the exported ONNX model must hold the checker's
counts and shapes and, with the same random weights (biases and BatchNorm statistics included),
give the same outputs within 1e-4: the campaign's own check, `examine`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from tests.campaign import examine
from tests.conftest import ROOT

pytestmark = pytest.mark.frameworks

CASES = sorted((ROOT / "tests" / "regressions").glob("*.cnn"))


def test_there_are_cases() -> None:
    assert len(CASES) >= 2


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_regression(path: Path) -> None:
    outcome = examine(path.read_text(encoding="utf-8"))
    assert outcome.accepted, outcome.codes
    assert outcome.failure is None, outcome.failure
