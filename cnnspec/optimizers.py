"""The optimizers a `train` or `phase` section takes, with both scripts' emitters.

Every optimizer takes Keras's own options besides its rule (Keras 3's base optimizer has them):
`weight_decay` (decoupled, Keras's: each step, before the update, every trainable weight w
becomes w - w * weight_decay * lr), `clip_norm` (the gradients' global norm, Keras's
global_clipnorm), `clip_value` (Keras's clipvalue) and `ema` (Keras's use_ema with that
ema_momentum). The PyTorch script reproduces each with Keras's formula: AdamW where PyTorch's
weight decay is Keras's, and otherwise small runtime definitions (cnnspec/runtime/torch.py:
keras_optimizer_options, a step pre-hook, and WeightAverage, a callback of the phase).
"""

from typing import Annotated, Any, ClassVar

from cnnspec import codes
from cnnspec.binding import Bound
from cnnspec.codegen import Call, Code
from cnnspec.diagnostics import Diagnostics
from cnnspec.registry import no_emitter
from cnnspec.schema import Field, Fraction01, Positive
from cnnspec.source import Span

# The spec's option names as Keras's optimizers spell them (ema is two arguments there).
KERAS_NAMES = {"clip_norm": "global_clipnorm", "clip_value": "clipvalue"}


class Optimizer(Bound):
    kind: ClassVar[str]
    positional: ClassVar[tuple[str, ...]] = ("lr",)
    aliases: ClassVar[dict[str, str]] = {
        "learning_rate": "lr",
        "global_clipnorm": "clip_norm",
        "clipvalue": "clip_value",
        "ema_momentum": "ema",
    }
    keras_class: ClassVar[str]
    # Whether the PyTorch optimizer that torch() writes applies weight_decay as Keras does
    # (AdamW); SGD's and RMSprop's weight_decay is L2 added to the gradient, not Keras's.
    torch_decays: ClassVar[bool] = False
    lr: Positive
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    clip_norm: Positive | None = None
    clip_value: Positive | None = None
    ema: Annotated[float, Field(gt=0, lt=1)] | None = None

    def keras(self) -> Call:
        """The Keras optimizer: the spec's learning rate and every setting that differs from
        the default (the defaults here are Keras's), by Keras's names."""
        options: dict[str, Any] = {}
        for key, value in self.model_dump().items():
            if key == "lr" or value == type(self).model_fields[key].default:
                continue
            if key == "ema":
                options.update(use_ema=True, ema_momentum=value)
            else:
                options[KERAS_NAMES.get(key, key)] = value
        return Call(self.keras_class, learning_rate=self.lr, **options)

    @no_emitter
    def torch(self, parameters: Code) -> Call:
        """The PyTorch optimizer over `parameters`, with Keras's settings spelled out."""
        raise NotImplementedError(f"optimizer {self.kind!r} has no PyTorch emitter")

    def torch_options(self, optimizer: Code) -> Call | None:
        """What the PyTorch script does to `optimizer` before each step, as Keras does in
        its optimizer: clip the gradients, decay the weights (where torch() does not)."""
        options: dict[str, Any] = {}
        if self.weight_decay and not self.torch_decays:
            options["weight_decay"] = self.weight_decay
        if self.clip_norm is not None:
            options["clip_norm"] = self.clip_norm
        if self.clip_value is not None:
            options["clip_value"] = self.clip_value
        return Call("keras_optimizer_options", optimizer, **options) if options else None

    def torch_average(self, optimizer: Code) -> Call | None:
        """The PyTorch phase's weight average (Keras's use_ema), a callback: None without
        `ema`."""
        return None if self.ema is None else Call("WeightAverage", optimizer, self.ema)

    def torch_helpers(self) -> tuple[str, ...]:
        """The definitions of cnnspec/runtime/torch.py that torch, torch_options and
        torch_average call."""
        names: tuple[str, ...] = ()
        if self.torch_options(Code("optimizer")) is not None:
            names += ("clip_by_global_norm", "keras_optimizer_options")
        if self.ema is not None:
            names += ("WeightAverage",)
        return names


