"""Blocks defined once with parameters: `define mbconv(filters, expand=1, stride=1) { ... }`.

A definition is a piece of model text with parameters; `mbconv(40, expand=6, name=block3a)` in a
model is an instance of it. This module reads definitions and binds an instance's arguments to
the parameters, with the checks a layer's arguments get (unknown name with did-you-mean, twice,
too many, missing). The lowering walks the body with the parameters as variables, so every
shape and count inside an instance is checked where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnspec import codes
from cnnspec import syntax as ast
from cnnspec.diagnostics import Diagnostics, did_you_mean
from cnnspec.expressions import BUILTINS, Context, ExpressionError, resolve
from cnnspec.source import Span

# Nested instances deeper than this are almost surely a mistake (and would hang an editor).
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    # What the parameter is when an instance leaves it out, evaluated with the parameters before
    # it as variables (`define se(filters, ratio=0.25, squeezed=max(1, int(filters * ratio)))`).
    default: ast.Value | None
    span: Span


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    params: tuple[Param, ...]
    body: tuple[ast.Item, ...]
    span: Span  # the definition's name

    def signature(self) -> str:
        return f"{self.name}({', '.join(p.name for p in self.params)})"


@dataclass(frozen=True, slots=True)
class Instance:
    """A call of a definition, bound: its parameters' values, and the block name it was given."""

    variables: dict[str, ast.Value]
    name: str | None
    name_span: Span | None


def read_definitions(
    items: tuple[ast.Item, ...],
    diagnostics: Diagnostics,
    taken: dict[str, str],
    into: dict[str, Definition],
) -> None:
    """The `define` sections among `items`, added to `into`. `taken` maps the names a definition
    may not take (layer kinds, sections) to what they are."""
    for item in items:
        if not isinstance(item, ast.Section) or item.key.text != "define":
            continue
        definition = _read(item, diagnostics)
        if definition is None:
            continue
        if definition.name in taken:
            diagnostics.error(
                codes.DUPLICATE_NAME,
                f"define '{definition.name}' would hide the {taken[definition.name]} "
                f"'{definition.name}'",
                definition.span,
                "give the block a name of its own",
            )
            continue
        first = into.get(definition.name)
        if first is not None:
            diagnostics.error(
                codes.DUPLICATE_NAME,
                f"'{definition.name}' is defined twice",
                definition.span,
                f"first defined at line {first.span.line}",
            )
            continue
        into[definition.name] = definition


def _read(item: ast.Section, diagnostics: Diagnostics) -> Definition | None:
    label = item.label
    if isinstance(label, ast.Name) and _is_identifier(label.text):
        return Definition(label.text, (), item.items, label.span)
    if not isinstance(label, ast.Call) or not _is_identifier(label.name.text):
        diagnostics.error(
            codes.WRONG_KIND,
            "define needs a name and its parameters",
            (label or item.key).span,
            "define mbconv(filters, expand=1, stride=1) { ... }",
        )
        return None
    params: list[Param] = []
    for arg in label.args:
        name = arg.key or arg.value
        if not isinstance(name, ast.Name) or not _is_identifier(name.text):
            diagnostics.error(
                codes.WRONG_KIND,
                "a parameter is a name, with a default after = if it has one",
                arg.span,
                "define conv_bn(filters, kernel=3) { ... }",
            )
            return None
        default = arg.value if arg.key is not None else None
        if name.text == "name":
            diagnostics.error(
                codes.WRONG_KIND,
                "name is every instance's own parameter: it names the block",
                name.span,
                "leave it out: inside the body, `name` is the instance's name",
            )
            return None
        if name.text in BUILTINS:
            diagnostics.error(
                codes.DUPLICATE_NAME,
                f"parameter '{name.text}' would hide the function {name.text}()",
                name.span,
            )
            return None
        if any(p.name == name.text for p in params):
            diagnostics.error(
                codes.DUPLICATE_NAME, f"parameter '{name.text}' is declared twice", name.span
            )
            return None
        if default is None and params and params[-1].default is not None:
            diagnostics.error(
                codes.WRONG_KIND,
                f"parameter '{name.text}' has no default but follows one that has",
                name.span,
                "put the parameters without defaults first",
            )
            return None
        params.append(Param(name.text, default, name.span))
    return Definition(label.name.text, tuple(params), item.items, label.name.span)


def _is_identifier(text: str) -> bool:
    return text.isidentifier() and "." not in text


def bind_instance(
    call: ast.Call, definition: Definition, context: Context, diagnostics: Diagnostics
) -> Instance | None:
    """The instance's parameters as constant values, evaluated where it is called; None when an
    argument is wrong (each wrong one reported)."""
    what = f"{definition.name}(...)"
    params = [p.name for p in definition.params]
    given: dict[str, ast.Value] = {}
    name: str | None = None
    name_span: Span | None = None
    ok = True
    positional = 0
    for arg in call.args:
        try:
            value = resolve(arg.value, context)
        except ExpressionError as error:
            diagnostics.error(error.code, error.message, error.span, error.hint)
            ok = False
            continue
        if arg.key is None:
            if positional >= len(params):
                diagnostics.error(
                    codes.TOO_MANY_POSITIONAL,
                    f"{what} takes {len(params)} positional argument"
                    f"{'s' if len(params) != 1 else ''}",
                    arg.span,
                    f"{definition.signature()}, name=...",
                )
                ok = False
                continue
            key = params[positional]
            positional += 1
        else:
            key = arg.key.text
            if key == "name":
                if not isinstance(value, ast.Name | ast.String) or not _is_identifier(_text(value)):
                    diagnostics.error(
                        codes.INVALID_VALUE,
                        "an instance's name must be an identifier such as block2a",
                        arg.value.span,
                    )
                    ok = False
                    continue
                name, name_span = _text(value), arg.value.span
                continue
            if key not in params:
                diagnostics.error(
                    codes.UNKNOWN_ARGUMENT,
                    f"{what} has no parameter '{key}'",
                    arg.key.span,
                    did_you_mean(key, [*params, "name"]) or f"{definition.signature()}",
                )
                ok = False
                continue
        if key in given:
            diagnostics.error(
                codes.ARGUMENT_TWICE, f"parameter '{key}' of {what} given twice", arg.span
            )
            ok = False
            continue
        given[key] = value
    if not ok:
        return None
    variables: dict[str, ast.Value] = {}
    for param in definition.params:
        if param.name in given:
            variables[param.name] = given[param.name]
        elif param.default is None:
            diagnostics.error(
                codes.MISSING_ARGUMENT,
                f"{what} is missing its parameter '{param.name}'",
                call.span,
                f"{definition.signature()}",
            )
            ok = False
        else:
            # A default may use the parameters before it, but nothing from the call site.
            scope = Context(variables=dict(variables), channels=context.channels)
            try:
                variables[param.name] = resolve(param.default, scope)
            except ExpressionError as error:
                diagnostics.error(error.code, error.message, error.span, error.hint)
                ok = False
    return Instance(variables, name, name_span) if ok else None


def _text(value: ast.Name | ast.String) -> str:
    return value.text if isinstance(value, ast.Name) else value.value
