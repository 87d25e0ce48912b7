"""`cnnspec import` without frameworks: the nesting of a DAG into residuals and joins, the
writer's blocks, defines, repeats and defaults on a network built here, the compile-and-compare
guard, and the command's one-line errors. (Reading real Keras, ONNX and PyTorch models:
tests/frameworks/test_import_*.py.)"""

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cnnspec.cli import main
from cnnspec.compiler import compile_text
from cnnspec.fmt import format_text
from cnnspec.importing import ImportFailure, import_network
from cnnspec.importing.network import INPUT, Layer, Network
from cnnspec.importing.structure import nest
from cnnspec.nesting import Join, Residual

pytest.importorskip("safetensors")


def conv(name, filters, source, **args):
    return Layer(
        name,
        "conv2d",
        {
            "filters": filters,
            "kernel": (3, 3),
            "padding": "same",
            "activation": None,
            "use_bias": True,
            **args,
        },
        (source,),
    )


def bn(name, source):
    return Layer(name, "batchnorm", {"epsilon": 1e-5, "momentum": 0.9}, (source,))


def relu(name, source):
    return Layer(name, "relu", {}, (source,))


def unit(prefix, source, filters):
    """A residual unit: conv-bn-relu-conv-bn, added to its input, then relu."""
    return [
        conv(f"{prefix}_conv1", filters, source),
        bn(f"{prefix}_bn1", f"{prefix}_conv1"),
        relu(f"{prefix}_relu1", f"{prefix}_bn1"),
        conv(f"{prefix}_conv2", filters, f"{prefix}_relu1"),
        bn(f"{prefix}_bn2", f"{prefix}_conv2"),
        Layer(f"{prefix}_add", "add", {}, (f"{prefix}_bn2", source)),
        relu(f"{prefix}_out", f"{prefix}_add"),
    ]


def weights_for(network: Network) -> dict:
    """Canonical tensors of the right shapes, made from the compiled spec itself."""
    from cnnspec.importing import structure, writer

    text = writer.write(network, structure.nest(network))
    spec = compile_text(format_text(text) or text).spec
    shapes = spec.model.value_shapes()
    tensors = {}
    for node in spec.model.nodes:
        for suffix, shape in node.layer.weight_shapes([shapes[i] for i in node.inputs]).items():
            tensors[f"{node.name}.{suffix}"] = np.ones(shape, np.float32)
    return tensors


def resnet_like() -> Network:
    layers = [conv("stem", 8, INPUT), relu("stem_relu", "stem")]
    source = "stem_relu"
    for index in range(1, 5):
        layers += unit(f"stage_unit{index}", source, 8)
        source = f"stage_unit{index}_out"
    layers += [
        Layer("pool", "global_avg_pool", {"keepdims": False}, (source,)),
        Layer("fc", "dense", {"units": 3, "activation": "softmax", "use_bias": True}, ("pool",)),
    ]
    network = Network("tiny", (16, 16, 3), layers, "fc")
    network.tensors = weights_for(network)
    return network


def test_identical_units_become_one_define_called_in_a_repeat():
    imported = import_network(resnet_like())
    text = imported.text
    assert "define unit(filters) {" in text or "define unit() {" in text
    assert "repeat 4 { unit(" in text and 'name="stage_unit" + str(index + 1)' in text
    assert "defaults batchnorm(epsilon=1e-5, momentum=0.9)" in text
    assert "defaults conv2d(padding=same)" in text
    assert format_text(text) == text
    names = [node.name for node in imported.spec.model.nodes]
    assert names[:4] == ["stem", "stem_relu", "stage_unit1_conv1", "stage_unit1_bn1"]
    assert "stage_unit4_add" in names


def test_different_widths_become_parameters_and_multiples_expressions():
    layers = [conv("stem", 4, INPUT)]
    source = "stem"
    for index, width in enumerate((8, 16, 32), 1):
        p = f"b{index}"
        layers += [conv(f"{p}_a", width, source), conv(f"{p}_b", 4 * width, f"{p}_a")]
        source = f"{p}_b"
    layers += [
        Layer("gap", "global_avg_pool", {}, (source,)),
        Layer("out", "dense", {"units": 2, "activation": "softmax"}, ("gap",)),
    ]
    network = Network("widths", (8, 8, 3), layers, "out")
    network.tensors = weights_for(network)
    text = import_network(network).text
    assert "conv2d(4 * filters, name=b)" in text
    assert "b(8, name=b1)" in text and "b(32, name=b3)" in text


