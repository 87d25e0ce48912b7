"""Model summaries: a rich table for people and a JSON object for tools."""

from __future__ import annotations

import re
from math import prod
from typing import Any

from cnnspec.ir import FLOAT32_BYTES, Node, PhasePlan, Spec
from cnnspec.layers import format_shape


def _field(node: Node) -> str:
    rf = node.receptive_field
    if rf is None:
        return "-"
    size = str(rf.size[0]) if rf.size[0] == rf.size[1] else f"{rf.size[0]}x{rf.size[1]}"
    jump = str(rf.jump[0]) if rf.jump[0] == rf.jump[1] else f"{rf.jump[0]}x{rf.jump[1]}"
    return f"{size} /{jump}"


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError


def _kind(node: Node) -> str:
    activation = node.layer.fused_activation()
    text = node.kind
    if node.role == "shortcut":
        text += " (shortcut)"
    if activation is not None:
        text += f" +{activation.kind}"
    return text


def _layers(count: int) -> str:
    return f"{count} layer{'s' if count != 1 else ''}"


def _names(names: tuple[str, ...], shown: int = 6) -> str:
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def frozen_with_weights(spec: Spec, plan: PhasePlan) -> list[str]:
    """The layers a phase freezes that have weights, in model order: pooling and activation
    layers, which have nothing to freeze, are not counted (the same in the table and JSON)."""
    return [n.name for n in spec.model.nodes if n.name in plan.frozen and n.params.total]


