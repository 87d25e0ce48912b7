"""Experiment tracking in the generated scripts (issue 15): real digits runs of both scripts
write TensorBoard event files that TensorBoard's own reader parses, one value per epoch and the
same tags from both backends, and log MLflow runs into a temporary SQLite store with the spec's
settings, its text and digest, per-epoch metrics, the test metrics and the artifacts."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

import mlflow
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from tests.frameworks.scripts import checked_spec, load_script, run_script, write_script

pytestmark = pytest.mark.frameworks

# Two phases, so that the phase and the learning rate change between epochs.
SPEC = """\
model tracked {
  input 8x8x1
  conv2d(8, 3, padding=same, activation=relu)
  maxpool(2)
  flatten()
  dense(10, activation=softmax)
}
data { source digits  rescale 1/16  labels sparse  validation 0.1 }
augment { shift(0.1) }
train {
  batch 64
  phase warmup { epochs 1  optimizer adam(lr=0.01) }
  phase tune { epochs 2  optimizer sgd(lr=0.001, momentum=0.9) }
}
evaluate { report(classification)  curves() }
"""

# What keras.callbacks.TensorBoard writes per epoch, and what the PyTorch script mirrors.
TRAIN_TAGS = {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_phase"}
VALIDATION_TAGS = {"epoch_loss", "epoch_accuracy"}


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a TensorBoard run folder, as TensorBoard reads it: tag -> (step, value)."""
    reader = EventAccumulator(str(folder))
    reader.Reload()
    found = {}
    for tag in reader.Tags()["tensors"]:
        values = [(e.step, make_ndarray(e.tensor_proto)) for e in reader.Tensors(tag)]
        if all(np.ndim(value) == 0 for _, value in values):
            found[tag] = [(step, float(value)) for step, value in values]
    return found


def check_event_files(board: Path, history: list[dict[str, object]]) -> None:
    """One value per epoch for every tag, at steps 0, 1, 2, equal to metrics.json's history;
    and epochs.jsonl beside them, the same rows, one line per epoch."""
    lines = (board.parent / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history
    train, validation = scalars(board / "train"), scalars(board / "validation")
    epoch_tags = {tag for tag in train if tag.startswith("epoch_")}
    assert epoch_tags == TRAIN_TAGS
    assert {tag for tag in validation if tag.startswith("epoch_")} == VALIDATION_TAGS
    steps = list(range(len(history)))
    for tag in TRAIN_TAGS:
        assert [step for step, _ in train[tag]] == steps, tag
    for tag in VALIDATION_TAGS:
        assert [step for step, _ in validation[tag]] == steps, tag
    assert [value for _, value in train["epoch_phase"]] == [1.0, 2.0, 2.0]
    rates = [value for _, value in train["epoch_learning_rate"]]
    assert np.allclose(rates, [0.01, 0.001, 0.001])
    for key, tag, logged in (
        ("loss", "epoch_loss", train),
        ("val_loss", "epoch_loss", validation),
        ("val_accuracy", "epoch_accuracy", validation),
    ):
        expected = [row[key] for row in history]
        assert np.allclose([value for _, value in logged[tag]], expected, rtol=1e-5), key


def mlflow_run(store: str, backend: str) -> tuple[object, object]:
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == f"tracked-{backend}"
    return client, run


def check_mlflow_run(store: str, backend: str, out: Path, spec_text: str) -> None:
    client, run = mlflow_run(store, backend)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["cnnspec.backend"] == backend and tags["cnnspec.spec"] == "tracked"
    assert tags["cnnspec.spec_sha256"] == hashlib.sha256(spec_text.encode()).hexdigest()
    params = run.data.params
    assert params["warmup.optimizer"] == "adam" and params["tune.optimizer"] == "sgd"
    assert float(params["warmup.learning_rate"]) == 0.01
    assert params["tune.optimizer.momentum"] == "0.9"
    assert params["tune.epochs"] == "2" and params["batch"] == "64"
    assert params["augment.shift"] == "shift(0.1)" and params["phases"] == "warmup, tune"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("loss", "val_loss", "learning_rate", "phase"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in logged] == [1, 2, 3], key
        if key != "phase":
            expected = [row[key] for row in metrics["history"]]
            assert np.allclose([m.value for m in logged], expected), key
    assert [m.value for m in client.get_metric_history(run.info.run_id, "phase")] == [1, 2, 2]
    test = run.data.metrics
    assert test["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert test["test_loss"] == pytest.approx(metrics["test"]["loss"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    model_file = "model.keras" if backend == "keras" else "model.pt"
    assert artifacts == {
        "tracked.cnn",
        "metrics.json",
        "weights.safetensors",
        model_file,
        "curves.png",
        "classification_report.txt",
    }
    local = Path(client.download_artifacts(run.info.run_id, "tracked.cnn", str(out / "dl")))
    assert local.read_text() == spec_text
    # The run's files are beside its database, not in the working directory.
    database = Path(store.removeprefix("sqlite:///"))
    assert run.info.artifact_uri.startswith((database.parent / "mlartifacts").as_uri())


def test_keras_run_writes_tensorboard_and_an_mlflow_run(tmp_path: Path) -> None:
    script = write_script(checked_spec(SPEC), tmp_path, "keras")
    out = tmp_path / "run"
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # the folder does not exist yet
    result = run_script(script, "--output-dir", str(out), "--subset", "256", "--mlflow", store)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "metrics.json").read_text())["history"]
    check_event_files(out / "tensorboard", history)
    reader = EventAccumulator(str(out / "tensorboard" / "train"))
    reader.Reload()
    assert "keras" in reader.Tags()["tensors"]  # the model's config, for the Graphs tab
    check_mlflow_run(store, "keras", out, SPEC)
    assert f"tensorboard --logdir {out / 'tensorboard'}" in result.stdout


