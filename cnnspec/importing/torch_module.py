"""`cnnspec import package.module:factory --input-size 224x224x3`: the module the factory
returns, exported to ONNX inside the command (in eval mode, batch normalization kept as it is
rather than folded into the convolutions, so that the counts stay PyTorch's), then read as
any ONNX file."""

from __future__ import annotations

import importlib
import io
import sys
import warnings
from pathlib import Path

from cnnspec.importing.network import ImportFailure, Network


def read(target: str, input_size: tuple[int, int, int] | None) -> Network:
    module_name, _, factory_name = target.partition(":")
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
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `models:resnet18` from the current folder
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ImportFailure(
            f"cannot import {module_name}: {type(error).__name__}: {error}"
        ) from None
    factory = getattr(module, factory_name, None)
    if factory is None:
        raise ImportFailure(f"{module_name} has no {factory_name}")
    try:
        model = factory()
    except Exception as error:
        raise ImportFailure(f"{target}() failed: {type(error).__name__}: {error}") from None
    if not isinstance(model, torch.nn.Module):
        raise ImportFailure(f"{target}() returned a {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    height, width, channels = input_size
    example = torch.zeros(1, channels, height, width)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                do_constant_folding=False,
                input_names=["image"],
                opset_version=18,
            )
    except Exception as error:
        raise ImportFailure(
            f"PyTorch cannot export {target} to ONNX: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    from cnnspec.importing.onnx_file import network_from_model

    network = network_from_model(onnx.load_from_string(buffer.getvalue()), target)
    network.name = factory_name
    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(
        b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")
    )
    network.trainable, network.non_trainable = trainable, buffers
    return network
