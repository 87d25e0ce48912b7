"""Learning-rate schedules in the generated scripts (issue 28): for each schedule kind, the Keras
script's PhaseSchedule (a LearningRateSchedule read at the optimizer's iteration count) and the
PyTorch script's (a LambdaLR stepped after every optimizer step) give the same rate at every
optimizer step of a 2-epoch phase; one-cycle is torch's own OneCycleLR; the PyTorch schedule's
position survives the resume point's save; and a short cosine-with-warmup run trains in both
scripts, logging the same rate at each epoch's end."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from cnnspec.schedules import Schedule  # noqa: E402
from tests.frameworks.scripts import (  # noqa: E402
    checked_spec,
    load_script,
    run_script,
    write_script,
)

pytestmark = pytest.mark.frameworks

LR = 0.05
EPOCHS = 2
STEPS_PER_EPOCH = 7  # digits --subset 200 at batch 32 less the test split: 7 batches or so

SCHEDULES = {
    "cosine": "cosine(warmup=1, min_lr=1e-4)",
    "cosine_half_warmup": "cosine(warmup=0.5)",
    "one_cycle": "one_cycle(max_lr=0.2, pct_start=0.25)",
    "step": "step(every=1, factor=0.5)",
    "exponential": "exponential(rate=0.8)",
    "linear": "linear(warmup=1, end_lr=0.001)",
    "constant": "constant",
}


def spec_text(schedule: str, epochs: int = EPOCHS) -> str:
    return f"""\
model digits_schedule {{
  input 8x8x1
  conv2d(4, padding=same, activation=relu)
  global_avg_pool()
  dense(10, activation=softmax)
}}
data {{ source digits  labels sparse  validation 0.2 }}
train {{
  epochs {epochs}  batch 32
  optimizer sgd(lr={LR}, momentum=0.9)
  schedule {schedule}
}}
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ModuleType, ModuleType]]:
    """Both scripts of the spec with each schedule, imported."""
    folder = tmp_path_factory.mktemp("schedules")
    built = {}
    for name, schedule in SCHEDULES.items():
        spec = checked_spec(spec_text(schedule))
        keras_script = load_script(write_script(spec, folder, "keras"))
        torch_script = load_script(write_script(spec, folder, "pytorch"))
        built[name] = (keras_script, torch_script)
    return built


def entry(name: str) -> Schedule:
    spec = checked_spec(spec_text(SCHEDULES[name]))
    schedule = spec.phases[0].phase.schedule
    assert schedule is not None
    return schedule


def torch_rates(script: ModuleType, schedule: Schedule, steps: int) -> list[float]:
    """The PyTorch script's rate at each optimizer step (without training: SGD steps over a
    parameter with a zero gradient), as its phase code builds the schedule."""
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([parameter], lr=LR, momentum=0.9)
    callback = script.PhaseSchedule(
        optimizer, STEPS_PER_EPOCH, EPOCHS, schedule.kind, LR, **schedule.options(LR)
    )
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        parameter.grad = torch.zeros(3)
        optimizer.step()
    assert callback.last_epoch == steps
    return rates


def keras_rates(script: ModuleType, schedule: Schedule, steps: int) -> list[float]:
    rate = script.PhaseSchedule(STEPS_PER_EPOCH, EPOCHS, schedule.kind, LR, **schedule.options(LR))
    return [float(rate(np.int64(step))) for step in range(steps)]


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n != "constant"])
def test_keras_and_pytorch_rates_are_equal_at_every_step(
    scripts: dict[str, tuple[ModuleType, ModuleType]], name: str
) -> None:
    keras_script, torch_script = scripts[name]
    schedule = entry(name)
    steps = STEPS_PER_EPOCH * EPOCHS
    expected = [schedule.rate_at(s, STEPS_PER_EPOCH, EPOCHS, LR) for s in range(steps)]
    from_keras = keras_rates(keras_script, schedule, steps)
    from_torch = torch_rates(torch_script, schedule, steps)
    np.testing.assert_allclose(from_keras, from_torch, rtol=1e-7)
    np.testing.assert_allclose(from_torch, expected, rtol=1e-12)
    assert len(set(from_torch)) > 1  # it does change


def test_the_keras_optimizer_reads_the_schedule_at_its_iteration_count(
    scripts: dict[str, tuple[ModuleType, ModuleType]],
) -> None:
    """What Keras applies at step k is the schedule at the optimizer's iterations, which the
    resume point saves and restores with the optimizer's variables."""
    import keras

    keras_script, _ = scripts["cosine"]
    schedule = entry("cosine")
    rate = keras_script.PhaseSchedule(
        STEPS_PER_EPOCH, EPOCHS, schedule.kind, LR, **schedule.options(LR)
    )
    optimizer = keras.optimizers.SGD(learning_rate=rate, momentum=0.9)
    variable = keras.Variable(np.zeros(3, "float32"))
    optimizer.build([variable])
    seen = []
    for _ in range(STEPS_PER_EPOCH * EPOCHS):
        seen.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        optimizer.apply([keras.ops.zeros(3)], [variable])
    expected = [schedule.rate_at(s, STEPS_PER_EPOCH, EPOCHS, LR) for s in range(len(seen))]
    np.testing.assert_allclose(seen, expected, rtol=1e-7)
    # Saved with a model (ModelCheckpoint): the schedule serialises and comes back.
    config = keras.optimizers.schedules.serialize(rate)
    again = keras.optimizers.schedules.deserialize(config)
    assert float(again(np.int64(3))) == float(rate(np.int64(3)))


