"""The layer registry: one entry per layer kind, holding everything the compiler knows about it.

An entry is a model of the layer's arguments (`cnnspec.schema`: defaults and bounds included)
whose methods give its shape rule, parameter rule, MACs and receptive-field step. The grammar never names a
layer: the lowering pass looks calls up here, so adding a layer touches only its module in `cnnspec.layers`.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Literal, Protocol, TypeVar

from cnnspec.binding import Bound, CallValue, bind_value
from cnnspec.codegen import Call, Code
from cnnspec.diagnostics import ErrorCode, did_you_mean
from cnnspec.schema import Before, Field, Problem

Shape = tuple[int, ...]
"""A tensor shape without the batch axis, in Keras order: a map (H, W, C), tokens (N, D) or a
vector (C,)."""


@dataclass(frozen=True, slots=True)
class Params:
    trainable: int = 0
    non_trainable: int = 0

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    def __add__(self, other: "Params") -> "Params":
        return Params(self.trainable + other.trainable, self.non_trainable + other.non_trainable)


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window's effect on the receptive field. `global_` covers the whole input;
    `zoom` enlarges the map (an upsampling), bringing positions `zoom` times closer together,
    counted in whole input pixels (a field's step never falls below one pixel)."""

    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    global_: bool = False
    zoom: tuple[int, int] = (1, 1)


@dataclass(frozen=True, slots=True)
class KerasLayer:
    """One Keras layer a node becomes: `<node><suffix>`, built by `call`."""

    suffix: str
    call: Call


@dataclass(frozen=True, slots=True)
class KerasWeight:
    """One weight of the Keras layer that carries a node's name: Keras's name for it (`kernel`),
    the canonical tensor it is (`<node>.<suffix>`), and how the two layouts differ: `conv`
    (HWIO and OIHW), `depthwise` ((kh, kw, C, M) and (C * M, 1, kh, kw)), `dense` ([in, out]
    and [out, in]), `features` (a vector over the input's features, which follow the canonical
    CHW order after a flatten: see cnnspec.layout), `vector` (the same, a bias) or `scalar`
    (a Keras scalar, such as Normalization's sample count, held as a (1,) tensor)."""

    variable: str
    suffix: str
    layout: Literal["conv", "depthwise", "dense", "features", "vector", "scalar"] = "vector"


# The names the emitters give the extra layers or nodes of one spec layer, which the importers
# and `verify` read back: `<node>_act`, the activation after a convolution or dense layer that
# applies one; `<node>_pad`, the explicit zero padding before a convolution padded by an amount.
ACTIVATION_SUFFIX = "_act"
PADDING_SUFFIX = "_pad"

# Where a node's input goes in a PyTorch activation call: `Call("F.elu", HOLE, alpha=0.5)`.
# A NUL never appears in rendered code otherwise: literal() escapes it inside strings.
HOLE = Code("\0")

# Where a Keras layer's constructor needs the tensor it is applied to (a padding that depends on
# the input's size): the Keras backend puts the input's variable there.
KERAS_INPUT = Code("\1")


@dataclass(frozen=True, slots=True)
class TorchLayer:
    """How a node runs in PyTorch, on NCHW tensors. `module`, if any, is built in `__init__` as
    `self.<node>`; `apply` is the forward expression, a format string over `{module}` (that
    attribute), `{x}` (the first input), `{inputs[i]}` (the i-th) and `{total}` (all inputs
    joined with ` + `);
    `activation` is then applied to it (see `LayerArgs.torch_function`). `helpers` names helper
    classes the expression or module needs (see the PyTorch backend)."""

    module: Call | None
    apply: str = "{module}({x})"
    activation: "LayerArgs | None" = None
    helpers: tuple[str, ...] = ()


F = TypeVar("F", bound=Callable[..., Any])


def no_emitter(method: F) -> F:
    """Marks a base class's emitter method as the absence of one: an entry that inherits it
    has no emitter for that backend (cnnspec.emitters reports it as Unsupported)."""
    method.__no_emitter__ = True  # type: ignore[attr-defined]
    return method


class OnnxBuilder(Protocol):
    """What an ONNX emitter may do (implemented by cnnspec.export, which imports onnx)."""

    def op(self, op_type: str, inputs: list[str], name: str, **attributes: Any) -> str:
        """Add a node; returns the name of its output."""
        ...

    def weight(self, key: str) -> str:
        """The initializer holding canonical tensor `key`, such as `conv1.weight`."""
        ...

    def constant(
        self,
        name: str,
        values: Sequence[float],
        shape: tuple[int, ...] = (),
        dtype: str = "float32",
    ) -> str:
        """A constant initializer (float32, or int64 for shapes and pads)."""
        ...


