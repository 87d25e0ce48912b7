"""Learning-rate schedules (`schedule cosine(warmup=1)`), with both scripts' emitters; the
formula of every step's rate is cnnspec.runtime.rules.learning_rate."""

from typing import Annotated, ClassVar

from cnnspec.binding import Bound
from cnnspec.codegen import Call, Code
from cnnspec.schema import Field, Positive


class Schedule(Bound):
    """A learning-rate schedule: `schedule cosine(warmup=1)` in train or a phase. Every
    step's rate is cnnspec.runtime.rules.learning_rate's, from the phase's optimizer's
    rate, its epochs and the training split's batches per epoch (known when the script
    runs); both scripts copy that function. `keras` gives the optimizer's learning_rate,
    `torch` the callback that steps a LambdaLR after every optimizer step."""

    kind: ClassVar[str]

    def options(self, lr: float) -> dict[str, object]:
        """The keyword arguments of learning_rate() for this schedule."""
        return self.model_dump()

    def turning_steps(self, steps_per_epoch: int, epochs: int) -> set[int]:
        """Steps among which the rate is highest: the first, the last, and where the
        schedule turns (every schedule rises or falls steadily between them), so that the
        peak is known without computing every step of a long phase."""
        return {0, steps_per_epoch * epochs - 1}

    def rate_at(self, step: int, steps_per_epoch: int, epochs: int, lr: float) -> float:
        """The rate of optimizer step `step`, as the scripts compute it."""
        from cnnspec.runtime.rules import learning_rate

        options = self.options(lr)
        rate: float = learning_rate(step, steps_per_epoch, epochs, self.kind, lr, **options)
        return rate

    def keras(self, lr: float, epochs: int) -> object:
        """The Keras optimizer's learning_rate: a PhaseSchedule over the phase's steps."""
        steps = Code('len(datasets["train"])')
        return Call("PhaseSchedule", steps, epochs, self.kind, lr, **self.options(lr))

    def torch(self, lr: float, epochs: int) -> Call | None:
        """The PyTorch phase's PhaseSchedule callback (None: the optimizer's rate stays)."""
        steps = Code('len(loaders["train"])')
        options = self.options(lr)
        return Call("PhaseSchedule", Code("optimizer"), steps, epochs, self.kind, lr, **options)


class Constant(Schedule):
    """The optimizer's rate throughout (reduce_lr may still lower it)."""

    kind: ClassVar[str] = "constant"

    def keras(self, lr: float, epochs: int) -> object:
        return lr

    def torch(self, lr: float, epochs: int) -> Call | None:
        return None


class Cosine(Schedule):
    """A linear warmup to the optimizer's rate over `warmup` epochs, then a cosine decay
    to `min_lr` at the phase's end; stepped per batch."""

    kind: ClassVar[str] = "cosine"
    warmup: Annotated[float, Field(ge=0)] = 0.0
    min_lr: Annotated[float, Field(ge=0)] = 0.0

    def turning_steps(self, steps_per_epoch: int, epochs: int) -> set[int]:
        warmup = int(self.warmup * steps_per_epoch)
        return super().turning_steps(steps_per_epoch, epochs) | {warmup - 1, warmup}


class Linear(Schedule):
    """A linear warmup over `warmup` epochs, then a straight line from the optimizer's
    rate to `end_lr` at the phase's end; stepped per batch."""

    kind: ClassVar[str] = "linear"
    warmup: Annotated[float, Field(ge=0)] = 0.0
    end_lr: Annotated[float, Field(ge=0)] = 0.0

    def turning_steps(self, steps_per_epoch: int, epochs: int) -> set[int]:
        warmup = int(self.warmup * steps_per_epoch)
        return super().turning_steps(steps_per_epoch, epochs) | {warmup - 1, warmup}


class OneCycle(Schedule):
    """torch.optim.lr_scheduler.OneCycleLR's: from max_lr / div_factor up to `max_lr` (the
    optimizer's rate when not given) over `pct_start` of the steps, then down to the start
    / final_div_factor, both along a cosine; stepped per batch."""

    kind: ClassVar[str] = "one_cycle"
    positional: ClassVar[tuple[str, ...]] = ("max_lr",)
    max_lr: Positive | None = None
    pct_start: float = Field(default=0.3, gt=0, lt=1)
    div_factor: Positive = 25.0
    final_div_factor: Positive = 1e4

    def options(self, lr: float) -> dict[str, object]:
        return {**self.model_dump(), "max_lr": self.max_lr or lr}

    def turning_steps(self, steps_per_epoch: int, epochs: int) -> set[int]:
        turn = int(self.pct_start * steps_per_epoch * epochs - 1)
        return super().turning_steps(steps_per_epoch, epochs) | {turn, turn + 1}


class Step(Schedule):
    """The optimizer's rate times `factor` after every `every` epochs; stepped per epoch."""

    kind: ClassVar[str] = "step"
    positional: ClassVar[tuple[str, ...]] = ("every", "factor")
    every: Annotated[int, Field(gt=0)]
    factor: float = Field(default=0.1, gt=0, lt=1)


class Exponential(Schedule):
    """The optimizer's rate times `rate` after each epoch; stepped per epoch."""

    kind: ClassVar[str] = "exponential"
    positional: ClassVar[tuple[str, ...]] = ("rate",)
    rate: float = Field(gt=0, le=1)


SCHEDULES: dict[str, type[Bound]] = {
    c.kind: c for c in (Constant, Cosine, OneCycle, Step, Exponential, Linear)
}
