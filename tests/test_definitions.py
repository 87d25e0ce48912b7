"""Blocks defined with parameters, expressions, `let`, `if`/`else` and `repeat`'s index: what
the checker makes of them, the names it gives, the errors it reports and where."""

from __future__ import annotations

import math
import random

import pytest

from cnnspec import editor
from cnnspec.compiler import compile_text
from cnnspec.diagnostics import render_text
from cnnspec.expressions import Context, ExpressionError, evaluate, make_divisible
from cnnspec.fmt import format_text
from cnnspec.source import Source
from cnnspec.syntax import parse

DEFINED = """\
define conv_bn(filters, kernel=3, stride=1, act=relu) {
  conv2d(filters, kernel, stride=stride, padding=same, use_bias=false, name=conv)
  batchnorm(name=bn)
  if act != none { relu(name=relu) }
}

define unit(filters, stride=1, project=stride != 1) {
  residual {
    conv_bn(filters, stride=stride, name=a)
    conv_bn(filters, act=none, name=b)
    if project { shortcut { conv2d(filters, 1, stride=stride, name=proj) } }
  }
  relu(name=out)
}

model m {
  input 32x32x3
  conv_bn(16, name=stem)
  let width = 2
  repeat 2 { unit(8 * width, name="s1_unit" + str(index + 1)) }
  block s2 { unit(32, stride=2, name=s2_unit1) }
  global_avg_pool()
  dense(10, activation=softmax)
}
"""

WRITTEN_OUT = """\
model m {
  input 32x32x3
  block stem {
    conv2d(16, 3, stride=1, padding=same, use_bias=false, name=stem_conv)
    batchnorm(name=stem_bn)  relu(name=stem_relu)
  }
  block s1_unit1 {
    residual {
      name s1_unit1_add
      conv2d(16, 3, stride=1, padding=same, use_bias=false, name=s1_unit1_a_conv)
      batchnorm(name=s1_unit1_a_bn)  relu(name=s1_unit1_a_relu)
      conv2d(16, 3, stride=1, padding=same, use_bias=false, name=s1_unit1_b_conv)
      batchnorm(name=s1_unit1_b_bn)
    }
    relu(name=s1_unit1_out)
  }
  block s1_unit2 {
    residual {
      name s1_unit2_add
      conv2d(16, 3, stride=1, padding=same, use_bias=false, name=s1_unit2_a_conv)
      batchnorm(name=s1_unit2_a_bn)  relu(name=s1_unit2_a_relu)
      conv2d(16, 3, stride=1, padding=same, use_bias=false, name=s1_unit2_b_conv)
      batchnorm(name=s1_unit2_b_bn)
    }
    relu(name=s1_unit2_out)
  }
  block s2 {
    block s2_unit1 {
      residual {
        name s2_unit1_add
        conv2d(32, 3, stride=2, padding=same, use_bias=false, name=s2_unit1_a_conv)
        batchnorm(name=s2_unit1_a_bn)  relu(name=s2_unit1_a_relu)
        conv2d(32, 3, stride=1, padding=same, use_bias=false, name=s2_unit1_b_conv)
        batchnorm(name=s2_unit1_b_bn)
        shortcut { conv2d(32, 1, stride=2, name=s2_unit1_proj) }
      }
      relu(name=s2_unit1_out)
    }
  }
  global_avg_pool()
  dense(10, activation=softmax)
}
"""


def _graph(text: str):  # type: ignore[no-untyped-def]
    compilation = compile_text(text, "t.cnn")
    errors = [d for d in compilation.diagnostics if d.severity == "error"]
    assert not errors, [render_text(d, compilation.source) for d in errors]
    assert compilation.spec is not None
    return compilation.spec.model


def _summary(graph) -> list[tuple[str, str, object, int, int]]:  # type: ignore[no-untyped-def]
    return [
        (n.name, n.kind, n.output_shape, n.params.trainable, n.params.non_trainable)
        for n in graph.nodes
    ]