def test_a_residual_with_a_projection_has_the_projection_as_its_shortcut():
    layers = [
        conv("a", 8, INPUT, stride=(2, 2)),
        conv("b", 8, "a"),
        conv("proj", 8, INPUT, kernel=(1, 1), stride=(2, 2)),
        Layer("sum", "add", {}, ("proj", "b")),
    ]
    items = nest(Network("n", (8, 8, 3), layers, "sum"))
    assert isinstance(items[0], Residual)
    assert [layer.name for layer in items[0].body] == ["a", "b"]
    assert [layer.name for layer in items[0].shortcut] == ["proj"]


def test_three_branches_are_a_join():
    layers = [
        conv("x1", 4, INPUT),
        conv("x2", 4, INPUT),
        conv("x3", 4, "x2"),
        Layer("cat", "concat", {}, ("x1", "x3", INPUT)),
    ]
    items = nest(Network("n", (8, 8, 3), layers, "cat"))
    assert isinstance(items[0], Join)
    assert [len(branch) for branch in items[0].branches] == [1, 2, 0]


def test_a_value_used_past_its_join_is_read_again_with_from():
    # NASNet-like: `b`, inside the first residual's body, is used again after its add.
    layers = [
        conv("a", 4, INPUT),
        conv("b", 4, "a"),
        conv("c", 4, "b"),
        Layer("j1", "add", {}, ("a", "c")),
        Layer("j2", "add", {}, ("j1", "b")),
        Layer("pool", "global_avg_pool", {"keepdims": False}, ("j2",)),
        Layer("fc", "dense", {"units": 3, "activation": "softmax", "use_bias": True}, ("pool",)),
    ]
    network = Network("n", (8, 8, 3), layers, "fc")
    network.tensors = weights_for(network)
    text = import_network(network).text
    assert "add {\n    name j2\n    branch {}\n    branch {\n      from b\n    }\n  }" in text, text


def nasnet_like(cells: int) -> Network:
    """Cells that each read the two cells before them: a convolution of the one before added
    to a convolution of the one before that, concatenated with the one before."""
    layers = [conv("stem", 4, INPUT), conv("c1", 4, "stem")]
    before, last = "stem", "c1"
    for k in range(2, cells + 2):
        p = f"cell{k}"
        layers += [
            conv(f"{p}_left", 4, last),
            relu(f"{p}_relu", before),
            conv(f"{p}_right", 4, f"{p}_relu"),
            Layer(f"{p}_add", "add", {}, (f"{p}_left", f"{p}_right")),
            Layer(f"{p}_cat", "concat", {}, (f"{p}_add", last)),
            conv(f"{p}_proj", 4, f"{p}_cat", kernel=(1, 1)),
        ]
        before, last = last, f"{p}_proj"
    layers += [
        Layer("pool", "global_avg_pool", {"keepdims": False}, (last,)),
        Layer("fc", "dense", {"units": 3, "activation": "softmax", "use_bias": True}, ("pool",)),
    ]
    network = Network("nasnet_like", (8, 8, 3), layers, "fc")
    network.tensors = weights_for(network)
    return network


def test_cells_reading_the_cells_before_them_are_calls_naming_what_they_read():
    imported = import_network(nasnet_like(4))
    text = imported.text
    # The cells follow one another; each reads the two before it by a define's parameters.
    assert "define cell(source, source2) {" in text, text
    assert "  from source\n" in text and "  from source2\n" in text
    assert "cell(cell2_proj, cell3_proj, name=cell4)" in text
    assert max(len(line) - len(line.lstrip()) for line in text.splitlines()) <= 8


def test_a_value_before_a_block_named_inside_it_too_is_not_read_by_a_define():
    """In an instance, `from NAME` reads the instance's own NAME first: where a cell holds a
    layer whose relative name is the name of the value it reads from before it, the cells are
    not folded into a define, and the spec still computes the graph."""
    network = nasnet_like(3)
    network.layers = [
        replace(layer, name="cell3_c1") if layer.name == "cell3_left" else layer
        for layer in network.layers
    ]
    for index, layer in enumerate(network.layers):
        inputs = tuple("cell3_c1" if i == "cell3_left" else i for i in layer.inputs)
        network.layers[index] = replace(layer, inputs=inputs)
    network.tensors = weights_for(network)
    text = import_network(network).text
    assert "define" not in text and "block cell3 {" in text, text
    assert (
        "    conv2d(4, name=cell3_c1)\n    residual {\n      name cell3_add\n      from c1\n"
        in text
    )


