"""Optimizer options in the generated scripts (issue 28): from the same starting weights and
batches, a few optimizer steps with `weight_decay` (sgd with momentum, rmsprop, adam), `clip_norm`,
`clip_value` and `ema` change the weights alike in the Keras script (its optimizer as emitted, in
fit) and the PyTorch script (its optimizer, keras_optimizer_options and WeightAverage as emitted,
in its run_epoch); the PyTorch phase puts the averages in before the other callbacks' end (as
Keras's fit does), and a PyTorch run stopped and resumed with `ema` ends with the weights of one
that was never stopped."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from safetensors.numpy import load_file  # noqa: E402

from cnnspec.codegen import Code, render  # noqa: E402
from cnnspec.optimizers import Optimizer  # noqa: E402
from tests.frameworks.scripts import checked_spec, load_script, write_script  # noqa: E402

pytestmark = pytest.mark.frameworks

BATCH, STEPS = 8, 4


def spec_text(optimizer: str, epochs: int = 2) -> str:
    return f"""\
model tiny {{
  input 8x8x1
  conv2d(3, kernel=3, padding=same, activation=relu)
  batchnorm()
  flatten()
  dense(10, activation=softmax)
}}
data {{ source digits  labels sparse  validation 0.2 }}
train {{
  epochs {epochs}  batch 16
  optimizer {optimizer}
}}
"""


def bound(optimizer: str) -> Optimizer:
    found = checked_spec(spec_text(optimizer)).phases[0].phase.optimizer
    assert found is not None
    return found


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType, Path]:
    """Both scripts of a spec whose optimizer needs every runtime piece, imported, and the
    Keras model's first weights in cnnspec's layout, which both load."""
    folder = tmp_path_factory.mktemp("optimizers")
    # Two phases, so that the PyTorch script holds every runtime piece: the options, the
    # average, and Keras's SGD (with momentum) and RMSprop rules.
    text = spec_text("sgd(0.1, momentum=0.9, weight_decay=0.01, clip_norm=1, ema=0.9)")
    end = text.rindex("}")  # the train section's
    phases = "  phase first { epochs 1 }\n  phase second { epochs 1  optimizer rmsprop }\n"
    spec = checked_spec(text[:end] + phases + text[end:])
    keras_script = load_script(write_script(spec, folder, "keras"))
    torch_script = load_script(write_script(spec, folder, "pytorch"))
    keras.utils.set_random_seed(0)
    start = folder / "start.safetensors"
    keras_script.export_weights(keras_script.build_model(), start)
    return keras_script, torch_script, start


def batches() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.normal(0, 2, (BATCH * STEPS, 8, 8, 1)).astype("float32")
    return images, rng.integers(0, 10, BATCH * STEPS)


def keras_weights(scripts: tuple[ModuleType, ModuleType, Path], optimizer: str) -> dict[str, Any]:
    keras_script, _, start = scripts
    model = keras_script.build_model()
    keras_script.load_weights(model, start)
    model.compile(
        optimizer=eval(render(bound(optimizer).keras()), {"keras": keras}),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    images, labels = batches()
    model.fit(images, labels, batch_size=BATCH, shuffle=False, epochs=1, verbose=0)
    saved = start.with_name("keras.safetensors")
    keras_script.export_weights(model, saved)
    return load_file(str(saved))


def torch_weights(scripts: tuple[ModuleType, ModuleType, Path], optimizer: str) -> dict[str, Any]:
    """The phase's statements as the script writes them (the optimizer, its options, its
    average), then run_epoch over the batches and the average's end of the phase."""
    _, torch_script, start = scripts
    entry = bound(optimizer)
    net = torch_script.build_model()
    torch_script.load_weights(net, start)
    names = {**vars(torch_script), "params": list(net.parameters())}
    optimizer_ = eval(render(entry.torch(Code("params"))), names)
    names = {**vars(torch_script), "optimizer": optimizer_}
    options = entry.torch_options(Code("optimizer"))
    if options is not None:
        eval(render(options), names)
    average = entry.torch_average(Code("optimizer"))
    callback = eval(render(average), names) if average is not None else None
    images, labels = batches()
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    targets = torch.from_numpy(labels)
    loader = [(pixels[i : i + BATCH], targets[i : i + BATCH]) for i in range(0, len(pixels), BATCH)]
    torch_script.run_epoch(net, net.logits, loader, torch.device("cpu"), optimizer_)
    if callback is not None:
        callback.on_train_end(net)
    return {
        key: value.detach().numpy().copy()
        for key, value in net.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }


