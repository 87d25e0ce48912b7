"""`cnnspec predict`: run an exported model on image files with onnxruntime, preprocessing them
as the model's cnnspec metadata says (size, channels, layout, pixel scale, rescale, normalise)."""

from __future__ import annotations

import io
import json
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


class PredictError(Exception):
    """A problem with the model or an image, reported as one line."""


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

        try:
            with Image.open(image_path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                image = image.resize((self.width, self.height), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32)
        except FileNotFoundError:
            raise PredictError(f"no such image: {image_path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise PredictError(f"{image_path} is not a readable PNG or JPEG image") from None
        pixels = pixels.reshape(self.height, self.width, self.channels)
        pixels = pixels * (self.pixel_max / 255.0) * self.rescale
        if self.color_order == "bgr":
            pixels = pixels[..., ::-1]
        if self.mean is not None and self.std is not None:
            pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
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
    problem: Exception | None = None
    for candidate in candidates:
        chain = [candidate] if candidate == PROVIDERS["cpu"] else [candidate, PROVIDERS["cpu"]]
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                session = onnxruntime.InferenceSession(str(model_path), options, providers=chain)
        except Exception as error:  # onnxruntime raises its own exception types
            problem = error
            continue
        if session.get_providers()[0] == candidate:
            return session
    if problem is not None and "protobuf" in str(problem).lower():
        raise PredictError(f"{model_path} is not an ONNX model")
    if problem is not None:
        raise PredictError(f"onnxruntime cannot load {model_path}: {problem}")
    raise PredictError(f"the {provider} provider does not start on this machine")


def predict(
    model_path: Path, images: list[Path], provider: str = "auto", top: int = 3
) -> tuple[list[dict[str, Any]], str]:
    """Top-`top` classes per image, and the execution provider that ran."""
    session, preprocessing, ran = session_for(model_path, provider)
    batch = np.stack([preprocessing.load(path) for path in images]).astype(np.float32)
    (probabilities,) = session.run(None, {session.get_inputs()[0].name: batch})
    names = preprocessing.class_names
    results = []
    for path, row in zip(images, probabilities, strict=True):
        if preprocessing.binary:
            p = float(row[0])
            scores = [1.0 - p, p]
            label = names[1] if p >= preprocessing.threshold else names[0]
        else:
            scores = [float(v) for v in row]
            label = names[int(np.argmax(row))]
        order = np.argsort(scores)[::-1][: max(1, top)]
        results.append(
            {
                "image": str(path),
                "prediction": label,
                "top": [{"class": names[i], "probability": scores[i]} for i in order],
            }
        )
    return results, ran
