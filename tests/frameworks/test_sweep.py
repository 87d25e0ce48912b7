"""`cnnspec sweep` for real (issue 16): trials of the shipped digits sweep trained by the
generated PyTorch script, two at a time against one SQLite study, then resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("torch")

from cnnspec.compiler import compile_file
from tests.conftest import ROOT

pytestmark = pytest.mark.frameworks

EXAMPLE = ROOT / "examples" / "sweep_digits.cnn"


def sweep(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cnnspec", "sweep", str(EXAMPLE), "-o", str(out)]
    return subprocess.run(
        [*command, "--epochs", "1", "--subset", "256", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.library  # slow: `make test-library` runs it
def test_a_sweep_trains_two_at_a_time_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    first = sweep(out, "--trials", "3", "--workers", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr  # a rejected trial is a line, not Optuna's log
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    trained = [t for t in trials if t["state"] in ("complete", "pruned")]
    assert trained, trials
    for trial in trials:  # every trial is a spec on disk; a rejected one says why
        assert Path(trial["spec"]) == out / "trials" / f"{trial['number']:03d}.cnn"
        assert Path(trial["spec"]).is_file()
        if trial["state"] == "rejected":
            assert "over the budget of 60,000" in trial["reason"]
        if trial["state"] == "pruned":  # and a pruned one says after which epoch, and why
            assert trial["reason"].startswith("pruned after epoch "), trial
    # Two workers shared the study: trials ran at the same time.
    spans = [
        (datetime.fromisoformat(t["started"]), datetime.fromisoformat(t["finished"]))
        for t in trials
    ]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :])
    best = compile_file(out / "best.cnn")
    assert best.ok and best.spec is not None and best.spec.sweep is None
    assert (out / "history.png").stat().st_size > 0
    complete = [t for t in trials if t["state"] == "complete"]
    if complete:
        top = max(complete, key=lambda t: t["value"])
        assert f"trial {top['number']}" in (out / "best.cnn").read_text().splitlines()[0]
        history = json.loads(
            (out / "trials" / f"{top['number']:03d}" / "metrics.json").read_text()
        )["history"]
        assert top["value"] == max(row["val_accuracy"] for row in history)
        assert top["epochs"] == {"1": history[0]["val_accuracy"]}
    # A second run adds trials to the same study.
    second = sweep(out, "--trials", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    # The study trained with PyTorch: Keras trials would not be comparable with its own.
    third = sweep(out, "--trials", "1", "--backend", "keras")
    assert third.returncode == 1 and "trained its trials with --backend pytorch" in third.stderr
    assert len(json.loads((out / "trials.json").read_text())["trials"]) == 5
