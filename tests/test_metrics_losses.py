"""metrics(...) with calls (`f1(average=micro)`, `top_k_accuracy(k=3)`) and focal_loss, without
a framework: how they bind, what the checker says of them, and what each script is built
with. Their numbers against Keras's: tests/frameworks/test_metrics_losses.py."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnspec.backends import backend
from cnnspec.compiler import Compilation, compile_text
from cnnspec.losses import BinaryFocalLoss, FocalLoss, SparseFocalLoss
from cnnspec.metrics import F1, Accuracy, TopKAccuracy

MULTI = "model m { input 8x8x1  flatten()  dense(4, activation=softmax) }"
BINARY = "model m { input 8x8x1  flatten()  dense(1, activation=sigmoid) }"


def compiled(model: str, labels: str, train: str) -> Compilation:
    return compile_text(f"{model}\ndata {{ labels {labels}  validation 0.1 }}\ntrain {{ {train} }}")


def errors(compilation: Compilation) -> list[tuple[str, int, int, str, str | None]]:
    return [
        (d.code, d.span.line, d.span.column, d.message, d.hint)
        for d in compilation.diagnostics
        if d.code.is_error
    ]


def test_metrics_take_names_and_calls_with_arguments() -> None:
    result = compiled(MULTI, "sparse", "metrics(accuracy, f1, top_k_accuracy(k=3), f1(micro))")
    assert errors(result)[0][0] == "E328"  # f1 twice: both would log as f1
    result = compiled(MULTI, "sparse", "metrics(accuracy, f1(micro), top_k_accuracy(3))")
    assert result.ok, errors(result)
    assert result.spec is not None
    metrics = result.spec.train.metrics
    assert metrics.entries == (Accuracy(), F1(average="micro"), TopKAccuracy(k=3))
    assert metrics.names == ("accuracy", "f1", "top_k_accuracy")
    ten = MULTI.replace("dense(4,", "dense(10,")
    defaults = compiled(ten, "sparse", "metrics(f1, top_k_accuracy)")
    assert defaults.ok and defaults.spec is not None
    assert defaults.spec.train.metrics.entries == (F1(average="macro"), TopKAccuracy(k=5))


@pytest.mark.parametrize(
    ("metrics", "column", "message", "hint"),
    [
        ("top_k_accuracy(k=0)", 27, "argument 'k' of top_k_accuracy must be greater than 0", None),
        ("f1(average=mean)", 27, "'macro', 'micro' or 'weighted'", None),
        ("top_k_accuracy(n=2)", 27, "top_k_accuracy has no argument 'n'", None),
        (
            "top_k_categorical_accuracy",
            27,
            "metrics has no top_k_categorical_accuracy",
            "'top_k_accuracy'",
        ),
        ("f1s", 27, "it takes accuracy, auc, precision, recall, f1 or top_k_accuracy", "'f1'"),
    ],
)
def test_a_metric_written_wrong_is_located_at_itself(
    metrics: str, column: int, message: str, hint: str | None
) -> None:
    result = compiled(MULTI, "sparse", f"metrics(accuracy, {metrics})")
    [(code, line, col, text, got_hint)] = errors(result)
    assert (code, line, col) == ("E113", 3, column)
    assert message in text
    assert hint is None or (got_hint is not None and hint in got_hint)


def test_metrics_fit_the_output() -> None:
    [(code, _, column, message, hint)] = errors(
        compiled(BINARY, "binary", "metrics(accuracy, top_k_accuracy(2))")
    )
    assert (code, column) == ("E326", 27)
    assert "one sigmoid unit" in message and hint is not None
    [(code, _, column, message, hint)] = errors(
        compiled(MULTI, "onehot", "metrics(top_k_accuracy)")
    )
    assert (code, column) == ("E327", 17)
    assert "k=5" in message and hint == "use a k smaller than 4"
    assert compiled(MULTI, "onehot", "metrics(top_k_accuracy(3))").ok
    [(code, *_)] = errors(compiled(BINARY, "binary", "metrics(f1, f1(micro))"))
    assert code == "E328"
    assert compiled(BINARY, "binary", "metrics(f1(weighted), auc)").ok


@pytest.mark.parametrize("monitor", ["val_f1", "f1", "val_top_k_accuracy"])
def test_the_new_metrics_can_be_monitored(monitor: str) -> None:
    train = f"metrics(f1, top_k_accuracy(2))  early_stopping(monitor={monitor})"
    assert compiled(MULTI, "sparse", train).ok
    [(code, *_)] = errors(compiled(MULTI, "sparse", f"early_stopping(monitor={monitor})"))
    assert code == "E301"


def test_a_sweep_can_optimise_f1() -> None:
    text = (
        f"{MULTI}\ndata {{ labels sparse  validation 0.1 }}\ntrain {{ batch 32  metrics(f1) }}\n"
        "sweep { objective val_f1  trials 2  space { train.batch  choice(32, 64) } }"
    )
    assert compile_text(text).ok
    assert not compile_text(text.replace("metrics(f1)", "metrics(auc)")).ok


@pytest.mark.parametrize(
    ("model", "labels", "form"),
    [
        (MULTI, "onehot", FocalLoss),
        (MULTI, "sparse", SparseFocalLoss),
        (BINARY, "binary", BinaryFocalLoss),
    ],
)
def test_focal_loss_takes_the_labels_form(model: str, labels: str, form: type) -> None:
    result = compiled(model, labels, "loss focal_loss(gamma=1.5, alpha=0.4, label_smoothing=0.1)")
    assert result.ok, errors(result)
    assert result.spec is not None
    loss = result.spec.train.loss
    assert type(loss) is FocalLoss and loss is not None
    assert type(loss.for_labels(labels)) is form
    assert dict(loss.for_labels(labels)) == {"gamma": 1.5, "alpha": 0.4, "label_smoothing": 0.1}


def test_focal_loss_must_fit_the_output() -> None:
    # Binary labels train one sigmoid unit; the multi-class forms a softmax.
    softmax_one = "model m { input 8x8x1  flatten()  dense(1, activation=softmax) }"
    codes = [d.code for d in compiled(softmax_one, "binary", "loss focal_loss").diagnostics]
    assert "E302" in codes
    sigmoid_many = "model m { input 8x8x1  flatten()  dense(4, activation=sigmoid) }"
    [(code, _, _, message, hint)] = errors(compiled(sigmoid_many, "sparse", "loss focal_loss"))
    assert code == "E302" and "focal_loss needs a softmax output" in message
    assert hint == "give the last layer activation=softmax"
    [(code, *_)] = errors(compiled(MULTI, "sparse", "loss focal_loss(gamma=-1)"))
    assert code == "E113"
    [(code, *_)] = errors(compiled(MULTI, "sparse", "loss focal_loss(alpha=1.5)"))
    assert code == "E113"


def scripts(model: str, labels: str, train: str) -> dict[str, str]:
    result = compiled(model, labels, train)
    assert result.ok and result.spec is not None, errors(result)
    return {name: backend(name).emit(result.spec, "m.cnn") for name in ("keras", "pytorch")}


def flat(code: str) -> str:
    """Code without its whitespace: a call reads the same however it is wrapped."""
    return re.sub(r"\s+|,\)", lambda match: ")" if match[0] == ",)" else "", code)


def test_binary_scripts() -> None:
    built = scripts(BINARY, "binary", "loss focal_loss(gamma=3)  metrics(accuracy, f1)")
    keras = flat(built["keras"])
    assert "keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True,gamma=3.0)" in keras
    # One column: Keras's threshold-less F1Score would call every example positive.
    assert 'keras.metrics.F1Score(average="macro",threshold=0.5,name="f1")' in keras
    assert "SparseF1Score" not in keras and "one_hot_labels" not in keras
    torch = built["pytorch"]
    assert "def metric_f1(probabilities, predicted, targets, mixed=None):" in torch
    assert 'result["f1"] = metric_f1(probabilities, predicted, targets, mixed)' in torch
    assert "(1 - p_t) ** 3.0" in torch
    assert 'METRICS = ["accuracy", "f1"]' in torch


def test_sparse_scripts_bring_their_one_hot_classes() -> None:
    train = "loss focal_loss(label_smoothing=0.1)  metrics(f1(weighted), top_k_accuracy(k=2))"
    built = scripts(MULTI, "sparse", train)
    keras = flat(built["keras"])
    assert keras.count("defone_hot_labels(") == 1
    assert "classSparseCategoricalFocalCrossentropy(" in keras
    assert "loss=SparseCategoricalFocalCrossentropy(label_smoothing=0.1)" in keras
    assert 'SparseF1Score(average="weighted",name="f1")' in keras
    assert 'keras.metrics.SparseTopKCategoricalAccuracy(k=2,name="top_k_accuracy")' in keras
    torch = built["pytorch"]
    assert "LABEL_SMOOTHING = 0.1" in torch
    assert "onehot * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / logits.shape[1]" in torch
    assert "def metric_top_k_accuracy(" in torch
    onehot = flat(scripts(MULTI, "onehot", train)["keras"])
    assert "keras.losses.CategoricalFocalCrossentropy(label_smoothing=0.1)" in onehot
    assert 'keras.metrics.F1Score(average="weighted",name="f1")' in onehot
    assert "SparseF1Score" not in onehot and "one_hot_labels" not in onehot


@pytest.mark.parametrize(("model", "labels"), [(MULTI, "sparse"), (BINARY, "binary")])
def test_scripts_compile_and_lint(model: str, labels: str, tmp_path: Path) -> None:
    metrics = "accuracy, f1, top_k_accuracy(2)" if labels == "sparse" else "accuracy, f1(micro)"
    built = scripts(model, labels, f"loss focal_loss  metrics({metrics})")
    for name, text in built.items():
        ast.parse(text)
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        checked = subprocess.run(
            [
                sys.executable,
                "-m",
                "ruff",
                "check",
                "--isolated",
                "--no-cache",
                "--select",
                "E9,F,E501",
                str(path),
            ],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stdout