def test_one_cycle_is_torchs_one_cycle(scripts: dict[str, tuple[ModuleType, ModuleType]]) -> None:
    _, torch_script = scripts["one_cycle"]
    schedule = entry("one_cycle")
    steps = STEPS_PER_EPOCH * EPOCHS
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([parameter], lr=LR)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.2, total_steps=steps, pct_start=0.25, cycle_momentum=False
    )
    expected = []
    for _ in range(steps):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    np.testing.assert_allclose(torch_rates(torch_script, schedule, steps), expected, rtol=1e-12)


def test_the_pytorch_schedule_carries_on_from_the_resume_point(
    scripts: dict[str, tuple[ModuleType, ModuleType]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ResumePoint saves a callback's vars less its optimizer (pickled by torch.save) and
    restores them into the new run's callback, after the optimizer's state."""
    _, torch_script = scripts["cosine"]
    # A script runs as __main__, where pickle finds its learning_rate; imported, by its name.
    monkeypatch.setitem(sys.modules, torch_script.__name__, torch_script)
    schedule = entry("cosine")
    steps = STEPS_PER_EPOCH * EPOCHS
    whole = torch_rates(torch_script, schedule, steps)

    def fresh() -> tuple[torch.optim.Optimizer, object, torch.nn.Parameter]:
        parameter = torch.nn.Parameter(torch.zeros(3))
        optimizer = torch.optim.SGD([parameter], lr=LR, momentum=0.9)
        callback = torch_script.PhaseSchedule(
            optimizer, STEPS_PER_EPOCH, EPOCHS, schedule.kind, LR, **schedule.options(LR)
        )
        return optimizer, callback, parameter

    optimizer, callback, parameter = fresh()
    for _ in range(STEPS_PER_EPOCH):
        parameter.grad = torch.zeros(3)
        optimizer.step()
    saved = pickle.loads(
        pickle.dumps(
            (
                optimizer.state_dict(),
                {k: v for k, v in vars(callback).items() if k != "optimizer"},
            )
        )
    )
    optimizer, callback, parameter = fresh()
    optimizer.load_state_dict(saved[0])
    vars(callback).update(saved[1])
    rates = []
    for _ in range(STEPS_PER_EPOCH, steps):
        rates.append(optimizer.param_groups[0]["lr"])
        parameter.grad = torch.zeros(3)
        optimizer.step()
    np.testing.assert_allclose(rates, whole[STEPS_PER_EPOCH:], rtol=1e-12)


def test_a_spec_without_a_schedule_holds_no_schedule_code(
    scripts: dict[str, tuple[ModuleType, ModuleType]],
) -> None:
    for script in scripts["constant"]:
        assert not hasattr(script, "PhaseSchedule")
        assert not hasattr(script, "learning_rate")


def test_a_cosine_run_with_warmup_trains_resumes_and_logs_the_same_rates_in_both(
    tmp_path: Path,
) -> None:
    """2 epochs of 3 on 200 digits: each epoch's end logs the rate of the next step; after the
    1-epoch warmup that is the optimizer's rate exactly, then the cosine's (the --epochs cap
    cuts the schedule short, it does not compress it). Keras and PyTorch log the same, and a
    PyTorch run stopped after epoch 1 and resumed logs what the whole run does (Keras's
    schedule follows its optimizer's iteration count, which its resume point restores: see
    test_the_keras_optimizer_reads_the_schedule_at_its_iteration_count; a Keras run is
    three times a PyTorch one's cost here)."""
    spec = checked_spec(spec_text("cosine(warmup=1, min_lr=1e-4)", epochs=3))
    logged = {}
    for backend in ("keras", "pytorch"):
        script = write_script(spec, tmp_path, backend)
        runs = {}
        plans = {"whole": [["--epochs", "2"]]}
        if backend == "pytorch":
            plans["resumed"] = [["--epochs", "1"], ["--epochs", "2", "--resume"]]
        for how, calls in plans.items():
            out = tmp_path / f"{backend}_{how}"
            for flags in calls:
                result = run_script(
                    script,
                    *("--output-dir", str(out), "--subset", "200", "--no-tensorboard", *flags),
                )
                assert result.returncode == 0, result.stderr[-3000:]
            history = json.loads((out / "metrics.json").read_text())["history"]
            assert [row["epoch"] for row in history] == [1, 2]
            assert all(np.isfinite(row["loss"]) for row in history)
            runs[how] = [row["learning_rate"] for row in history]
        if "resumed" in runs:
            assert runs["resumed"] == pytest.approx(runs["whole"], rel=1e-12), backend
        logged[backend] = runs["whole"]
    np.testing.assert_allclose(logged["keras"], logged["pytorch"], rtol=1e-6)
    after_warmup, after_two = logged["pytorch"]
    assert after_warmup == pytest.approx(LR, rel=1e-12)
    assert 1e-4 < after_two < LR
