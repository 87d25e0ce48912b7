"""Rules that cnnspec and the generated scripts share, written once: TensorFlow's `same`
padding, the Keras <-> canonical weight layout, and the legacy Keras .h5 reader.

cnnspec imports them (the checker sizes layers with same_pads; the importer reads Keras
weights with keras_h5_arrays and from_keras), and the backends copy their source into
the scripts (cnnspec.backends.runtime), which stay standalone. So this module imports
nothing, not even numpy: the conversions use the methods of the arrays they are given,
and the reader the h5py file it is given, and importing it costs `cnnspec check`
nothing. Like the scripts' other runtime code, the functions are unannotated
(cnnspec.layers.base gives same_pads its types)."""


# --- TensorFlow's `same` padding


def same_pads(size, kernel, stride, dilation):
    """TensorFlow's `same` padding along one axis: (before, after), the odd pixel after.
    With a stride, the amount depends on the input size: the output has ceil(size /
    stride) positions."""
    extent = dilation * (kernel - 1) + 1
    total = max((-(-size // stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


# --- Weights: Keras's layout and cnnspec's canonical one (PyTorch's names and shapes)


def from_keras(value, layout, flattened=None):
    """A Keras weight (an array) in cnnspec's canonical layout. `layout` is its
    entry's (cnnspec.registry.KerasWeight): `conv` (HWIO to OIHW), `depthwise` ((kh,
    kw, C, M) to (C * M, 1, kh, kw)), `dense` ([in, out] to [out, in]), `features` and
    `vector` (as they are), `scalar` (to a (1,) tensor). `flattened` is the (H, W, C)
    map a flatten fed the layer, if one did: its features, which Keras orders (H, W,
    C), go to the canonical (C, H, W)."""
    if layout == "conv":
        return value.transpose(3, 2, 0, 1)
    if layout == "depthwise":
        kh, kw, channels, multiplier = value.shape
        return value.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)
    if layout == "scalar":
        return value.reshape(1)
    if layout in ("dense", "features") and flattened is not None:
        height, width, channels = flattened
        rest = value.shape[1:]
        value = value.reshape(height, width, channels, *rest)
        value = value.transpose(2, 0, 1, *range(3, value.ndim)).reshape(-1, *rest)
    if layout == "dense":
        return value.T
    return value


def to_keras(tensor, layout, shape, flattened=None):
    """The inverse of from_keras: a canonical tensor in the layout of the Keras weight
    of `shape`."""
    if layout == "conv":
        return tensor.transpose(2, 3, 1, 0)
    if layout == "depthwise":
        kh, kw, channels, multiplier = shape
        return tensor.reshape(channels, multiplier, kh, kw).transpose(2, 3, 0, 1)
    if layout == "scalar":
        return tensor.reshape(shape)
    if layout == "dense":
        tensor = tensor.T
    if layout in ("dense", "features") and flattened is not None:
        height, width, channels = flattened
        rest = tensor.shape[1:]
        tensor = tensor.reshape(channels, height, width, *rest)
        tensor = tensor.transpose(1, 2, 0, *range(3, tensor.ndim)).reshape(-1, *rest)
    return tensor


# --- The legacy Keras .h5 file


def keras_h5_arrays(file):
    """[(layer, weight, index, array)] from an open Keras .h5 file (an h5py.File) in the
    format Keras wrote before Keras 3, keras.applications' weight files among them: the
    `layer_names` attribute (in `model_weights` where the file holds a whole model), and
    per layer `weight_names` such as block1_conv1/kernel:0, a dataset each. A model
    inside the model is one group that holds its layers' weights: each weight goes to
    the layer its name says. None where the file has no layer names (Keras 3's
    .weights.h5 stores layers by position)."""

    def text(value):
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    group = file.get("model_weights", file)
    if "layer_names" not in group.attrs:
        return None
    found = []
    for name in map(text, group.attrs["layer_names"]):
        weights = group[name].attrs.get("weight_names", [])
        for index, weight in enumerate(map(text, weights)):
            parts = weight.split(":")[0].split("/")
            layer = parts[-2] if len(parts) > 1 else name
            found.append((layer, parts[-1], index, group[name][weight][()]))
    return found
