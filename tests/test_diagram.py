"""`cnnspec graph`: the SVG diagram of every shipped spec and backbone-using spec holds every
layer and block, with no two layer boxes overlapping; a chain that starts `from NAME` starts at
a tag of its own, on NASNet-like cells and on random DAGs, no edge crossing a box; errors draw
nothing; an edited diagram is not overwritten."""

import itertools
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cnnspec.cli import main
from cnnspec.compiler import compile_file, compile_text
from cnnspec.diagram import BOX_H, BOX_W, READ_H, html, svg
from tests.conftest import ROOT

SPECS = sorted((ROOT / "specs").glob("*.cnn"))
NS = "{http://www.w3.org/2000/svg}"


def boxes(document: ET.Element) -> dict[str, tuple[float, float]]:
    found = {}
    for group in document.iter(f"{NS}g"):
        if group.get("class") == "layer":
            rect = group.find(f"{NS}rect")
            assert rect is not None
            found[group.get("data-layer")] = (float(rect.get("x")), float(rect.get("y")))
    return found


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_layer_and_block_is_drawn_and_no_boxes_overlap(path: Path) -> None:
    spec = compile_file(path).spec
    document = ET.fromstring(svg(spec))
    drawn = boxes(document)
    assert set(drawn) == {"input", *(node.name for node in spec.model.nodes)}
    blocks = {g.get("data-block") for g in document.iter(f"{NS}g") if g.get("class") == "block"}
    assert blocks == set(spec.model.blocks)
    corners = sorted(drawn.values())
    for index, (x, y) in enumerate(corners):
        for other_x, other_y in corners[index + 1 :]:
            if other_x >= x + BOX_W:
                break
            assert abs(other_y - y) >= BOX_H or abs(other_x - x) >= BOX_W, (x, y, other_x, other_y)
    width = float(document.get("width"))
    height = float(document.get("height"))
    assert all(x + BOX_W <= width and y + BOX_H <= height for x, y in corners)


# NASNet-like cells, each reading the two before it with `from`: in a define's instances, in
# a block (of one input and one output, which collapses), in a branch that is a value itself,
# and in a residual's body.
CELLS = """
define cell(prev) {
  conv2d(8, 3, padding=same, name=left)
  add {
    branch {}
    branch {
      from prev
      relu()
      conv2d(8, 3, padding=same, name=right)
    }
  }
  concat {
    branch {}
    branch { from prev }
  }
  conv2d(8, 1, name=proj)
}

model cells {
  input 16x16x3
  conv2d(8, 3, padding=same, name=stem)
  block pair {
    conv2d(8, 3, padding=same, name=c1)
    residual { conv2d(8, 3, padding=same) }
  }
  cell(stem, name=cell1)
  cell(pair, name=cell2)
  cell(cell1_proj, name=cell3)
  block inner {
    conv2d(8, 3, padding=same, name=i1)
    conv2d(8, 3, padding=same, name=i2)
    add {
      branch {}
      branch { from i1 }
    }
  }
  residual {
    from cell2_proj
    conv2d(8, 1)
  }
  concat {
    name both
    branch { from cell2_proj }
    branch {}
  }
  global_avg_pool()
  dense(4, activation=softmax)
}
"""


def rectangles(document: ET.Element) -> list[tuple[str, float, float, float, float]]:
    """Every layer's box and every `from` tag: (what, x, y, width, height)."""
    found = []
    for group in document.iter(f"{NS}g"):
        if group.get("class") in ("layer", "read"):
            rect = group.find(f"{NS}rect")
            assert rect is not None
            what = group.get("data-layer") or f"from {group.get('data-from')}"
            sizes = [float(rect.get(key)) for key in ("x", "y", "width", "height")]
            found.append((what, *sizes))
    return found


