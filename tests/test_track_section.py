"""The track section and what the scripts generate from it, without a framework: the trackers
a spec asks for become the scripts' defaults, an MLflow store the client cannot open is an
error at its column, and the spec's text and settings reach the scripts exactly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnspec.backends import backend
from cnnspec.backends.common import text_constant, tracked_params
from cnnspec.codegen import mapping
from cnnspec.compiler import compile_file, compile_text

ROOT = Path(__file__).resolve().parent.parent

MODEL = """\
model tracked {
  input 8x8x1
  conv2d(4, 3)  flatten()  dense(10, activation=softmax)
}
data { source digits }
"""


def script_constants(text: str, backend_name: str = "pytorch") -> dict[str, object]:
    """The constants at the top of the generated script, as Python evaluates them."""
    compilation = compile_text(text, "tracked.cnn")
    assert compilation.ok and compilation.spec is not None
    script = backend(backend_name).emit(compilation.spec, "tracked.cnn")
    start = script.index("SPEC_NAME = ")
    end = script.index("\ndef parse_args")
    namespace: dict[str, object] = {}
    exec(script[start:end], namespace)
    return namespace


@pytest.mark.parametrize(
    ("track", "tensorboard", "mlflow"),
    [
        ("", True, None),  # no section: TensorBoard, as most training scripts log
        ("track { }", False, None),  # exactly what the section lists
        ('track { mlflow("runs/mlruns") }', False, "runs/mlruns"),
        ('track { tensorboard()  mlflow("sqlite:///runs/m.db") }', True, "sqlite:///runs/m.db"),
    ],
)
@pytest.mark.parametrize("backend_name", ["keras", "pytorch"])
def test_the_section_sets_the_scripts_defaults(
    track: str, tensorboard: bool, mlflow: str | None, backend_name: str
) -> None:
    constants = script_constants(MODEL + track, backend_name)
    assert constants["TENSORBOARD"] is tensorboard
    assert constants["MLFLOW"] == mlflow
    assert constants["MLFLOW_EXPERIMENT"] == "tracked"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "must name a store"),
        ("sqlite:///", "needs the database file"),
        ("gs://bucket", "scheme 'gs', which MLflow cannot open"),
    ],
)
def test_a_store_mlflow_cannot_open_is_an_error_at_the_uri(uri: str, message: str) -> None:
    text = MODEL + f'track {{ mlflow("{uri}") }}\n'
    compilation = compile_text(text, "tracked.cnn")
    (error,) = compilation.diagnostics.errors
    assert error.code == "E113" and message in error.message
    assert (error.span.line, error.span.column) == (6, 16)


@pytest.mark.parametrize(
    "uri",
    ["runs/mlruns", "/abs/mlruns", "file:///tmp/m", "sqlite:////tmp/m.db", "http://host:5000"],
)
def test_the_stores_mlflow_opens_check(uri: str) -> None:
    assert compile_text(MODEL + f'track {{ mlflow("{uri}") }}\n', "t.cnn").ok


def test_an_empty_experiment_name_is_an_error() -> None:
    compilation = compile_text(MODEL + 'track { mlflow("m", experiment="") }\n', "t.cnn")
    assert [d.code for d in compilation.diagnostics.errors] == ["E113"]


@pytest.mark.parametrize("path", sorted((ROOT / "specs").glob("*.cnn")), ids=lambda p: p.stem)
def test_every_script_carries_its_spec_text_and_digest(path: Path) -> None:
    compilation = compile_file(path)
    assert compilation.spec is not None
    script = backend("keras").emit(compilation.spec, path.name)
    start = script.index("# What an MLflow run records of the spec")
    end = script.index("\ndef ", start)
    namespace: dict[str, object] = {}
    exec(script[start:end], namespace)
    text = path.read_text(encoding="utf-8")
    assert namespace["SPEC_TEXT"] == text
    assert namespace["SPEC_SHA256"] == hashlib.sha256(text.encode()).hexdigest()
    assert namespace["SPEC_FILE"] == path.name
    assert namespace["PHASES"] == [plan.phase.name for plan in compilation.spec.phases]


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_any_text_reads_back_from_its_constant(text: str) -> None:
    lines = text_constant("SPEC_TEXT = ", text)
    assert all(len(line) <= 100 for line in lines if line.isascii())
    namespace: dict[str, object] = {}
    exec("\n".join(lines), namespace)
    assert namespace["SPEC_TEXT"] == text


def test_params_name_each_phase_and_augmentation_as_written() -> None:
    compilation = compile_file(ROOT / "examples" / "staged_finetune.cnn")
    assert compilation.spec is not None
    params = tracked_params(compilation.spec)
    names = [plan.phase.name for plan in compilation.spec.phases]
    assert params["phases"] == ", ".join(names)
    for name in names:
        assert {f"{name}.optimizer", f"{name}.learning_rate", f"{name}.epochs"} <= set(params)
    assert all(isinstance(v, str | int | float) for v in params.values())
    digits = compile_file(ROOT / "specs" / "digits.cnn").spec
    assert digits is not None
    params = tracked_params(digits)
    assert params["augment.shift"] == "shift(0.1)" and params["optimizer"] == "adam"
    assert params["learning_rate"] == 0.002 and params["parameters"] == 45546


def test_a_long_text_value_is_split_where_a_formatter_keeps_it() -> None:
    lines = mapping("PARAMS = ", {"augment.rotation": "rotation(" + "0.1, " * 30 + "0.1)"})
    assert max(map(len, lines)) <= 88
    namespace: dict[str, object] = {}
    exec("\n".join(lines), namespace)
    assert namespace["PARAMS"] == {"augment.rotation": "rotation(" + "0.1, " * 30 + "0.1)"}
