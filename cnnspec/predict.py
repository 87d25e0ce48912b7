"""`cnnspec predict`: run an exported model on image files with onnxruntime, preprocessing them
as the model's cnnspec metadata says (size, channels, layout, pixel scale, rescale, normalise)."""

from __future__ import annotations

import glob
import io
import json
from collections.abc import Iterable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


# Images classified per onnxruntime call: a folder may hold a whole data set, which would not fit
# in memory as one batch.
BATCH_SIZE = 32

# Pillow registers these suffixes for writing only: such files in a folder are not images to try.
WRITE_ONLY_FORMATS = {"PDF", "PALM"}


class PredictError(Exception):
    """A problem with the model or an image, reported as one line."""


@dataclass
class BadImage:
    """An input that gave no prediction: the file (or folder, or pattern) and why, as one line."""

    path: Path
    message: str


@dataclass
class Preprocessing:
    height: int
    width: int
    channels: int
    layout: str
    pixel_max: float
    rescale: float
    mean: list[float] | None
    std: list[float] | None
    # "bgr": the channels are reversed before normalisation (Caffe-trained backbones).
    color_order: str
    class_names: list[str]
    binary: bool
    threshold: float

    @classmethod
    def from_metadata(cls, props: dict[str, str], path: Path) -> Preprocessing:
        if "cnnspec.input_size" not in props:
            raise PredictError(f"{path} has no cnnspec metadata: export it with `cnnspec export`")
        try:
            height, width, channels = json.loads(props["cnnspec.input_size"])
            normalize = json.loads(props.get("cnnspec.normalize", "null"))
            return cls(
                height=int(height),
                width=int(width),
                channels=int(channels),
                layout=props.get("cnnspec.input_layout", "nchw"),
                pixel_max=float(props.get("cnnspec.pixel_max", "255.0")),
                rescale=float(props.get("cnnspec.rescale", "1.0")),
                mean=normalize["mean"] if normalize else None,
                std=normalize["std"] if normalize else None,
                color_order=props.get("cnnspec.color_order", "rgb"),
                class_names=list(json.loads(props["cnnspec.class_names"])),
                binary=props.get("cnnspec.labels") == "binary",
                threshold=float(props.get("cnnspec.threshold", "0.5")),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise PredictError(f"{path} has damaged cnnspec metadata ({error})") from None

    def load(self, image_path: Path) -> np.ndarray:
        """One image as the model's input, without the batch axis."""
        from PIL import Image, UnidentifiedImageError
        from PIL.Image import DecompressionBombError

        try:
            empty = image_path.stat().st_size == 0
            image = None if empty else Image.open(image_path)
        except FileNotFoundError:
            raise PredictError(f"no such image: {image_path}") from None
        except UnidentifiedImageError:
            raise PredictError(f"{image_path} is not an image Pillow can read") from None
        except OSError as error:
            raise PredictError(f"cannot read {image_path}: {error.strerror or error}") from None
        except (DecompressionBombError, ValueError, SyntaxError, EOFError) as error:
            # A decompression bomb, or a header a plugin rejects in its own way (PPM, SGI and
            # IM headers raise ValueError; SyntaxError and EOFError are Pillow's "not this
            # format" and "too short").
            raise PredictError(
                f"{image_path} cannot be opened as an image ({_line(error)})"
            ) from None
        if image is None:
            raise PredictError(f"{image_path} is empty (0 bytes), not an image")
        mode = "L" if self.channels == 1 else "RGB"
        with image:
            try:
                # As the training scripts' read_image decodes: a large JPEG at a half, a
                # quarter or an eighth of its size, then resized.
                image.draft(mode, (self.width, self.height))
                image.load()
            except (OSError, ValueError, SyntaxError, EOFError) as error:
                # Pillow's decoders on damaged data: OSError ("image file is truncated",
                # decoder errors), ValueError (QOI, DDS, IM), SyntaxError ("broken PNG file").
                raise PredictError(
                    f"{image_path} is a damaged or truncated {image.format} image ({_line(error)})"
                ) from None
            source = f"{image.format} image in mode {image.mode}"
            try:
                picture = image.convert(mode)
                if picture.size != (self.width, self.height):
                    size = (self.width, self.height)
                    picture = picture.resize(size, Image.Resampling.BILINEAR)
            except (ValueError, OSError) as error:
                raise PredictError(
                    f"{image_path} is a {source}, which cannot be converted to "
                    f"{'grayscale' if self.channels == 1 else 'RGB'} ({_line(error)})"
                ) from None
            pixels = np.asarray(picture, dtype=np.float32)
        pixels = pixels.reshape(self.height, self.width, self.channels)
        pixels = pixels * np.float32(self.pixel_max / 255.0 * self.rescale)
        if self.color_order == "bgr":
            pixels = pixels[..., ::-1]
        if self.mean is not None and self.std is not None:
            mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
            pixels = (pixels - mean) / std
        return pixels.transpose(2, 0, 1) if self.layout == "nchw" else pixels


def session_for(
    model_path: Path, provider: str, options: Any = None
) -> tuple[Any, Preprocessing, str]:
    import onnxruntime

    if not model_path.is_file():
        raise PredictError(f"no such model: {model_path}")
    session = _start(onnxruntime, model_path, provider, options)
    props = dict(session.get_modelmeta().custom_metadata_map)
    preprocessing = Preprocessing.from_metadata(props, model_path)
    shape = session.get_inputs()[0].shape
    expected = (
        [preprocessing.channels, preprocessing.height, preprocessing.width]
        if preprocessing.layout == "nchw"
        else [preprocessing.height, preprocessing.width, preprocessing.channels]
    )
    if [d for d in shape[1:]] != expected:
        raise PredictError(
            f"{model_path} takes input {shape[1:]}, but its metadata says {expected}"
        )
    return session, preprocessing, session.get_providers()[0]


def _start(onnxruntime: Any, model_path: Path, provider: str, options: Any = None) -> Any:
    """A session on the requested provider, or for `auto` on the first of TensorRT, CUDA and
    CPU that starts here. A GPU build of onnxruntime lists GPU providers even where their
    libraries are missing, so each is tried quietly and kept only if it really runs."""
    available = onnxruntime.get_available_providers()
    wanted = list(PROVIDERS.values()) if provider == "auto" else [PROVIDERS[provider]]
    candidates = [p for p in wanted if p in available]
    if not candidates:
        raise PredictError(
            f"onnxruntime here has no {PROVIDERS[provider]} (available: {', '.join(available)})"
        )
    onnxruntime.set_default_logger_severity(4)  # failed GPU probes are expected, not news
    failures = _session_errors()
    problem: Exception | None = None
    for candidate in candidates:
        chain = [candidate] if candidate == PROVIDERS["cpu"] else [candidate, PROVIDERS["cpu"]]
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                session = onnxruntime.InferenceSession(str(model_path), options, providers=chain)
        except failures as error:
            problem = error
            continue
        if session.get_providers()[0] == candidate:
            return session
    if problem is not None and "protobuf" in str(problem).lower():
        raise PredictError(f"{model_path} is not an ONNX model")
    if problem is not None:
        raise PredictError(f"onnxruntime cannot load {model_path}: {problem}")
    raise PredictError(f"the {provider} provider does not start on this machine")


def _session_errors() -> tuple[type[Exception], ...]:
    """What onnxruntime raises when a session does not start: its own types (InvalidProtobuf,
    NoSuchFile, InvalidGraph, EPFail, ..., from the compiled module, all plain Exceptions), and
    the ValueError and RuntimeError its Python wrapper raises (a provider it cannot use)."""
    import importlib

    state = importlib.import_module("onnxruntime.capi.onnxruntime_pybind11_state")
    own = [
        value
        for value in vars(state).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]
    return (ValueError, RuntimeError, *own)


def predict(
    model_path: Path, inputs: list[Path], provider: str = "auto", top: int = 3
) -> tuple[Iterator[dict[str, Any] | BadImage], str]:
    """The execution provider that runs, and, lazily and in the order of `inputs` (folders and
    patterns expanded), each image's top-`top` classes or why it has none. A problem with the
    model raises PredictError here, before any image is read."""
    session, preprocessing, ran = session_for(model_path, provider)
    return _outcomes(session, preprocessing, image_inputs(inputs), top), ran


def image_inputs(arguments: Iterable[Path]) -> Iterator[Path | BadImage]:
    """The files to try for these command-line arguments: a file as it is, whatever its suffix;
    a folder as every file under it with an image suffix, recursively, sorted; a pattern that
    names no file (quoted, or left by a shell where it matched nothing) as the files it matches."""
    for argument in arguments:
        try:
            folder, exists = argument.is_dir(), argument.exists()
        except OSError:  # e.g. a folder on the way that may not be searched: loading says so
            folder, exists = False, True
        if folder:
            yield from _folder_images(argument)
        elif exists or not glob.has_magic(str(argument)):
            yield argument
        else:
            matches = sorted(glob.glob(str(argument), recursive=True))
            if not matches:
                yield BadImage(argument, f"no file matches {argument}")
            for match in map(Path, matches):
                yield from _folder_images(match) if match.is_dir() else [match]


def image_suffixes() -> set[str]:
    from PIL import Image

    return {
        suffix
        for suffix, image_format in Image.registered_extensions().items()
        if image_format not in WRITE_ONLY_FORMATS
    }


def _folder_images(folder: Path) -> Iterator[Path | BadImage]:
    suffixes = image_suffixes()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if not files:
        yield BadImage(folder, f"{folder} holds no image files")
    yield from files


def _outcomes(
    session: Any, preprocessing: Preprocessing, inputs: Iterable[Path | BadImage], top: int
) -> Iterator[dict[str, Any] | BadImage]:
    pending: list[tuple[Path, np.ndarray] | BadImage] = []
    loaded = 0
    for item in inputs:
        outcome: tuple[Path, np.ndarray] | BadImage
        if isinstance(item, BadImage):
            outcome = item
        else:
            try:
                outcome = (item, preprocessing.load(item))
            except PredictError as error:
                outcome = BadImage(item, str(error))
        if isinstance(outcome, BadImage) and not pending:
            yield outcome  # nothing before it waits for the model: tell the user now
            continue
        pending.append(outcome)
        loaded += not isinstance(outcome, BadImage)
        if loaded == BATCH_SIZE:
            yield from _classify(session, preprocessing, pending, top)
            pending, loaded = [], 0
    yield from _classify(session, preprocessing, pending, top)


def _classify(
    session: Any,
    preprocessing: Preprocessing,
    pending: list[tuple[Path, np.ndarray] | BadImage],
    top: int,
) -> Iterator[dict[str, Any] | BadImage]:
    """The pending inputs in their order: the loaded images run as one batch."""
    good = [item for item in pending if not isinstance(item, BadImage)]
    rows: Iterator[np.ndarray] = iter([])
    if good:
        batch = np.stack([pixels for _, pixels in good]).astype(np.float32)
        (probabilities,) = session.run(None, {session.get_inputs()[0].name: batch})
        rows = iter(probabilities)
    for item in pending:
        yield (
            item if isinstance(item, BadImage) else _result(preprocessing, item[0], next(rows), top)
        )


def _result(preprocessing: Preprocessing, path: Path, row: np.ndarray, top: int) -> dict[str, Any]:
    names = preprocessing.class_names
    if preprocessing.binary:
        p = float(row[0])
        scores = [1.0 - p, p]
        label = names[1] if p >= preprocessing.threshold else names[0]
    else:
        scores = [float(v) for v in row]
        label = names[int(np.argmax(row))]
    order = np.argsort(scores)[::-1][: max(1, top)]
    return {
        "image": str(path),
        "prediction": label,
        "top": [{"class": names[i], "probability": scores[i]} for i in order],
    }


def _line(error: BaseException) -> str:
    """An exception's message on one line, for an error that must stay one line."""
    return " ".join(str(error).split()) or type(error).__name__
