"""Learning-rate schedules without a framework (issue 28): the one formula both scripts copy
(cnnspec.runtime.rules.learning_rate) at known points for every kind, the `schedule` setting in
train and in phases, what the scripts are given, and the summary's first, peak and last rates.
The checker's located errors are tests/diagnostics/train_schedule.cnn; the scripts' rates,
step by step in Keras and PyTorch, are tests/frameworks/test_schedules.py."""

from __future__ import annotations

import difflib
import json
import random
from math import cos, pi

import pytest

from cnnspec.backends import backend
from cnnspec.compiler import compile_text
from cnnspec.ir import Spec
from cnnspec.runtime.rules import learning_rate
from cnnspec.schedules import SCHEDULES
from cnnspec.summary import render_table, to_json

LR = 0.1
E = 10  # steps per epoch


def spec(schedule: str, phases: str = "", epochs: int = 4) -> Spec:
    text = f"""\
model m {{
  input 8x8x1
  flatten()
  dense(10, activation=softmax)
}}
data {{ source digits }}
train {{
  epochs {epochs}  batch 32
  optimizer sgd(lr={LR})
  {schedule}
  {phases}
}}
"""
    compilation = compile_text(text, "m.cnn")
    assert compilation.ok and compilation.spec is not None, [
        (d.code, d.message) for d in compilation.diagnostics
    ]
    return compilation.spec


def rate(step: int, kind: str, epochs: int = 4, **options: object) -> float:
    return float(learning_rate(step, E, epochs, kind, LR, **options))


def test_constant_is_the_optimizers_rate() -> None:
    assert [rate(s, "constant") for s in (0, 17, 39)] == [LR, LR, LR]


def test_cosine_warms_up_linearly_then_decays_along_a_cosine() -> None:
    options = {"warmup": 1.0, "min_lr": 0.001}
    # Warmup: step s of the first epoch's 10 runs at lr * (s + 1) / 10.
    assert rate(0, "cosine", **options) == pytest.approx(0.01)
    assert rate(4, "cosine", **options) == pytest.approx(0.05)
    assert rate(9, "cosine", **options) == pytest.approx(LR)
    # Then over the remaining 30 steps: min + (lr - min) (1 + cos(pi t / 30)) / 2.
    assert rate(10, "cosine", **options) == LR
    assert rate(25, "cosine", **options) == pytest.approx(0.001 + 0.099 * 0.5)
    last = 0.001 + 0.099 * (1 + cos(pi * 29 / 30)) / 2
    assert rate(39, "cosine", **options) == pytest.approx(last, rel=1e-12)
    assert rate(400, "cosine", **options) == rate(39, "cosine", **options)  # held past the end
    # Without warmup it starts at lr; half an epoch's warmup is 5 steps.
    assert rate(0, "cosine", warmup=0.0, min_lr=0.0) == LR
    assert rate(4, "cosine", warmup=0.5, min_lr=0.0) == pytest.approx(LR)
    assert rate(0, "cosine", warmup=0.5, min_lr=0.0) == pytest.approx(LR / 5)


def test_linear_warms_up_then_falls_in_a_straight_line() -> None:
    options = {"warmup": 1.0, "end_lr": 0.01}
    assert rate(0, "linear", **options) == pytest.approx(0.01)
    assert rate(10, "linear", **options) == LR
    assert rate(25, "linear", **options) == pytest.approx(LR + (0.01 - LR) * 15 / 30)
    assert rate(39, "linear", **options) == pytest.approx(LR + (0.01 - LR) * 29 / 30)


def test_one_cycle_is_onecyclelr_two_cosines() -> None:
    """torch's OneCycleLR (three_phase=False, cos): up from max/25 to max at pct_start * total
    - 1, then down to max/25/1e4 at the last step."""
    options = {"max_lr": 1.0, "pct_start": 0.25, "div_factor": 25.0, "final_div_factor": 1e4}
    assert rate(0, "one_cycle", **options) == pytest.approx(1 / 25)
    assert rate(9, "one_cycle", **options) == pytest.approx(1.0)  # 0.25 * 40 - 1
    assert rate(39, "one_cycle", **options) == pytest.approx(1 / 25 / 1e4)
    middle = 1 / 25 / 1e4 + (1 - 1 / 25 / 1e4) / 2 * (cos(pi * 15 / 30) + 1)
    assert rate(24, "one_cycle", **options) == pytest.approx(middle)


def test_step_and_exponential_change_at_epochs() -> None:
    steps = [rate(s, "step", every=2, factor=0.5) for s in range(40)]
    assert steps == [LR] * 20 + [LR * 0.5] * 20
    exponential = [rate(s, "exponential", rate=0.5) for s in (0, 9, 10, 19, 20, 39)]
    assert exponential == [LR, LR, LR * 0.5, LR * 0.5, LR * 0.25, LR * 0.125]


def test_every_kind_is_a_registry_entry_with_a_formula() -> None:
    assert set(SCHEDULES) == {"constant", "cosine", "one_cycle", "step", "exponential", "linear"}