class Adam(Optimizer):
    kind: ClassVar[str] = "adam"
    keras_class: ClassVar[str] = "keras.optimizers.Adam"
    torch_decays: ClassVar[bool] = True
    lr: Positive = 1e-3
    beta_1: Fraction01 = 0.9
    beta_2: Fraction01 = 0.999
    epsilon: Positive = 1e-7

    def torch(self, parameters: Code) -> Call:
        betas = (self.beta_1, self.beta_2)
        if self.weight_decay:
            # Keras's weight decay on Adam is AdamW's: decoupled from the gradient.
            return Call(
                "torch.optim.AdamW",
                parameters,
                lr=self.lr,
                betas=betas,
                eps=self.epsilon,
                weight_decay=self.weight_decay,
            )
        return Call("torch.optim.Adam", parameters, lr=self.lr, betas=betas, eps=self.epsilon)


class AdamW(Optimizer):
    kind: ClassVar[str] = "adamw"
    keras_class: ClassVar[str] = "keras.optimizers.AdamW"
    torch_decays: ClassVar[bool] = True
    lr: Positive = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.004
    beta_1: Fraction01 = 0.9
    beta_2: Fraction01 = 0.999
    epsilon: Positive = 1e-7

    def torch(self, parameters: Code) -> Call:
        return Call(
            "torch.optim.AdamW",
            parameters,
            lr=self.lr,
            betas=(self.beta_1, self.beta_2),
            eps=self.epsilon,
            weight_decay=self.weight_decay,
        )


class SGD(Optimizer):
    kind: ClassVar[str] = "sgd"
    keras_class: ClassVar[str] = "keras.optimizers.SGD"
    lr: Positive = 0.01
    momentum: Fraction01 = 0.0
    nesterov: bool = False

    def torch(self, parameters: Code) -> Call:
        if not self.momentum:
            return Call("torch.optim.SGD", parameters, lr=self.lr)
        # Keras's velocity holds the learning rate, torch.optim.SGD's buffer does not: the
        # two part as soon as the rate changes (a schedule, reduce_lr).
        options = {"nesterov": True} if self.nesterov else {}
        return Call("KerasSGD", parameters, lr=self.lr, momentum=self.momentum, **options)

    def torch_helpers(self) -> tuple[str, ...]:
        return (*(("KerasSGD",) if self.momentum else ()), *super().torch_helpers())


class RMSprop(Optimizer):
    kind: ClassVar[str] = "rmsprop"
    keras_class: ClassVar[str] = "keras.optimizers.RMSprop"
    lr: Positive = 1e-3
    rho: Fraction01 = 0.9
    momentum: Fraction01 = 0.0
    epsilon: Positive = 1e-7

    def torch(self, parameters: Code) -> Call:
        # Keras's step divides by sqrt(v + epsilon), torch.optim.RMSprop's by
        # sqrt(v) + eps, and its momentum holds the rate: KerasRMSprop is Keras's rule.
        options = {"momentum": self.momentum} if self.momentum else {}
        return Call(
            "KerasRMSprop",
            parameters,
            lr=self.lr,
            rho=self.rho,
            epsilon=self.epsilon,
            **options,
        )

    def torch_helpers(self) -> tuple[str, ...]:
        return ("KerasRMSprop", *super().torch_helpers())


OPTIMIZERS: dict[str, type[Bound]] = {c.kind: c for c in (Adam, AdamW, SGD, RMSprop)}


def check_optimizer(optimizer: Optimizer, where: Span, diagnostics: Diagnostics) -> None:
    """What the argument model cannot say alone: nesterov needs a momentum (PyTorch's SGD
    refuses it without one; in Keras it would do nothing), and the gradients are clipped one
    way (Keras refuses two). `where` stands for the optimizer when it has no span."""
    if isinstance(optimizer, SGD) and optimizer.nesterov and not optimizer.momentum:
        diagnostics.error(
            codes.NESTEROV_WITHOUT_MOMENTUM,
            "nesterov=true needs a momentum: Nesterov's method looks ahead along the "
            "momentum, and this sgd has none (PyTorch's SGD refuses it)",
            optimizer.span_of("nesterov") or where,
            "give a momentum, e.g. sgd(0.1, momentum=0.9, nesterov=true), or drop nesterov",
        )
    if optimizer.clip_norm is not None and optimizer.clip_value is not None:
        diagnostics.error(
            codes.TWO_CLIPS,
            "an optimizer clips its gradients one way: clip_norm and clip_value were both given",
            optimizer.span_of("clip_value") or where,
            "keep clip_norm (the global norm of all gradients) or clip_value (each value), "
            "not both",
        )
