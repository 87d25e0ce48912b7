"""Exact shapes and counts for every shipped spec.

Each spec's `to_json` summary is compared with tests/golden/<spec>.summary.json; refresh the
golden files with `pytest --update-golden` and review the diff. The headline numbers below are
also written out by hand, with the arithmetic in comments, so a reader can check them without
trusting either the checker or the golden files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cnnspec.compiler import compile_file
from cnnspec.ir import Spec
from cnnspec.summary import to_json
from tests.conftest import ROOT, SPECS

GOLDEN = ROOT / "tests" / "golden"


def golden_path(spec: Path) -> Path:
    return GOLDEN / f"{spec.stem}.summary.json"


def render(summary: dict[str, Any]) -> str:
    return json.dumps(summary, sort_keys=True, indent=2) + "\n"


@cache
def compiled(stem: str) -> Spec:
    compilation = compile_file(ROOT / "specs" / f"{stem}.cnn")
    assert compilation.ok, [d.message for d in compilation.diagnostics]
    assert compilation.spec is not None
    return compilation.spec


@cache
def summary(stem: str) -> dict[str, Any]:
    return to_json(compiled(stem))


def layer(stem: str, name: str) -> dict[str, Any]:
    layers = {entry["name"]: entry for entry in summary(stem)["layers"]}
    assert name in layers, f"{stem} has no layer {name!r}; it has {sorted(layers)}"
    return layers[name]


# --------------------------------------------------------------------------------------------
# Golden files


def test_specs_are_shipped() -> None:
    assert {spec.stem for spec in SPECS} >= {"cifar10", "digits", "lenet5", "resnet18_cifar"}


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_summary_matches_golden(spec: Path, update_golden: bool) -> None:
    compilation = compile_file(spec)
    assert compilation.ok, [d.message for d in compilation.diagnostics]
    assert compilation.spec is not None
    text = render(to_json(compilation.spec))
    path = golden_path(spec)
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"no golden file {path.name}: run `pytest --update-golden`"
    golden = path.read_text(encoding="utf-8")
    # Compare the parsed objects first: pytest shows a readable diff of what changed.
    assert json.loads(text) == json.loads(golden)
    assert text == golden


def test_no_stale_golden_files() -> None:
    expected = {golden_path(spec).name for spec in SPECS}
    present = {path.name for path in GOLDEN.glob("*.summary.json")}
    assert present == expected


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_summary_is_deterministic_in_process(spec: Path) -> None:
    first, second = compile_file(spec), compile_file(spec)
    assert first.spec is not None and second.spec is not None
    assert render(to_json(first.spec)) == render(to_json(second.spec))


def test_summary_is_deterministic_across_processes() -> None:
    """Two interpreters with different hash seeds (set and dict iteration orders) and the CLI's
    own JSON output agree with the golden files."""
    for seed in ("0", "4242"):
        outputs = {}
        for spec in SPECS:
            result = subprocess.run(
                [sys.executable, "-m", "cnnspec", "summary", str(spec), "--format", "json"],
                cwd=ROOT,
                env={**os.environ, "PYTHONHASHSEED": seed},
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            outputs[spec.stem] = render(json.loads(result.stdout))
        for spec in SPECS:
            assert outputs[spec.stem] == render(summary(spec.stem)), (spec.stem, seed)


# --------------------------------------------------------------------------------------------
# Headline numbers, checked by hand


def test_cifar10_dense_head() -> None:
    # Three 2x2 poolings take 32x32 to 4x4; 4*4*128 = 2048 features after flatten.
    assert layer("cifar10", "head_flatten_1")["output_shape"] == [2048]
    # dense(512): 2048 inputs * 512 units + 512 biases.
    assert layer("cifar10", "head_dense_1")["params"] == 2048 * 512 + 512 == 1_049_088
    # dense(10): 512 * 10 + 10.
    assert layer("cifar10", "head_dense_2")["params"] == 512 * 10 + 10 == 5_130


def test_cifar10_totals() -> None:
    s = summary("cifar10")
    # conv 3x3: k*k*C_in*C_out + C_out.   batchnorm: 4*C (gamma, beta trainable; mean, var not).
    convs = (
        (3 * 3 * 3 * 32 + 32)  # conv1_conv2d_1       896
        + (3 * 3 * 32 * 32 + 32)  # conv1_conv2d_2   9,248
        + (3 * 3 * 32 * 64 + 64)  # conv2_conv2d_1  18,496
        + (3 * 3 * 64 * 64 + 64)  # conv2_conv2d_2  36,928
        + (3 * 3 * 64 * 128 + 128)  # conv3_conv2d_1  73,856
    )
    dense = (2048 * 512 + 512) + (512 * 10 + 10)  # 1,049,088 + 5,130
    bn_channels = 32 + 64 + 128 + 512  # four batchnorms: 736 channels
    assert convs + dense + 4 * bn_channels == s["total_params"] == 1_196_586
    assert convs + dense + 2 * bn_channels == s["trainable_params"] == 1_195_114
    assert 2 * bn_channels == s["non_trainable_params"] == 1_472
    assert s["output_shape"] == [10]


def test_cifar10_conv_macs() -> None:
    # MACs of a convolution: H_out * W_out * C_out * k * k * C_in (biases not counted).
    assert layer("cifar10", "conv1_conv2d_1")["macs"] == 32 * 32 * 32 * 3 * 3 * 3 == 884_736
    assert layer("cifar10", "conv1_conv2d_2")["macs"] == 32 * 32 * 32 * 3 * 3 * 32 == 9_437_184
    assert layer("cifar10", "conv2_conv2d_1")["macs"] == 16 * 16 * 64 * 3 * 3 * 32 == 4_718_592
    # A dense layer: inputs * units.
    assert layer("cifar10", "head_dense_1")["macs"] == 2048 * 512 == 1_048_576


def test_cifar10_receptive_field() -> None:
    def field(name: str) -> tuple[int, int]:
        entry = layer("cifar10", name)["receptive_field"]
        assert entry["size"][0] == entry["size"][1] and entry["jump"][0] == entry["jump"][1]
        return entry["size"][0], entry["jump"][0]

    # (size, jump). Each 3x3 stride-1 conv grows the field by (3 - 1) * jump, with jump 1 before
    # any pooling: 1 + 2 = 3 after conv1's first conv, 3 + 2 = 5 after its second.
    assert field("conv1_conv2d_1") == (3, 1)
    assert field("conv1_conv2d_2") == (5, 1)
    # maxpool(2): 5 + (2 - 1) * 1 = 6, and the jump doubles to 2.
    assert field("conv1_maxpool_1") == (6, 2)
    # The next 3x3 conv grows it by (3 - 1) * 2: 6 + 4 = 10.
    assert field("conv2_conv2d_1") == (10, 2)


def test_resnet18_cifar_trainable_params() -> None:
    s = summary("resnet18_cifar")
    # No conv has a bias (use_bias=false); batchnorm trains 2*C and keeps 2*C moving statistics.

    def conv3(c_in: int, c_out: int) -> int:
        return 3 * 3 * c_in * c_out

    convs = (
        conv3(3, 64)  # stem                                              1,728
        + 4 * conv3(64, 64)  # stage1: 4 x 36,864                       147,456
        + (conv3(64, 128) + 3 * conv3(128, 128))  # stage2: 73,728 + 3 x 147,456
        + (conv3(128, 256) + 3 * conv3(256, 256))  # stage3: 294,912 + 3 x 589,824
        + (conv3(256, 512) + 3 * conv3(512, 512))  # stage4: 1,179,648 + 3 x 2,359,296
    )
    shortcuts = 64 * 128 + 128 * 256 + 256 * 512  # 1x1 projections: 8,192 + 32,768 + 131,072
    # Batchnorm channels: stem 64, stage1 4 x 64, stages 2-4 five each (4 in the body, 1 on the
    # shortcut): 64 + 256 + 5*128 + 5*256 + 5*512 = 4,800.
    bn_channels = 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512
    dense = 512 * 10 + 10  # 5,130
    trainable = convs + shortcuts + 2 * bn_channels + dense
    # The well-known count for ResNet-18 on CIFAR-10 (e.g. kuangliu/pytorch-cifar).
    assert trainable == s["trainable_params"] == 11_173_962
    assert 2 * bn_channels == s["non_trainable_params"] == 9_600
    assert s["total_params"] == 11_173_962 + 9_600 == 11_183_562


@pytest.mark.parametrize(
    ("stage", "c_in", "c_out", "size"),
    [("stage2", 64, 128, 16), ("stage3", 128, 256, 8), ("stage4", 256, 512, 4)],
)
def test_resnet18_cifar_projection_shortcuts(stage: str, c_in: int, c_out: int, size: int) -> None:
    spec = compiled("resnet18_cifar")
    # The first residual of stages 2-4 halves the resolution and doubles the width, so its skip
    # path gets a 1x1, stride-2 convolution plus batchnorm; the second residual needs none.
    conv = spec.model.node(f"{stage}_shortcut_conv_1")
    assert conv.kind == "conv2d" and conv.role == "shortcut"
    assert conv.layer.kernel == (1, 1)  # type: ignore[attr-defined]
    assert conv.layer.stride == (2, 2)  # type: ignore[attr-defined]
    assert conv.output_shape == (size, size, c_out)
    assert conv.params.total == 1 * 1 * c_in * c_out  # no bias
    # MACs: H_out * W_out * C_out * 1 * 1 * C_in.
    assert conv.macs == size * size * c_out * c_in
    bn = spec.model.node(f"{stage}_shortcut_bn_1")
    assert bn.kind == "batchnorm" and bn.role == "shortcut"
    assert bn.inputs == (conv.name,)
    assert f"{stage}_shortcut_bn_1" in spec.model.node(f"{stage}_add_1").inputs
    shortcuts = [n.name for n in spec.model.nodes if n.role == "shortcut" and n.scope == (stage,)]
    assert shortcuts == [f"{stage}_shortcut_conv_1", f"{stage}_shortcut_bn_1"]


def test_resnet18_cifar_identity_shortcuts_in_stage1() -> None:
    spec = compiled("resnet18_cifar")
    shortcut_scopes = sorted({n.scope for n in spec.model.nodes if n.role == "shortcut"})
    assert shortcut_scopes == [("stage2",), ("stage3",), ("stage4",)]
    # stage1's residuals add their own input: 32x32x64 in, 32x32x64 out.
    assert spec.model.node("stage1_add_1").inputs == ("stage1_batchnorm_2", "stem_relu_1")
    assert layer("resnet18_cifar", "stage4_relu_4")["output_shape"] == [4, 4, 512]
    assert layer("resnet18_cifar", "head_global_avg_pool_1")["output_shape"] == [512]


def test_lenet5() -> None:
    s = summary("lenet5")
    # 5x5 valid convolutions take 32 -> 28, 14 -> 10 and 5 -> 1; avgpool(2) halves.
    trace = [entry["output_shape"] for entry in s["layers"]][:5]
    assert trace == [[28, 28, 6], [14, 14, 6], [10, 10, 16], [5, 5, 16], [1, 1, 120]]
    params = (
        (5 * 5 * 1 * 6 + 6)  # c1: 156
        + (5 * 5 * 6 * 16 + 16)  # c3: 2,416
        + (5 * 5 * 16 * 120 + 120)  # c5: 48,120
        + (120 * 84 + 84)  # f6: 10,164
        + (84 * 10 + 10)  # output: 850
    )
    assert params == s["total_params"] == s["trainable_params"] == 61_706
    assert s["non_trainable_params"] == 0
    # c3's MACs: 10 * 10 * 16 * 5 * 5 * 6.
    assert layer("lenet5", "c3_conv2d_1")["macs"] == 10 * 10 * 16 * 5 * 5 * 6 == 240_000


def test_digits() -> None:
    s = summary("digits")
    params = (
        (3 * 3 * 1 * 32 + 32)  # conv 320
        + (3 * 3 * 32 * 32 + 32)  # conv 9,248
        + (3 * 3 * 32 * 64 + 64)  # conv 18,496
        + ((2 * 2 * 64) * 64 + 64)  # dense(64) on the flattened 2x2x64 = 256 features: 16,448
        + (64 * 10 + 10)  # dense 650
    )
    bn_channels = 32 + 64
    assert params + 4 * bn_channels == s["total_params"] == 45_546
    assert params + 2 * bn_channels == s["trainable_params"] == 45_354
    assert s["non_trainable_params"] == 2 * bn_channels == 192
    assert layer("digits", "head_flatten_1")["output_shape"] == [256]
