"""The optimizers a `train` or `phase` section takes, with both scripts' emitters."""

from typing import Annotated, ClassVar

from cnnspec.binding import Bound
from cnnspec.codegen import Call, Code
from cnnspec.registry import no_emitter
from cnnspec.schema import Field, Fraction01, Positive


class Optimizer(Bound):
    kind: ClassVar[str]
    positional: ClassVar[tuple[str, ...]] = ("lr",)
    aliases: ClassVar[dict[str, str]] = {"learning_rate": "lr"}
    keras_class: ClassVar[str]
    lr: Positive

    def keras(self) -> Call:
        """The Keras optimizer: the spec's learning rate and every setting that differs from
        the default (the defaults here are Keras's)."""
        options = {
            key: value
            for key, value in self.model_dump().items()
            if key != "lr" and value != type(self).model_fields[key].default
        }
        return Call(self.keras_class, learning_rate=self.lr, **options)

    @no_emitter
    def torch(self, parameters: Code) -> Call:
        """The PyTorch optimizer over `parameters`, with Keras's settings spelled out."""
        raise NotImplementedError(f"optimizer {self.kind!r} has no PyTorch emitter")


class Adam(Optimizer):
    kind: ClassVar[str] = "adam"
    keras_class: ClassVar[str] = "keras.optimizers.Adam"
    lr: Positive = 1e-3
    beta_1: Fraction01 = 0.9
    beta_2: Fraction01 = 0.999
    epsilon: Positive = 1e-7

    def torch(self, parameters: Code) -> Call:
        betas = (self.beta_1, self.beta_2)
        return Call("torch.optim.Adam", parameters, lr=self.lr, betas=betas, eps=self.epsilon)


class AdamW(Optimizer):
    kind: ClassVar[str] = "adamw"
    keras_class: ClassVar[str] = "keras.optimizers.AdamW"
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
        options: dict[str, object] = {"momentum": self.momentum} if self.momentum else {}
        if self.nesterov:
            options["nesterov"] = True
        return Call("torch.optim.SGD", parameters, lr=self.lr, **options)


class RMSprop(Optimizer):
    kind: ClassVar[str] = "rmsprop"
    keras_class: ClassVar[str] = "keras.optimizers.RMSprop"
    lr: Positive = 1e-3
    rho: Fraction01 = 0.9
    momentum: Fraction01 = 0.0
    epsilon: Positive = 1e-7

    def torch(self, parameters: Code) -> Call:
        options = {"momentum": self.momentum} if self.momentum else {}
        return Call(
            "torch.optim.RMSprop",
            parameters,
            lr=self.lr,
            alpha=self.rho,
            eps=self.epsilon,
            **options,
        )


OPTIMIZERS: dict[str, type[Bound]] = {c.kind: c for c in (Adam, AdamW, SGD, RMSprop)}
