"""Vectors flattened from a map where their order shows, proved in Keras, PyTorch and ONNX.

Keras flattens an (H, W, C) map in HWC order, PyTorch and ONNX in CHW order. A dense layer
after the flatten hides the difference in its permuted weights (cnnspec.layout), but a reshape
of the vector, a join with a vector in natural order, a concat and the model's output see the
positions themselves: PyTorch and ONNX put the vector in Keras's order first. Each case is run
by `cnnspec verify` with random weights (random biases and statistics too): the counts are the
checker's, every Keras layer has the checker's shape, and the three backends agree within 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cnnspec import verify
from cnnspec.layout import flattened_layout
from tests.campaign import random_weights
from tests.frameworks.scripts import checked_spec, write_script
from tests.test_build import RUFF_RULES, ruff

pytestmark = pytest.mark.frameworks

CASES = {
    # The vector made a map again, through an element-wise layer that carries the order; and
    # the reshape's map flattened again for the head's dense layer.
    "reshape_to_a_map": """
        model order_map {
          input 4x4x3
          conv2d(4, 3, padding=same)
          flatten()
          relu()
          reshape((4, 4, 4))
          conv2d(2, 3, padding=same)
          head { flatten() dense(3, activation=softmax) }
        }
    """,
    # A reshape that keeps the vector's shape is the identity (the dense's rows are permuted);
    # a map flattened and reshaped to a 1x1 map, whose flatten needs no permutation.
    "reshape_to_a_vector": """
        model order_vector {
          input 4x4x3
          conv2d(4, 3, padding=same)
          flatten()
          reshape(-1)
          batchnorm()
          dense(16, activation=relu)
          reshape((2, 2, 4))
          conv2d(4, 1)
          flatten()
          reshape((1, 1, 16))
          head { flatten() dense(3, activation=softmax) }
        }
    """,
    # The shortcut is the flattened vector, the body a dense layer's output in natural order.
    "residual_with_a_dense_branch": """
        model order_residual {
          input 4x4x3
          conv2d(4, 3, padding=same)
          flatten()
          residual { dense(64) }
          head { dense(3, activation=softmax) }
        }
    """,
    # Joins whose inputs carry one order keep it (the head's rows are permuted); vectors of
    # two maps of one size (4x4x3 and 2x2x12) do not, and are added in Keras's order.
    "joins_of_flattened_vectors": """
        model order_joins {
          input 4x4x3
          add {
            branch { flatten() }
            branch { conv2d(12, 2, stride=2) flatten() }
          }
          dense(48)
          reshape((4, 4, 3))
          flatten()
          residual { batchnorm() relu() }
          multiply {
            branch { }
            branch { dropout(0.5) }
          }
          head { dense(3, activation=softmax) }
        }
    """,
    "concat_with_a_dense_output": """
        model order_concat {
          input 4x4x3
          conv2d(4, 3, padding=same)
          flatten()
          concat {
            branch { }
            branch { dense(16) }
          }
          head { dense(3, activation=softmax) }
        }
    """,
    # A branch's long name: the reordering is written as ruff formats a long chain.
    "long_branch_names": """
        model order_names {
          input 4x4x3
          conv2d(4, 3, padding=same)
          concat {
            branch features_flattened_from_the_convolution_map { flatten() }
            branch dense_features { flatten() dense(8) }
          }
          head { dense(3, activation=softmax) }
        }
    """,
    # No dense layer at all: the probabilities are the flattened map's, in Keras's order.
    "flattened_output": """
        model order_output {
          input 4x4x3
          conv2d(4, 3, padding=same)
          head { flatten() softmax() }
        }
    """,
}


@pytest.mark.parametrize("text", CASES.values(), ids=list(CASES))
def test_the_three_backends_agree(text: str) -> None:
    spec = checked_spec(text)
    layout = flattened_layout(spec.model)
    assert layout.reorders or layout.output or layout.weights  # the case reaches the pass
    report = verify.run_verify(spec, random_weights(spec, np.random.default_rng(0)), 1e-4)
    assert report.skipped == {}
    assert report.counts == {"keras": report.expected, "pytorch": report.expected}, report
    assert report.shape_mismatches == []
    assert [(c.first, c.second) for c in report.comparisons] == [
        ("keras", "pytorch"),
        ("keras", "onnx"),
        ("pytorch", "onnx"),
    ]
    assert all(c.max_abs <= 1e-5 for c in report.comparisons), report.comparisons


def test_generated_scripts_are_ruff_clean(tmp_path: Path) -> None:
    """The reordering statements keep the PyTorch scripts clean and formatted (the Keras
    scripts have none)."""
    paths = [write_script(checked_spec(text), tmp_path, "pytorch") for text in CASES.values()]
    checked = ruff("check", "--select", RUFF_RULES, *map(str, paths))
    assert checked.returncode == 0, checked.stdout
    formatted = ruff("format", "--check", "--diff", *map(str, paths))
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.parametrize("text", CASES.values(), ids=list(CASES))
def test_an_exported_model_imports_back_to_the_same_network(text: str, tmp_path: Path) -> None:
    """The reorder the export writes reads as nothing (the spec's vectors are in Keras's order
    already): the model imports, with the spec's reshapes and flattens, computing the same
    outputs. (The layer list itself may differ: the export folds a batchnorm before a dense
    layer into it, and independent branches may come back in another order.)"""
    from cnnspec.export import export
    from cnnspec.importing import import_model
    from tests.frameworks.import_models.cases import run_onnx

    spec = checked_spec(text)
    model = export(spec, random_weights(spec, np.random.default_rng(1)))
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    imported = import_model(str(path))
    for kind in ("flatten", "reshape"):
        count = [n.kind for n in spec.model.nodes].count(kind)
        assert [n.kind for n in imported.spec.model.nodes].count(kind) == count, kind
    h, w, c = spec.model.input_shape
    x = np.random.default_rng(2).standard_normal((2, c, h, w)).astype(np.float32)
    np.testing.assert_allclose(
        run_onnx(export(imported.spec, imported.tensors), x), run_onnx(model, x), atol=1e-5
    )