def random_network(seed: int) -> Network:
    """A random DAG (tests/test_nesting.py's) of shape-keeping layers and joins, blocks of
    four numbered layers each, pooled into a classifier."""
    from tests.test_nesting import IN, random_dag

    generator = random.Random(seed)
    vertices = random_dag(generator, generator.randint(2, 30))
    named = {IN: INPUT, **{v.name: f"blk{i // 4}_l{i}" for i, v in enumerate(vertices)}}
    layers = []
    for vertex in vertices:
        inputs = tuple(named[i] for i in vertex.inputs)
        name = named[vertex.name]
        if len(inputs) > 1:
            layers.append(
                Layer(name, "multiply" if vertex.kind == "multiply" else "add", {}, inputs)
            )
        elif vertex.kind == "conv2d":
            layers.append(conv(name, 3, inputs[0]))
        else:
            layers.append(relu(name, inputs[0]))
    last = layers[-1].name
    layers += [
        Layer("pool", "global_avg_pool", {"keepdims": False}, (last,)),
        Layer("fc", "dense", {"units": 2, "activation": "softmax", "use_bias": True}, ("pool",)),
    ]
    return Network(f"random{seed}", (8, 8, 3), layers, "fc")


@pytest.mark.parametrize("seed", range(40))
def test_random_dags_are_written_as_specs_of_the_same_graph(seed):
    from cnnspec.importing import writer

    network = random_network(seed)
    text = format_text(writer.write(network, nest(network)))
    assert text is not None
    compilation = compile_text(text, "random.cnn")
    assert compilation.ok, [d.message for d in compilation.diagnostics.errors]
    nodes = {node.name: node for node in compilation.spec.model.nodes}
    assert {name: set(node.inputs) for name, node in nodes.items()} == {
        layer.name: set(layer.inputs) for layer in network.layers
    }


def test_a_classifier_convolving_pooled_features_gets_a_softmax_after_its_flatten():
    """DPN's classifier: global pooling kept as a 1x1 map, a 1x1 convolution with a bias, and
    a flatten; its logits become probabilities by a softmax after the flatten."""
    layers = [
        conv("stem", 4, INPUT),
        Layer("pool", "global_avg_pool", {"keepdims": True}, ("stem",)),
        conv("classifier", 3, "pool", kernel=(1, 1)),
        Layer("flatten", "flatten", {}, ("classifier",)),
    ]
    network = Network("dpn_head", (8, 8, 3), layers, "flatten")
    network.tensors = weights_for(network)
    imported = import_network(network)
    last = imported.spec.model.nodes[-1]
    assert last.kind == "softmax" and last.inputs == ("flatten",)
    assert imported.notes and "classifier's channels" in imported.notes[0]


def test_missing_weights_are_one_line_each():
    network = resnet_like()
    del network.tensors["stem.weight"]
    with pytest.raises(ImportFailure) as failure:
        import_network(network)
    assert [str(g) for g in failure.value.gaps] == [
        "stem: no tensor for stem.weight: the file lacks it"
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.keras", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "notes.txt", b"hello"), "not a model file"),
        (lambda d: _write(d / "w.pt", b"PK\x03\x04junk"), "PyTorch checkpoint"),
        (lambda d: _write(d / "bad.keras", b"PK\x03\x04junk"), "not a readable .keras"),
        (lambda d: _write(d / "bad.onnx", b"\x08\x01garbage"), "not a readable ONNX"),
    ],
)
def test_bad_inputs_are_one_line_and_nothing_is_written(tmp_path, capsys, make, message):
    pytest.importorskip("h5py")
    pytest.importorskip("onnx")
    source = make(tmp_path)
    out = tmp_path / "out" / "m.cnn"
    with pytest.raises(SystemExit) as exit:
        main(["import", str(source), "-o", str(out)])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 2  # the error and `nothing written`
    assert not out.parent.exists()


def test_a_module_factory_needs_its_input_size(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["import", "some.module:factory"])
    assert exit.value.code == 1
    assert "--input-size HxWxC" in capsys.readouterr().err