def test_instances_equal_the_model_written_out() -> None:
    defined, written = _graph(DEFINED), _graph(WRITTEN_OUT)
    # Layer names, shapes and counts, one for one (joins are numbered alike in both).
    assert _summary(defined) == _summary(written)
    # Named instances inside an instance are blocks too (s1_unit1.a), freezable by name.
    assert set(written.blocks) < set(defined.blocks)


def test_instance_names_prefix_the_layers_and_make_blocks() -> None:
    graph = _graph(DEFINED)
    names = [n.name for n in graph.nodes]
    assert names[:3] == ["stem_conv", "stem_bn", "stem_relu"]
    assert "s1_unit2_b_bn" in names and "s2_unit1_proj" in names
    # `if act != none` left out the relu of every `b`, and the projection only in stage 2.
    assert "s1_unit1_b_relu" not in names
    assert [n.name for n in graph.nodes if n.role == "shortcut"] == ["s2_unit1_proj"]
    # Freezable by the instance's name, nested under the block it is called in.
    assert {"stem", "s1_unit1", "s1_unit2", "s2", "s2.s2_unit1"} <= set(graph.blocks)
    assert graph.definitions.keys() == {"conv_bn", "unit"}


def test_an_unnamed_instance_is_written_in_place() -> None:
    text = (
        "define pair(f) { conv2d(f, 3)  relu() }\n"
        "model m { input 8x8x1  block b { pair(4)  pair(8) }  flatten()  dense(2, activation=softmax) }\n"
    )
    graph = _graph(text)
    assert [n.name for n in graph.nodes][:4] == ["b_conv2d_1", "b_relu_1", "b_conv2d_2", "b_relu_2"]
    assert graph.nodes[2].output_shape == (4, 4, 8)


def test_defaults_reach_into_defined_blocks_from_the_call() -> None:
    text = (
        "define c(f) { conv2d(f) }\n"
        "model m { input 8x8x1  defaults conv2d(kernel=1, use_bias=false)  c(4)  flatten()  dense(2, activation=softmax) }\n"
    )
    conv = _graph(text).nodes[0]
    assert conv.output_shape == (8, 8, 4) and conv.params.total == 4


def test_an_error_inside_a_definition_names_the_call_that_showed_it() -> None:
    text = (
        "define c(f, k) {\n"
        "  conv2d(f, k)\n"
        "}\n"
        "model m {\n"
        "  input 8x8x1\n"
        "  c(4, 3)\n"
        "  c(4, 9)\n"
        "  flatten()  dense(2, activation=softmax)\n"
        "}\n"
    )
    compilation = compile_text(text, "t.cnn")
    errors = [d for d in compilation.diagnostics if d.severity == "error"]
    assert [(d.code, d.span.line) for d in errors] == [("E201", 2)]
    assert errors[0].notes == ("in c(...) at line 7, column 3",)
    rendered = render_text(errors[0], compilation.source)
    assert rendered.splitlines()[-1].endswith("= note: in c(...) at line 7, column 3")


def test_an_argument_that_is_wrong_for_its_layer_is_reported_at_the_call() -> None:
    text = "define c(f) { conv2d(f) }\nmodel m { input 8x8x1  c(-4)  flatten()  dense(2, activation=softmax) }\n"
    errors = list(compile_text(text, "t.cnn").diagnostics)
    # The value came from the call: the error points at `-4`, where it was written.
    assert [(d.code, d.span.line, d.span.column) for d in errors] == [("E113", 2, 26)]


def test_parameter_defaults_use_the_parameters_before_them() -> None:
    text = (
        "define se(filters, ratio=0.25, squeezed=max(1, int(filters * ratio))) {\n"
        "  global_avg_pool(keepdims=true)  conv2d(squeezed, 1)\n"
        "}\n"
        "model m { input 8x8x40  se(40)  flatten()  dense(2, activation=softmax) }\n"
    )
    assert _graph(text).nodes[1].output_shape == (1, 1, 10)


