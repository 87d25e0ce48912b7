"""Constant folding and shapes for the ONNX reader: every value computed from constants alone,
for the input size the file fixes, and every value's shape.

torch.onnx.export writes a model's shape arithmetic as ops (x.shape[0], x.flatten(2),
x.reshape(B, N, 3, heads, -1), q * head_size ** -0.5, cls_token.expand(B, -1, -1)): Shape of a
value, Gather, Unsqueeze, Concat, Equal, Where, Cast, Sqrt, Div... For the input's fixed size
each of them is a constant, which the reader needs to read the op it feeds (a Reshape's target,
an attention's scale, the class token expanded to the batch). ONNX's shape inference leaves a
Reshape's output without a shape where its target is computed, and the Shape ops after it then
fold to nothing: the two alternate here (infer the shapes, fold what they allow, infer again
with the folded values as constants) until nothing more folds.

A value folded from a Shape holds the export's batch size (1, as torch_module exports), as the
file itself does wherever it fixed the batch: the reader reads a batch axis as the batch, never
as a number."""

from __future__ import annotations

import contextlib
from typing import Any

# A folded value larger than this stays an op (no model computes its weights this big).
_MOST_ELEMENTS = 1 << 26
# The constants given to shape inference as values rather than as shapes alone.
_SMALL = 4096
# Rounds of inference and folding: each uncovers the shapes behind one more computed Reshape
# target; ViT-B/16 needs a handful.
_ROUNDS = 64


def fold(
    model: Any, constants: dict[str, Any]
) -> tuple[dict[str, list[Any]], dict[str, Any], dict[str, str]]:
    """The shapes of `model`'s values (None for an axis nobody knows) and its constants with
    every folded value added (`constants` holds its initializers), and for each folded value
    the initializer it came from (a Transpose of a weight, the class token expanded)."""
    graph = model.graph
    origins: dict[str, str] = {}
    initializers = set(constants)
    shapes: dict[str, list[Any]] = {}
    for _ in range(_ROUNDS):
        shapes = _infer(model, constants) or shapes
        progress = False
        for node in graph.node:
            if not node.output or all(o in constants for o in node.output if o):
                continue
            values = _fold_node(node, constants, shapes)
            if values is None:
                continue
            for name, value in zip(node.output, values, strict=False):
                if name:
                    constants[name] = value
            origins[node.output[0]] = next(
                (origins.get(i, i) for i in node.input if i and origins.get(i, i) in initializers),
                origins.get(node.input[0], node.input[0]) if node.input else node.output[0],
            )
            progress = True
        if not progress:
            break
    return shapes, constants, origins


def _infer(model: Any, constants: dict[str, Any]) -> dict[str, list[Any]] | None:
    """Every value's shape by ONNX's shape inference, on the graph with its folded values as
    constants (the small ones by value, the others, weights, by shape alone)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    kept = [n for n in graph.node if not all(o in constants for o in n.output if o)]
    small, typed = [], []
    for name, value in constants.items():
        if value.size <= _SMALL:
            small.append(numpy_helper.from_array(value, name))
        else:
            element = helper.np_dtype_to_tensor_dtype(value.dtype)
            typed.append(helper.make_tensor_value_info(name, element, list(value.shape)))
    inputs = [i for i in graph.input if i.name not in constants]
    stripped = helper.make_graph(kept, graph.name, [*inputs, *typed], list(graph.output), small)
    bare = helper.make_model(stripped, opset_imports=list(model.opset_import))
    bare.ir_version = model.ir_version
    with contextlib.suppress(onnx.shape_inference.InferenceError, ValueError, TypeError):
        inferred = onnx.shape_inference.infer_shapes(bare, data_prop=True)
        values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
        shapes = {
            v.name: [
                d.dim_value if d.HasField("dim_value") else None
                for d in v.type.tensor_type.shape.dim
            ]
            for v in values
            if v.type.tensor_type.HasField("shape")
        }
        for name, value in constants.items():
            shapes[name] = list(value.shape)
        return shapes
    return None


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _fold_node(node: Any, constants: dict[str, Any], shapes: dict[str, list[Any]]) -> Any:
    """The values of `node`'s outputs where its inputs are constants (a Shape: where its
    input's shape is known), or None."""
    import numpy as np

    attrs = _attributes(node)
    if node.op_type == "Constant":
        return _constant_node(attrs)
    if node.op_type == "Shape":
        shape = shapes.get(node.input[0])
        if shape is None or any(not isinstance(d, int) or d <= 0 for d in shape):
            return None
        start, end = attrs.get("start", 0), attrs.get("end")
        return [np.asarray(shape[start:end], dtype=np.int64)]
    if node.op_type == "Size":
        shape = shapes.get(node.input[0])
        if shape is None or any(not isinstance(d, int) or d <= 0 for d in shape):
            return None
        return [np.asarray(int(np.prod(shape)), dtype=np.int64)]
    values = [constants.get(i) if i else None for i in node.input]
    if not node.input or any(v is None for i, v in zip(node.input, values, strict=True) if i):
        return None
    try:
        with np.errstate(all="ignore"):
            result = compute(node.op_type, attrs, values)
    except (ValueError, TypeError, IndexError, ZeroDivisionError, OverflowError):
        return None
    if result is None:
        return None
    outputs = result if isinstance(result, list) else [result]
    outputs = [np.asarray(o) for o in outputs]
    if any(o.size > _MOST_ELEMENTS for o in outputs):
        return None
    return outputs


