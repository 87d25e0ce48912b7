"""`cnnspec import package.module:factory --input-size 224x224x3` (or `path/to/file.py:factory`):
the module the factory returns, exported to ONNX inside the command (in eval mode, batch
normalization kept as it is rather than folded into the convolutions, so that the counts stay
PyTorch's), then read as any ONNX file. The export is of one example of the given size: the
shape arithmetic the exporter writes (x.shape, a class token expanded to the batch) folds to
constants for it (cnnspec.importing.onnx_fold), and the reader reads a batch axis as the batch.
The export goes to a buffer, or, for a model whose weights near protobuf's 2 GiB limit on one
message (over 1 GiB; regnet_y_128gf's are 2.6 GB), to a temporary file with its weights as
external data.

A boundary: the user's own code runs here (their module's top level, their factory, their
model's forward under the exporter), and it may raise anything at all. Those three calls, and
only those, catch every Exception, and each says in one line whose code failed and how
(KeyboardInterrupt and SystemExit are not caught); a bug in cnnspec's own code past them
surfaces as one."""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from cnnspec.importing.network import ImportFailure, Network


def is_factory(target: str) -> bool:
    """`package.module:function` or `path/to/file.py:function` (the function may be left out,
    and is then asked for)."""
    location, colon, function = target.rpartition(":")
    if not colon or not (function.isidentifier() or function == ""):
        return False
    if location.lower().endswith(".py"):
        return True
    return all(part.isidentifier() for part in location.split("."))


def read(target: str, input_size: tuple[int, int, int] | None) -> Network:
    # The last colon: a file's path may hold one, a function's name cannot.
    location, _, factory_name = target.rpartition(":")
    if not factory_name:
        raise ImportFailure(f"name the function that builds the model: {location}:function")
    file = Path(location) if location.lower().endswith(".py") else None
    if file is not None and not file.is_file():
        if file.is_dir():
            raise ImportFailure(f"{location} is a directory, not a Python file")
        raise ImportFailure(f"no such file: {location}")
    if input_size is None:
        raise ImportFailure(
            f"importing {target} needs --input-size HxWxC (such as 224x224x3): a PyTorch "
            "module does not say what input it takes"
        )
    try:
        import torch
    except ImportError:
        raise ImportFailure(
            "importing a PyTorch module needs torch: pip install 'cnnspec[pytorch]'"
        ) from None
    try:
        import onnx
    except ImportError:
        raise ImportFailure("importing a PyTorch module needs onnx: pip install onnx") from None
    try:
        module = _load_file(file) if file is not None else _import(location)
    except Exception as error:  # the boundary: the user's module runs, and may raise anything
        raise ImportFailure(f"cannot import {location}: {type(error).__name__}: {error}") from None
    factory = getattr(module, factory_name, None)
    if factory is None:
        raise ImportFailure(f"{location} has no {factory_name}")
    try:
        model = factory()
    except Exception as error:  # the boundary: the user's factory, as above
        raise ImportFailure(f"{target}() failed: {type(error).__name__}: {error}") from None
    if not isinstance(model, torch.nn.Module):
        raise ImportFailure(f"{target}() returned a {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    height, width, channels = input_size
    example = torch.zeros(1, channels, height, width)
    try:
        exported = _export(torch, onnx, model, example)
    except Exception as error:  # the boundary: the user's forward, traced by the exporter
        raise ImportFailure(
            f"PyTorch cannot export {target} to ONNX: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    from cnnspec.importing.onnx_file import network_from_model

    # The learnt initializers: a per-channel multiply by one (ConvNeXt's gamma) is a
    # layer_scale, where a buffer's is a constant rescaling.
    parameters = frozenset(name for name, _ in model.named_parameters())
    network = network_from_model(exported, target, parameters)
    network.name = factory_name
    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(
        b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")
    )
    network.trainable, network.non_trainable = trainable, buffers
    return network


# A model whose weights take more bytes than this is exported to a file: protobuf serializes
# no message over 2 GiB, and the exporter then writes the weights beside the file (ONNX's
# external data), which it can only do for a file, not a buffer.
IN_MEMORY_BYTES = 1 << 30


def _export(torch: Any, onnx: Any, model: Any, example: Any) -> Any:
    """The ONNX model of `model` on `example`: exported to a buffer, or, for a model too large
    for one (regnet_y_128gf's 2.6 GB), to a file in a temporary folder with its weights as
    external data, loaded back with them."""
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    options: dict[str, Any] = {
        "dynamo": False,
        "do_constant_folding": False,
        "input_names": ["image"],
        "opset_version": 20,  # nn.GELU as ONNX's Gelu op, which the reader knows
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if size <= IN_MEMORY_BYTES:
            buffer = io.BytesIO()  # a file object, which the exporter writes to
            torch.onnx.export(model, (example,), buffer, **options)
            return onnx.load_from_string(buffer.getvalue())
        with tempfile.TemporaryDirectory(prefix="cnnspec-import-") as folder:
            path = Path(folder) / "model.onnx"
            torch.onnx.export(model, (example,), str(path), **options)
            return onnx.load(str(path), load_external_data=True)


def _import(module_name: str) -> ModuleType:
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `models:resnet18` from the current folder
    return importlib.import_module(module_name)


def _load_file(file: Path) -> ModuleType:
    """The module in `file`, run as `python file` would: its folder first on the path, so that
    it imports the modules beside it."""
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    # Under its own name, as `tnets:small_net` would import it, unless that name is taken (by
    # an installed package, or another file): then a name of its own.
    name = file.stem
    taken = sys.modules.get(name)
    if taken is not None or not name.isidentifier():
        if taken is not None and getattr(taken, "__file__", None) == str(file.resolve()):
            return taken
        name = f"_cnnspec_factory_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, file.resolve())
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file} as Python")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: dataclasses and pickle look it up there.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
