"""Declared, checked arguments: the small validation core every spec call is bound with.

A class lists its arguments as annotated attributes, the way a dataclass does, with their
defaults and bounds:

    class Dropout(Model):
        rate: Annotated[float, Field(ge=0, lt=1)]
        noise: tuple[int, ...] | None = None

and `Dropout.validate({"rate": 1.5})` raises `Invalid` with one `Problem` per argument ("must be
less than 1"). The types a spec can give are few (numbers, booleans, strings, names, tuples,
`None`, and calls already bound to another model), so the whole of it is this module.

Why not pydantic, which the first versions used: importing it and building these models took
~120 ms of a 280 ms `cnnspec check` process, and the check itself takes 3 ms. The messages
follow pydantic's wording ("must be greater than 0", "must be 'same' or 'valid'"), which the
diagnostics were written against.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from cnnspec.wording import plural

REQUIRED: Any = ...


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One declared argument: its type (without bounds), default and bounds."""

    name: str
    annotation: Any
    default: Any = REQUIRED
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    before: tuple[Callable[[Any], Any], ...] = ()  # converters applied to the raw value

    def is_required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True, slots=True)
class _Bounds:
    default: Any = REQUIRED
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None


def Field(
    default: Any = REQUIRED,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """Bounds on a number, as an attribute's value (`= Field(default=0.2, gt=0)`) or inside
    `Annotated[float, Field(ge=0)]`."""
    return _Bounds(default, gt, ge, lt, le)


@dataclass(frozen=True, slots=True)
class Before:
    """A converter applied to the raw value before its type is checked, inside `Annotated`:
    `Annotated[tuple[int, int], Before(pair)]` accepts `3` and makes it `(3, 3)`."""

    convert: Callable[[Any], Any]


class Problem(Exception):
    """What is wrong with one value: raised by converters and validators, and collected by
    `validate`. `kind` is "missing", "unknown", "choice" (not one of a Literal's values),
    "type", "bound" or "value"; `field` is None for a problem of the whole model."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        kind: str = "value",
        value: Any = REQUIRED,
        field: str | None = None,
        choices: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = kind
        self.value = value
        self.field = field
        self.choices = choices
        # Which item of a tuple value is wrong, when one is.
        self.index: int | None = None

    def at(self, field: str | None, value: Any) -> Problem:
        self.field = field
        if self.value is REQUIRED:
            self.value = value
        return self


class Invalid(Exception):
    """Every problem found while validating a model's arguments."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def field_validator(*names: str) -> Callable[[Any], Any]:
    """Marks a classmethod `(cls, value) -> value` that checks the named fields once typed."""

    def mark(method: Any) -> Any:
        function = getattr(method, "__func__", method)
        function.__validates__ = names
        return method

    return mark


def model_validator(mode: Literal["after"] = "after") -> Callable[[Any], Any]:
    """Marks a method `(self) -> self` that checks the whole model once its fields are set."""

    def mark(function: Any) -> Any:
        function.__validates_model__ = True
        return function

    return mark


# --------------------------------------------------------------------------------------------
# Types


def _describe(annotation: Any) -> str:
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _literal_text(values: tuple[Any, ...]) -> str:
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _number_text(bound: float) -> str:
    return str(bound)


# The words true, false and none reach a model as Python's True, False and None: the binder
# cannot know the field's type. Where a field takes no such value but the word itself (a Literal
# that lists it, `validation none`, or a string, `classes [none, cat]`), it means the word.
WORDS: dict[bool | None, str] = {True: "true", False: "false", None: "none"}
# The other way: what each word means where a value is read.
CONSTANTS: dict[str, bool | None] = {word: value for value, word in WORDS.items()}


def _is_word(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def _holds_word(value: Any) -> bool:
    return _is_word(value) or (isinstance(value, tuple) and any(_holds_word(v) for v in value))


def _check(annotation: Any, value: Any, words: bool = True) -> Any:
    """`value` as `annotation` says, or raise Problem. With `words`, true, false and none are
    also the words where the annotation takes the word but not the value."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *metadata = typing.get_args(annotation)
        for item in metadata:
            if isinstance(item, Before):
                value = item.convert(value)
        value = _check(base, value, words)
        for item in metadata:
            if isinstance(item, _Bounds):
                _check_bounds(item, value)
        return value
    if origin is Literal:
        choices = typing.get_args(annotation)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        if words and _is_word(value) and WORDS[value] in choices:
            return WORDS[value]
        raise Problem(f"must be {_literal_text(choices)}", kind="choice", choices=choices)
    if origin in (Union, types.UnionType):
        return _check_union(typing.get_args(annotation), value, words)
    if origin is tuple:
        return _check_tuple(typing.get_args(annotation), value, words)
    if annotation is Any:
        return value
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _quoted_number(value, "an integer")
        raise Problem("must be a valid integer", kind="type")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise Problem("must be a finite number", kind="type")
            return float(value)
        _quoted_number(value, "a number")
        raise Problem("must be a valid number", kind="type")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise Problem("must be a valid boolean", kind="type")
    if annotation is str:
        if isinstance(value, str):
            return value
        if words and _is_word(value):
            return WORDS[value]
        raise Problem("must be a valid string", kind="type")
    if annotation is type(None):
        if value is None:
            return None
        raise Problem("must be none", kind="type")
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise Problem(f"must be {_describe(annotation)}", kind="type")
    raise TypeError(f"cannot check values of type {annotation!r}")


def _quoted_number(value: Any, what: str) -> None:
    """A number written in quotes, `lr="1e-4"`, is a string: say so."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return
        raise Problem(
            f"must be {what}, not the string {value!r}",
            hint=f"remove the quotes: {value}",
            kind="type",
        )


def _check_bounds(bounds: _Bounds, value: Any) -> None:
    if value is None:
        return
    if bounds.gt is not None and not value > bounds.gt:
        raise Problem(f"must be greater than {_number_text(bounds.gt)}", kind="bound")
    if bounds.ge is not None and not value >= bounds.ge:
        raise Problem(f"must be greater than or equal to {_number_text(bounds.ge)}", kind="bound")
    if bounds.lt is not None and not value < bounds.lt:
        raise Problem(f"must be less than {_number_text(bounds.lt)}", kind="bound")
    if bounds.le is not None and not value <= bounds.le:
        raise Problem(f"must be less than or equal to {_number_text(bounds.le)}", kind="bound")


def _check_union(alternatives: tuple[Any, ...], value: Any, words: bool = True) -> Any:
    """The first alternative that accepts `value`. When none does, the most telling problem:
    for a word, the list of words allowed (with did-you-mean); for a number, its bound.

    True, False and None are taken as themselves first, by any alternative (`weights=none`
    is None in `str | None`), and as words only when no alternative takes them."""
    problems: list[Problem] = []
    for as_words in (False, True) if words and _holds_word(value) else (words,):
        problems = []
        for alternative in alternatives:
            try:
                return _check(alternative, value, as_words)
            except Problem as problem:
                problems.append(problem)
    if isinstance(value, str):
        preferred = [p for p in problems if p.kind == "choice"]
        if len(preferred) > 1:
            choices = tuple(c for p in preferred for c in p.choices)
            raise Problem(f"must be {_literal_text(choices)}", kind="choice", choices=choices)
    else:
        preferred = [p for p in problems if p.kind not in ("choice", "type")]
    raise (preferred or problems)[0]


def _check_tuple(items: tuple[Any, ...], value: Any, words: bool = True) -> tuple[Any, ...]:
    if not isinstance(value, tuple):
        raise Problem("must be a valid tuple", kind="type")
    if len(items) == 2 and items[1] is Ellipsis:
        checked = []
        for index, item in enumerate(value):
            try:
                checked.append(_check(items[0], item, words))
            except Problem as problem:
                problem.index, problem.value = index, item
                raise
        return tuple(checked)
    if len(value) != len(items):
        raise Problem(f"must have {plural(len(items), 'item')}, not {len(value)}", kind="type")
    return tuple(_check(item, v, words) for item, v in zip(items, value, strict=True))


# --------------------------------------------------------------------------------------------
# Models


def _field(name: str, annotation: Any, attribute: Any) -> FieldInfo:
    bounds = attribute if isinstance(attribute, _Bounds) else _Bounds(default=attribute)
    before: tuple[Callable[[Any], Any], ...] = ()
    base = annotation
    if typing.get_origin(annotation) is Annotated:
        base, *metadata = typing.get_args(annotation)
        before = tuple(m.convert for m in metadata if isinstance(m, Before))
        for item in metadata:
            if isinstance(item, _Bounds):
                bounds = _Bounds(bounds.default, item.gt, item.ge, item.lt, item.le)
    return FieldInfo(name, base, bounds.default, bounds.gt, bounds.ge, bounds.lt, bounds.le, before)


def _is_classvar(annotation: Any) -> bool:
    return annotation is ClassVar or typing.get_origin(annotation) is ClassVar


class Model:
    """Arguments declared as annotated class attributes, validated together, then frozen."""

    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _field_checks: ClassVar[dict[str, list[Callable[[Any], Any]]]] = {}
    _model_checks: ClassVar[list[Callable[[Any], Any]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = dict(cls.model_fields)
        for name, annotation in inspect.get_annotations(cls, eval_str=True).items():
            if name.startswith("_") or _is_classvar(annotation):
                continue
            # A field declared again takes its new default, or none: as in a dataclass.
            fields[name] = _field(name, annotation, cls.__dict__.get(name, REQUIRED))
            if name in cls.__dict__:
                delattr(cls, name)  # the instance's value, never a class default, is read
        cls.model_fields = fields
        field_checks = {k: list(v) for k, v in cls._field_checks.items()}
        model_checks = list(cls._model_checks)
        for member in cls.__dict__.values():
            function = getattr(member, "__func__", member)
            for name in getattr(function, "__validates__", ()):
                field_checks.setdefault(name, []).append(member.__get__(None, cls))
            if getattr(function, "__validates_model__", False):
                model_checks.append(function)
        cls._field_checks = field_checks
        cls._model_checks = model_checks

    def __init__(self, **values: Any) -> None:
        """Validate `values`; raises Invalid with every problem found."""
        problems: list[Problem] = []
        for name in values:
            if name not in self.model_fields:
                problems.append(Problem("is not an argument", kind="unknown", field=name))
        for name, info in self.model_fields.items():
            if name not in values:
                if info.is_required():
                    problems.append(Problem("is required", kind="missing", field=name))
                else:
                    object.__setattr__(self, name, info.default)
                continue
            raw = values[name]
            try:
                value = _check_field(info, raw)
                for check in self._field_checks.get(name, ()):
                    value = check(value)
            except Problem as problem:
                problems.append(problem.at(name, raw))
                continue
            except ValueError as error:
                problems.append(Problem(str(error)).at(name, raw))
                continue
            object.__setattr__(self, name, value)
        if problems:
            raise Invalid(problems)
        for check in self._model_checks:
            try:
                check(self)
            except Problem as problem:
                raise Invalid([problem.at(None, None)]) from None
            except ValueError as error:
                raise Invalid([Problem(str(error))]) from None

    @classmethod
    def model_validate(cls, values: dict[str, Any]) -> Any:
        return cls(**values)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.model_fields:
            raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot change")
        object.__setattr__(self, name, value)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for name in self.model_fields:
            yield name, getattr(self, name)

    def model_dump(self) -> dict[str, Any]:
        return dict(self)

    def model_copy(self, update: dict[str, Any] | None = None) -> Any:
        """A copy with some fields replaced, not validated again (as pydantic's)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        for name, value in (update or {}).items():
            object.__setattr__(copy, name, value)
        return copy

    def _key(self) -> tuple[Any, ...]:
        return (type(self), *(getattr(self, name) for name in self.model_fields))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self)
        return f"{type(self).__name__}({args})"


def _check_field(info: FieldInfo, value: Any) -> Any:
    for convert in info.before:
        value = convert(value)
    value = _check(info.annotation, value)
    _check_bounds(_Bounds(info.default, info.gt, info.ge, info.lt, info.le), value)
    return value


# The bounded numbers most settings take.
Fraction01 = Annotated[float, Field(ge=0, lt=1)]
Positive = Annotated[float, Field(gt=0)]