def _constant_node(attrs: dict[str, Any]) -> Any:
    import numpy as np
    from onnx import numpy_helper

    if "value" in attrs:
        return [numpy_helper.to_array(attrs["value"])]
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return [np.asarray(attrs[key], dtype=dtype)]
    return None


def compute(op: str, attrs: dict[str, Any], values: list[Any]) -> Any:
    """`op` on constant `values` (None for an absent optional input), as ONNX defines it;
    None for an op not computed here."""
    import numpy as np

    x = values[0]
    match op:
        case "Identity":
            return x
        case "Cast":
            from onnx import helper

            return np.asarray(x).astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
        case "Unsqueeze":
            axes = attrs.get("axes")
            if axes is None and len(values) > 1 and values[1] is not None:
                axes = [int(a) for a in np.asarray(values[1]).reshape(-1)]
            if axes is None:
                return None
            rank = np.ndim(x) + len(axes)
            for axis in sorted(a % rank for a in axes):
                x = np.expand_dims(x, axis)
            return x
        case "Squeeze":
            axes = attrs.get("axes")
            if axes is None and len(values) > 1 and values[1] is not None:
                axes = [int(a) for a in np.asarray(values[1]).reshape(-1)]
            if axes is None:
                return np.squeeze(x)
            return np.squeeze(x, axis=tuple(a % np.ndim(x) for a in axes))
        case "Transpose":
            return np.transpose(x, attrs.get("perm"))
        case "Reshape":
            return reshape(x, values[1], attrs.get("allowzero", 0))
        case "Flatten":
            axis = attrs.get("axis", 1) % max(np.ndim(x), 1)
            return np.reshape(x, (int(np.prod(np.shape(x)[:axis])), -1))
        case "Concat":
            return np.concatenate([np.asarray(v) for v in values], axis=attrs.get("axis", 0))
        case "Gather":
            indices = np.asarray(values[1])
            axis = attrs.get("axis", 0) % np.ndim(x)
            indices = np.where(indices < 0, indices + np.shape(x)[axis], indices)
            return np.take(x, indices, axis=axis)
        case "Slice":
            return slice_(x, values[1:])
        case "Split":
            return split(x, attrs, values[1] if len(values) > 1 else None)
        case "Expand":
            shape = tuple(int(d) for d in np.asarray(values[1]).reshape(-1))
            return np.broadcast_to(x, np.broadcast_shapes(np.shape(x), shape)).copy()
        case "ConstantOfShape":
            from onnx import numpy_helper

            fill = attrs.get("value")
            filler = numpy_helper.to_array(fill) if fill is not None else np.zeros(1, np.float32)
            shape = tuple(int(d) for d in np.asarray(x).reshape(-1))
            return np.full(shape, filler.reshape(-1)[0], dtype=filler.dtype)
        case "Range":
            start, limit, delta = (np.asarray(v).reshape(()).item() for v in values[:3])
            return np.arange(start, limit, delta, dtype=np.asarray(values[0]).dtype)
        case "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Pow" | "Max" | "Min":
            return _arithmetic(op, attrs, values)
        case "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual":
            compare = {
                "Equal": np.equal,
                "Less": np.less,
                "Greater": np.greater,
                "LessOrEqual": np.less_equal,
                "GreaterOrEqual": np.greater_equal,
            }[op]
            return compare(values[0], values[1])
        case "Not":
            return np.logical_not(x)
        case "And":
            return np.logical_and(values[0], values[1])
        case "Or":
            return np.logical_or(values[0], values[1])
        case "Where":
            return np.where(values[0], values[1], values[2])
        case "Trilu":
            k = (
                int(np.asarray(values[1]).reshape(()))
                if len(values) > 1 and values[1] is not None
                else 0
            )
            return np.triu(x, k) if attrs.get("upper", 1) else np.tril(x, k)
        case "Neg":
            return np.negative(x)
        case "Abs":
            return np.abs(x)
        case "Sqrt":
            return np.sqrt(x)
        case "Reciprocal":
            return np.reciprocal(x)
        case "Floor":
            return np.floor(x)
        case "Ceil":
            return np.ceil(x)
        case "Exp":
            return np.exp(x)
        case "Log":
            return np.log(x)
    return None


