"""A sweep's space without training: trial specs made by writing sampled values into the spec's
text, `cnnspec sweep --dry-run` naming the configurations the checker or a budget rejects, and
the problems that stop a sweep before it starts, each in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnspec.cli import main
from cnnspec.compiler import compile_file, compile_text
from cnnspec.search_space import trial_text
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "sweep_digits.cnn"


def test_a_trial_is_the_spec_with_the_values_written_in_and_no_sweep() -> None:
    spec = compile_file(EXAMPLE).spec
    assert spec is not None and spec.space is not None
    values = {
        "train.optimizer.lr": "0.004",
        "model.width": "16",
        "model.units": "128",
        "model.head_dropout_1.rate": "0.25",
        "augment.shift.width": "0.05",
    }
    text = trial_text(spec.source.text, spec.space, values)
    assert "sweep" not in text.split("augment {")[1]
    assert "adam(lr=0.004)" in text and "let width = 16" in text and "let units = 128" in text
    assert "dropout(0.25)" in text and "shift(0.05)" in text
    assert "# A hyperparameter sweep" in text  # comments stay
    trial = compile_text(text, "trial.cnn")
    assert trial.ok and trial.spec is not None and trial.spec.sweep is None
    dense = trial.spec.model.node("head_dense_1")
    assert dense.layer.units == 128
    assert trial.spec.model.node("features_conv2d_1").layer.filters == 16


def test_the_dry_run_names_what_the_budget_rejects(tmp_path: Path, capsys) -> None:
    pytest.importorskip("optuna")
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(EXAMPLE), "--dry-run", "--trials", "12", "-o", str(out)])
    assert exit.value.code in (0, None)
    lines = capsys.readouterr().out.strip().splitlines()
    rejected = [line for line in lines[:-1] if " rejected " in line]
    assert rejected and all("over the budget of 60,000" in line for line in rejected)
    assert all("model.width=64" in line for line in rejected)  # the widest are too big
    assert lines[-1] == f"12 configurations sampled: {len(rejected)} rejected without training"
    assert not out.exists()  # nothing written, nothing trained


def test_a_checker_rejection_is_the_trials_reason(tmp_path: Path, capsys) -> None:
    pytest.importorskip("optuna")
    spec = tmp_path / "narrow.cnn"
    spec.write_text(
        EXAMPLE.read_text().replace("model.width choice(16, 32, 64)", "model.width int(0, 1)")
    )
    with pytest.raises(SystemExit):
        main(["sweep", str(spec), "--dry-run", "--trials", "6", "-o", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert "rejected" in out and "error" not in out.lower().split("rejected")[0]
    zero = [line for line in out.splitlines() if "model.width=0" in line]
    assert zero and all(
        " rejected " in line and "7:15: argument 'filters' of conv2d must be greater than 0" in line
        for line in zero
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "nosuchdb://x/y"], "cnnspec: error: cannot open the study storage"),
        ([], "has no sweep section"),
    ],
)
def test_a_sweep_that_cannot_start_is_one_line(
    args: list[str], message: str, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("optuna")
    spec = EXAMPLE if args else ROOT / "specs" / "digits.cnn"
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(spec), "-o", str(tmp_path / "s"), *args])
    assert exit.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line


def test_a_space_with_errors_searches_nothing(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "bad.cnn"
    spec.write_text(EXAMPLE.read_text().replace("model.units choice", "model.unit choice"))
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(spec), "--dry-run"])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert "error[E501]: 'model.unit' names no value of the spec" in err
    assert "did you mean 'model.units'?" in err and "nothing searched" in err


def test_a_study_that_searched_a_path_another_way_is_one_line(tmp_path: Path, capsys) -> None:
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="sweep_digits", direction="maximize")
    study.enqueue_trial({"model.width": 1.5})
    study.optimize(lambda trial: trial.suggest_float("model.width", 1.0, 2.0), n_trials=1)
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(EXAMPLE), "--storage", storage, "-o", str(tmp_path / "s")])
    assert exit.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("cnnspec: error: the study sweep_digits searched model.width another")
