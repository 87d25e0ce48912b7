"""`cnnspec sweep`: search a spec's `sweep { space { ... } }` with Optuna.

Each trial is a concrete spec (the sampled values written into the spec's text, the sweep
section left out) saved as `DIR/trials/NNN.cnn` and checked first: a configuration the checker
rejects, or one over a parameter, MAC or activation-memory budget, fails without training, with
the diagnostic as its reason. The others are built by the chosen backend and trained by the
generated script in a process of its own; the script's `epochs.jsonl` reports each epoch's
objective to Optuna as it ends, so a pruner can stop a trial early. The study lives in an
Optuna storage (an SQLite file in DIR unless `--storage` names another), so a sweep resumes
after an interruption, a second run adds trials to the same study, and workers on several
machines can share one. Outputs: a live table of the trials, `DIR/trials.json`, `DIR/best.cnn`
and the plots Optuna draws (objective over trials, parameter importances).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cnnspec.artifact import Refused, stamp, write_generated
from cnnspec.backends import backend
from cnnspec.compiler import compile_text
from cnnspec.ir import Spec
from cnnspec.search_space import trial_text, value_text
from cnnspec.wording import plural

if TYPE_CHECKING:
    from matplotlib.figure import Figure

POLL_SECONDS = 0.5


class SweepError(Exception):
    """A problem that stops the sweep, in one line."""


class Rejected(Exception):
    """A trial that fails before or during training; the message is its reason."""


@dataclass
class Options:
    backend: str = "pytorch"
    trials: int | None = None
    epochs: int | None = None
    storage: str | None = None
    workers: int = 1
    output: Path | None = None
    subset: int | None = None


@dataclass
class Row:
    """A trial as the table shows it."""

    number: int
    state: str
    params: dict[str, str]
    counts: str = ""
    value: float | None = None
    note: str = ""


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise SweepError("cnnspec sweep needs Optuna: pip install 'cnnspec[sweep]'") from None
    # Optuna logs each failed trial with its traceback; a rejected trial is news the table
    # and trials.json give in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


class Sweep:
    def __init__(self, spec: Spec, spec_path: Path, options: Options, echo: Any) -> None:
        if spec.sweep is None or spec.space is None:
            raise SweepError(f"{spec_path} has no sweep section: add sweep {{ space {{ ... }} }}")
        self.spec, self.sweep, self.space = spec, spec.sweep, spec.space
        self.text = spec.source.text
        self.options = options
        self.echo = echo
        self.folder = options.output or Path("runs") / f"{spec_path.stem}_sweep"
        self.rows: dict[int, Row] = {}
        self.lock = threading.Lock()
        self.children: set[subprocess.Popen[str]] = set()
        self.optuna = optuna_module()

    # ---------------------------------------------------------------------------------------
    # the study

    def study(self) -> Any:
        from sqlalchemy.exc import SQLAlchemyError  # optuna's storage is SQLAlchemy's

        optuna = self.optuna
        url = self.options.storage or f"sqlite:///{self.folder / 'study.db'}"
        if self.options.storage is None:
            self.folder.mkdir(parents=True, exist_ok=True)
        try:
            # A worker that dies leaves its trial running; the heartbeat fails it later.
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90)
            existing = optuna.study.get_all_study_summaries(storage)
        except (
            SQLAlchemyError,
            optuna.exceptions.StorageInternalError,
            ImportError,
            RuntimeError,
        ) as error:
            # A URL SQLAlchemy cannot parse or has no dialect for (ArgumentError), a database
            # it cannot open or a server out of reach (OperationalError), a file that is no
            # database (DatabaseError), or any of those inside one of optuna's sessions
            # (StorageInternalError); a driver not installed (ImportError, from optuna); a
            # schema of another optuna version (RuntimeError).
            # SQLAlchemy's messages go on with the SQL and a link: the first line says it.
            why = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise SweepError(f"cannot open the study storage {url}: {why}") from None
        done = next((s.n_trials for s in existing if s.study_name == self.spec.name), 0)
        direction = "maximize" if self.sweep.resolved_mode == "max" else "minimize"
        seed = self.spec.train.seed + done  # a resumed study does not repeat its first samples
        if self.sweep.sampler == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed)
        pruners = {
            "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
            "halving": optuna.pruners.SuccessiveHalvingPruner,
            "none": optuna.pruners.NopPruner,
        }
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=self.spec.name,
                direction=direction,
                sampler=sampler,
                pruner=pruners[self.sweep.pruner](),
                load_if_exists=True,
            )
        except ValueError as error:  # the stored study optimises the other way
            raise SweepError(f"study {self.spec.name} in {url}: {error}") from None
        # Keras and PyTorch trials of one spec reach different values: a study that mixed them
        # would compare the frameworks, not the configurations. The study says which it used.
        chosen = self.options.backend
        used = study.user_attrs.get("backend")
        if used is None:
            study.set_user_attr("backend", chosen)
        elif used != chosen:
            raise SweepError(
                f"the study {self.spec.name} in {url} trained its trials with --backend {used}: "
                f"resume it with --backend {used}, or sweep with --backend {chosen} into "
                "another -o or --storage"
            )
        return study

    def run(self) -> Any:
        study = self.study()
        for trial in study.get_trials(deepcopy=False):
            self.rows[trial.number] = self.row_of(trial)
        trials = self.options.trials or self.sweep.trials
        self.echo(
            f"sweep {self.spec.name}: {plural(trials, 'trial')}, "
            f"{plural(self.options.workers, 'worker')}, "
            f"{self.sweep.objective} ({self.sweep.resolved_mode}), study in {self.folder}"
        )
        try:
            with self.live():
                study.optimize(
                    self.objective,
                    n_trials=trials,
                    n_jobs=self.options.workers,
                    catch=(Rejected,),
                )
        except KeyboardInterrupt:
            self.stop_children()
            self.write_outputs(study)
            raise
        self.write_outputs(study)
        return study

    # ---------------------------------------------------------------------------------------
    # one trial

    def sample(self, trial: Any) -> dict[str, str]:
        values = {}
        for entry in self.space.entries:
            d = entry.distribution
            try:
                if d.kind == "choice":
                    value: Any = trial.suggest_categorical(entry.path, list(d.choices))
                elif d.kind == "int":
                    value = trial.suggest_int(entry.path, int(d.low), int(d.high), step=d.step)
                else:
                    value = trial.suggest_float(entry.path, d.low, d.high, log=d.kind == "log")
            except ValueError as error:  # the stored study searched this path differently
                raise SweepError(
                    f"the study {self.spec.name} searched {entry.path} another way ({error}); "
                    "sweep into another -o or --storage"
                ) from None
            values[entry.path] = value_text(d, value)
        return values

    def concrete(self, number: int, values: dict[str, str], keep: bool = True) -> Spec:
        """The trial's spec (kept in DIR/trials/NNN.cnn unless `keep` is false), checked and
        within the budgets; Rejected with the reason."""
        path = self.folder / "trials" / f"{number:03d}.cnn"
        text = trial_text(self.text, self.space, values)
        if keep:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        compilation = compile_text(text, str(path))
        if not compilation.ok or compilation.spec is None:
            first = compilation.diagnostics.errors[0]
            raise Rejected(f"{first.span.line}:{first.span.column}: {first.message}")
        spec = compilation.spec
        graph = spec.model
        for figure, budget, what in (
            (graph.params.total, self.sweep.max_params, "parameters"),
            (graph.macs, self.sweep.max_macs, "MACs"),
            (graph.memory_bytes, self.sweep.max_memory, "bytes of activations"),
        ):
            if budget is not None and figure > budget:
                raise Rejected(f"{figure:,} {what}, over the budget of {int(budget):,}")
        return spec

    def objective(self, trial: Any) -> float:
        number = trial.number
        values = self.sample(trial)
        trial.set_user_attr("values", values)  # as the trial's spec writes them
        spec_file = self.folder / "trials" / f"{number:03d}.cnn"
        trial.set_user_attr("spec", str(spec_file))
        self.update(Row(number, "checking", values))
        try:
            spec = self.concrete(number, values)
        except Rejected as rejected:
            trial.set_user_attr("reason", str(rejected))
            self.update(Row(number, "rejected", values, note=str(rejected)))
            raise
        graph = spec.model
        counts = f"{graph.params.total:,} params, {graph.macs / 1e6:.2f}M MACs"
        for key, figure in (
            ("parameters", graph.params.total),
            ("macs", graph.macs),
            ("memory", graph.memory_bytes),
        ):
            trial.set_user_attr(key, figure)
        self.update(Row(number, "training", values, counts))
        try:
            value = self.train(trial, spec, spec_file, values, counts)
        except Rejected as failed:
            trial.set_user_attr("reason", str(failed))
            self.update(Row(number, "failed", values, counts, note=str(failed)))
            raise
        self.update(Row(number, "complete", values, counts, value))
        return value

    def train(
        self, trial: Any, spec: Spec, spec_file: Path, values: dict[str, str], counts: str
    ) -> float:
        """Build the trial's script and run it; report each epoch; the best epoch's value."""
        module = backend(self.options.backend)
        script = spec_file.with_name(f"{spec_file.stem}{module.SUFFIX}")
        script.write_text(module.emit(spec, spec_file.name), encoding="utf-8")
        run = spec_file.with_suffix("")
        # The trial's folder is the sweep's: a trial run again (a sweep resumed after it was
        # stopped) replaces what the first attempt left.
        command = [sys.executable, str(script), "--output-dir", str(run), "--overwrite"]
        epochs = self.options.epochs or self.sweep.epochs
        if epochs is not None:
            command += ["--epochs", str(epochs)]
        if self.options.subset is not None:
            command += ["--subset", str(self.options.subset)]
        log = spec_file.with_suffix(".log")
        (run / "epochs.jsonl").unlink(missing_ok=True)
        objective, seen = self.sweep.objective, 0
        reported: list[float] = []
        with open(log, "w") as output:
            child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
            with self.lock:
                self.children.add(child)
            try:
                while True:
                    finished = child.poll() is not None
                    for row in read_epochs(run / "epochs.jsonl")[seen:]:
                        seen += 1
                        if objective not in row:
                            continue
                        value = float(row[objective])
                        step = int(row["epoch"])
                        trial.report(value, step=step)
                        reported.append(value)
                        self.update(Row(trial.number, "training", values, counts, value))
                        if trial.should_prune():
                            stop(child)
                            reason = self.pruned_because(trial, step, reported)
                            trial.set_user_attr("reason", reason)
                            note = reason.removeprefix("pruned ")  # the state says "pruned"
                            self.update(Row(trial.number, "pruned", values, counts, value, note))
                            raise self.optuna.TrialPruned(reason)
                    if finished:
                        break
                    time.sleep(POLL_SECONDS)
            finally:
                with self.lock:
                    self.children.discard(child)
                if child.poll() is None:
                    stop(child)
        if child.returncode != 0:
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            raise Rejected(f"training failed: {lines[-1] if lines else 'no output'} (see {log})")
        history = json.loads((run / "metrics.json").read_text())["history"]
        scores = [float(row[objective]) for row in history if objective in row]
        if not scores:
            raise Rejected(f"the run recorded no {objective}")
        return max(scores) if self.sweep.resolved_mode == "max" else min(scores)

    def pruned_because(self, trial: Any, step: int, reported: list[float]) -> str:
        """Why the pruner stopped the trial at epoch `step`, as far as its rule can be told."""
        objective, maximize = self.sweep.objective, self.sweep.resolved_mode == "max"
        reason = f"pruned after epoch {step}"
        if self.sweep.pruner == "median":
            # MedianPruner's rule: the trial's best value so far against the median of the
            # complete trials' values at this epoch.
            best = max(reported) if maximize else min(reported)
            complete = trial.study.get_trials(
                deepcopy=False, states=(self.optuna.trial.TrialState.COMPLETE,)
            )
            earlier = [
                t.intermediate_values[step] for t in complete if step in t.intermediate_values
            ]
            if earlier:
                return (
                    f"{reason}: its best {objective} so far, {best:.4f}, is "
                    f"{'below' if maximize else 'above'} {statistics.median(earlier):.4f}, the "
                    f"median of the {plural(len(earlier), 'complete trial')} at that epoch"
                )
        elif self.sweep.pruner == "halving":
            return (
                f"{reason} by successive halving: {objective} {reported[-1]:.4f} is not among "
                "the best of the trials that reached that epoch"
            )
        return f"{reason}: {objective} {reported[-1]:.4f}"

    def stop_children(self) -> None:
        with self.lock:
            for child in list(self.children):
                stop(child)

    # ---------------------------------------------------------------------------------------
    # reporting

    def update(self, row: Row) -> None:
        with self.lock:
            self.rows[row.number] = row
        ended = row.state in ("rejected", "failed", "complete", "pruned", "accepted")
        if ended and not self.terminal():
            value = "" if row.value is None else f" {self.sweep.objective} {row.value:.4f}"
            note = f": {row.note}" if row.note else ""
            params = ", ".join(f"{k}={v}" for k, v in row.params.items())
            self.echo(f"trial {row.number:3d} {row.state}{value}{note} ({params})")

    def terminal(self) -> bool:
        return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"

    def live(self) -> Any:
        if not self.terminal():
            from contextlib import nullcontext

            return nullcontext()
        from rich.live import Live

        return Live(get_renderable=self.table, refresh_per_second=2)

    def table(self) -> Any:
        from rich.table import Table

        table = Table(title=f"sweep {self.spec.name}: {self.sweep.objective}")
        table.add_column("trial", justify="right")
        table.add_column("state", no_wrap=True)
        for header in short_names([entry.path for entry in self.space.entries]):
            table.add_column(header, no_wrap=True)
        table.add_column("params", justify="right", no_wrap=True)
        table.add_column(self.sweep.objective, justify="right", no_wrap=True)
        table.add_column("note", overflow="ellipsis")
        with self.lock:
            rows = sorted(self.rows.values(), key=lambda r: r.number)
        for row in rows[-30:]:
            value = "" if row.value is None else f"{row.value:.4f}"
            table.add_row(
                str(row.number),
                row.state,
                *(row.params.get(e.path, "") for e in self.space.entries),
                row.counts.split(" params")[0],
                value,
                row.note[:60],
            )
        return table

    def row_of(self, trial: Any) -> Row:
        state = trial.state.name.lower()
        if state == "fail" and "reason" in trial.user_attrs:
            state = "rejected" if "training failed" not in trial.user_attrs["reason"] else "failed"
        return Row(
            trial.number,
            state,
            trial.user_attrs.get("values") or {k: str(v) for k, v in trial.params.items()},
            value=trial.value,
            note=trial.user_attrs.get("reason", ""),
        )

    def write_outputs(self, study: Any) -> None:
        """trials.json, best.cnn and the plots."""
        trials = study.get_trials(deepcopy=False)
        records = [
            {
                "number": t.number,
                "state": self.row_of(t).state,
                "params": t.user_attrs.get("values", t.params),
                "value": t.value,
                "reason": t.user_attrs.get("reason"),
                "parameters": t.user_attrs.get("parameters"),
                "macs": t.user_attrs.get("macs"),
                "memory": t.user_attrs.get("memory"),
                "spec": t.user_attrs.get("spec"),
                "started": t.datetime_start.isoformat() if t.datetime_start else None,
                "finished": t.datetime_complete.isoformat() if t.datetime_complete else None,
                "epochs": {str(k): v for k, v in t.intermediate_values.items()},
            }
            for t in trials
        ]
        summary = {
            "spec": self.spec.name,
            "objective": self.sweep.objective,
            "mode": self.sweep.resolved_mode,
            "trials": records,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        write_generated(self.folder / "trials.json", json.dumps(summary, indent=2) + "\n", True)
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        if not complete:
            self.echo(f"no trial completed; trials in {self.folder / 'trials.json'}")
            return
        best = study.best_trial
        spec_file = Path(best.user_attrs["spec"])
        header = (
            f"# The best of {plural(len(complete), 'complete trial')} of cnnspec sweep "
            f"({self.sweep.objective} {best.value:.4f}, trial {best.number})"
        )
        try:
            write_generated(
                self.folder / "best.cnn", stamp(header, spec_file.read_text(encoding="utf-8"))
            )
        except Refused as refused:
            raise SweepError(f"{refused}; pass another -o") from None
        self.plots(study, complete)
        self.echo(
            f"best: trial {best.number}, {self.sweep.objective} {best.value:.4f} "
            f"({', '.join(f'{k}={v}' for k, v in best.user_attrs['values'].items())}); "
            f"{self.folder / 'best.cnn'}, {self.folder / 'trials.json'}"
        )

    def plots(self, study: Any, complete: list[Any]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization import matplotlib as plot

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # notes on too few trials to rank parameters
            axis = plot.plot_optimization_history(study)
            figure = cast("Figure", axis.figure)  # the plot's own figure, not a sub-figure
            figure.savefig(self.folder / "history.png", dpi=120, bbox_inches="tight")
            if len(complete) >= 2 and len(self.space.entries) >= 2:
                try:
                    axis = plot.plot_param_importances(study)
                    figure = cast("Figure", axis.figure)
                    figure.savefig(self.folder / "importances.png", dpi=120, bbox_inches="tight")
                except (RuntimeError, ValueError) as error:  # too few distinct trials
                    self.echo(f"no parameter importances yet: {error}")

    # ---------------------------------------------------------------------------------------
    # a dry run

    def dry_run(self) -> list[Row]:
        """Sample configurations in a study of its own, in memory, and check each."""
        optuna = self.optuna
        study = optuna.create_study(
            sampler=optuna.samplers.RandomSampler(seed=self.spec.train.seed),
            direction="maximize",
        )
        for _ in range(self.options.trials or self.sweep.trials):
            trial = study.ask()
            values = self.sample(trial)
            try:
                spec = self.concrete(trial.number, values, keep=False)
            except Rejected as rejected:
                self.rows[trial.number] = Row(trial.number, "rejected", values, note=str(rejected))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            graph = spec.model
            counts = f"{graph.params.total:,} params, {graph.macs / 1e6:.2f}M MACs"
            self.rows[trial.number] = Row(trial.number, "accepted", values, counts)
            study.tell(trial, 0.0)
        return sorted(self.rows.values(), key=lambda r: r.number)


def short_names(paths: list[str]) -> list[str]:
    """Column headers: each path's last part, or as many last parts as tell it apart."""
    for parts in range(1, 5):
        names = [".".join(path.split(".")[-parts:]) for path in paths]
        if len(set(names)) == len(names):
            return names
    return paths


def read_epochs(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a run's epochs.jsonl."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def stop(child: subprocess.Popen[str]) -> None:
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
