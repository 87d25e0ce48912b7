"""A refused `cnnspec import` in at most ten lines: a header, one line per distinct cause with
its count and first place, `nothing written`. Built from ImportFailures made here and from the
nesting pass's real refusal of layers off the path to the output (a NASNet-like graph's values
used past their joins are no refusal: `from` reads them); no framework is imported. (The readers'
own refusals: tests/frameworks/test_import_*.py.)"""

import pytest

import cnnspec.importing
from cnnspec.cli import main
from cnnspec.importing.network import INPUT, Gap, ImportFailure, Layer, Network
from cnnspec.importing.refusal import LIMIT, causes, refusal
from cnnspec.importing.structure import nest
from cnnspec.nesting import froms_of

NO_LAYER = "cnnspec has no layer for it"
UNSUPPORTED = "the model uses what cnnspec cannot express"


def node(name: str, op: str) -> str:
    return f"node '{name}' ({op})"


def op_gap(name: str, op: str, why: str = NO_LAYER) -> Gap:
    return Gap(node(name, op), f"ONNX op {op}", why)


def vit_like() -> list[Gap]:
    """A ViT's refusal before the language had its kinds: 12 blocks, each with two layer
    norms and a Gelu, and one Shape."""
    gaps = [op_gap("/Shape", "Shape")]
    for block in range(12):
        gaps.append(op_gap(f"/blocks.{block}/norm1/LayerNormalization", "LayerNormalization"))
        gaps.append(op_gap(f"/blocks.{block}/mlp/act/Gelu", "Gelu"))
        gaps.append(op_gap(f"/blocks.{block}/norm2/LayerNormalization", "LayerNormalization"))
    return gaps


def test_one_line_per_cause_with_its_count_and_first_place():
    lines = refusal("vit.onnx", ImportFailure(UNSUPPORTED, vit_like()))
    assert lines == [
        f"cnnspec: error: cannot import vit.onnx: {UNSUPPORTED}",
        "  24 nodes, first node '/blocks.0/norm1/LayerNormalization' (LayerNormalization): "
        f"ONNX op LayerNormalization: {NO_LAYER}",
        f"  12 nodes, first node '/blocks.0/mlp/act/Gelu' (Gelu): ONNX op Gelu: {NO_LAYER}",
        f"  node '/Shape' (Shape): ONNX op Shape: {NO_LAYER}",
        "nothing written",
    ]


def test_different_settings_of_one_op_are_different_causes():
    gaps = [
        Gap(node("/a", "Pad"), "Pad [0, 0, 1, 1]", "cnnspec pads height and width"),
        Gap(node("/b", "Pad"), "Pad [0, 0, 1, 1]", "cnnspec pads height and width"),
        Gap(node("/c", "Pad"), "Pad [1, 0, 0, 0]", "cnnspec pads height and width"),
    ]
    assert [(c.what, len(c.places)) for c in causes(gaps)] == [
        ("Pad [0, 0, 1, 1]", 2),
        ("Pad [1, 0, 0, 0]", 1),
    ]


def test_a_module_counted_with_its_telling_node_is_summed_per_cause():
    # The ONNX reader reports one gap per PyTorch module, its other nodes counted in the why.
    gaps = [
        op_gap(f"/blocks.{i}/act/Erf", "Erf", f"{NO_LAYER} (and 4 more nodes of blocks.{i}.act)")
        for i in range(3)
    ] + [op_gap("/lstm/LSTM", "LSTM", f"{NO_LAYER} (and 1 more node of lstm)")]
    lines = refusal("m:f", ImportFailure(UNSUPPORTED, gaps))
    assert lines[1:3] == [
        "  3 nodes, first node '/blocks.0/act/Erf' (Erf): ONNX op Erf: "
        f"{NO_LAYER} (and 12 more nodes of their modules)",
        # Alone, the gap reads as the reader wrote it.
        f"  node '/lstm/LSTM' (LSTM): ONNX op LSTM: {NO_LAYER} (and 1 more node of lstm)",
    ]


def nasnet_like(cells: int, aside: bool = False) -> Network:
    """Each cell adds a convolution of the cell before it to the cell before that: every
    cell's output is used past the join that ends its branch, which `from` writes. With
    `aside`, each cell also computes a convolution that nothing reads."""

    def conv(name: str, source: str) -> Layer:
        args = {"filters": 4, "kernel": (3, 3), "padding": "same"}
        return Layer(name, "conv2d", args, (source,), origin=f"layer '{name}' (Conv2D)")

    layers = [conv("c0", INPUT), conv("c1", "c0")]
    before, last = "c0", "c1"
    for k in range(2, cells + 2):
        layers.append(conv(f"p{k}", last))
        if aside:
            layers.append(conv(f"aside{k}", last))
        layers.append(Layer(f"cell{k}", "add", {}, (f"p{k}", before), origin=f"layer 'cell{k}'"))
        before, last = last, f"cell{k}"
    return Network("nasnet_like", (8, 8, 3), layers, last)


def test_layers_used_past_their_joins_are_no_refusal():
    items = nest(nasnet_like(30))
    assert len(froms_of(items)) == 29  # each cell reads the one before the last with `from`


def test_layers_off_the_path_to_the_output_are_one_cause():
    with pytest.raises(ImportFailure) as failure:
        nest(nasnet_like(30, aside=True))
    lines = refusal("nasnet.keras", failure.value)
    assert lines == [
        "cnnspec: error: cannot import nasnet.keras: the model's graph cannot be written in "
        "cnnspec",
        "  30 layers, first layer 'aside2' (Conv2D): a layer off the path to the output: "
        "a cnnspec model has one output",
        "nothing written",
    ]


def test_weights_missing_from_many_layers_are_one_cause():
    gaps = [Gap(n, f"no tensor for {n}.kernel", "the file lacks it") for n in ("a", "b", "c")]
    gaps.append(Gap("d", "d.bias has shape (3,)", "the layer needs (4,)"))
    lines = refusal("w.h5", ImportFailure("the file's weights do not fit", gaps))
    assert lines[1:3] == [
        "  3 layers, first a: no tensor for a.kernel (the others likewise): the file lacks it",
        "  d: d.bias has shape (3,): the layer needs (4,)",
    ]


def test_at_most_ten_lines_saying_how_many_causes_are_left_out():
    # 115 gaps of 20 causes: the most frequent causes are shown first.
    gaps = [op_gap(f"/n{i}", f"Op{i % 20}") for i in range(115)]
    lines = refusal("big.onnx", ImportFailure(UNSUPPORTED, gaps))
    assert len(lines) == LIMIT == 10
    assert lines[1].startswith("  6 nodes, first node '/n0' (Op0): ONNX op Op0: ")
    assert lines[-2] == "  and 13 more causes (73 more nodes)"
    assert lines[-1] == "nothing written"
    eight = refusal("eight.onnx", ImportFailure(UNSUPPORTED, gaps[:8]))
    assert len(eight) == 10 and "more cause" not in "".join(eight)  # 8 causes fit: all shown


def test_the_command_prints_the_grouped_refusal(monkeypatch, capsys, tmp_path):
    def refused(source, input_size):
        raise ImportFailure(UNSUPPORTED, vit_like())

    monkeypatch.setattr(cnnspec.importing, "import_model", refused)
    out = tmp_path / "vit.cnn"
    with pytest.raises(SystemExit) as exit:
        main(["import", "vit.onnx", "-o", str(out)])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == refusal("vit.onnx", ImportFailure(UNSUPPORTED, vit_like()))
    assert "24 nodes" in err and not out.exists()
