"""The page's drawing is diagram.svg's: the one placement algorithm, and its port.

`cnnspec graph -o OUT.html` writes a page whose script draws the network again for each set of
collapsed blocks a click, a button or the URL asks for; the script (diagram._DRAW_SCRIPT) is a
port of diagram.placement and diagram.svg. Here Node.js runs that script on the page's own data,
with no browser and no document, and every drawing must equal the SVG that Python draws for the
same blocks, to the character: each box, frame, edge, label and the size. On every shipped spec
(specs/ and examples/): for every set of collapsed blocks where a spec has at most
MAX_EXHAUSTIVE collapsible blocks, and otherwise for none, each block alone, each `--depth`
preset and random sets (nested blocks included); with each training phase (which shades and
counts, and places nothing), for a smaller choice of sets. And on chains that start `from` an
earlier value: NASNet-like cells and the specs the importer writes for random DAGs.

Node.js is part of the machine image this project is tested on; where it is missing the tests
skip, saying so (tests/test_diagram.py's Chromium tests check the page in a browser)."""

from __future__ import annotations

import itertools
import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cnnspec.compiler import compile_file
from cnnspec.diagram import _DRAW_SCRIPT, NotOneRun, block_box, html, placement, svg
from cnnspec.ir import Spec
from tests.conftest import ROOT
from tests.fuzzing import FUZZ_SEED

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(
    NODE is None, reason="no Node.js here (apt-get install nodejs) to run the page's script"
)

SHIPPED = sorted([*(ROOT / "specs").glob("*.cnn"), *(ROOT / "examples").glob("*.cnn")])
MAX_EXHAUSTIVE = 10  # 2**10 sets of collapsed blocks
RANDOM_SETS = 60

# Reads {"data": the page's data, "states": [[block, ...], ...]} on standard input and writes,
# for each state, the drawing cnnspecDrawing makes: {"svg", "width", "height", "collapsed"}.
DRIVER = """
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const drawn = input.states.map((state) => {
  const result = cnnspecDrawing(input.data, new Set(state));
  return {svg: result.svg, width: result.width, height: result.height,
    collapsed: [...result.collapsed].sort()};
});
process.stdout.write(JSON.stringify(drawn));
"""


def drawable(path: Path) -> Spec | None:
    compilation = compile_file(path)
    return compilation.spec if compilation.ok else None


def page_data(spec: Spec, phase: str | None) -> dict[str, Any]:
    page = html(spec, phase)
    assert _DRAW_SCRIPT.rstrip("\n") in page  # the script tested here is the page's
    opening = '<script type="application/json" id="network">'
    start = page.index(opening) + len(opening)
    data: dict[str, Any] = json.loads(page[start : page.index("</script>", start)])
    return data


def collapsible(spec: Spec) -> list[str]:
    graph = spec.model
    scopes = dict.fromkeys(
        n.scope[:depth] for n in graph.nodes for depth in range(1, len(n.scope) + 1)
    )
    return [".".join(s) for s in scopes if block_box(graph, s, frozenset()) is not None]


def states(spec: Spec, data: dict[str, Any], exhaustive: bool = True) -> list[list[str]]:
    """The sets of collapsed blocks to draw: every set for a spec with few blocks; otherwise
    none, each block alone, each preset, and random sets."""
    blocks = collapsible(spec)
    if exhaustive and len(blocks) <= MAX_EXHAUSTIVE:
        return [
            list(chosen)
            for count in range(len(blocks) + 1)
            for chosen in itertools.combinations(blocks, count)
        ]
    rng = random.Random(f"{FUZZ_SEED}/diagram/{spec.name}")
    chosen = [[], *([b] for b in blocks), *data["presets"]]
    count = RANDOM_SETS if exhaustive else RANDOM_SETS // 4
    chosen += [[b for b in blocks if rng.random() < 0.3] for _ in range(count)]
    return chosen