def _arithmetic(op: str, attrs: dict[str, Any], values: list[Any]) -> Any:
    import numpy as np

    if op in ("Max", "Min"):
        reduce = np.maximum if op == "Max" else np.minimum
        result = np.asarray(values[0])
        for value in values[1:]:
            result = reduce(result, value)
        return result
    a, b = np.asarray(values[0]), np.asarray(values[1])
    dtype = np.result_type(a, b)
    match op:
        case "Add":
            result = a + b
        case "Sub":
            result = a - b
        case "Mul":
            result = a * b
        case "Div":
            if np.issubdtype(dtype, np.integer):
                # ONNX divides integers truncating toward zero (numpy's // floors).
                result = np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))
            else:
                result = a / b
        case "Mod":
            result = np.fmod(a, b) if attrs.get("fmod", 0) else np.mod(a, b)
        case _:  # Pow
            result = np.power(a, b)
            return result.astype(a.dtype)
    return np.asarray(result).astype(dtype)


def reshape(x: Any, target: Any, allowzero: int = 0) -> Any:
    """ONNX's Reshape: a 0 in `target` keeps the input's axis (unless allowzero), -1 is
    inferred."""
    import numpy as np

    shape = [int(d) for d in np.asarray(target).reshape(-1)]
    if not allowzero:
        shape = [np.shape(x)[i] if d == 0 else d for i, d in enumerate(shape)]
    return np.reshape(x, shape)


def slice_(x: Any, parameters: list[Any]) -> Any:
    """ONNX's Slice (opset 10 on: starts, ends, axes and steps as inputs)."""
    import numpy as np

    starts, ends, axes, steps = [*parameters, None, None, None][:4]
    starts_ = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends_ = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes_ = (
        [int(v) for v in np.asarray(axes).reshape(-1)]
        if axes is not None
        else list(range(len(starts_)))
    )
    steps_ = [int(v) for v in np.asarray(steps).reshape(-1)] if steps is not None else None
    index: list[Any] = [slice(None)] * np.ndim(x)
    for position, axis in enumerate(axes_):
        step = steps_[position] if steps_ is not None else 1
        size = np.shape(x)[axis]
        start, end = starts_[position], ends_[position]
        # Python's slicing clamps as ONNX does, save for the huge ends torch writes for "to
        # the end", which Python takes as they are; and a negative step's end past the start.
        if step < 0 and end < -size:
            end = None  # type: ignore[assignment]
        index[axis % np.ndim(x)] = slice(start, end, step)
    return np.asarray(x)[tuple(index)]


def split(x: Any, attrs: dict[str, Any], sizes: Any) -> list[Any] | None:
    import numpy as np

    axis = attrs.get("axis", 0) % np.ndim(x)
    if sizes is None:
        sizes = attrs.get("split")
    if sizes is None:
        count = attrs.get("num_outputs")
        if count is None:
            return None
        length = np.shape(x)[axis]
        each = -(-length // count)
        sizes = [min(each, length - each * i) for i in range(count)]
    bounds = np.cumsum([int(s) for s in np.asarray(sizes).reshape(-1)])[:-1]
    return list(np.split(x, bounds, axis=axis))