# The optimizer without the option, and the option: with it, both scripts' weights agree after
# 4 steps, and it changes them by far more than that. Adam gets a tiny epsilon, which Keras
# places against the uncorrected sqrt(v) and torch.optim.Adam against the corrected one: with the
# default 1e-7 the small gradients of the BatchNorm shift make them differ by more than the
# options do. (RMSprop's differed more, which the script's KerasRMSprop, Keras's rule, ended.)
CASES = {
    "sgd_weight_decay": ("sgd(0.1, momentum=0.9, nesterov=true", "weight_decay=0.2"),
    "rmsprop_weight_decay": ("rmsprop(0.01, momentum=0.5", "weight_decay=0.5"),
    "adam_weight_decay": ("adam(0.01, epsilon=1e-12", "weight_decay=0.5"),
    "clip_norm": ("sgd(0.1", "clip_norm=0.05"),
    "clip_value": ("sgd(0.1", "clip_value=0.002"),
    "ema": ("sgd(0.1, momentum=0.9, nesterov=true", "ema=0.6"),
}
TOLERANCE = 2.5e-4  # TensorFlow and PyTorch float32 over 4 steps of a BatchNorm network


@pytest.mark.parametrize("case", list(CASES))
def test_an_option_gives_the_same_weights_in_both_scripts(
    case: str,
    scripts: tuple[ModuleType, ModuleType, Path],
) -> None:
    base, option = CASES[case]
    with_keras = keras_weights(scripts, f"{base}, {option})")
    with_torch = torch_weights(scripts, f"{base}, {option})")
    assert set(with_keras) == set(with_torch)
    for key, value in with_keras.items():
        np.testing.assert_allclose(with_torch[key], value, atol=TOLERANCE, err_msg=key)
    # The option's effect, in the (cheaper) PyTorch script.
    without = torch_weights(scripts, base + ")")
    effect = max(float(np.abs(with_torch[k] - without[k]).max()) for k in with_torch)
    assert effect > 20 * TOLERANCE, f"{option} hardly changes the weights: the test cannot see it"


def test_the_global_norm_is_keras_formula(scripts: tuple[ModuleType, ModuleType, Path]) -> None:
    """Keras's clip_by_global_norm: scaled to the norm exactly (no 1e-6), untouched under it,
    NaN when the norm is not finite."""
    _, torch_script, _ = scripts
    gradients = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    torch_script.clip_by_global_norm(gradients, 1.0)
    assert gradients[0].tolist() == pytest.approx([0.6, 0.0], abs=1e-7)
    assert gradients[1].item() == pytest.approx(0.8, abs=1e-7)
    under = [torch.tensor([0.3, 0.4])]
    torch_script.clip_by_global_norm(under, 1.0)
    assert under[0].tolist() == pytest.approx([0.3, 0.4], abs=1e-7)
    infinite = [torch.tensor([float("inf"), 1.0])]
    torch_script.clip_by_global_norm(infinite, 1.0)
    assert torch.isnan(infinite[0]).all()


def test_the_averages_replace_the_weights_before_the_other_callbacks_end(
    scripts: tuple[ModuleType, ModuleType, Path], tmp_path: Path
) -> None:
    """fit_phase with WeightAverage first: the model ends with the averages (not the last
    step's weights, and BatchNorm's statistics are not averaged), unless EarlyStopping's
    restore_best comes after and restores its best epoch's own weights, as in Keras."""
    _, torch_script, _ = scripts
    images, labels = batches()
    pixels = (np.clip(images, 0, 4) * 4).astype("uint8")
    loaders = torch_script.make_loaders({"train": (pixels, labels)}, BATCH, seed=0)
    for how in ("average", "restore_best"):
        torch.manual_seed(0)
        net = torch_script.build_model()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        average = torch_script.WeightAverage(optimizer, 0.5)
        callbacks = [average]
        stopping = None
        if how == "restore_best":
            stopping = torch_script.EarlyStopping("loss", "min", patience=5, restore_best=True)
            callbacks.append(stopping)
        last: dict[str, Any] = {}

        def remember(optimizer: Any, args: Any, kwargs: Any, last: dict = last) -> None:
            last["weights"] = [p.detach().clone() for p in optimizer.param_groups[0]["params"]]

        optimizer.register_step_post_hook(remember)
        torch_script.fit_phase(
            (net, net.logits),
            loaders,
            optimizer,
            callbacks,
            phase="main",
            epochs=2,
            cap=None,
            device=torch.device("cpu"),
            class_weight=None,
            done=0,
            resume=torch_script.ResumePoint(tmp_path / f"{how}.pt"),
            tracking=torch_script.Tracking(),
            seed=0,
        )
        if stopping is None:
            # The averages, not the last step's weights; BatchNorm's statistics (buffers, not
            # trained) are not averaged: the WeightAverage holds the parameters' only.
            assert average.averages is not None
            for weight, averaged, latest in zip(
                net.parameters(), average.averages, last["weights"], strict=True
            ):
                assert torch.equal(weight, averaged) and not torch.equal(weight, latest)
            assert len(average.averages) == len(list(net.parameters()))
        else:
            assert stopping.best_state is not None
            for key, value in net.state_dict().items():
                assert torch.equal(value, stopping.best_state[key]), key