class Unsupported(Exception):
    """A backend cannot express a node as written. An entry's emitter raises it with the reason
    and what to do; `emitting` locates it at the node; the CLI reports it as an error at the
    spec's line (E401), never a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.span: Any = None  # the node's Span, once located
        self.backend = ""


@contextmanager
def emitting(backend: str, span: Any) -> Iterator[None]:
    """Around one node's emitter: an Unsupported it raises is located at `span`."""
    try:
        yield
    except Unsupported as error:
        error.span = error.span or span
        error.backend = error.backend or backend
        raise


class ImportGap(Exception):
    """An entry's reader (`from_keras`, `from_onnx`) meets what its kind cannot express: `what`
    the file has, and `why` cnnspec cannot write it. `cnnspec import` lists it with the others,
    at the layer or node it came from."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")
        self.what = what
        self.why = why


@dataclass(frozen=True, slots=True)
class OnnxNode:
    """One ONNX node as an entry's `from_onnx` reads it (cnnspec.importing.onnx_file makes
    these; the entry never touches the onnx package). `attributes` are Python values (strings
    decoded, floats as `float32` gives them); `constants` holds, per input, its value where
    the input is a constant (a numpy array) and None where it is data; `input_shape` is the
    NCHW shape of the node's first input, where the file says it; `inputs` names the inputs
    (a weight of a model cnnspec exported is named `<layer>.<tensor>`)."""

    op_type: str
    attributes: Mapping[str, Any]
    constants: tuple[Any, ...]
    input_shape: tuple[int | None, ...] | None = None
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OnnxSteps:
    """How a kind's `onnx` names the nodes it writes for one layer, declared beside it: the
    last node carries the layer's name, each other node is `<layer>_<step>`. The ONNX reader
    reads the nodes so named back as this kind (`from_onnx_steps`) where their steps lie within
    `every` and include all the steps of one of `signatures`; the layer's input is the first
    input of the first of the steps `inputs` that is there (`""`: the last node)."""

    every: tuple[str, ...]
    signatures: tuple[tuple[str, ...], ...]
    inputs: tuple[str, ...] = ("",)

    def matches(self, steps: set[str]) -> bool:
        return steps <= set(self.every) and any(set(s) <= steps for s in self.signatures)


def float32(value: Any) -> float:
    """A float32 number read from a file (an ONNX attribute or constant) as the shortest
    decimal that is the same float32: 1e-06, not 9.999999974752427e-07, so that it equals the
    number a spec writes (and a default)."""
    import struct

    number = float(value)
    try:
        single = struct.unpack("f", struct.pack("f", number))[0]
    except (OverflowError, struct.error):
        return number
    for digits in range(1, 10):
        text = f"{number:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            return float(text)
    return number


# What a Keras layer reads as when it computes nothing (`Activation("linear")`): the importer
# passes its input on. See `LayerArgs.from_keras`.
IDENTITY: Final = "identity"

KerasReading = dict[str, Any] | tuple[str, dict[str, Any]] | Literal["identity"]
"""What `LayerArgs.from_keras` gives: see there."""


class ShapeError(Exception):
    """A layer cannot be applied to its input. `field` names the argument to point at; `input`,
    for a join, the index of the input that does not fit."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        hint: str | None = None,
        field: str | None = None,
        input: int | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.field = field
        self.input = input


