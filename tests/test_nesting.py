"""The nesting pass (cnnspec.nesting) on its own: any vertices with a name, a kind and inputs,
here a hand-made dataclass and the compiler's IR nodes, nested as the language nests them; a
graph that is not so nested is reported, layer by layer. And the diagram, which nests the IR
directly, loads no part of the importer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from cnnspec.compiler import compile_file
from cnnspec.nesting import Join, Residual, Unnestable, end_of, layers_of, nest
from tests.conftest import ROOT, SPECS

IN = "image"  # the graph's input value: any name, passed in


@dataclass(frozen=True)
class V:
    name: str
    kind: str
    inputs: tuple[str, ...]


def conv(name: str, source: str) -> V:
    return V(name, "conv2d", (source,))


def names(items: list) -> list[str]:
    return [vertex.name for vertex in items]


def test_a_chain_is_its_vertices_in_order() -> None:
    vertices = [conv("a", IN), conv("b", "a"), V("c", "relu", ("b",))]
    items = nest(vertices, IN, "c")
    assert items == vertices
    assert end_of(items, IN) == "c" and end_of([], IN) == IN


def test_an_add_with_an_empty_branch_is_a_residual_without_shortcut() -> None:
    vertices = [
        conv("stem", IN),
        conv("c1", "stem"),
        conv("c2", "c1"),
        V("sum", "add", ("c2", "stem")),
        V("out", "relu", ("sum",)),
    ]
    items = nest(vertices, IN, "out")
    assert [type(item).__name__ for item in items] == ["V", "Residual", "V"]
    residual = items[1]
    assert isinstance(residual, Residual)
    assert residual.layer.name == "sum"
    assert names(residual.body) == ["c1", "c2"]
    assert residual.shortcut is None
    assert names(layers_of(items)) == ["stem", "c1", "c2", "sum", "out"]


def test_an_add_of_two_paths_is_a_residual_whose_shorter_path_is_the_shortcut() -> None:
    vertices = [
        conv("a", IN),
        conv("b", "a"),
        conv("proj", IN),
        V("sum", "add", ("proj", "b")),
    ]
    [residual] = nest(vertices, IN, "sum")
    assert isinstance(residual, Residual)
    assert names(residual.body) == ["a", "b"]
    assert residual.shortcut is not None and names(residual.shortcut) == ["proj"]


def test_a_concat_of_three_branches_is_a_join() -> None:
    vertices = [
        conv("stem", IN),
        conv("b1", "stem"),
        conv("b2", "stem"),
        conv("b2b", "b2"),
        V("b3", "max_pool", ("stem",)),
        V("cat", "concat", ("b1", "b2b", "b3")),
    ]
    items = nest(vertices, IN, "cat")
    assert names(items[:1]) == ["stem"]
    join = items[1]
    assert isinstance(join, Join) and join.layer.name == "cat"
    assert [names(branch) for branch in join.branches] == [["b1"], ["b2", "b2b"], ["b3"]]
    assert end_of(items, IN) == "cat"


def test_a_value_used_past_its_join_raises_unnestable_naming_the_layer() -> None:
    # NASNet-like: `b`, inside the first residual's body, is read again after its add.
    vertices = [
        conv("a", IN),
        conv("b", "a"),
        conv("c", "b"),
        V("j1", "add", ("a", "c")),
        V("j2", "add", ("j1", "b")),
    ]
    with pytest.raises(Unnestable) as raised:
        nest(vertices, IN, "j2")
    first = raised.value.problems[0]
    assert first.layer is vertices[1]
    assert first.what == "its output feeds c, j2"
    assert "used again after the join that ends its branch" in first.why
    assert str(raised.value).startswith("the graph cannot be nested: b: its output feeds c, j2")


def test_a_dense_block_is_walked_once_per_layer_not_once_per_path() -> None:
    """torchvision's DenseNet: each layer's concat reads every feature map of its block, so
    the paths to the output double with each layer (a 16-layer block took over 5 minutes to
    refuse). Each layer is now read a bounded number of times, and the refusal names the
    first maps read again."""
    reads = 0

    @dataclass(frozen=True)
    class Counted:
        name: str
        kind: str
        sources: tuple[str, ...]

        @property
        def inputs(self) -> tuple[str, ...]:
            nonlocal reads
            reads += 1
            return self.sources

    layers = 14
    vertices = [Counted("stem", "conv2d", (IN,))]
    features = ["stem"]
    for index in range(1, layers + 1):
        vertices.append(Counted(f"cat{index}", "concat", tuple(features)))
        vertices.append(Counted(f"conv{index}", "conv2d", (f"cat{index}",)))
        features.append(f"conv{index}")
    vertices.append(Counted("out", "concat", tuple(features)))
    with pytest.raises(Unnestable) as raised:
        nest(vertices, IN, "out")
    assert reads < 20 * len(vertices), reads  # 2^14 paths before
    reused = {problem.layer.name for problem in raised.value.problems if problem.layer}
    assert {"conv1", "conv2"} <= reused


def test_a_layer_off_the_path_to_the_output_is_reported() -> None:
    vertices = [conv("a", IN), conv("aside", IN), conv("b", "a")]
    with pytest.raises(Unnestable) as raised:
        nest(vertices, IN, "b")
    [problem] = raised.value.problems
    assert problem.layer is not None and problem.layer.name == "aside"
    assert problem.what == "a layer off the path to the output"


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_the_compilers_nodes_nest_without_conversion(path) -> None:
    graph = compile_file(path).spec.model
    items = nest(graph.nodes, graph.INPUT, graph.output)
    assert sorted(names(layers_of(items))) == sorted(n.name for n in graph.nodes)
    assert end_of(items, graph.INPUT) == graph.output


SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys, tempfile
    from pathlib import Path
    from unittest import mock

    import cnnspec.diagram
    import cnnspec.cli
    from cnnspec.compiler import compile_file
    from cnnspec.diagram import html, svg

    drawn = 0
    for path in {specs!r}:
        spec = compile_file(path).spec
        svg(spec), html(spec), svg(spec, depth=1)
        drawn += 1
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        target = str(Path(out, "graph.html"))
        with mock.patch.object(sys, "argv", ["cnnspec", "graph", {specs!r}[0], "-o", target]):
            try:
                cnnspec.cli.main()
            except SystemExit as exit:
                assert not exit.code, exit.code
        drawn += Path(target).exists()
    loaded = sorted(m for m in sys.modules if m.split(".")[:2] == ["cnnspec", "importing"])
    print(json.dumps({{"drawn": drawn, "importing": loaded}}))
    """
)


def test_drawing_a_diagram_loads_no_part_of_the_importer() -> None:
    specs = [str(p) for p in SPECS]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(specs=specs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["drawn"] == len(specs) + 1
    assert report["importing"] == []