def test_repeat_counts_may_be_expressions_and_index_counts_from_zero() -> None:
    text = (
        "model m {\n  input 8x8x1\n  let depth = 1.2\n"
        '  repeat ceil(depth * 2) { conv2d(4 + index, 1, name="c" + letter(index)) }\n'
        "  flatten()  dense(2, activation=softmax)\n}\n"
    )
    graph = _graph(text)
    assert [(n.name, n.output_shape) for n in graph.nodes[:3]] == [
        ("ca", (8, 8, 4)),
        ("cb", (8, 8, 5)),
        ("cc", (8, 8, 6)),
    ]


def test_channels_is_the_input_channel_count_where_it_is_used() -> None:
    text = (
        "define transition(reduction=0.5) { conv2d(int(channels() * reduction), 1) }\n"
        "model m { input 8x8x30  transition()  transition(0.2)  flatten()  dense(2, activation=softmax) }\n"
    )
    assert [n.output_shape for n in _graph(text).nodes[:2]] == [(8, 8, 15), (8, 8, 3)]


def test_a_block_that_uses_itself_is_refused_not_expanded_forever() -> None:
    text = (
        "define a(n) { b(n) }\ndefine b(n) { a(n) }\n"
        "model m { input 8x8x1  a(1)  flatten()  dense(2, activation=softmax) }\n"
    )
    errors = list(compile_text(text, "t.cnn").diagnostics)
    assert [d.code for d in errors] == ["E113"]
    assert "a → b → a" in errors[0].message


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("7 / 2", 3.5),
        ("2 * 3 == 6", True),
        ("2 < 1", False),
        ('"block" + str(2) + letter(0)', "block2a"),
        ("int(2.9) + floor(-0.5) + ceil(0.1)", 2),
        ("max(1, 7, 3) - min(4, 2)", 5),
        ("make_divisible(32 * 1.1)", 32),
        ("make_divisible(40 * 1.4)", 56),
        ("make_divisible(16 * 0.75, 8)", 16),
        ("relu == relu", True),
        ("none == false", False),
    ],
)
def test_expressions_evaluate_as_written(expression: str, value: object) -> None:
    source = Source("t.cnn", f"m {{ let x = {expression} }}")
    document = parse(source, _diagnostics(source))
    setting = document.items[0].items[0]  # type: ignore[union-attr]
    result = evaluate(setting.value, Context())  # type: ignore[union-attr]
    assert result == value and type(result) is type(value)


def _diagnostics(source: Source):  # type: ignore[no-untyped-def]
    from cnnspec.diagnostics import Diagnostics

    return Diagnostics(source)


def test_make_divisible_is_keras_applications_rounding() -> None:
    # keras.applications.mobilenet_v3._depth / efficientnet round_filters, written out.
    def keras_rule(v: float, divisor: int = 8) -> int:
        new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
        if new_v < 0.9 * v:
            new_v += divisor
        return new_v

    for filters in (16, 24, 32, 40, 72, 80, 112, 192, 320, 1280):
        for width in (0.35, 0.5, 0.75, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0, 3.1):
            assert make_divisible(filters * width) == keras_rule(filters * width)
    assert make_divisible(3.9) == 8  # never below the divisor
    assert math.isclose(make_divisible(100, 1), 100)


def test_an_unknown_name_in_arithmetic_suggests_a_variable() -> None:
    with pytest.raises(ExpressionError) as raised:
        source = Source("t.cnn", "m { x filtrs * 2 }")
        value = parse(source, _diagnostics(source)).items[0].items[0].value  # type: ignore[union-attr]
        from cnnspec import syntax as ast

        variables = {"filters": ast.Number(3, "3", value.span)}
        evaluate(value, Context(variables=variables))
    assert raised.value.message == "unknown name 'filtrs'"
    assert raised.value.hint == "did you mean 'filters'?"


