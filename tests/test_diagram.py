"""`cnnspec graph`: the SVG diagram of every shipped spec and backbone-using spec holds every
layer and block, with no two layer boxes overlapping; errors draw nothing; an edited diagram
is not overwritten."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cnnspec.cli import main
from cnnspec.compiler import compile_file
from cnnspec.diagram import BOX_H, BOX_W, svg
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


def test_the_html_page_holds_every_depth_and_works_offline() -> None:
    from cnnspec.diagram import html

    spec = compile_file(ROOT / "specs" / "resnet50_transfer.cnn").spec
    page = html(spec)
    assert page.count("<svg ") == 4  # every layer, then blocks 0, 1 and 2 deep
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    for node in spec.model.nodes:
        assert f'data-layer="{node.name}"' in page


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium here (apt-get install chromium)")
def test_the_html_page_runs_in_a_real_browser(tmp_path: Path) -> None:
    """Headless Chromium loads the page and runs its script: the first view shows, the others
    wait, every layer is in the DOM, and the view starts at full size from the top."""
    import subprocess

    page = tmp_path / "diagram.html"
    with pytest.raises(SystemExit) as exit:
        main(["graph", str(ROOT / "specs" / "inception_digits.cnn"), "-o", str(page)])
    assert exit.value.code == 0
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,700",
    ]
    dom = subprocess.run(
        [str(CHROMIUM), *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    document = dom.replace('hidden=""', "hidden")
    assert '<div class="view" data-view="0" data-depth="-1">' in document
    assert '<div class="view" data-view="1" data-depth="0" hidden>' in document
    assert 'class="on"' in document and 'preserveAspectRatio="xMinYMin meet"' in document
    spec = compile_file(ROOT / "specs" / "inception_digits.cnn").spec
    assert all(f'data-layer="{node.name}"' in document for node in spec.model.nodes)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [str(CHROMIUM), *flags, f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000  # a picture, not a blank page
