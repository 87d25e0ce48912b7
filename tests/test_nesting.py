"""The nesting pass (cnnspec.nesting) on its own: any vertices with a name, a kind and inputs,
here a hand-made dataclass and the compiler's IR nodes, nested as the language nests them; a
value used past its join read again by a `From`, on hand-made graphs and on random DAGs; a
layer off the path to the output reported. And the diagram, which nests the IR directly, loads
no part of the importer."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass

import pytest

from cnnspec.compiler import compile_file
from cnnspec.nesting import (
    From,
    Join,
    Residual,
    Unnestable,
    end_of,
    froms_of,
    layers_of,
    nest,
)
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


def test_a_value_used_past_its_join_is_read_again_by_a_from() -> None:
    # NASNet-like: `b`, inside the first residual's body, is read again after its add.
    vertices = [
        conv("a", IN),
        conv("b", "a"),
        conv("c", "b"),
        V("j1", "add", ("a", "c")),
        V("j2", "add", ("j1", "b")),
    ]
    items = nest(vertices, IN, "j2")
    assert items[0] == vertices[0]
    inner, outer = items[1:]
    assert isinstance(inner, Residual) and names(inner.body) == ["b", "c"]
    # The second add reads the first's output and `b`: written after the first, from b.
    # A residual's body holds a layer: an add of two branches, `{}` and `{ from b }`.
    assert isinstance(outer, Join) and outer.layer.name == "j2"
    assert outer.branches == [[], [From("b")]]
    assert froms_of(items) == ["b"]
    assert names(layers_of(items)) == ["a", "b", "c", "j1", "j2"]
    assert_written_in_order(vertices, items)


def test_cells_reading_the_two_cells_before_them() -> None:
    """NASNet's cells: each combines a convolution of the cell before it with the cell before
    that one, which the chain has gone past."""
    vertices = [conv("c0", IN), conv("c1", "c0")]
    before, last = "c0", "c1"
    for k in range(2, 6):
        vertices.append(conv(f"p{k}", last))
        vertices.append(V(f"cell{k}", "concat", (f"p{k}", before)))
        before, last = last, f"cell{k}"
    items = nest(vertices, IN, last)
    assert froms_of(items) == ["c1", "cell2", "cell3"]
    join = items[-1]
    assert isinstance(join, Join) and join.branches == [[], [From("cell3")]]
    assert_written_in_order(vertices, items)


def test_cells_follow_one_another_rather_than_nest() -> None:
    """Each cell's join has its fork cells back (the value every path to it passes through):
    written around its branches, each cell would hold the one before it, thirty deep."""
    vertices = [conv("c0", IN), conv("c1", "c0")]
    before, last = "c0", "c1"
    for k in range(2, 32):
        vertices += [conv(f"l{k}", last), conv(f"r{k}", before)]
        vertices.append(V(f"sum{k}", "add", (f"l{k}", f"r{k}")))
        vertices.append(V(f"cell{k}", "concat", (f"sum{k}", last)))
        before, last = last, f"cell{k}"
    items = nest(vertices, IN, last)
    assert depth(items) <= 2
    assert_written_in_order(vertices, items)


def test_cells_whose_joins_read_across_their_branches_keep_the_source_order() -> None:
    """NASNet-A's cells: the concat's first input is the older cell's projection `q`, which
    the other branches read too. The branches are written before the concat in the order the
    source has them, each from what it reads, rather than one inside another."""
    vertices = [conv("stem", IN)]
    before, last = "stem", "stem"
    for k in range(1, 7):
        vertices += [
            conv(f"h{k}", last),
            conv(f"q{k}", before),
            conv(f"a{k}", f"h{k}"),
            conv(f"b{k}", f"q{k}"),
            V(f"x{k}", "add", (f"a{k}", f"b{k}")),
            conv(f"c{k}", f"q{k}"),
            conv(f"d{k}", f"q{k}"),
            V(f"y{k}", "add", (f"c{k}", f"d{k}")),
            V(f"out{k}", "concat", (f"q{k}", f"x{k}", f"y{k}")),
        ]
        before, last = last, f"out{k}"
    items = nest(vertices, IN, last)
    assert_written_in_order(vertices, items)
    assert names(layers_of(items)) == [v.name for v in vertices]
    assert depth(items) <= 2
    join = items[-1]
    assert isinstance(join, Join) and join.branches == [[From("q6")], [From("x6")], []]


def depth(items: list) -> int:
    nested = [
        column
        for item in items
        if isinstance(item, Join | Residual)
        for column in (item.branches if isinstance(item, Join) else [item.body, item.shortcut])
        if column
    ]
    return 1 + max((depth(column) for column in nested), default=0)


def test_a_dual_path_reads_its_dense_part_from_a_branch() -> None:
    """DPN's dual path: a block's output is split into a residual part and a dense part; the
    next block adds to the one and concatenates to the other."""
    vertices = [
        conv("stem", IN),
        conv("c1", "stem"),
        V("res1", "add", ("c1", "stem")),
        V("dense1", "concat", ("stem", "c1")),
        V("both1", "concat", ("res1", "dense1")),
        conv("c2", "both1"),
        V("res2", "add", ("c2", "res1")),
        V("dense2", "concat", ("dense1", "c2")),
        V("out", "concat", ("res2", "dense2")),
    ]
    items = nest(vertices, IN, "out")
    assert set(froms_of(items)) >= {"res1", "dense1"}
    assert_written_in_order(vertices, items)


def test_a_residual_whose_shortcut_reads_its_body_keeps_the_body_first() -> None:
    # The second path is the longer, so it would be the body, written first; but it reads `p`
    # of the first path, which must be written before it.
    vertices = [
        conv("p", IN),
        conv("x", "p"),
        conv("t", IN),
        V("y", "add", ("p", "t")),
        conv("z1", "y"),
        conv("z2", "z1"),
        V("sum", "add", ("x", "z2")),
    ]
    [residual] = nest(vertices, IN, "sum")
    assert isinstance(residual, Residual)
    assert names(residual.body) == ["p", "x"]
    assert residual.shortcut is not None and froms_of(residual.shortcut) == ["p"]
    assert_written_in_order(vertices, [residual])


def test_an_add_of_the_chain_and_an_earlier_value_is_a_residual_from_that_value() -> None:
    vertices = [
        conv("a", IN),
        V("b", "concat", ("a", IN)),
        conv("c", "b"),
        V("sum", "add", ("c", "a")),
    ]
    items = nest(vertices, IN, "sum")
    assert_written_in_order(vertices, items)
    assert froms_of(items) == ["a"]


def test_a_dense_block_is_walked_once_per_layer_not_once_per_path() -> None:
    """torchvision's DenseNet: each layer's concat reads every feature map of its block, so
    the paths to the output double with each layer (a 16-layer block took over 5 minutes to
    refuse). Each layer is read a bounded number of times, and the maps read again are Froms."""
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
    items = nest(vertices, IN, "out")
    assert reads < 20 * len(vertices), reads  # 2^14 paths before
    assert {"conv1", "conv2"} <= set(froms_of(items))
    assert len(layers_of(items)) == len(vertices)


def test_a_layer_off_the_path_to_the_output_is_reported() -> None:
    vertices = [conv("a", IN), conv("aside", IN), conv("b", "a")]
    with pytest.raises(Unnestable) as raised:
        nest(vertices, IN, "b")
    [problem] = raised.value.problems
    assert problem.layer is not None and problem.layer.name == "aside"
    assert problem.what == "a layer off the path to the output"


def test_only_the_layer_off_the_path_is_reported() -> None:
    vertices = [
        conv("a", IN),
        conv("b", "a"),
        conv("aside", "b"),
        conv("c", "b"),
        V("j", "add", ("c", "a")),
    ]
    with pytest.raises(Unnestable) as raised:
        nest(vertices, IN, "j")
    assert [(p.layer.name if p.layer else None, p.what) for p in raised.value.problems] == [
        ("aside", "a layer off the path to the output")
    ]


def written(items: list, start: str, seen: set[str], edges: list, order: list[str]) -> str:
    """Reads `items` as the language does, in textual order from `start`: each From must name
    a value written before it. The connections it makes go to `edges`, the layers to `order`;
    returns the value the chain ends with."""
    value = start
    for item in items:
        if isinstance(item, From):
            assert item.value in seen, f"from {item.value} before {item.value} is written"
            assert item.value != value, f"from {item.value} where the chain holds it already"
            value = item.value
            continue
        if isinstance(item, Residual):
            assert layers_of(item.body), "a residual's body holds a layer"
        if isinstance(item, Join | Residual):
            columns = item.branches if isinstance(item, Join) else [item.body, item.shortcut]
            for column in columns:
                end = value if column is None else written(column, value, seen, edges, order)
                edges.append((end, item.layer.name))
            name = item.layer.name
        else:
            edges.append((value, item.name))
            name = item.name
        order.append(name)
        seen.add(name)
        value = name
    return value


def assert_written_in_order(vertices: list, items: list) -> None:
    """Every From after the value it names, every connection of the graph made exactly once,
    every vertex written exactly once, the chain ending with the graph's last vertex."""
    edges: list[tuple[str, str]] = []
    order: list[str] = []
    end = written(items, IN, {IN}, edges, order)
    assert end == vertices[-1].name
    assert sorted(order) == sorted(v.name for v in vertices)
    assert Counter(edges) == Counter((i, v.name) for v in vertices for i in v.inputs)