def test_fmt_keeps_expressions_and_definitions() -> None:
    text = (
        "define  u(f,s=1){conv2d(f*2,kernel=1+2)\n"
        "if s==2 {relu()}\nelse{tanh()}}\n"
        "model m{input 8x8x1\nlet w=2*(3+1)\nu(w)\nflatten()}\n"
    )
    formatted = format_text(text)
    assert formatted == (
        "define u(f, s=1) {\n"
        "  conv2d(f * 2, kernel=1 + 2)\n"
        "  if s == 2 { relu() }\n"
        "  else { tanh() }\n"
        "}\n"
        "\n"
        "model m {\n"
        "  input 8x8x1\n"
        "  let w = 2 * (3 + 1)\n"
        "  u(w)\n"
        "  flatten()\n"
        "}\n"
    )
    assert format_text(formatted) == formatted


def test_editor_knows_instances() -> None:
    compilation = compile_text(DEFINED, "t.cnn")
    text = DEFINED
    call = text.index("unit(32")
    hover = editor.hover(compilation, call)
    assert hover is not None and hover.startswith("**unit(32, stride=2, name=s2_unit1)**: 8 layers")
    assert editor.definition(compilation, call) == [compilation.spec.model.definitions["unit"]]  # type: ignore[union-attr]
    hints = dict(editor.inlay_hints(compilation))
    end = text.index(")", call) + 1
    assert hints[end] == " → (16, 16, 32) · 14,624 params"
    # A definition's own lines are shared by its calls: they get no hint of their own.
    inside = text.index("conv2d(filters, kernel")
    assert not any(inside <= offset < text.index("}", inside) for offset in hints)
    symbols = editor.outline(compilation)
    assert symbols[0].name == "define conv_bn(filters, kernel, stride, act)"


def test_completion_offers_defined_blocks_and_their_parameters() -> None:
    text = "define mbconv(filters, expand=1) { relu() }\nmodel m {\n  input 8x8x1\n  \n  mbconv(3, "
    items = editor.completions(text, text.index("\n  \n") + 3)
    assert "mbconv" in [c.label for c in items]
    assert [c.label for c in editor.completions(text, len(text))] == [
        "filters=",
        "expand=",
        "name=",
    ]


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("all(1 == 1, 2 > 1)", True),
        ("all(1 == 1, 2 < 1)", False),
        ("any(1 == 2, 3 == 3)", True),
        ("not(1 == 2)", True),
    ],
)
def test_conditions_combine_with_all_any_and_not(expression: str, value: bool) -> None:
    source = Source("t.cnn", f"m {{ let x = {expression} }}")
    setting = parse(source, _diagnostics(source)).items[0].items[0]  # type: ignore[union-attr]
    assert evaluate(setting.value, Context()) is value  # type: ignore[union-attr]


def test_a_condition_must_be_true_or_false() -> None:
    source = Source("t.cnn", "m { let x = all(1 == 1, 3) }")
    setting = parse(source, _diagnostics(source)).items[0].items[0]  # type: ignore[union-attr]
    with pytest.raises(ExpressionError, match=r"all\(\): needs true or false, got 3"):
        evaluate(setting.value, Context())  # type: ignore[union-attr]


# ---- random defined blocks: never an internal error ------------------------------------------

_VALUES = [
    "3", "0", "-2", "0.5", "1/0", "filters", "filters * 2", "filters / 3", "k + 1", "missing",
    "relu", '"s"', '"a" + str(k)', "int(filters * 0.5)", "max(1, k)", "make_divisible(k * 3)",
    "letter(k)", "letter(30)", "channels()", "index", "(1, 2)", "[3, 3]", "true", "none",
    "ceil(k / 2)", "all(k == 1, true)", "not(k)", "k == 2", "sqrt(-1)",
]  # fmt: skip
_LAYERS = [
    "conv2d({a}, kernel={b}, padding=same, name={n})",
    "depthwise_conv2d({a}, stride={b})",
    "dense({a})",
    "dropout({a})",
    "maxpool({a})",
    "zero_pad({a})",
    "batchnorm(epsilon={a})",
    "relu(name={n})",
    "{d}({a}, k={b}, name={n})",
    "{d}({a})",
]
_SECTIONS = [
    "if {a} {{ {x} }}",
    "if {a} {{ {x} }} else {{ {y} }}",
    "repeat {a} {{ {x} }}",
    "residual {{ {x} shortcut {{ {y} }} }}",
    "concat {{ branch {{ {x} }} branch {{}} }}",
    "let v = {a}",
    "block {n} {{ {x} }}",
]