def schedule_rates(spec: Spec, plan: PhasePlan) -> dict[str, Any] | None:
    """A phase's learning-rate schedule as written, with its first, peak and last rates (the
    scripts' own formula, cnnspec.runtime.rules.learning_rate) over the phase's epochs at the
    training split's batches per epoch, when the checker knows the split's size (else per
    epoch: `steps_per_epoch` null). None for the default, the optimizer's constant rate."""
    from cnnspec.check import training_split

    phase, train = plan.phase, spec.train
    schedule = phase.schedule
    if schedule is None or schedule.kind == "constant" or phase.optimizer is None:
        return None
    epochs = phase.epochs or train.epochs
    split = training_split(spec.data, train.batch)
    per_epoch = -(-split[0] // train.batch) if split is not None else None
    steps = per_epoch or 1
    lr = phase.optimizer.lr
    total = steps * epochs
    turns = sorted(s for s in schedule.turning_steps(steps, epochs) if 0 <= s < total)
    rates = [schedule.rate_at(step, steps, epochs, lr) for step in turns]
    span = schedule.span
    written = schedule.kind
    if span is not None:
        # As written, in one layout however it was laid out: `cosine(warmup=1, min_lr=1e-4)`.
        text = re.sub(r"\s*([(),=])\s*", r"\1", spec.source.text[span.start : span.end])
        written = " ".join(text.replace(",", ", ").split())
    return {
        "kind": schedule.kind,
        "written": written,
        "steps_per_epoch": per_epoch,
        "first_lr": rates[0],
        "peak_lr": max(rates),
        "last_lr": rates[-1],
    }


def _schedule_text(rates: dict[str, Any] | None) -> str:
    if rates is None:
        return ""
    per = rates["steps_per_epoch"]
    steps = f"{per:,} steps an epoch" if per else "per epoch: the training split's size is unknown"
    return (
        f"; schedule {rates['written']}: learning rate {rates['first_lr']:.4g} first, "
        f"{rates['peak_lr']:.4g} peak, {rates['last_lr']:.4g} last ({steps})"
    )


def _callbacks(plan: PhasePlan) -> list[str]:
    return [callback.kind for callback in plan.phase.callbacks]


def to_json(spec: Spec) -> dict[str, Any]:
    graph = spec.model
    totals = graph.params
    return {
        "name": spec.name,
        "input_shape": list(graph.input_shape) if graph.input_shape else None,
        "output_shape": list(graph.output_shape) if graph.output_shape else None,
        "total_params": totals.total,
        "trainable_params": totals.trainable,
        "non_trainable_params": totals.non_trainable,
        "total_macs": graph.macs,
        "activation_memory_bytes": graph.memory_bytes,
        "layers": [
            {
                "name": node.name,
                "kind": node.kind,
                "block": ".".join(node.scope) or None,
                "inputs": list(node.inputs),
                "output_shape": list(node.output_shape) if node.output_shape else None,
                "params": node.params.total,
                "trainable_params": node.params.trainable,
                "non_trainable_params": node.params.non_trainable,
                "macs": node.macs,
                "memory_bytes": node.memory_bytes,
                "receptive_field": (
                    {
                        "size": list(node.receptive_field.size),
                        "jump": list(node.receptive_field.jump),
                    }
                    if node.receptive_field
                    else None
                ),
            }
            for node in graph.nodes
        ],
        "phases": [
            {
                "name": plan.phase.name,
                "epochs": plan.phase.epochs,
                "trainable_params": plan.trainable_params,
                "non_trainable_params": plan.non_trainable_params,
                "frozen_layers": frozen_with_weights(spec, plan),
                "unfrozen_layers": list(plan.unfrozen),
                "callbacks": _callbacks(plan),
                **({"schedule": rates} if (rates := schedule_rates(spec, plan)) else {}),
            }
            for plan in spec.phases
        ],
    }


def render_table(spec: Spec) -> Any:
    """A rich renderable: the layer table, then totals and one line per training phase."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    graph = spec.model
    table = Table(title=f"model {spec.name}", title_justify="left", show_lines=False)
    table.add_column("layer", no_wrap=True)
    table.add_column("kind", style="cyan", no_wrap=True)
    table.add_column("output shape", justify="right", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("receptive field", justify="right")
    table.add_column("memory", justify="right")
    if graph.input_shape:
        input_bytes = prod(graph.input_shape) * FLOAT32_BYTES
        table.add_row(
            "input",
            "input",
            format_shape(graph.input_shape),
            "0",
            "0",
            "1 /1",
            human_bytes(input_bytes),
        )
    block = None
    for node in graph.nodes:
        scope = ".".join(node.scope)
        if scope != block and block is not None:
            table.add_section()
        block = scope
        params = f"{node.params.total:,}"
        table.add_row(
            node.name,
            _kind(node),
            format_shape(node.output_shape) if node.output_shape else "?",
            params,
            f"{node.macs:,}",
            _field(node),
            human_bytes(node.memory_bytes),
        )
    totals = graph.params
    lines = [
        Text.assemble(("total params: ", "bold"), f"{totals.total:,}"),
        Text.assemble(("trainable params: ", "bold"), f"{totals.trainable:,}"),
        Text.assemble(("non-trainable params: ", "bold"), f"{totals.non_trainable:,}"),
        Text.assemble(("MACs per example: ", "bold"), f"{graph.macs:,}"),
        Text.assemble(
            ("activation memory per example (float32): ", "bold"),
            human_bytes(graph.memory_bytes),
        ),
    ]
    for plan in spec.phases:
        count = plan.phase.epochs
        epochs = f", {count} epoch{'s' if count != 1 else ''}" if count else ""
        frozen = len(frozen_with_weights(spec, plan))
        callbacks = _callbacks(plan)
        lines.append(
            Text.assemble(
                (f"phase {plan.phase.name}: ", "bold magenta"),
                f"{plan.trainable_params:,} trainable params{epochs}",
                f", {_layers(frozen)} frozen" if frozen else "",
                f"; unfreezes {_layers(len(plan.unfrozen))}: {_names(plan.unfrozen)}"
                if plan.unfrozen
                else "",
                f"; callbacks: {', '.join(callbacks)}" if callbacks else "",
                _schedule_text(schedule_rates(spec, plan)),
            )
        )
    return Group(table, *lines)
