"""A sweep's search space: each `space` entry's path resolved to the value it names in the
spec's text, its distribution checked, and each trial's spec made by writing sampled values in
those places.

Working on the text rather than the IR keeps every trial a spec a person can read, with its
comments, that the checker checks like any other: a configuration the checker or a budget
rejects is rejected before anything trains. Paths name what the spec writes:

- `train.batch`, `train.optimizer`, `train.optimizer.lr`, `train.early_stopping.patience`,
  `train.phase.finetune.optimizer.lr`, `augment.rotation.degrees`, `data.validation`: a
  section's settings, the arguments of its calls and of the kinds its settings name;
- `model.width`: a `let width = ...` of the model (a depth, `repeat depth { }`, or a width
  multiplier used in expressions), `model.input`;
- `model.head_dropout_1.rate`: an argument written in the call of the layer of that name (as
  `cnnspec summary` names it), when that call makes this layer alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cnnspec import codes
from cnnspec import syntax as ast
from cnnspec.diagnostics import Diagnostics, did_you_mean
from cnnspec.ir import Graph
from cnnspec.sections import PHASE_SCHEMA, SCHEMAS, SPACE, SectionSchema, SweepSection
from cnnspec.source import Span

DISTRIBUTIONS = ("log", "uniform", "int", "choice")
EXAMPLE = "train.optimizer.lr log(1e-4, 1e-2)"


@dataclass(frozen=True)
class Distribution:
    """Where a value is searched: `log(low, high)` (a float, log-uniform), `uniform(low, high)`,
    `int(low, high, step=1)` (both ends included), or `choice(a, b, ...)` (each as written)."""

    kind: Literal["log", "uniform", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    path: str
    distribution: Distribution
    span: Span  # where the space writes the path
    target: Span  # the value in the spec that a trial replaces


@dataclass(frozen=True)
class Space:
    entries: tuple[Entry, ...]
    section: Span  # the sweep section, which trial specs leave out


def read_space(
    sweep: ast.Section,
    document: ast.Document,
    graph: Graph | None,
    diagnostics: Diagnostics,
) -> Space | None:
    """The sweep section's `space`, every path resolved and every distribution checked; each
    problem is a diagnostic at the path or the distribution. None when nothing is searched."""
    spaces = [i for i in sweep.items if isinstance(i, ast.Section) and i.key.text == SPACE]
    items = [item for space in spaces for item in space.items]
    if not items:
        diagnostics.error(
            codes.SWEEP_EMPTY,
            "the sweep searches nothing",
            sweep.key.span,
            f"add space {{ PATH DISTRIBUTION }}, such as space {{ {EXAMPLE} }}",
        )
        return None
    found = targets(document, graph)
    entries: list[Entry] = []
    for item in items:
        if not isinstance(item, ast.Setting) or item.target is not None:
            span = item.key.span if not isinstance(item, ast.Call) else item.name.span
            diagnostics.error(
                codes.WRONG_KIND,
                "each line of space is a path and its distribution",
                span,
                f"such as {EXAMPLE}",
            )
            continue
        path = item.key.text
        target = found.get(path)
        if target is None:
            hint = did_you_mean(path, list(found)) or "paths start with model., train., data. "
            diagnostics.error(
                codes.SWEEP_UNKNOWN_PATH,
                f"'{path}' names no value of the spec",
                item.key.span,
                hint,
            )
            continue
        if isinstance(target, str):
            diagnostics.error(
                codes.SWEEP_NOT_HERE, f"'{path}' cannot be swept: {target}", item.key.span
            )
            continue
        distribution = _distribution(item.value, document.source.text, diagnostics)
        if distribution is None:
            continue
        clash = next((e for e in entries if _overlap(e.target, target)), None)
        if clash is not None:
            diagnostics.error(
                codes.SWEEP_NOT_HERE,
                f"'{path}' and '{clash.path}' name the same text of the spec",
                item.key.span,
                "sweep one of them",
            )
            continue
        entries.append(Entry(path, distribution, item.key.span, target))
    return Space(tuple(entries), sweep.span) if entries else None


def check_objective(
    sweep: SweepSection, names: list[str], validation: bool, diagnostics: Diagnostics
) -> None:
    """The objective must be a value the scripts record each epoch."""
    objective = sweep.objective
    span = sweep.span_of("objective") or sweep.span
    assert span is not None
    choices = [*names, *(f"val_{n}" for n in names)]
    if objective not in choices:
        diagnostics.error(
            codes.UNKNOWN_METRIC,
            f"the sweep's objective '{objective}' is not computed",
            span,
            did_you_mean(objective, choices) or f"available: {', '.join(choices)}",
        )
    elif objective.startswith("val_") and not validation:
        diagnostics.error(
            codes.NO_VALIDATION,
            f"the sweep's objective '{objective}' needs validation data",
            span,
            "add `validation 0.1` (or test, val) to data, or optimise a training value",
        )


def trial_text(text: str, space: Space, values: dict[str, str]) -> str:
    """The spec with each entry's value replaced by `values[path]` (spec text) and the sweep
    section left out: a concrete configuration."""
    edits = [(entry.target, values[entry.path]) for entry in space.entries]
    edits.append((space.section, ""))
    for span, replacement in sorted(edits, key=lambda e: e[0].start, reverse=True):
        end = span.end
        if not replacement and text[end : end + 1] == "\n":
            end += 1  # the section's line goes with it
        text = text[: span.start] + replacement + text[end:]
    return text


def value_text(distribution: Distribution, value: Any) -> str:
    """A sampled value as spec text; a float to four significant digits, so that the trial's
    spec reads as a person would write it and holds exactly what was trained."""
    if distribution.kind == "choice":
        return str(value)
    if distribution.kind == "int":
        return str(int(value))
    return f"{float(value):.4g}"


# --------------------------------------------------------------------------------------------
# Paths


def targets(document: ast.Document, graph: Graph | None) -> dict[str, Span | str]:
    """Every path a space may name: the span of the value it names, or why it cannot be
    swept (a value that is not written, or is written once for many layers)."""
    found: dict[str, Span | str] = {}
    for item in document.items:
        if not isinstance(item, ast.Section):
            continue
        key = item.key.text
        if key in SCHEMAS and key != "sweep":
            _section(item.items, SCHEMAS[key], f"{key}.", found)
        elif key == "model":
            for inner in item.items:
                if isinstance(inner, ast.Setting):
                    if inner.key.text == "let" and inner.target is not None:
                        found[f"model.{inner.target.text}"] = inner.value.span
                    elif inner.key.text == "input":
                        found["model.input"] = inner.value.span
    if graph is not None:
        _layers(graph, found)
    return found


def _section(
    items: tuple[ast.Item, ...], schema: SectionSchema, prefix: str, found: dict[str, Span | str]
) -> None:
    for item in items:
        if isinstance(item, ast.Setting):
            key = item.key.text
            if key in schema.repeated:
                continue
            found[f"{prefix}{key}"] = item.value.span
            kinds = schema.choices.get(key, {})
            value = item.value
            name = value.name.text if isinstance(value, ast.Call) else getattr(value, "text", None)
            model = kinds.get(name) if isinstance(name, str) else None
            if model is not None:
                args = value.args if isinstance(value, ast.Call) else ()
                _arguments(model, name or key, args, f"{prefix}{key}.", found)
        elif isinstance(item, ast.Call):
            name = item.name.text
            if name in schema.calls:
                _arguments(schema.calls[name][1], name, item.args, f"{prefix}{name}.", found)
        elif item.key.text in schema.sections and isinstance(item.label, ast.Name):
            sub = schema.sections[item.key.text][1] if item.key.text != "phase" else PHASE_SCHEMA
            _section(item.items, sub, f"{prefix}{item.key.text}.{item.label.text}.", found)


def _arguments(
    model: Any, name: str, args: tuple[ast.Arg, ...], prefix: str, found: dict[str, Span | str]
) -> None:
    """The arguments a call writes, by field name; the ones it leaves out, with why."""
    written: dict[str, Span] = {}
    positional = list(getattr(model, "positional", ()))
    aliases = getattr(model, "aliases", {})
    for index, arg in enumerate(args):
        if arg.key is not None:
            written[aliases.get(arg.key.text, arg.key.text)] = arg.value.span
        elif index < len(positional):
            written[positional[index]] = arg.value.span
    for field in model.model_fields:
        if field in written:
            found[f"{prefix}{field}"] = written[field]
        elif field != "name":
            found[f"{prefix}{field}"] = f"it is not written: write {name}({field}=...) to sweep it"
    for alias, field in aliases.items():  # `learning_rate` for `lr`, as Keras spells it
        if f"{prefix}{field}" in found:
            found[f"{prefix}{alias}"] = found[f"{prefix}{field}"]


def _layers(graph: Graph, found: dict[str, Span | str]) -> None:
    lets = {
        (span.start, span.end): path
        for path, span in found.items()
        if path.startswith("model.") and isinstance(span, Span)
    }
    calls: dict[tuple[int, int], int] = {}
    for node in graph.nodes:
        key = (node.span.start, node.span.end)
        calls[key] = calls.get(key, 0) + 1
    for node in graph.nodes:
        shared = calls[(node.span.start, node.span.end)]
        for field in node.layer.model_fields:
            path = f"model.{node.name}.{field}"
            span = node.layer._arg_spans.get(field)
            if shared > 1:
                found[path] = (
                    f"its call makes {shared} layers (a repeat or a defined block); "
                    "sweep a `let` the call uses"
                )
            elif span is not None and node.span.start <= span.start and span.end <= node.span.end:
                found[path] = span
            elif span is not None and (span.start, span.end) in lets:
                found[path] = f"it is {lets[(span.start, span.end)]}: sweep that"
            elif span is not None:
                found[path] = f"{node.name}'s {field} comes from the defaults, not its call"
            else:
                found[path] = f"it is not written: write {field}=... in {node.name}'s call"


def _overlap(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


# --------------------------------------------------------------------------------------------
# Distributions


def _distribution(value: ast.Value, text: str, diagnostics: Diagnostics) -> Distribution | None:
    usage = "log(low, high), uniform(low, high), int(low, high, step=1) or choice(a, b, ...)"
    if not isinstance(value, ast.Call):
        diagnostics.error(
            codes.SWEEP_DISTRIBUTION, "a path is searched over a distribution", value.span, usage
        )
        return None
    kind = value.name.text
    if kind not in DISTRIBUTIONS:
        hint = did_you_mean(kind, DISTRIBUTIONS) or usage
        diagnostics.error(
            codes.SWEEP_DISTRIBUTION, f"unknown distribution '{kind}'", value.name.span, hint
        )
        return None
    if kind == "choice":
        if len(value.args) < 2 or any(a.key is not None for a in value.args):
            diagnostics.error(
                codes.SWEEP_DISTRIBUTION,
                "choice needs two or more values",
                value.span,
                "choice(16, 32, 64)",
            )
            return None
        return Distribution(
            "choice", choices=tuple(text[a.value.span.start : a.value.span.end] for a in value.args)
        )
    numbers: dict[str, float] = {}
    names = ["low", "high", "step"] if kind == "int" else ["low", "high"]
    for index, arg in enumerate(value.args):
        key = arg.key.text if arg.key is not None else (names[index] if index < len(names) else "?")
        number = getattr(arg.value, "value", None)
        if (
            key not in names
            or key in numbers
            or not isinstance(number, int | float)
            or isinstance(number, bool)
        ):
            diagnostics.error(
                codes.SWEEP_DISTRIBUTION,
                f"{kind}(...) takes {', '.join(names)}: numbers",
                arg.span,
                usage,
            )
            return None
        numbers[key] = number
    if "low" not in numbers or "high" not in numbers:
        diagnostics.error(codes.SWEEP_DISTRIBUTION, f"{kind} needs low and high", value.span, usage)
        return None
    low, high, step = numbers["low"], numbers["high"], numbers.get("step", 1)
    problem = None
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step)):
        problem = "int(...) takes whole numbers"
    elif kind == "int" and (high < low or step < 1):
        problem = "int(low, high, step) needs low <= high and step >= 1"
    elif kind != "int" and not low < high:
        problem = f"{kind}(low, high) needs low < high"
    elif kind == "log" and low <= 0:
        problem = "log(low, high) needs low > 0"
    if problem is not None:
        diagnostics.error(codes.SWEEP_DISTRIBUTION, problem, value.span, usage)
        return None
    return Distribution(kind, float(low), float(high), int(step))  # type: ignore[arg-type]