_GOOD = ["1", "2", "3", "filters", "k", "filters * 2", "int(filters * 0.5) + 1", "max(1, k)"]
_GOOD_SECTIONS = [
    "if k == 1 {{ {x} }} else {{ {y} }}",
    "repeat k {{ {x} }}",
    "residual {{ {x} }}",
    "concat {{ branch {{ {x} }} branch {{}} }}",
    "let k = k + 1",
]


def _random_spec(rng: random.Random) -> str:
    """Mostly sound specs (expansion succeeds, nested: the model calls u, u calls v, v calls w),
    and the others with wrong values, names and sections anywhere."""
    names = ["a", "b", "c", "stem", '"x y"', "block1", "index", "name", 'name + "_z"']
    definitions = ["u", "v", "w"]
    sound = rng.random() < 0.6

    def value() -> str:
        return rng.choice(_GOOD if sound or rng.random() < 0.7 else _VALUES)

    def layer(depth: int) -> str:
        if sound:
            choice = rng.choice(["conv2d({a}, kernel=1, padding=same)", "relu()", "call", "call"])
            callee = definitions[depth + 1 :]
            if choice == "call" and callee:
                return f"{rng.choice(callee)}({value()}, k={rng.choice(['1', '2'])})"
            return "batchnorm()" if choice == "call" else choice.format(a=value())
        template = rng.choice(_LAYERS)
        return template.format(a=value(), b=value(), n=rng.choice(names), d=rng.choice(definitions))

    def item(depth: int, level: int) -> str:
        if level < 2 and rng.random() < 0.35:
            pool = _GOOD_SECTIONS if sound else _SECTIONS
            return rng.choice(pool).format(
                a=value(), x=item(depth, level + 1), y=item(depth, level + 1), n=rng.choice(names)
            )
        return layer(depth)

    parts = []
    for depth, name in enumerate(definitions):
        params = (
            "(filters, k=1)"
            if sound
            else rng.choice(["(filters, k=1)", "(filters)", "", "(k=filters)", "(filters, k)"])
        )
        body = "  ".join(item(depth, 0) for _ in range(rng.randint(1, 4)))
        parts.append(f"define {name}{params} {{ {body} }}")
    body = "  ".join(item(-1, 0) for _ in range(rng.randint(1, 5)))
    parts.append(f"model m {{ input 16x16x3  {body}  flatten()  dense(2, activation=softmax) }}")
    return "\n".join(parts) + "\n"


def test_random_defined_blocks_never_raise() -> None:
    """Random defines, calls, conditions, repeats, lets and expressions, right and wrong:
    every one compiles to a spec or to located diagnostics, never an internal error."""
    from tests.fuzzing import FUZZ_SEED, examples

    rng = random.Random(f"{FUZZ_SEED}/defines")
    accepted = 0
    for _ in range(examples(300)):
        text = _random_spec(rng)
        try:
            compilation = compile_text(text, "t.cnn")
        except Exception as error:
            raise AssertionError(f"{type(error).__name__}: {error}\n{text}") from error
        for diagnostic in compilation.diagnostics:
            assert 1 <= diagnostic.span.line <= text.count("\n") + 1, (diagnostic, text)
            render_text(diagnostic, compilation.source)
        accepted += compilation.ok
        assert (
            format_text(text) is None
            or parse(Source("f.cnn", format_text(text) or ""), _diagnostics(Source("f.cnn", "")))
            is not None
        )
    # Most sound specs are accepted, with nodes made inside (nested) instances.
    assert accepted > examples(300) // 20