class LayerArgs(Bound):
    """Base of every layer entry. Subclasses declare their arguments as fields."""

    kind: ClassVar[str]
    doc: ClassVar[str] = ""
    is_activation: ClassVar[bool] = False
    # Not a call a spec writes: a join (see `is_join`) or a node the compiler makes.
    internal: ClassVar[bool] = False
    # A join of branches, written as a section: `concat { branch { ... } branch { ... } }`.
    is_join: ClassVar[bool] = False
    # Number of inputs; None for any number (at least two).
    arity: ClassVar[int | None] = 1
    # What Keras and PyTorch call this kind ("BatchNormalization", "BatchNorm2d"): a spec that
    # uses one of those names is told this kind's name.
    framework_names: ClassVar[tuple[str, ...]] = ()
    # Element-wise per position: where its output has its input's shape, each output value is
    # computed from the values at the same position of its inputs (with that position's own
    # weights, and at most statistics over the whole last axis, as softmax and layer_norm),
    # so a reordering of the features passes through it. cnnspec.layout carries a flattened
    # map's order (HWC in Keras, CHW in the canonical weights) through such layers alone; a
    # kind that keeps the shape but moves values between positions (channel_shuffle) is not.
    elementwise: ClassVar[bool] = False
    # Takes tokens (N, D) (cnnspec.layers.tokens): a kind that acts on the last axis alone, the
    # same in every backend on (batch, N, D). The checker refuses tokens to any other (E207).
    takes_tokens: ClassVar[bool] = False

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return inputs[0]

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        return Params()

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        return 0

    def window(self) -> Window | None:
        """None leaves the receptive field unchanged."""
        return None

    # ---- emitters: one per backend. A kind that a backend cannot express raises Unsupported.

    @no_emitter
    def keras(self) -> list[KerasLayer]:
        """The Keras layers this node becomes, in order. The one with an empty suffix carries
        the node's name and its weights; the others are named `<node><suffix>`."""
        raise NotImplementedError(f"layer kind {self.kind!r} has no Keras emitter")

    @no_emitter
    def torch(self, inputs: list[Shape]) -> TorchLayer:
        """The PyTorch module and forward expression of this node, given its input shapes
        (in the checker's (H, W, C) order)."""
        raise NotImplementedError(f"layer kind {self.kind!r} has no PyTorch emitter")

    def l2_factor(self) -> float:
        """The L2 penalty factor on this layer's kernel (`<name>.weight`); 0 for none."""
        return 0.0

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        """The layer's tensors in the canonical layout (see cnnspec.layout): name suffix to
        shape, such as {"weight": (32, 3, 3, 3), "bias": (32,)}."""
        return {}

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        """The weights of the Keras layer carrying the node's name (the one `keras()` gives an
        empty suffix), each with its canonical tensor: every tensor of `weight_shapes`."""
        return ()

    def initial_value(self, suffix: str) -> float | None:
        """How a fresh model starts tensor `suffix`, as Keras initialises it: a constant, or
        None for Glorot-uniform (a kernel)."""
        return 0.0

    @no_emitter
    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        """Add this node to an ONNX graph (NCHW); returns the name of its output."""
        raise NotImplementedError(f"layer kind {self.kind!r} has no ONNX emitter")

    def fused_activation(self) -> "LayerArgs | None":
        """The activation this layer applies to its own output (a convolution's or a dense
        layer's `activation=`), which the emitters write after it as `<node>_act`
        (ACTIVATION_SUFFIX) where a framework has no fused form; None for most kinds."""
        return None

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        """For an activation: apply it to `x` in an ONNX graph."""
        raise NotImplementedError(f"layer kind {self.kind!r} is not an activation")

    def torch_function(self) -> Call:
        """For an activation: the functional call applying it to `HOLE`."""
        raise NotImplementedError(f"layer kind {self.kind!r} is not an activation")

    def keras_name(self) -> str | None:
        """For an activation: its name as Keras's `activation=` string, when that means the
        same; None otherwise (the Keras backend then adds the activation as a layer)."""
        return None

    def keras_helpers(self) -> tuple[str, ...]:
        """Helper functions the emitted Keras code refers to, by name (see the Keras backend)."""
        return ()

    # ---- readers: how `cnnspec import` recognises this kind, the other side of its emitters.
    # The importers build their tables from these (cnnspec.importing.keras_file and onnx_file).
    # What is not a kind (a Keras InputLayer or nested model; the ONNX ops whose reading needs
    # the graph around them, such as Conv's padding) the importers read themselves: their
    # docstrings list it.

    # The Keras layer classes (`class_name` in a saved model's config) this kind reads. A class
    # has one reader (`keras_readers` holds them to it): where one Keras class computes several
    # kinds by its config (ReLU is relu, relu6 or leaky_relu; Dropout is dropout or
    # stochastic_depth; Activation is any activation), one of them declares it (relu, dropout,
    # sigmoid), and its `from_keras` says which kind each layer is.
    keras_classes: ClassVar[tuple[str, ...]] = ()
    # The chains of ONNX ops this kind reads, each op the only reader of the one before, as
    # this kind's `onnx` writes them and as torch.onnx.export writes the same computation.
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = ()
    # The names of the nodes this kind's `onnx` writes for one layer, where it writes several
    # that no op pattern tells apart (layer_norm, written out in a dozen ops): the reader finds
    # a model cnnspec exported by those names. See OnnxSteps and `from_onnx_steps`.
    onnx_steps: ClassVar[OnnxSteps | None] = None

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        """This kind's arguments from the config of a Keras layer of one of `keras_classes`;
        or `(kind, arguments)` where the layer is another kind (a ReLU with max_value=6 is
        relu6); or IDENTITY where it computes nothing (Activation("linear")). An activation
        among the arguments is a kind's name, or an activation entry's instance where it has
        arguments (leaky_relu(alpha=0.2)). Raises ImportGap for a setting no kind expresses."""
        raise NotImplementedError(f"layer kind {cls.kind!r} reads no Keras layer")

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        """This kind's arguments from a chain of ONNX nodes matching one of `onnx_patterns`,
        or None where the chain computes something else (a reshape that is not a shuffle);
        raises ImportGap for what the kind cannot express."""
        raise NotImplementedError(f"layer kind {cls.kind!r} reads no ONNX nodes")

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        """This kind's arguments from the nodes its `onnx` wrote for one layer, by step name
        (`""`: the last node), as `onnx_steps` declares them; None where they compute
        something else. The reader takes the layer's tensors (`<layer>.<tensor>`) itself."""
        raise NotImplementedError(f"layer kind {cls.kind!r} writes no ONNX steps")


