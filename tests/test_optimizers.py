"""Optimizer options without a framework (issue 28): `weight_decay`, `clip_norm`, `clip_value`
and `ema` on every optimizer, bound from a spec and written into both scripts by Keras's names
(Keras script) and as AdamW, a step pre-hook and a WeightAverage callback (PyTorch script). The
checker's located errors are tests/diagnostics/train_optimizers.cnn; the scripts' weights, step
by step in Keras and PyTorch, are tests/frameworks/test_optimizer_options.py."""

from __future__ import annotations

import pytest

from cnnspec.backends import backend
from cnnspec.codegen import Code, render
from cnnspec.compiler import compile_text
from cnnspec.ir import Spec
from cnnspec.optimizers import Optimizer


def spec(optimizer: str, phases: str = "") -> Spec:
    text = f"""\
model m {{
  input 8x8x1
  flatten()
  dense(10, activation=softmax)
}}
data {{ source digits }}
train {{
  epochs 2  batch 32
  optimizer {optimizer}
  {phases}
}}
"""
    compilation = compile_text(text, "m.cnn")
    assert compilation.ok and compilation.spec is not None, [
        (d.code, d.message) for d in compilation.diagnostics
    ]
    return compilation.spec


def bound(optimizer: str) -> Optimizer:
    found = spec(optimizer).phases[0].phase.optimizer
    assert found is not None
    return found


def keras(optimizer: str) -> str:
    return render(bound(optimizer).keras())


def torch(optimizer: str) -> str:
    return render(bound(optimizer).torch(Code("params")))


def test_the_options_bind_on_every_optimizer_and_default_to_none() -> None:
    for kind in ("adam", "adamw", "sgd", "rmsprop"):
        plain = bound(kind)
        assert (plain.clip_norm, plain.clip_value, plain.ema) == (None, None, None)
        given = bound(f"{kind}(weight_decay=0.01, clip_norm=2, ema=0.999)")
        assert (given.weight_decay, given.clip_norm, given.ema) == (0.01, 2.0, 0.999)
    assert bound("adamw").weight_decay == 0.004  # Keras's default for AdamW
    assert bound("sgd").weight_decay == 0.0
    # Keras's spellings are errors that name cnnspec's.
    text = spec("adam").source.text.replace("optimizer adam", "optimizer sgd(global_clipnorm=1)")
    [unknown] = compile_text(text, "m.cnn").diagnostics
    assert (
        unknown.code == "E111"
        and unknown.hint == "cnnspec calls Keras's global_clipnorm 'clip_norm'"
    )


def test_keras_gets_its_own_option_names() -> None:
    assert keras("adam") == "keras.optimizers.Adam(learning_rate=0.001)"
    assert keras("sgd(0.1, momentum=0.9, nesterov=true, weight_decay=5e-4)") == (
        "keras.optimizers.SGD(learning_rate=0.1, weight_decay=0.0005, momentum=0.9, nesterov=True)"
    )
    assert keras("rmsprop(clip_norm=1.5, ema=0.99)") == (
        "keras.optimizers.RMSprop(learning_rate=0.001, global_clipnorm=1.5, use_ema=True, "
        "ema_momentum=0.99)"
    )
    assert keras("adam(clip_value=0.5)") == (
        "keras.optimizers.Adam(learning_rate=0.001, clipvalue=0.5)"
    )
    assert keras("adamw") == "keras.optimizers.AdamW(learning_rate=0.001)"
    assert keras("adamw(weight_decay=0)").endswith("weight_decay=0.0)")


def test_pytorch_decays_as_keras_does() -> None:
    """Adam's weight decay is AdamW's in PyTorch (decoupled, as Keras's); SGD's and RMSprop's
    PyTorch weight_decay is L2, so the script decays their weights itself, before the step."""
    assert torch("adam").startswith("torch.optim.Adam(params,")
    assert torch("adam(weight_decay=0.01)") == (
        "torch.optim.AdamW(params, lr=0.001, betas=(0.9, 0.999), eps=1e-07, weight_decay=0.01)"
    )
    for kind in ("sgd", "rmsprop"):
        text = torch(f"{kind}(weight_decay=0.01)")
        assert "weight_decay" not in text
        options = bound(f"{kind}(weight_decay=0.01)").torch_options(Code("optimizer"))
        assert render(options) == "keras_optimizer_options(optimizer, weight_decay=0.01)"
    for kind in ("adam", "adamw"):
        assert bound(f"{kind}(weight_decay=0.01)").torch_options(Code("optimizer")) is None