def test_a_note_is_one_line_and_the_spec_says_it_too(tmp_path, capsys, monkeypatch):
    # A model that ends in logits, as PyTorch classifiers do: the spec adds a softmax.
    network = resnet_like()
    network.layers[-1].args["activation"] = None
    monkeypatch.setattr("cnnspec.importing.read", lambda source, size: network)
    out = tmp_path / "tiny.cnn"
    with pytest.raises(SystemExit) as exit:
        main(["import", "tiny.onnx", "-o", str(out)])
    assert exit.value.code == 0
    err = capsys.readouterr().err.splitlines()
    notes = [line for line in err if "note:" in line]
    assert notes == [
        "cnnspec: note: fc outputs logits in the source; here it applies softmax, as a cnnspec "
        "classifier outputs probabilities: this model computes softmax(source(x))."
    ]
    assert len(err) == 1  # the note; the summary line goes to stdout
    # The spec carries the same note as a comment, wrapped to the formatter's width.
    head = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert all(len(line) <= 100 for line in head)
    words = " ".join(line.removeprefix("#").strip() for line in head)
    assert notes[0].removeprefix("cnnspec: note: ") in words


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("absent.py:small_net", "cnnspec: error: no such file: absent.py"),
        ("sub/absent.py:small_net", "cnnspec: error: no such file: sub/absent.py"),
        ("folder.py:small_net", "cnnspec: error: folder.py is a directory, not a Python file"),
        ("nets.py:", "cnnspec: error: name the function that builds the model: nets.py:function"),
        ("nets.py:small_net", "needs --input-size HxWxC"),
        ("./nets.py:small_net", "needs --input-size HxWxC"),
    ],
)
def test_a_factory_may_be_a_python_file_as_a_user_types_it(
    tmp_path, capsys, monkeypatch, target, message
):
    # Without torch: the file's path is read as a factory's, not as a model file's name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.py").mkdir()
    (tmp_path / "nets.py").write_text("def small_net(): ...\n")
    with pytest.raises(SystemExit) as exit:
        main(["import", target])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.cnn"))


def test_a_python_file_named_by_its_absolute_path_is_a_factory(tmp_path, capsys):
    (tmp_path / "nets.py").write_text("def small_net(): ...\n")
    with pytest.raises(SystemExit):
        main(["import", f"{tmp_path / 'nets.py'}:small_net"])
    assert "needs --input-size HxWxC" in capsys.readouterr().err


def test_a_spec_the_formatter_refuses_is_an_internal_error_not_unformatted_text(
    tmp_path, capsys, monkeypatch
):
    """The import writes its spec in fmt's layout or not at all: a writer's text that does
    not parse, or that the formatter's guard refuses, is a bug said as one."""
    import cnnspec.fmt

    network = resnet_like()
    monkeypatch.setattr(cnnspec.fmt, "format_text", lambda text, path="<spec>": None)
    with pytest.raises(ImportFailure, match=r"^internal error: the formatter cannot lay out"):
        import_network(network)
    monkeypatch.setattr("cnnspec.importing.read", lambda source, size: resnet_like())
    out = tmp_path / "tiny.cnn"
    with pytest.raises(SystemExit) as exit:
        main(["import", "tiny.onnx", "-o", str(out)])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert "internal error: the formatter cannot lay out the imported spec" in err
    assert "Traceback" not in err and not out.exists()


def test_a_writer_text_that_does_not_parse_says_where(monkeypatch):
    from cnnspec.importing import writer

    network = resnet_like()
    monkeypatch.setattr(writer, "write", lambda network, items: "model m {\n  input 8x8x3\n")
    with pytest.raises(ImportFailure, match=r"^internal error: the imported spec does not parse: "):
        import_network(network)


def _factory_file(tmp_path, body: str) -> str:
    (tmp_path / "nets.py").write_text(body)
    return f"{tmp_path / 'nets.py'}:small_net"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "raise KeyError('at import')\n",
            "cannot import {file}: KeyError: 'at import'",
        ),
        (
            "def small_net():\n    return {}['no such layer']\n",
            "{target}() failed: KeyError: 'no such layer'",
        ),
        (
            "import torch\n"
            "class Net(torch.nn.Module):\n"
            "    def forward(self, x):\n"
            "        raise ZeroDivisionError('in forward')\n"
            "def small_net():\n    return Net()\n",
            "PyTorch cannot export {target} to ONNX: ZeroDivisionError: in forward",
        ),
    ],
    ids=["module", "factory", "forward"],
)
def test_the_users_code_may_raise_anything_and_is_one_line(tmp_path, capsys, body, message):
    """The PyTorch factory is a boundary: the user's module, factory and forward run inside
    the command, and whatever they raise is one line that names whose code failed."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    target = _factory_file(tmp_path, body)
    with pytest.raises(SystemExit) as exit:
        main(["import", target, "--input-size", "8x8x3", "-o", str(tmp_path / "m.cnn")])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    expected = message.format(file=tmp_path / "nets.py", target=target)
    assert f"cnnspec: error: {expected}" in err
    assert "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "m.cnn").exists()