def test_pytorch_run_tracks_as_the_spec_says_with_the_tags_keras_writes(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    text = SPEC + f'track {{ tensorboard()  mlflow("{store}") }}\n'
    script = write_script(checked_spec(text), tmp_path, "pytorch")
    out = tmp_path / "run"
    result = run_script(script, "--output-dir", str(out), "--subset", "256")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tensorflow" not in result.stderr.lower()  # the event writer left TensorFlow alone
    history = json.loads((out / "metrics.json").read_text())["history"]
    check_event_files(out / "tensorboard", history)
    graph = EventAccumulator(str(out / "tensorboard" / "train"))
    graph.Reload()
    assert graph.Tags()["graph"]  # the traced network, for the Graphs tab
    check_mlflow_run(store, "pytorch", out, text)
    # --resume carries on in the same MLflow run (every phase is done: it evaluates again).
    result = run_script(script, "--output-dir", str(out), "--subset", "256", "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    _, run = mlflow_run(store, "pytorch")  # still the one run
    assert run.info.status == "FINISHED" and f"MLflow run {run.info.run_id}" in result.stdout


def test_flags_override_the_track_section(tmp_path: Path) -> None:
    text = SPEC + 'track { mlflow("sqlite:///runs/mlflow.db", experiment="sweeps") }\n'
    module = load_script(write_script(checked_spec(text), tmp_path, "pytorch"))
    assert module.MLFLOW_EXPERIMENT == "sweeps"
    spec_args = module.parse_args([])
    assert spec_args.mlflow == "sqlite:///runs/mlflow.db" and spec_args.tensorboard is False
    flags = module.parse_args(["--tensorboard", "--no-mlflow"])
    assert flags.mlflow is None and flags.tensorboard is True
    other = module.parse_args(["--mlflow", "elsewhere", "--no-tensorboard"])
    assert other.mlflow == "elsewhere" and other.tensorboard is False
    untracked = module.Tracking()  # what the scripts make of --no-tensorboard --no-mlflow
    untracked.epoch({"phase": "warmup", "epoch": 1, "loss": 1.0})
    untracked.finish({"loss": 1.0}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [next(tmp_path.glob("*.py")).name]


def test_mlflow_problems_are_one_line_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_script(write_script(checked_spec(SPEC), tmp_path, "pytorch"))
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit) as exited:
        module.main(["--output-dir", out, "--mlflow", "s4://bucket"])
    message = str(exited.value.code)
    assert message.startswith("error: --mlflow s4://bucket: ") and "\n" not in message
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(SystemExit) as exited:
        module.main(["--output-dir", out, "--mlflow", str(tmp_path / "mlruns")])
    assert str(exited.value.code).startswith("error: --mlflow needs MLflow: pip install")
    assert not (tmp_path / "run" / "metrics.json").exists()
