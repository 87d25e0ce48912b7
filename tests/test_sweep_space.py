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
    capsys.readouterr()  # Optuna's own log of the study above, in a process that has not quietened it
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(EXAMPLE), "--storage", storage, "-o", str(tmp_path / "s")])
    assert exit.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("cnnspec: error: the study sweep_digits searched model.width another")


def _tight(tmp_path: Path, budget: str) -> Path:
    """The example with another parameter budget (`100`: every configuration is over it)."""
    spec = tmp_path / "sweep_digits.cnn"
    spec.write_text(EXAMPLE.read_text().replace("max_params 60000", f"max_params {budget}"))
    return spec


def test_one_is_singular_in_the_sweeps_messages(tmp_path: Path, capsys) -> None:
    pytest.importorskip("optuna")
    spec = _tight(tmp_path, "100")
    with pytest.raises(SystemExit):
        main(["sweep", str(spec), "--dry-run", "--trials", "1"])
    assert capsys.readouterr().out.splitlines()[-1] == (
        "1 configuration sampled: 1 rejected without training"
    )
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(spec), "--trials", "1", "-o", str(tmp_path / "s")])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(
        "sweep sweep_digits: 1 trial, 1 worker, val_accuracy (max), study in "
    )


def test_a_study_keeps_the_backend_it_trained_with(tmp_path: Path, capsys) -> None:
    optuna = pytest.importorskip("optuna")
    spec = _tight(tmp_path, "100")  # every trial rejected before training: nothing to train
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    sweep = ["sweep", str(spec), "--storage", storage, "--trials", "1", "-o", str(tmp_path / "s")]
    with pytest.raises(SystemExit) as exit:
        main([*sweep, "--backend", "pytorch"])
    assert exit.value.code == 0
    study = optuna.load_study(study_name="sweep_digits", storage=storage)
    assert study.user_attrs["backend"] == "pytorch"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main([*sweep, "--backend", "keras"])
    assert exit.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"cnnspec: error: the study sweep_digits in {storage} trained its trials with "
        "--backend pytorch: resume it with --backend pytorch, or sweep with --backend keras "
        "into another -o or --storage"
    )
    assert len(optuna.load_study(study_name="sweep_digits", storage=storage).trials) == 1


# The script a fake backend writes: it reports one epoch's val_accuracy, taken in turn from
# VALUES, as the generated scripts do (epochs.jsonl, then metrics.json).
FAKE_SCRIPT = """\
import json, sys
from pathlib import Path

run = Path(sys.argv[sys.argv.index("--output-dir") + 1])
run.mkdir(parents=True, exist_ok=True)
rows = [{{"epoch": 1, "val_accuracy": {value}}}]
(run / "epochs.jsonl").write_text("".join(json.dumps(row) + "\\n" for row in rows))
(run / "metrics.json").write_text(json.dumps({{"history": rows}}))
"""


def test_a_pruned_trial_says_why(tmp_path: Path, capsys, monkeypatch) -> None:
    """Trained by a fake backend's script, so no framework and no training: two trials reach
    val_accuracy 0.9 and 0.8 at epoch 1, a third 0.1, which the median pruner stops."""
    pytest.importorskip("optuna")
    pytest.importorskip("matplotlib")
    import json
    from types import SimpleNamespace

    values = iter(["0.9", "0.8", "0.1"])
    fake = SimpleNamespace(
        SUFFIX="_fake.py", emit=lambda spec, name: FAKE_SCRIPT.format(value=next(values))
    )
    monkeypatch.setattr("cnnspec.sweep.backend", lambda name: fake)
    spec = _tight(tmp_path, "10000000")  # no configuration rejected: three trials train
    out = tmp_path / "s"
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(spec), "--trials", "1", "-o", str(out)])
    assert exit.value.code == 0
    best = (out / "best.cnn").read_text().splitlines()
    assert any("The best of 1 complete trial of cnnspec sweep" in line for line in best[:3])
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(spec), "--trials", "2", "-o", str(out)])
    assert exit.value.code == 0
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["complete", "complete", "pruned"]
    assert [t["reason"] for t in trials] == [
        None,
        None,
        "pruned after epoch 1: its best val_accuracy so far, 0.1000, is below 0.8500, the "
        "median of the 2 complete trials at that epoch",
    ]
    assert (
        "trial   2 pruned val_accuracy 0.1000: after epoch 1: its best" in capsys.readouterr().out
    )