def test_phases_inherit_trains_schedule_and_may_set_their_own() -> None:
    compiled = spec(
        "schedule cosine(warmup=1)",
        "phase first { epochs 2 }  phase second { epochs 3  schedule step(every=1, factor=0.5) }",
    )
    kinds = [getattr(plan.phase.schedule, "kind", None) for plan in compiled.phases]
    assert kinds == ["cosine", "step"]
    bare = spec("schedule cosine").phases[0].phase.schedule
    assert bare is not None and bare.model_dump() == {"warmup": 0.0, "min_lr": 0.0}
    cycle = spec("schedule one_cycle").phases[0].phase.schedule
    assert cycle is not None and cycle.options(LR)["max_lr"] == LR


def test_the_scripts_build_the_schedule_from_the_phase() -> None:
    compiled = spec("schedule cosine(warmup=1, min_lr=1e-4)", epochs=6)
    keras_script = backend("keras").emit(compiled, "m.cnn")
    assert "def learning_rate(step, steps_per_epoch, epochs, kind, lr, **options):" in keras_script
    assert "class PhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):" in keras_script
    assert (
        'PhaseSchedule(\n        len(datasets["train"]), 6, "cosine", 0.1, warmup=1.0, min_lr=0.0001'
        in keras_script
    )
    assert "keras.optimizers.SGD(learning_rate=schedule)" in keras_script
    torch_script = backend("pytorch").emit(compiled, "m.cnn")
    assert "import functools\n" in torch_script
    assert "class PhaseSchedule(torch.optim.lr_scheduler.LambdaLR):" in torch_script
    assert 'len(loaders["train"]),\n            6,\n            "cosine",' in torch_script
    assert '"schedule": "cosine(warmup=1, min_lr=1e-4)"' in torch_script  # MLflow's params


def test_a_constant_schedule_writes_the_scripts_as_before() -> None:
    """`schedule constant` is the default: the scripts differ only in the spec's text and the
    hashes of it that they record."""
    for name in ("keras", "pytorch"):
        plain = backend(name).emit(spec(""), "m.cnn").splitlines()
        constant = backend(name).emit(spec("schedule constant"), "m.cnn").splitlines()
        changed = [
            line[1:]
            for line in difflib.unified_diff(plain, constant, lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        assert len(changed) == 6, changed
        assert all(
            line.startswith(("# cnnspec-sha256: ", "SPEC_SHA256 = ", '    "  ')) for line in changed
        ), changed


def test_the_summary_prints_each_phases_first_peak_and_last_rate() -> None:
    compiled = spec(
        "schedule cosine(warmup=1, min_lr=1e-4)",
        "phase first { epochs 2  schedule constant }  phase second { epochs 3 }",
    )
    phases = to_json(compiled)["phases"]
    assert "schedule" not in phases[0]
    second = phases[1]["schedule"]
    # The digits' 1,437 training images (less the 20 % test split) at batch 32: 45 steps.
    assert second["steps_per_epoch"] == 45
    assert second["written"] == "cosine(warmup=1, min_lr=1e-4)"
    assert second["first_lr"] == pytest.approx(LR / 45)
    assert second["peak_lr"] == LR
    last = 1e-4 + (LR - 1e-4) * (1 + cos(pi * 89 / 90)) / 2
    assert second["last_lr"] == pytest.approx(last, rel=1e-12)
    json.dumps(second)
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render_table(compiled))
    text = console.export_text()
    assert (
        "phase second: 650 trainable params, 3 epochs; schedule cosine(warmup=1, min_lr=1e-4): "
        "learning rate 0.002222 first, 0.1 peak, 0.0001304 last (45 steps an epoch)"
    ) in text


def test_the_peak_is_found_without_computing_every_step() -> None:
    """`cnnspec summary` reads the peak at the steps where a schedule turns (a phase of a
    million epochs must not take a million times 352 rates); over many small phases, those
    steps hold the same peak as all of them."""
    rng = random.Random(0)
    for _ in range(1500):
        kind = rng.choice(["cosine", "linear", "one_cycle", "step", "exponential"])
        steps, epochs, lr = rng.randint(1, 9), rng.randint(1, 7), rng.uniform(0.01, 1)
        options: dict[str, object] = {
            "cosine": {"warmup": rng.choice([0, 0.5, 1, 2.5]) % epochs, "min_lr": 0.01},
            "linear": {"warmup": rng.choice([0, 0.5, 1]) % epochs, "end_lr": rng.uniform(0, 2)},
            "one_cycle": {"pct_start": rng.uniform(0.05, 0.95)},
            "step": {"every": rng.randint(1, 3), "factor": rng.uniform(0.1, 0.9)},
            "exponential": {"rate": rng.uniform(0.1, 1)},
        }[kind]
        schedule = SCHEDULES[kind].model_validate(options)
        total = steps * epochs
        every = max(schedule.rate_at(s, steps, epochs, lr) for s in range(total))
        turns = [s for s in schedule.turning_steps(steps, epochs) if 0 <= s < total]
        assert max(schedule.rate_at(s, steps, epochs, lr) for s in turns) == every, schedule
