"""Binding a call from the syntax tree (`conv2d(32, kernel=3)`) to a validated argument model.

Layers, optimizers, callbacks, augmentations and data sources are all calls with an argument
model (`cnnspec.schema`); they share this one binder, so every one of them reports unknown,
missing, duplicated and out-of-range arguments the same way, at the argument's own span.
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from cnnspec import codes
from cnnspec import syntax as ast
from cnnspec.diagnostics import Diagnostics, did_you_mean
from cnnspec.expressions import EMPTY, Context, ExpressionError, evaluate, resolve
from cnnspec.schema import CONSTANTS, WORDS, Invalid, Model, Problem
from cnnspec.source import Span


@dataclass(frozen=True, slots=True)
class CallValue:
    """A call used as a value, such as `activation=leaky_relu(alpha=0.1)`, before it is bound."""

    name: str
    args: tuple[tuple[str | None, Any], ...]
    node: ast.Call


def to_python(value: ast.Value) -> Any:
    """The plain Python value of a syntax-tree value: what an argument model validates."""
    match value:
        case ast.Number(value=number):
            return number
        case ast.Fraction():
            return value.value
        case ast.Dims(values=values):
            return values
        case ast.String(value=text):
            return text
        case ast.Name(text=text):
            return CONSTANTS.get(text, text)
        case ast.ListValue(items=items) | ast.TupleValue(items=items):
            return tuple(to_python(item) for item in items)
        case ast.Call(name=name, args=args):
            return CallValue(
                name.text,
                tuple((a.key.text if a.key else None, to_python(a.value)) for a in args),
                value,
            )
        case ast.BinOp() | ast.Paren():
            # Argument lists resolve expressions before they get here (collect_args); what is
            # left is a value in a place that takes no expression, described as what it is.
            try:
                return evaluate(value)
            except ExpressionError:
                return "an expression"
    raise AssertionError(f"unexpected value {value!r}")


def value_span(value: ast.Value) -> Span:
    return value.span


class Bound(Model):
    """A model bound from spec text: it remembers where it and each of its arguments came from."""

    # Positional arguments, in order. Everything else is keyword-only.
    positional: ClassVar[tuple[str, ...]] = ()
    # A field that collects any further positional arguments, as in `metrics(accuracy, auc)`.
    varargs: ClassVar[str | None] = None
    # Argument names as Keras or PyTorch spell them, to the field: {"learning_rate": "lr"}.
    aliases: ClassVar[dict[str, str]] = {}
    # Where the call and each argument were written (set by `located`; replaced, never mutated).
    _span: Span | None = None
    _arg_spans: dict[str, Span] = {}  # noqa: RUF012
    # Fields whose written value was wrong (reported) and which hold their default instead.
    _broken: frozenset[str] = frozenset()

    @property
    def span(self) -> Span | None:
        return self._span

    def span_of(self, field: str) -> Span | None:
        """The span of an argument as written, or of the whole call when it was not written."""
        return self._arg_spans.get(field, self._span)

    def located(self, span: Span | None, arg_spans: dict[str, Span]) -> Self:
        self._span = span
        self._arg_spans = dict(arg_spans)
        return self

    def broken_at(self, fields: set[str] | frozenset[str]) -> Self:
        self._broken = frozenset(fields)
        return self

    def is_broken(self, *fields: str) -> bool:
        """Whether any of `fields` was written wrong: checks that depend on it are skipped."""
        return any(f in self._broken for f in fields)

    def explicit(self) -> dict[str, Any]:
        """The arguments that differ from their defaults: what a summary or a formatter shows."""
        return {k: v for k, v in self if v != type(self).model_fields[k].default}


M = TypeVar("M", bound="Bound")


@dataclass(frozen=True, slots=True)
class BoundArg:
    """One argument before validation: its Python value and where it was written."""

    value: Any
    span: Span
    key_span: Span
    # For a varargs field: the span of each value, in order.
    item_spans: tuple[Span, ...] = ()
    # For a bare word inside a defined block that is not one of its variables (`rate` where
    # only `rates` is): the hint if the word was not meant as a word.
    word_hint: str | None = None


def problem_text(problem: Problem) -> tuple[str, str | None]:
    """A problem's message, and its hint: for a word that is not one of the allowed ones, the
    closest of them."""
    hint = problem.hint
    if hint is None and problem.kind == "choice" and isinstance(problem.value, str):
        hint = did_you_mean(problem.value, [str(c) for c in problem.choices])
    return problem.message, hint


def phrase(field: str | None, what: str, message: str, value: Any) -> str:
    """`argument 'rate' of dropout must be less than 1 (got 1.5)`, or for a message that is a
    sentence of its own, `argument 'activation' of dense: unknown activation 'sofmax'`."""
    label = f"argument '{field}' of {what}" if field else what
    shown = describe(value) if value is not None else None
    if message.startswith("must"):
        # `must be a number, not the string '1e-4'` has shown the value already.
        said = shown is not None and not (isinstance(value, str) and repr(value) in message)
        return f"{label} {message}" + (f" (got {shown})" if said else "")
    suffix = f" (got {shown})" if shown is not None and shown not in message else ""
    return f"{label}: {message}{suffix}"


def describe(value: Any) -> str:
    if isinstance(value, CallValue):
        return f"{value.name}(...)"
    if isinstance(value, tuple):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    if isinstance(value, bool) or value is None:
        return WORDS[value]
    return repr(value) if isinstance(value, str) and not value.isidentifier() else str(value)


def collect_args(
    call: ast.Call,
    model: type[Bound],
    what: str,
    diagnostics: Diagnostics,
    reserved: frozenset[str] = frozenset(),
    context: Context = EMPTY,
) -> tuple[dict[str, BoundArg], bool]:
    """Map a call's positional and keyword arguments onto the model's field names.

    `reserved` names (such as a layer's `name=`) are accepted and returned although the model does
    not declare them. Returns the arguments that could be placed, and whether all of them could:
    the caller still validates the placed ones, so one misspelt argument does not hide a bad value
    in another. Expressions are replaced by their values first (`context` names the variables).
    """
    fields = model.model_fields
    args: dict[str, BoundArg] = {}
    ok = True
    positional_seen = 0
    for written in call.args:
        try:
            arg = ast.Arg(written.key, resolve(written.value, context), written.span)
        except ExpressionError as error:
            ok = False
            diagnostics.error(error.code, error.message, error.span, error.hint)
            continue
        if (
            arg.key is None
            and model.varargs is not None
            and positional_seen >= len(model.positional)
        ):
            rest = args.setdefault(model.varargs, BoundArg((), arg.span, arg.span))
            args[model.varargs] = BoundArg(
                (*rest.value, to_python(arg.value)),
                rest.span.to(arg.span),
                rest.key_span,
                (*rest.item_spans, arg.span),
            )
            continue
        if arg.key is None:
            if positional_seen >= len(model.positional):
                ok = False
                allowed = len(model.positional)
                diagnostics.error(
                    codes.TOO_MANY_POSITIONAL,
                    f"{what} takes {allowed} positional argument{'s' if allowed != 1 else ''}",
                    arg.span,
                    _positional_hint(model, what, arg.value),
                )
                continue
            key = model.positional[positional_seen]
            positional_seen += 1
            key_span = arg.span
        else:
            key = arg.key.text
            key_span = arg.key.span
            if key not in fields and key not in reserved:
                ok = False
                names = [*fields, *reserved]
                alias = model.aliases.get(key)
                hint = (
                    f"cnnspec calls Keras's {key} '{alias}'"
                    if alias
                    else did_you_mean(key, names)
                    or (
                        f"{what} takes: {', '.join(names)}"
                        if names
                        else f"{what} takes no arguments"
                    )
                )
                diagnostics.error(
                    codes.UNKNOWN_ARGUMENT, f"{what} has no argument '{key}'", arg.key.span, hint
                )
                continue
        if key in args:
            ok = False
            diagnostics.error(
                codes.ARGUMENT_TWICE, f"argument '{key}' of {what} given twice", arg.span
            )
            continue
        word_hint = None
        if (
            isinstance(arg.value, ast.Name)
            and context.variables
            and arg.value.text not in CONSTANTS
        ):
            word_hint = did_you_mean(arg.value.text, context.variables) or (
                f"'{arg.value.text}' is not a variable here: they are "
                f"{', '.join(sorted(context.variables))}"
            )
        args[key] = BoundArg(to_python(arg.value), arg.value.span, key_span, word_hint=word_hint)
    return args, ok


def _positional_hint(model: type[Bound], what: str, value: ast.Value) -> str | None:
    fields = list(model.model_fields)
    if not fields:
        return f"{what} takes no arguments"
    if isinstance(value, ast.Name):
        # `restore_besttrue`: a lost `=` glues the name to its value.
        glued = [f for f in fields if value.text.startswith(f) and value.text != f]
        close = glued[0] if glued else None
        if close is None:
            suggestion = did_you_mean(value.text, fields)
            close = suggestion.split("'")[1] if suggestion else None
        if close is not None:
            return f"did you mean {close}=...?"
    if model.positional:
        return f"only {', '.join(model.positional)} may be given without a name"
    return f"name it: {what} takes {', '.join(f + '=...' for f in fields)}"


def validate(
    model: type[M],
    args: dict[str, BoundArg],
    what: str,
    call_span: Span,
    diagnostics: Diagnostics,
    name_span: Span | None = None,
    complete: bool = True,
) -> M | None:
    """Validate collected arguments; report each problem at its argument's span.
    When some arguments could not be placed (`complete=False`), 'missing argument' errors are
    left out: the misplaced argument was probably meant to supply it."""
    try:
        bound = model.model_validate({k: a.value for k, a in args.items()})
    except Invalid as invalid:
        for problem in invalid.problems:
            field = problem.field
            if problem.kind == "missing" and field is not None:
                if not complete:
                    continue
                diagnostics.error(
                    codes.MISSING_ARGUMENT,
                    f"{what} needs argument '{field}'",
                    name_span or call_span,
                    _missing_hint(model, field),
                )
                continue
            message, hint = problem_text(problem)
            arg = args.get(field) if field else None
            if arg is not None and arg.word_hint is not None and problem.kind != "choice":
                hint = hint or arg.word_hint
            span = arg.span if arg else call_span
            if arg is not None and problem.index is not None and arg.item_spans:
                # One of several values, `f1s` in metrics(accuracy, f1s): point at it alone.
                item = arg.value[problem.index]
                diagnostics.error(
                    codes.INVALID_VALUE,
                    f"{what} has no {describe(item)}: it takes {_choices(problem)}"
                    if problem.kind == "choice"
                    else f"{what}: {message}",
                    arg.item_spans[problem.index],
                    hint,
                )
                continue
            diagnostics.error(
                codes.INVALID_VALUE,
                phrase(field, what, message, arg.value if arg else None),
                span,
                hint,
            )
        return None
    if not complete:
        return None
    if model.varargs is not None and model.varargs in args:
        # Values bound to models of their own (`top_k_accuracy(k=3)` in metrics(...)) know
        # where each was written, for the checks that find one of them wrong.
        spans = args[model.varargs].item_spans
        for item, span in zip(getattr(bound, model.varargs), spans, strict=True):
            if isinstance(item, Bound) and item.span is None:
                item.located(span, {})
    return bound.located(call_span, {k: a.span for k, a in args.items()})


def _choices(problem: Problem) -> str:
    names = [describe(c) for c in problem.choices]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def _missing_hint(model: type[Bound], field: str) -> str | None:
    if field in model.positional:
        position = model.positional.index(field) + 1
        ordinal = {1: "first", 2: "second", 3: "third"}.get(position, f"#{position}")
        return f"pass it as the {ordinal} argument or as {field}=..."
    return f"add {field}=..."


def bind_call(call: ast.Call, model: type[M], what: str, diagnostics: Diagnostics) -> M | None:
    """Collect and validate in one step, for calls without defaults or reserved arguments."""
    args, complete = collect_args(call, model, what, diagnostics)
    return validate(model, args, what, call.span, diagnostics, call.name.span, complete)


def bind_value(value: CallValue | str, model: type[M], what: str) -> M:
    """Bind a call or bare name that arrived as a value inside another call's arguments
    (for example `activation=leaky_relu(alpha=0.1)`). Raises ValueError, which validation turns
    into an error located at the enclosing argument."""
    if isinstance(value, str):
        return model.model_validate({})
    args: dict[str, Any] = {}
    for position, (key, item) in enumerate(value.args):
        if key is None:
            if position >= len(model.positional):
                raise ValueError(f"{what} takes {len(model.positional)} positional arguments")
            key = model.positional[position]
        if key not in model.model_fields:
            raise ValueError(f"{what} has no argument '{key}'")
        args[key] = item
    try:
        return model.model_validate(args)
    except Invalid as invalid:
        first = invalid.problems[0]
        where = f"argument '{first.field}' of {what}" if first.field else what
        raise ValueError(f"{where} {first.message}") from None