def crossings(document: ET.Element) -> list[tuple[str, str]]:
    """The edges that run through a box or a tag (not merely into or out of one)."""
    found = []
    shapes = rectangles(document)
    for path in document.iter(f"{NS}path"):
        points = [
            (float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", path.get("d"))
        ]
        for (x1, y1), (x2, y2) in itertools.pairwise(points):
            for what, x, y, w, h in shapes:
                if x1 == x2 and x + 1 < x1 < x + w - 1:
                    through = max(min(y1, y2), y + 1) < min(max(y1, y2), y + h - 1)
                elif y1 == y2 and y + 1 < y1 < y + h - 1:
                    through = max(min(x1, x2), x + 1) < min(max(x1, x2), x + w - 1)
                else:
                    through = False
                if through:
                    found.append((what, path.get("d")))
    return found


def assert_drawn_apart(document: ET.Element) -> None:
    shapes = rectangles(document)
    for index, (a, x, y, w, h) in enumerate(shapes):
        for b, other_x, other_y, other_w, other_h in shapes[index + 1 :]:
            apart = (
                other_x >= x + w
                or x >= other_x + other_w
                or other_y >= y + h
                or y >= other_y + other_h
            )
            assert apart, (a, b)
    assert crossings(document) == []


def test_a_chain_from_an_earlier_value_starts_at_a_tag() -> None:
    spec = compile_text(CELLS, "cells.cnn").spec
    assert spec is not None
    for collapsed in ([], ["pair"], ["inner"], ["pair", "inner", "cell1"]):
        document = ET.fromstring(svg(spec, collapsed=collapsed))
        tags = [g for g in document.iter(f"{NS}g") if g.get("class") == "read"]
        assert {g.get("data-from") for g in tags} >= {"pair_add_1", "cell1_proj", "cell2_proj"}
        assert all(g.find(f"{NS}text").text == f"from {g.get('data-from')}" for g in tags)
        assert all(float(g.find(f"{NS}rect").get("height")) == READ_H for g in tags)
        assert_drawn_apart(document)
    drawn = boxes(ET.fromstring(svg(spec)))
    assert set(drawn) == {"input", *(node.name for node in spec.model.nodes)}
    # The layer after a tag is joined to the tag, not to the value's box further up.
    document = ET.fromstring(svg(spec))
    tag = next(
        g.find(f"{NS}rect")
        for g in document.iter(f"{NS}g")
        if g.get("class") == "read" and g.get("data-from") == "cell1_proj"
    )
    bottom = float(tag.get("y")) + READ_H
    starts = {p.get("d").split(" ")[0] for p in document.iter(f"{NS}path")}
    assert f"M{float(tag.get('x')) + BOX_W / 2:.0f},{bottom:.0f}" in starts
    html(spec)


@pytest.mark.parametrize("seed", range(25))
def test_random_dags_draw_without_crossings(seed: int) -> None:
    spec = random_spec(seed)
    document = ET.fromstring(svg(spec))
    assert set(boxes(document)) == {"input", *(node.name for node in spec.model.nodes)}
    assert_drawn_apart(document)
    html(spec)
    for depth in range(2):
        assert_drawn_apart(ET.fromstring(svg(spec, depth=depth)))


def random_spec(seed: int):
    """The spec the importer's writer writes for tests/test_import.py's random network."""
    from cnnspec.fmt import format_text
    from cnnspec.importing import structure, writer
    from tests.test_import import random_network

    network = random_network(seed)
    text = format_text(writer.write(network, structure.nest(network)))
    assert text is not None
    spec = compile_text(text, f"random{seed}.cnn").spec
    assert spec is not None
    return spec


def test_a_spec_with_errors_draws_nothing(tmp_path: Path, capsys) -> None:
    target = tmp_path / "out.svg"
    with pytest.raises(SystemExit) as exit:
        main(["graph", str(ROOT / "examples" / "mistakes.cnn"), "-o", str(target)])
    assert exit.value.code == 1
    assert "nothing drawn" in capsys.readouterr().err
    assert not target.exists()


def test_an_edited_diagram_is_kept_without_force(tmp_path: Path, capsys) -> None:
    target = tmp_path / "digits.svg"
    spec = str(ROOT / "specs" / "digits.cnn")
    with pytest.raises(SystemExit) as exit:
        main(["graph", spec, "-o", str(target)])
    assert exit.value.code == 0
    target.write_text(target.read_text().replace("digits", "my digits"))
    edited = target.read_text()
    with pytest.raises(SystemExit) as exit:
        main(["graph", spec, "-o", str(target)])
    assert exit.value.code == 1 and target.read_text() == edited
    assert "was edited after cnnspec generated it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        main(["graph", spec, "-o", str(target), "--force"])
    assert exit.value.code == 0 and target.read_text() != edited


def test_depth_collapses_blocks_into_boxes_with_their_totals() -> None:
    spec = compile_file(ROOT / "specs" / "resnet50_transfer.cnn").spec
    backbone = [n for n in spec.model.nodes if n.scope[:1] == ("backbone",)]
    top = ET.fromstring(svg(spec, depth=0))
    assert set(boxes(top)) == {"input", "backbone", "head"}
    box = next(g for g in top.iter(f"{NS}g") if g.get("data-layer") == "backbone")
    text = " ".join(t.text or "" for t in box.iter(f"{NS}text"))
    total = sum(n.params.total for n in backbone)
    assert f"{len(backbone)} layers" in text and f"{total:,} params" in text
    assert "(7, 7, 2048)" not in text  # the backbone pools: its output is a vector
    stages = set(boxes(ET.fromstring(svg(spec, depth=1))))
    assert {"backbone.conv1", "backbone.conv5", "avg_pool", "head_dense_1"} <= stages
    assert not any(name.startswith("conv2_block") for name in stages)


def test_a_phase_shades_what_it_freezes_and_counts_what_it_trains() -> None:
    from cnnspec.summary import frozen_with_weights

    spec = compile_file(ROOT / "specs" / "pneumonia_vgg16.cnn").spec
    plan = next(p for p in spec.phases if p.phase.name == "finetune")
    document = ET.fromstring(svg(spec, phase="finetune"))
    shaded = {
        g.get("data-layer") for g in document.iter(f"{NS}g") if g.get("data-frozen") == "true"
    }
    assert shaded == set(frozen_with_weights(spec, plan))
    labels = [t.text for t in document.iter(f"{NS}text") if t.get("class") == "blocklabel"]
    block5 = sum(
        n.params.trainable
        for n in spec.model.nodes
        if n.scope[-1:] == ("block5",) and n.name not in plan.frozen
    )
    assert f"backbone.block5  ({block5:,} trainable in finetune)" in labels
    assert block5 > 0


def test_the_html_page_holds_the_network_as_data_and_works_offline() -> None:
    import json

    from cnnspec.diagram import block_box, html

    spec = compile_file(ROOT / "specs" / "resnet50_transfer.cnn").spec
    page = html(spec)
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    opening = '<script type="application/json" id="network">'
    start = page.index(opening) + len(opening)
    data = json.loads(page[start : page.index("</script>", start)])
    assert data["order"] == [node.name for node in spec.model.nodes]
    assert set(data["layers"]) == set(data["order"])
    scopes = {node.scope[:d] for node in spec.model.nodes for d in range(1, len(node.scope) + 1)}
    assert set(data["blocks"]) == {".".join(scope) for scope in scopes}
    for scope in scopes:  # a block collapses in the page exactly when `--depth` can collapse it
        expected = block_box(spec.model, scope, frozenset()) is not None
        assert data["blocks"][".".join(scope)]["collapsible"] is expected
    assert data["blocks"]["backbone.conv2"]["label"] == "32 layers"


@pytest.mark.parametrize("suffix", [".html", ".svg"])
def test_the_written_file_is_text_that_grep_reads(tmp_path: Path, suffix: str) -> None:
    # grep calls a file with a NUL byte binary and shows none of its lines; other control
    # characters are as unwelcome in a page a person opens in an editor.
    target = tmp_path / f"inception{suffix}"
    with pytest.raises(SystemExit) as exit:
        main(["graph", str(ROOT / "specs" / "inception_digits.cnn"), "-o", str(target)])
    assert exit.value.code == 0
    data = target.read_bytes()
    assert b"\0" not in data
    text = data.decode("utf-8")
    assert [c for c in text if ord(c) < 32 and c not in "\n\t"] == []


CHROMIUM = Path("/usr/bin/chromium")
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,700",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no Chromium here (apt-get install chromium)"
)