REGISTRY: dict[str, type[LayerArgs]] = {}
L = TypeVar("L", bound=type[LayerArgs])


def register(cls: L) -> L:
    assert cls.kind not in REGISTRY, f"layer kind {cls.kind!r} registered twice"
    REGISTRY[cls.kind] = cls
    return cls


def user_kinds() -> list[str]:
    """Layer kinds a spec may call, for completion and did-you-mean."""
    return sorted(k for k, cls in REGISTRY.items() if not cls.internal)


def kind_named_by_framework(name: str) -> str | None:
    """The kind Keras or PyTorch calls `name` (`MaxPooling2D` -> maxpool), if any."""
    return next((k for k, cls in REGISTRY.items() if name in cls.framework_names), None)


def join_kinds() -> list[str]:
    """Kinds written as a section of branches: add, concat, multiply."""
    return sorted(k for k, cls in REGISTRY.items() if cls.is_join)


def token_kinds() -> list[str]:
    """The kinds other than activations that take tokens (N, D), joins among them."""
    return sorted(
        kind
        for kind, cls in REGISTRY.items()
        if cls.takes_tokens and not cls.is_activation and (cls.is_join or not cls.internal)
    )


def activation_kinds() -> list[str]:
    return sorted(k for k, cls in REGISTRY.items() if cls.is_activation)


def keras_readers() -> dict[str, type[LayerArgs]]:
    """The entry that reads each Keras layer class, from the entries' `keras_classes`."""
    readers: dict[str, type[LayerArgs]] = {}
    for cls in REGISTRY.values():
        for name in cls.keras_classes:
            assert name not in readers, f"Keras class {name} read by two kinds"
            readers[name] = cls
    return readers


def onnx_readers() -> dict[str, list[tuple[type[LayerArgs], tuple[str, ...]]]]:
    """The entries that read ONNX node chains, with their patterns, by the chain's first op;
    longer patterns first, so that a chain is read whole before a part of it is."""
    readers: dict[str, list[tuple[type[LayerArgs], tuple[str, ...]]]] = {}
    for cls in REGISTRY.values():
        for pattern in cls.onnx_patterns:
            readers.setdefault(pattern[0], []).append((cls, pattern))
    for entries in readers.values():
        entries.sort(key=lambda entry: -len(entry[1]))
    return readers


def onnx_step_readers() -> list[type[LayerArgs]]:
    """The entries that declare the names of the ONNX nodes they write (`onnx_steps`)."""
    return [cls for cls in REGISTRY.values() if cls.onnx_steps is not None]


# --------------------------------------------------------------------------------------------
# Argument types shared by several layers


def _pair(value: Any) -> Any:
    if isinstance(value, bool):
        raise Problem("must be a positive integer or a pair of them")
    if isinstance(value, int):
        value = (value, value)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return value
    raise Problem("must be a positive integer or a pair of them", hint="for example 3 or (3, 5)")


Pair = Annotated[tuple[int, int], Before(_pair)]
"""An int or an (h, w) pair of positive ints, normalised to a pair."""

PositiveInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Rate = Annotated[float, Field(ge=0, lt=1)]


def _activation(value: Any) -> Any:
    if value is None or isinstance(value, LayerArgs):
        return value
    if value in ("linear", "none"):
        return None
    if isinstance(value, str | CallValue):
        name = value if isinstance(value, str) else value.name
        cls = REGISTRY.get(name)
        if cls is None or not cls.is_activation:
            hint = did_you_mean(name, activation_kinds()) or "one of: " + ", ".join(
                activation_kinds()
            )
            raise Problem(f"unknown activation '{name}'", hint=hint)
        return bind_value(value, cls, name)
    raise Problem("must be an activation such as relu or leaky_relu(alpha=0.1)")


Activation = Annotated[LayerArgs | None, Before(_activation)]
"""`relu`, `leaky_relu(alpha=0.1)`, `linear`: normalised to an activation layer's args or None."""

Padding = Literal["same", "valid"] | Annotated[int, Field(ge=0)]


def activation_name(activation: LayerArgs | None) -> str:
    return activation.kind if activation is not None else "linear"