def test_pytorch_clips_and_averages_through_the_runtime() -> None:
    optimizer = bound("adamw(clip_norm=1, ema=0.999)")
    assert render(optimizer.torch_options(Code("optimizer"))) == (
        "keras_optimizer_options(optimizer, clip_norm=1.0)"
    )
    assert render(optimizer.torch_average(Code("optimizer"))) == ("WeightAverage(optimizer, 0.999)")
    assert optimizer.torch_helpers() == (
        "clip_by_global_norm",
        "keras_optimizer_options",
        "WeightAverage",
    )
    plain = bound("sgd(0.1, momentum=0.9, nesterov=true)")
    assert plain.torch_options(Code("optimizer")) is None
    assert plain.torch_average(Code("optimizer")) is None
    # Only Keras's SGD rule (the rate inside the velocity) is copied in.
    assert plain.torch_helpers() == ("KerasSGD",)
    assert render(plain.torch(Code("params"))) == (
        "KerasSGD(params, lr=0.1, momentum=0.9, nesterov=True)"
    )
    assert bound("sgd(0.1)").torch_helpers() == ()
    assert render(bound("sgd(0.1)").torch(Code("params"))) == "torch.optim.SGD(params, lr=0.1)"
    assert torch("sgd(0.1, momentum=0.9, nesterov=true)") == (
        "KerasSGD(params, lr=0.1, momentum=0.9, nesterov=True)"
    )


def test_scripts_carry_the_options_into_each_phase() -> None:
    """The PyTorch script defines the runtime pieces only when a phase uses them, hooks the
    clipping to that phase's optimizer, and puts its weight average first among its callbacks
    (Keras's fit puts the averages in before any callback's on_train_end)."""
    checked = spec(
        "sgd(0.1, momentum=0.9, weight_decay=5e-4)",
        "phase a { epochs 1 }\n"
        "  phase b { epochs 1  optimizer adam(1e-3, clip_norm=1, ema=0.99)"
        "  early_stopping(monitor=loss, restore_best=true) }",
    )
    script = backend("pytorch").emit(checked, "m.cnn")
    assert "def keras_optimizer_options(" in script
    assert "def clip_by_global_norm(" in script
    assert "class WeightAverage:" in script
    assert "    keras_optimizer_options(optimizer, weight_decay=0.0005)\n" in script
    assert "    keras_optimizer_options(optimizer, clip_norm=1.0)\n" in script
    phase_b = script[script.index("# phase b") :]
    callbacks = phase_b[phase_b.index("callbacks = [") :]
    assert callbacks.index("WeightAverage(optimizer, 0.99)") < callbacks.index("EarlyStopping(")
    keras_script = backend("keras").emit(checked, "m.cnn")
    assert "weight_decay=0.0005" in keras_script
    assert "global_clipnorm=1.0" in keras_script and "use_ema=True" in keras_script

    plain = backend("pytorch").emit(spec("adam"), "m.cnn")
    for name in ("keras_optimizer_options", "clip_by_global_norm", "WeightAverage"):
        assert name not in plain


@pytest.mark.parametrize(
    ("optimizer", "code"),
    [
        ("sgd(0.1, nesterov=true)", "E313"),
        ("sgd(0.1, momentum=0, nesterov=true)", "E313"),
        ("adam(clip_norm=1, clip_value=1)", "E314"),
        ("rmsprop(ema=1)", "E113"),
        ("rmsprop(ema=0)", "E113"),
        ("sgd(weight_decay=-1)", "E113"),
        ("adam(clip_norm=0)", "E113"),
    ],
)
def test_bad_options_are_located_errors(optimizer: str, code: str) -> None:
    text = f"""\
model m {{
  input 8x8x1
  flatten()
  dense(10, activation=softmax)
}}
data {{ source digits }}
train {{ optimizer {optimizer} }}
"""
    compilation = compile_text(text, "m.cnn")
    found = [(d.code, d.span.line) for d in compilation.diagnostics]
    assert found == [(code, 7)]