def test_the_keras_resume_point_saves_the_averages(
    scripts: tuple[ModuleType, ModuleType, Path],
) -> None:
    """The Keras script's ResumePoint saves and restores `model.optimizer.variables`: with
    `ema` those hold one average per trainable weight (BatchNorm's moving statistics have
    none), so --resume carries the averages on there too."""
    keras_script, _, _ = scripts
    model = keras_script.build_model()
    model.compile(optimizer=eval(render(bound("adam(ema=0.99)").keras()), {"keras": keras}))
    model.optimizer.build(model.trainable_variables)  # as ResumePoint.follow does
    averaged = [v.path for v in model.optimizer.variables if v.path.endswith("_average")]
    assert len(averaged) == len(model.trainable_variables) == 6
    assert not any("moving" in path for path in averaged)


def test_a_resumed_pytorch_run_with_ema_ends_as_an_unbroken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 epochs on 120 digits, whole and as 2 then --resume: the same final weights (the
    averages are saved with the phase's callbacks and carry on, not restarted)."""
    spec = checked_spec(spec_text("adam(0.01, ema=0.9)", epochs=3))
    script = load_script(write_script(spec, tmp_path, "pytorch"))
    monkeypatch.chdir(tmp_path)
    common = ["--subset", "120", "--no-tensorboard", "--no-mlflow"]
    script.main(["--output-dir", "whole", *common])
    script.main(["--output-dir", "resumed", "--epochs", "2", *common])
    script.main(["--output-dir", "resumed", "--resume", *common])
    for run in ("whole", "resumed"):
        history = json.loads(Path(run, "metrics.json").read_text())["history"]
        assert [row["epoch"] for row in history] == [1, 2, 3]
    whole = load_file("whole/weights.safetensors")
    resumed = load_file("resumed/weights.safetensors")
    for key, value in whole.items():
        np.testing.assert_allclose(resumed[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


RULES = {
    "sgd_momentum": ("keras.optimizers.SGD(momentum=0.9)", "KerasSGD(params, 0.1, 0.9)"),
    "sgd_nesterov": (
        "keras.optimizers.SGD(momentum=0.9, nesterov=True)",
        "KerasSGD(params, 0.1, 0.9, nesterov=True)",
    ),
    "rmsprop": ("keras.optimizers.RMSprop()", "KerasRMSprop(params, 0.1)"),
    "rmsprop_momentum": (
        "keras.optimizers.RMSprop(rho=0.8, momentum=0.5)",
        "KerasRMSprop(params, 0.1, rho=0.8, momentum=0.5)",
    ),
}
# What PyTorch's own optimizers would do instead: the rate outside the momentum, or eps outside
# the square root.
TORCH_RULES = {
    "sgd_momentum": "torch.optim.SGD(params, 0.1, momentum=0.9)",
    "sgd_nesterov": "torch.optim.SGD(params, 0.1, momentum=0.9, nesterov=True)",
    "rmsprop": "torch.optim.RMSprop(params, 0.1, alpha=0.9, eps=1e-7)",
    "rmsprop_momentum": "torch.optim.RMSprop(params, 0.1, alpha=0.8, eps=1e-7, momentum=0.5)",
}


def _steps(make: Any, rates: list[float], start: np.ndarray, gradients: list) -> np.ndarray:
    weight = torch.nn.Parameter(torch.from_numpy(start.copy()))
    optimizer = make([weight])
    for rate, gradient in zip(rates, gradients, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = rate
        weight.grad = torch.from_numpy(gradient.copy())
        optimizer.step()
    return weight.detach().numpy()


@pytest.mark.parametrize("rule", list(RULES))
def test_the_scripts_sgd_and_rmsprop_step_as_keras_while_the_rate_changes(
    rule: str, scripts: tuple[ModuleType, ModuleType, Path]
) -> None:
    """The PyTorch script's KerasSGD and KerasRMSprop against Keras's own optimizers, over
    steps whose rate changes (a schedule, reduce_lr) and whose gradients range from 1e-6 to
    10: the same weights; PyTorch's SGD and RMSprop end elsewhere."""
    _, torch_script, _ = scripts
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype("float32")
    rates = [0.1, 0.05, 0.2, 0.01, 0.3, 0.02]
    gradients = [
        rng.normal(scale=scale, size=(3, 4)).astype("float32")
        for scale in (1e-6, 1e-3, 10, 1e-6, 1, 0.1)
    ]
    keras_rule, torch_rule = RULES[rule]
    optimizer = eval(keras_rule, {"keras": keras})
    variable = keras.Variable(start)
    for rate, gradient in zip(rates, gradients, strict=True):
        optimizer.learning_rate = rate
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(gradient), variable)])
    expected = np.asarray(variable)
    names = vars(torch_script)
    ours = _steps(
        lambda params: eval(torch_rule, {**names, "params": params}), rates, start, gradients
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    theirs = _steps(
        lambda params: eval(TORCH_RULES[rule], {"torch": torch, "params": params}),
        rates,
        start,
        gradients,
    )
    assert np.abs(theirs - expected).max() > 1e-3, "the test cannot tell the rules apart"
