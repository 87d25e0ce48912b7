"""Rules that cnnspec and the generated scripts share, written once: TensorFlow's `same`
padding, the Keras <-> canonical weight layout, the legacy Keras .h5 reader, and the
learning-rate schedules' formula.

cnnspec imports them (the checker sizes layers with same_pads; the importer reads Keras
weights with keras_h5_arrays and from_keras; the summary prints learning_rate's rates),
and the backends copy their source into the scripts (cnnspec.backends.runtime), which
stay standalone. So this module imports nothing, not even numpy or math: the
conversions use the methods of the arrays they are given, and the reader the h5py file
it is given, and importing it costs `cnnspec check` nothing. Like the scripts' other
runtime code, the functions are unannotated (cnnspec.layers.base gives same_pads its
types)."""


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


# --- Swin's shifted windows (torchvision's ShiftedWindowAttention): the fixed tables of
# the window_attention kind, which the checker, the ONNX export, the importer and both
# scripts build alike. Plain lists, since this module imports nothing.


def window_shift(size, window, shift):
    """The shift a window_attention applies to a map of `size` (H, W): torchvision's
    rule, none along an axis where one window covers the map padded to whole windows."""
    return tuple(
        0 if step >= -(-extent // step) * step else moved
        for extent, step, moved in zip(size, window, shift, strict=True)
    )


def window_index(window):
    """torchvision's relative_position_index, flat: for tokens i and j of a window (row
    by row), the row of the bias table that holds their offset, at i * N + j."""
    height, width = window
    cells = [(row, column) for row in range(height) for column in range(width)]
    return [
        (r1 - r2 + height - 1) * (2 * width - 1) + (c1 - c2 + width - 1)
        for r1, c1 in cells
        for r2, c2 in cells
    ]


def window_coords(window):
    """Swin V2's relative_coords_table, flat ((2h - 1) * (2w - 1) rows of two): each
    offset (dh, dw) of two tokens of a window, in window_index's row order, divided by
    the window's size - 1 (torchvision's, the pretrained window size 0 of the paper),
    times 8, then log-spaced as sign(x) * log2(|x| + 1) / 3."""
    import math  # here, not at the top: the module imports nothing when it is imported

    height, width = window
    found = []
    for dh in range(-(height - 1), height):
        for dw in range(-(width - 1), width):
            for offset, extent in ((dh, height), (dw, width)):
                x = offset / (extent - 1) * 8
                found.append(math.copysign(math.log2(abs(x) + 1), x) / 3 if x else 0.0)
    return found


def window_mask(size, window, shift):
    """torchvision's mask for shifted windows, flat (windows, N, N): -100 between two
    tokens of a window that the cyclic shift brought from different parts of the map,
    0 elsewhere. `size` is the map padded to whole windows, `shift` the one applied."""
    (height, width), (wh, ww), (sh, sw) = size, window, shift
    label = [[0] * width for _ in range(height)]
    count = 0
    # torchvision's three slices per axis, Python's negative bounds included (a shift
    # of 0 makes the last one the whole axis).
    for top, bottom in ((0, -wh), (-wh, -sh), (-sh, None)):
        for left, right in ((0, -ww), (-ww, -sw), (-sw, None)):
            for row in range(height)[top:bottom]:
                for column in range(width)[left:right]:
                    label[row][column] = count
            count += 1
    mask = []
    for row in range(0, height, wh):
        for column in range(0, width, ww):
            cells = [label[row + r][column + c] for r in range(wh) for c in range(ww)]
            mask += [0.0 if a == b else -100.0 for a in cells for b in cells]
    return mask


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


# --- Learning-rate schedules


def learning_rate(step, steps_per_epoch, epochs, kind, lr, **options):
    """The learning rate of optimizer step `step` (0 the first) of a phase of `epochs`
    epochs of `steps_per_epoch` steps each, under the spec's schedule `kind`, from the
    optimizer's rate `lr` and the schedule's options (the Schedule entries of
    cnnspec/sections.py say what each means). Both scripts' schedules take every
    step's rate from here, and `cnnspec summary` the first, peak and last. Warmup,
    cosine, linear and one-cycle change the rate at every step; step and exponential
    at each epoch's first step."""
    import math  # here, not at the top: the module imports nothing when it is imported

    total = steps_per_epoch * epochs
    step = min(step, total - 1)
    epoch = step // steps_per_epoch
    if kind == "step":
        return lr * options["factor"] ** (epoch // options["every"])
    if kind == "exponential":
        return lr * options["rate"] ** epoch
    if kind == "one_cycle":
        # torch.optim.lr_scheduler.OneCycleLR's two cosine phases, from max_lr /
        # div_factor up to max_lr at pct_start of the steps, then down to that start
        # rate / final_div_factor at the last step.
        peak = options["max_lr"]
        start = peak / options["div_factor"]
        turn = options["pct_start"] * total - 1
        if step <= turn:
            high, low, fraction = peak, start, step / turn
        else:
            high, low = start / options["final_div_factor"], peak
            fraction = (step - turn) / max(total - 1 - turn, 1)
        return high + (low - high) / 2 * (math.cos(math.pi * fraction) + 1)
    if kind in ("cosine", "linear"):
        # A linear warmup to lr over the first `warmup` epochs' steps, then the decay.
        warmup = int(options["warmup"] * steps_per_epoch)
        if step < warmup:
            return lr * (step + 1) / warmup
        fraction = (step - warmup) / max(total - warmup, 1)
        if kind == "linear":
            return lr + (options["end_lr"] - lr) * fraction
        low = options["min_lr"]
        return low + (lr - low) * (1 + math.cos(math.pi * fraction)) / 2
    return lr  # constant
