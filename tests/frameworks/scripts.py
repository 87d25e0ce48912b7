"""Helpers for tests that load, build and run generated training scripts."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from itertools import count
from pathlib import Path
from types import ModuleType

import numpy as np

from cnnspec.backends import backend
from cnnspec.compiler import compile_file, compile_text
from cnnspec.ir import Spec

_serial = count()


# Specs with a pretrained backbone are checked at this size in tests (the scripts' --image-size):
# 224x224 VGG16 and ResNet50 would make every parity test slow without testing more.
BACKBONE_TEST_SIZE = 64


def checked_spec(
    text: str | None = None, path: Path | None = None, image_size: int | None = None
) -> Spec:
    size = (image_size, image_size) if image_size else None
    compilation = (
        compile_file(path, size) if path is not None else compile_text(text or "", "t.cnn", size)
    )
    assert compilation.ok and compilation.spec is not None, [
        (d.code, d.message) for d in compilation.diagnostics
    ]
    return compilation.spec


def size_under_test(path: Path) -> int | None:
    """The image size a shipped spec is tested at: BACKBONE_TEST_SIZE for a backbone spec."""
    spec = compile_file(path).spec
    return BACKBONE_TEST_SIZE if spec is not None and spec.model.backbone else None


def shipped_spec(path: Path) -> Spec:
    """A shipped spec as the tests check it: a backbone spec at BACKBONE_TEST_SIZE."""
    return checked_spec(path=path, image_size=size_under_test(path))


def write_script(spec: Spec, directory: Path, backend_name: str = "keras") -> Path:
    module = backend(backend_name)
    path = directory / f"{spec.name}_{next(_serial)}{module.SUFFIX}"
    path.write_text(module.emit(spec, f"{spec.name}.cnn"), encoding="utf-8")
    return path


def load_script(path: Path) -> ModuleType:
    """Import a generated script as a module (its `main` does not run)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered as an import would, so that what the script pickles by reference (its
    # schedule's function, in a resume point) can be found again, as under __main__.
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])


def run_script(path: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        # As a user runs it: the script decides TensorFlow's log level itself.
        env={
            **{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
            "PYTHONHASHSEED": "0",
        },
    )


# What TensorFlow and absl print at start-up on a machine without a GPU, unless held back.
TENSORFLOW_NOISE = (
    "absl::InitializeLog",
    "cudart_stub",
    "cuInit",
    "cpu_feature_guard",
    "oneDNN custom operations",
    "I0000 ",
    "W0000 ",
    "E0000 ",
)


def tensorflow_noise(stderr: str) -> list[str]:
    """The lines of `stderr` that are TensorFlow's start-up logging, not the program's own."""
    return [line for line in stderr.splitlines() if any(n in line for n in TENSORFLOW_NOISE)]


def write_tiny_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """A CIFAR-10 archive in the standard `cifar-10-batches-py` layout (pickled dicts with
    b"data" as (N, 3072) uint8 rows in CHW order and b"labels"), tiny and random."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as stream:
            pickle.dump(batch, stream)
    with open(folder / "batches.meta", "wb") as stream:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, stream)
    return folder


def write_tiny_image_folders(
    root: Path, classes: tuple[str, ...], size: int = 64, per_class: int = 6, seed: int = 0
) -> Path:
    """train/, val/ and test/ folders of class sub-folders holding small grey PNG files, with
    more examples of the last class (an imbalance for class weights to correct)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            count_here = per_class * (2 if index == len(classes) - 1 else 1)
            for number in range(count_here):
                pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / f"{number}.png")
    return root


def run_mirrored(script: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a generated Keras script with `--strategy mirrored` on two logical CPU devices (set
    before TensorFlow starts, hence a driver script of its own)."""
    driver = folder / "mirrored.py"
    argv = [str(script), "--strategy", "mirrored", *args]
    driver.write_text(
        "import runpy, sys\n"
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(\n"
        "    cpu, [tf.config.LogicalDeviceConfiguration()] * 2\n"
        ")\n"
        f"sys.argv = {argv!r}\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    return run_script(driver)