def node_drawings(data: dict[str, Any], wanted: list[list[str]], tmp_path: Path) -> list[Any]:
    assert NODE is not None
    script = tmp_path / "draw.js"
    script.write_text(_DRAW_SCRIPT + DRIVER, encoding="utf-8")
    result = subprocess.run(
        [NODE, str(script)],
        input=json.dumps({"data": data, "states": wanted}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    drawn: list[Any] = json.loads(result.stdout)
    return drawn


OPENING = re.compile(r"^<svg [^>]*>")


def body(drawing: str) -> str:
    """A drawing without its root tag (the SVG file's says width and height, the page's
    data-width and data-height and how to fit the view), and with the page's mark on the
    labels a click collapses."""
    inner = OPENING.sub("", drawing.strip(), count=1)
    return inner.replace('class="blocklabel collapsible"', 'class="blocklabel"')


def python_size(drawing: str) -> tuple[int, int]:
    found = re.match(r'<svg [^>]*width="(\d+)" height="(\d+)"', drawing)
    assert found is not None
    return int(found.group(1)), int(found.group(2))


CASES = [
    (path, phase)
    for path in SHIPPED
    if (spec := drawable(path)) is not None
    for phase in [None, *(p.phase.name for p in spec.phases)]
]


def test_every_shipped_spec_but_the_broken_example_is_drawn() -> None:
    assert {path.name for path in SHIPPED if drawable(path) is None} == {"mistakes.cnn"}
    assert len({path for path, _ in CASES}) == len(SHIPPED) - 1


@needs_node
@pytest.mark.parametrize(
    ("path", "phase"),
    CASES,
    ids=[
        f"{path.parent.name}/{path.stem}" + (f"@{phase}" if phase else "") for path, phase in CASES
    ],
)
def test_the_page_draws_what_svg_draws(path: Path, phase: str | None, tmp_path: Path) -> None:
    spec = drawable(path)
    assert spec is not None
    data = page_data(spec, phase)
    # A phase changes what is shaded and what the labels count, not where anything goes:
    # fewer sets with one.
    wanted = states(spec, data, exhaustive=phase is None)
    drawn = node_drawings(data, wanted, tmp_path)
    assert len(drawn) == len(wanted)
    for state, page in zip(wanted, drawn, strict=True):
        drawing = svg(spec, phase, collapsed=state)
        assert body(page["svg"]) == body(drawing), state
        assert (round(page["width"]), round(page["height"])) == python_size(drawing), state


@needs_node
def test_depth_presets_are_the_pages_buttons(tmp_path: Path) -> None:
    """Each `blocks N deep` button collapses what `--depth N` does, and draws the same."""
    spec = drawable(ROOT / "specs" / "resnet50_transfer.cnn")
    assert spec is not None
    data = page_data(spec, None)
    drawn = node_drawings(data, data["presets"], tmp_path)
    for depth, page in enumerate(drawn):
        assert body(page["svg"]) == body(svg(spec, depth=depth))
        assert body(page["svg"]) == body(svg(spec, collapsed=data["presets"][depth]))


@needs_node
def test_both_keep_open_a_block_that_is_not_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collapsed block whose layers are not one run of the nested drawing (no shipped or
    campaign spec has one: block_box's rules keep them out) stays open in both, and the other
    collapsed blocks are drawn as asked. The nesting is made so by hand: c1's last layer
    moved past c3's first."""
    from cnnspec import diagram

    spec = drawable(ROOT / "specs" / "lenet5.cnn")
    assert spec is not None
    c1 = [n.name for n in spec.model.nodes if n.scope == ("c1",)]
    c3 = [n.name for n in spec.model.nodes if n.scope == ("c3",)]
    tree = diagram.tree_of(spec.model)
    assert tree[:4] == [*c1, *c3]  # a chain: the layers' names in order
    split = [c1[0], c3[0], c1[1], c3[1], *tree[4:]]
    monkeypatch.setattr(diagram, "tree_of", lambda graph: split)
    with pytest.raises(NotOneRun) as refused:
        diagram.collapsed(split, {name: "c1" for name in c1})
    assert refused.value.block == "c1"
    data = page_data(spec, None)
    data["tree"] = split
    wanted = [["c1"], ["c1", "c5"], ["c5"]]
    drawn = node_drawings(data, wanted, tmp_path)
    for state, page in zip(wanted, drawn, strict=True):
        assert body(page["svg"]) == body(svg(spec, collapsed=state)), state
        assert page["collapsed"] == sorted(placement(spec.model, frozenset(), set(state))[2])
    assert [page["collapsed"] for page in drawn] == [[], ["c5"], ["c5"]]


@needs_node
@pytest.mark.parametrize("seed", [None, *range(12)])
def test_the_page_draws_the_tags_of_from_as_svg_does(seed: int | None, tmp_path: Path) -> None:
    from cnnspec.compiler import compile_text
    from tests.test_diagram import CELLS, random_spec

    spec = compile_text(CELLS, "cells.cnn").spec if seed is None else random_spec(seed)
    assert spec is not None
    data = page_data(spec, None)
    wanted = states(spec, data)
    drawn = node_drawings(data, wanted, tmp_path)
    assert any('class="read"' in page["svg"] for page in drawn)
    for state, page in zip(wanted, drawn, strict=True):
        drawing = svg(spec, collapsed=state)
        assert body(page["svg"]) == body(drawing), state
        assert (round(page["width"]), round(page["height"])) == python_size(drawing), state