def random_dag(generator: random.Random, size: int) -> list[V]:
    """A DAG whose every vertex the last one reads, through others or itself: joins of two to
    four earlier values (the input among them), single-input layers of any earlier value."""
    vertices: list[V] = []
    values = [IN]
    unread: set[str] = set()
    for index in range(size):
        name = f"v{index}"
        if len(values) > 1 and generator.random() < 0.4:
            count = min(len(values), generator.randint(2, 4))
            # Recent values mostly, as networks read them; sometimes one far back.
            pool = values[-6:] if generator.random() < 0.7 else values
            inputs = tuple(generator.sample(pool, min(count, len(pool))))
            if len(inputs) < 2:
                inputs = (values[-1], values[0])
            kind = generator.choice(["add", "concat", "multiply"])
        else:
            source = values[-1] if generator.random() < 0.6 else generator.choice(values)
            inputs, kind = (source,), generator.choice(["conv2d", "relu", "max_pool"])
        vertices.append(V(name, kind, inputs))
        unread -= set(inputs)
        unread.add(name)
        values.append(name)
    unread.discard(vertices[-1].name)
    if unread:
        # The output reads what nothing else does: a model computes nothing it drops.
        last = vertices[-1].name
        vertices.append(V("out", "concat", (last, *sorted(unread, key=values.index))))
    return vertices


@pytest.mark.parametrize("seed", range(300))
def test_random_dags_nest_with_each_from_after_its_value(seed: int) -> None:
    generator = random.Random(seed)
    vertices = random_dag(generator, generator.randint(1, 40))
    items = nest(vertices, IN, vertices[-1].name)
    assert_written_in_order(vertices, items)


def test_random_dags_with_a_dead_layer_report_it_alone() -> None:
    for seed in range(50):
        generator = random.Random(1000 + seed)
        vertices = random_dag(generator, 20)
        dead = V("dead", "conv2d", (generator.choice([IN, *(v.name for v in vertices)]),))
        graph = [*vertices[:-1], dead, vertices[-1]]
        with pytest.raises(Unnestable) as raised:
            nest(graph, IN, vertices[-1].name)
        assert [p.layer for p in raised.value.problems] == [dead]


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