def browser(tmp_path: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(
        [str(CHROMIUM), *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def drawn(text: str) -> tuple[object, ...]:
    """What a drawing shows: each layer box's place, each block frame, every edge, every shape
    label and block label, and the drawing's size (from the page's data-width/height or the
    SVG's viewBox); as a browser's DOM or the SVG's source writes them."""
    import re

    start = text.find('<div id="view">')
    svg_text = text[start : text.index("</svg>", start)] if start >= 0 else text
    size = re.search(r'data-width="(\d+)" data-height="(\d+)"', svg_text) or re.search(
        r'viewBox="0 0 (\d+) (\d+)"', svg_text
    )
    return (
        dict(
            re.findall(
                r'<g class="layer" data-layer="([^"]+)"[^>]*>(?:<title>[^<]*</title>)?'
                r'<rect x="(\d+" y="\d+)"',
                svg_text,
            )
        ),
        dict(re.findall(r'<g class="block" data-block="([^"]+)"><rect (x=[^>]*?)/?>', svg_text)),
        sorted(re.findall(r'<path class="edge[^"]*" d="([^"]+)"', svg_text)),
        sorted(re.findall(r'<text class="shape" x="(\d+)" y="(\d+)">([^<]*)<', svg_text)),
        sorted(re.findall(r'class="blocklabel[^"]*" data-block="[^"]*">([^<]*)<', svg_text)),
        size.groups() if size else None,
    )


@needs_chromium
@pytest.mark.parametrize(
    ("name", "phase"), [("inception_digits", None), ("resnet50_transfer", "finetune")]
)
def test_the_page_draws_what_the_svg_draws_at_every_depth(
    name: str, phase: str | None, tmp_path: Path
) -> None:
    """The page's script places and draws as diagram.svg does (it is a port): in headless
    Chromium, every box, frame, edge, label and the size equal the SVG's, with every layer
    and with each level of blocks collapsed."""
    from cnnspec.diagram import html

    spec = compile_file(ROOT / "specs" / f"{name}.cnn").spec
    page = tmp_path / "page.html"
    page.write_text(html(spec, phase), encoding="utf-8")
    deepest = max(len(node.scope) for node in spec.model.nodes)
    for depth in [None, *range(deepest)]:
        dom = browser(
            tmp_path, "--dump-dom", page.as_uri() + ("" if depth is None else f"#depth={depth}")
        )
        assert drawn(dom) == drawn(svg(spec, phase, depth)), depth


CLICKS = """
<script>
  const count = () => document.querySelectorAll("g.layer[data-kind=block]").length;
  const click = (element) => element.dispatchEvent(new MouseEvent("click", {bubbles: true}));
  const seen = [count()];
  click(document.querySelector('text.blocklabel.collapsible[data-block="mixed0.b3x3"]'));
  seen.push(count(), location.hash);
  click(document.querySelector('text.blocklabel.collapsible[data-block="mixed0"]'));
  seen.push(count(), location.hash, document.querySelectorAll("g.layer").length);
  click(document.querySelector('g.layer[data-layer="mixed0"]'));
  seen.push(count(), location.hash);
  document.body.dataset.seen = JSON.stringify(seen);
</script>
</body>"""


@needs_chromium
def test_each_block_collapses_and_expands_on_its_own(tmp_path: Path) -> None:
    """Clicks in headless Chromium: a block's label collapses that block alone into one box
    (the URL says so); collapsing the block around it takes it in; clicking the collapsed
    block expands it with the blocks inside it open."""
    import html as markup
    import json
    import re

    with pytest.raises(SystemExit) as exit:
        main(
            ["graph", str(ROOT / "specs" / "inception_digits.cnn"), "-o", str(tmp_path / "p.html")]
        )
    assert exit.value.code == 0
    page = tmp_path / "clicked.html"
    page.write_text((tmp_path / "p.html").read_text().replace("</body>", CLICKS), encoding="utf-8")
    dom = browser(tmp_path, "--dump-dom", page.as_uri())
    seen = json.loads(markup.unescape(re.search(r'data-seen="([^"]*)"', dom).group(1)))
    spec = compile_file(ROOT / "specs" / "inception_digits.cnn").spec
    outside = sum(1 for node in spec.model.nodes if node.scope[:1] != ("mixed0",))
    assert seen == [
        0,
        1,
        "#collapsed=mixed0.b3x3",
        1,
        "#collapsed=mixed0",
        outside + 2,  # the layers outside mixed0, mixed0's box and the input
        0,
        "",
    ]


@needs_chromium
def test_the_html_page_runs_in_a_real_browser(tmp_path: Path) -> None:
    """Headless Chromium loads the page: the first view is every layer, each in the DOM, and
    the screenshot is a picture, not a blank page."""
    page = tmp_path / "diagram.html"
    with pytest.raises(SystemExit) as exit:
        main(["graph", str(ROOT / "specs" / "inception_digits.cnn"), "-o", str(page)])
    assert exit.value.code == 0
    dom = browser(tmp_path, "--dump-dom", page.as_uri())
    assert '<button class="on">every layer</button>' in dom
    assert 'preserveAspectRatio="xMinYMin meet"' in dom
    spec = compile_file(ROOT / "specs" / "inception_digits.cnn").spec
    assert all(f'data-layer="{node.name}"' in dom for node in spec.model.nodes)
    shot = tmp_path / "shot.png"
    browser(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.stat().st_size > 10_000  # a picture, not a blank page
    # --depth N: the page opens with the blocks deeper than N collapsed.
    with pytest.raises(SystemExit) as exit:
        main(
            ["graph", str(ROOT / "specs" / "inception_digits.cnn"), "-o", str(page), "--depth", "0"]
        )
    assert exit.value.code == 0
    dom = browser(tmp_path, "--dump-dom", page.as_uri())
    assert '<button class="on">blocks 0 deep</button>' in dom
    assert drawn(dom) == drawn(svg(spec, None, 0))


def test_png_needs_a_browser_and_says_so_in_one_line(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNNSPEC_BROWSER", str(tmp_path / "no-such-browser"))
    target = tmp_path / "digits.png"
    with pytest.raises(SystemExit) as exit:
        main(["graph", str(ROOT / "specs" / "digits.cnn"), "-o", str(target)])
    assert exit.value.code == 1 and not target.exists()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"cnnspec: error: cannot draw {target}: a PNG is drawn by a headless")


def tiny_png(pixel: bytes) -> bytes:
    """A 1x1 RGB PNG, written by hand."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        data = kind + body
        return len(body).to_bytes(4, "big") + data + zlib.crc32(data).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" + pixel))
        + chunk(b"IEND", b"")
    )


def test_a_png_carries_its_stamp_and_an_edit_is_seen(tmp_path: Path) -> None:
    from cnnspec.artifact import State, png_state_of, stamp_png

    path = tmp_path / "d.png"
    assert png_state_of(path) is State.absent
    path.write_bytes(tiny_png(b"\x10\x20\x30"))
    assert png_state_of(path) is State.foreign  # a PNG cnnspec did not draw
    stamped = stamp_png("drawn by cnnspec graph from digits.cnn", tiny_png(b"\x10\x20\x30"))
    path.write_bytes(stamped)
    assert png_state_of(path) is State.generated
    assert stamp_png("drawn by cnnspec graph from digits.cnn", stamped) == stamped
    other = stamp_png("drawn by cnnspec graph from digits.cnn", tiny_png(b"\x99\x20\x30"))
    # An editor that keeps the text chunk but changes the pixels, or adds bytes at the end.
    start = stamped.index(b"IDAT") - 4
    path.write_bytes(stamped[:start] + other[other.index(b"IDAT") - 4 :])
    assert png_state_of(path) is State.edited
    path.write_bytes(stamped + b"\n")
    assert png_state_of(path) is State.edited
    path.write_bytes(b"GIF89a")
    assert png_state_of(path) is State.foreign


@needs_chromium
def test_png_is_the_svg_drawn_by_chromium(tmp_path: Path, capsys) -> None:
    import re
    import struct

    from cnnspec.artifact import State, png_state_of

    target = tmp_path / "digits.png"
    spec = str(ROOT / "specs" / "digits.cnn")
    with pytest.raises(SystemExit) as exit:
        main(["graph", spec, "-o", str(target)])
    assert exit.value.code == 0
    data = target.read_bytes()
    drawn = svg(compile_file(ROOT / "specs" / "digits.cnn").spec)
    width, height = (int(v) for v in re.search(r'width="(\d+)" height="(\d+)"', drawn).groups())
    assert struct.unpack(">II", data[16:24]) == (2 * width, 2 * height)  # twice, to stay sharp
    assert png_state_of(target) is State.generated
    import zlib

    # Not a blank page: boxes, frames and text darken a share of the pixels.
    pixels = zlib.decompress(b"".join(_idat(data)))
    assert sum(byte != 0xFF for byte in pixels) > 0.02 * len(pixels)
    target.write_bytes(data + b"edited")
    with pytest.raises(SystemExit) as exit:
        main(["graph", spec, "-o", str(target)])
    assert exit.value.code == 1 and target.read_bytes() == data + b"edited"
    assert "was edited after cnnspec generated it" in capsys.readouterr().err


def _idat(data: bytes) -> list[bytes]:
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        if data[at + 4 : at + 8] == b"IDAT":
            chunks.append(data[at + 8 : at + 8 + length])
        at += 12 + length
    return chunks
