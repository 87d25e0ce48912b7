"""Shared test fixtures. Golden files are refreshed with `pytest --update-golden`."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Before any test imports TensorFlow. CI machines (AVX2 without AVX-512 VNNI) run TensorFlow
# without oneDNN, and TensorFlow's own CPU kernels refuse some things oneDNN accepts (unequal
# depthwise strides): every machine runs the suite with the CI machine's kernels, and quietly.
# `make fuzz` runs the semantic campaign with oneDNN both on and off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.cnn"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def root() -> Path:
    return ROOT


# Hypothesis profiles (deterministic for `make test`, random for `make fuzz`), loaded before any
# test module builds its settings.
if importlib.util.find_spec("hypothesis") is not None:
    import tests.fuzzing  # noqa: F401


def pytest_report_header(config: pytest.Config) -> str | None:
    if importlib.util.find_spec("hypothesis") is None:
        return None
    from tests.fuzzing import FUZZ, FUZZ_SCALE, FUZZ_SEED

    if not FUZZ:
        return "cnnspec: deterministic (hypothesis derandomized, seeded mutants)"
    return (
        f"cnnspec fuzz: hypothesis random, {FUZZ_SCALE}x examples, mutation seed {FUZZ_SEED} "
        f"(replay with CNNSPEC_FUZZ_SEED={FUZZ_SEED})"
    )
