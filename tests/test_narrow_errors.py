"""Each library call that can fail on a user's file catches what that library raises for a bad
file, and nothing else: a damaged input is one line, a bug in cnnspec (here, a library call
made to raise an unrelated KeyError) surfaces as a bug. The exception types were read off the
installed libraries (onnx and protobuf, safetensors, Pillow, onnxruntime, SQLAlchemy through
optuna) and are each met here by a real bad file."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import pytest

from cnnspec.cli import main
from tests.conftest import ROOT


def _bug(*args: object, **kwargs: object) -> None:
    raise KeyError("a bug on purpose")


# ---- the metadata of an existing .onnx file (cnnspec export's overwrite check) -------------


@pytest.fixture(scope="module")
def exported() -> bytes:
    pytest.importorskip("onnx")
    from cnnspec import export as onnx_export
    from cnnspec.compiler import compile_file

    spec = compile_file(ROOT / "specs" / "digits.cnn").checked
    assert spec is not None
    model = onnx_export.export(spec, onnx_export.initial_weights(spec, 0), weights_source="w.st")
    return bytes(model.SerializeToString())


def test_an_existing_onnx_file_that_is_text_or_truncated_is_foreign(exported: bytes) -> None:
    from cnnspec import export as onnx_export

    assert onnx_export.model_state(exported) == "generated"
    assert onnx_export.weights_source(exported) == "w.st"
    text = b"this is a text file, not a model\n"
    truncated = exported[: len(exported) // 2]
    for data in (text, truncated):
        assert onnx_export.model_state(data) == "foreign"
        assert onnx_export.weights_source(data) == ""


def test_a_bug_reading_onnx_metadata_is_not_foreign(
    exported: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    from cnnspec import export as onnx_export

    monkeypatch.setattr(onnx, "load_from_string", _bug)
    with pytest.raises(KeyError):
        onnx_export.model_state(exported)
    with pytest.raises(KeyError):
        onnx_export.weights_source(exported)


# ---- cnnspec import of an ONNX file ---------------------------------------------------------


def test_an_onnx_file_that_cannot_be_read_is_an_import_failure(
    exported: bytes, tmp_path: Path
) -> None:
    import onnx
    from onnx import TensorProto, helper

    from cnnspec.importing import ImportFailure
    from cnnspec.importing.onnx_file import read

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported[: len(exported) // 2])
    text = tmp_path / "text.onnx"
    text.write_text("not a model\n")
    # A weight kept in a file beside the model (external data) that is not there.
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    weight.external_data.add(key="location", value="missing.bin")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [weight],
    )
    external = tmp_path / "external.onnx"
    external.write_bytes(helper.make_model(graph).SerializeToString())
    for path in (truncated, text, external):
        with pytest.raises(ImportFailure, match="is not a readable ONNX file"):
            read(path)
    assert onnx.load(str(external), load_external_data=False) is not None


def test_a_bug_reading_an_onnx_file_is_not_an_import_failure(
    exported: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    from cnnspec.importing.onnx_file import read

    path = tmp_path / "digits.onnx"
    path.write_bytes(exported)
    monkeypatch.setattr(onnx, "load", _bug)
    with pytest.raises(KeyError):
        read(path)


# ---- cnnspec predict: images and the model's session ---------------------------------------


def _preprocessing() -> Any:
    from cnnspec.predict import Preprocessing

    return Preprocessing(
        height=8,
        width=8,
        channels=3,
        layout="nchw",
        pixel_max=255.0,
        rescale=1.0,
        mean=None,
        std=None,
        color_order="rgb",
        class_names=["a", "b"],
        binary=False,
        threshold=0.5,
    )


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("text.png", b"hello\n", "is not an image Pillow can read"),
        ("truncated.png", "half", "is a damaged or truncated PNG image ("),
        ("header.ppm", b"P6\n5 5\n0\n", "cannot be opened as an image (maxval must be"),
        ("short.pgm", b"P5\n4 4\n256\n" + bytes(10), "is a damaged or truncated PPM image ("),
    ],
)
def test_a_damaged_image_is_one_line(tmp_path: Path, name: str, data: Any, message: str) -> None:
    pytest.importorskip("PIL")
    from cnnspec.predict import PredictError

    path = tmp_path / name
    whole = _png()
    path.write_bytes(whole[: len(whole) // 2] if data == "half" else data)
    with pytest.raises(PredictError) as error:
        _preprocessing().load(path)
    assert message in str(error.value) and str(error.value).startswith(str(path))
    good = tmp_path / "good.png"
    good.write_bytes(whole)
    assert _preprocessing().load(good).shape == (3, 8, 8)


def test_a_bug_reading_an_image_is_not_a_damaged_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    path = tmp_path / "good.png"
    path.write_bytes(_png())
    monkeypatch.setattr(Image, "open", _bug)
    with pytest.raises(KeyError):
        _preprocessing().load(path)


def test_a_model_onnxruntime_cannot_load_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    from cnnspec.predict import PredictError, _start

    text = tmp_path / "text.onnx"
    text.write_text("not a model\n")
    with pytest.raises(PredictError, match="is not an ONNX model"):
        _start(onnxruntime, text, "cpu")
    monkeypatch.setattr(onnxruntime, "InferenceSession", _bug)
    with pytest.raises(KeyError):
        _start(onnxruntime, text, "cpu")


# ---- cnnspec sweep's study storage ---------------------------------------------------------


def test_a_study_storage_that_is_no_database_is_one_line(tmp_path: Path, capsys) -> None:
    pytest.importorskip("optuna")
    database = tmp_path / "notes.db"
    database.write_text("these are notes, not a database\n")
    spec = ROOT / "examples" / "sweep_digits.cnn"
    storage = f"sqlite:///{database}"
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(spec), "-o", str(tmp_path / "s"), "--storage", storage])
    assert exit.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"cnnspec: error: cannot open the study storage {storage}: ")
    assert "file is not a database" in line


def test_a_bug_opening_the_study_is_an_internal_error(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    optuna = pytest.importorskip("optuna")
    monkeypatch.setattr(optuna.study, "get_all_study_summaries", _bug)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spec = ROOT / "examples" / "sweep_digits.cnn"
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(spec), "-o", str(tmp_path / "s")])
    assert exit.value.code == 70
    err = capsys.readouterr().err
    assert err.startswith("cnnspec: internal error: KeyError: 'a bug on purpose'")
    (log,) = tmp_path.glob("cnnspec-internal-error-*.log")
    assert "KeyError: 'a bug on purpose'" in log.read_text()
