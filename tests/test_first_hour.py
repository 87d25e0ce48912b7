"""What a first-time user met in their first hour (issue 17), checked without a framework: the
checker's answers to the slips of a first spec, `--strict`, and the summary's truths.

The diagnostics themselves are pinned by fixtures (tests/diagnostics/train_every_error.cnn,
names_framework.cnn, data_warnings.cnn, data_folders.cnn, syntax_glob.cnn); here are the command
line and the summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cnnspec.compiler import compile_text
from cnnspec.summary import render_table, to_json
from tests.test_cli import no_traceback, run, write

WARNED = """\
model warned {
  input 8x8x1
  global_avg_pool()
  dense(10, activation=softmax)
}
data { source digits  labels sparse  rescale 1/255 }
"""


def test_strict_turns_warnings_into_failures(tmp_path: Path) -> None:
    spec = write(tmp_path, "warned.cnn", WARNED)
    relaxed = run("check", str(spec))
    assert relaxed.returncode == 0 and "warning[W305]" in relaxed.stderr
    strict = run("check", "--strict", str(spec))
    assert strict.returncode == 1
    assert "0 errors, 1 warning (--strict: warnings fail)" in strict.stderr
    built = run("build", "--strict", str(spec), "-o", str(tmp_path / "warned.py"))
    assert built.returncode == 1 and "nothing written" in built.stderr
    assert not (tmp_path / "warned.py").exists()
    no_traceback(strict)
    no_traceback(built)


def test_every_error_in_one_run(tmp_path: Path) -> None:
    """A string where a number goes, in train, hides none of the other checks."""
    text = """\
model m { input 8x8x1  conv2d(8)  global_avg_pool()  dense(5, activation=softmax) }
data { source digits  labels sparse }
train { optimizer adam(lr="1e-4")  early_stopping(monitor=val_auc) }
"""
    result = run("check", str(write(tmp_path, "m.cnn", text)))
    assert result.returncode == 1
    for code in ("E303", "E113", "E306", "E301"):
        assert f"error[{code}]" in result.stderr, code
    assert "4 errors, 0 warnings" in result.stderr
    assert "not the string '1e-4'" in result.stderr and "remove the quotes" in result.stderr


PHASES = """\
model m {
  input 8x8x1
  block features { conv2d(8)  maxpool(2) }
  head { global_avg_pool()  dense(10, activation=softmax) }
}
data { source digits  labels sparse  validation 0.1 }
train {
  early_stopping(monitor=val_loss, patience=3)
  phase warmup { epochs 2  freeze features  reduce_lr(monitor=val_loss, patience=1) }
  phase rest { epochs 4  unfreeze all }
}
"""


def test_summary_shows_each_phases_callbacks_and_one_frozen_count() -> None:
    compilation = compile_text(PHASES, "m.cnn")
    assert compilation.spec is not None
    codes = [d.code for d in compilation.diagnostics]
    assert codes == ["W307"]  # warmup's own callbacks drop train's early_stopping
    data = to_json(compilation.spec)
    warmup, rest = data["phases"]
    assert warmup["callbacks"] == ["reduce_lr"]
    assert rest["callbacks"] == ["early_stopping"]
    assert warmup["frozen_layers"] == ["features_conv2d_1"]  # not the maxpool
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render_table(compilation.spec))
    text = console.export_text()
    assert "phase warmup: 90 trainable params, 2 epochs, 1 layer frozen; callbacks: reduce_lr" in (
        text
    )
    assert "phase rest: 170 trainable params, 4 epochs" in text
    assert "callbacks: early_stopping" in text


def test_receptive_field_after_global_pooling_is_the_whole_input() -> None:
    compilation = compile_text(PHASES, "m.cnn")
    assert compilation.spec is not None
    fields = {n.name: n.receptive_field for n in compilation.spec.model.nodes}
    pooled = fields["head_global_avg_pool_1"]
    assert pooled is not None and pooled.size == (8, 8) and pooled.jump == (8, 8)
    assert fields["head_dense_1"] == pooled
    summary = run("summary", "-", input_text=PHASES)
    assert "8 /8" in summary.stdout


def test_json_summary_is_valid(tmp_path: Path) -> None:
    result = run("summary", "--format", "json", str(write(tmp_path, "m.cnn", PHASES)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["phases"][0]["callbacks"] == ["reduce_lr"]


def test_an_image_folders_classes_are_checked_against_the_head(tmp_path: Path) -> None:
    """A spec that names no classes gets them from train/'s sub-folders, when they are there:
    three folders and a head of four units is E303, naming the folders."""
    for name in ("cat", "dog", "emu"):
        (tmp_path / "imgs" / "train" / name).mkdir(parents=True)
    text = f"""\
model m {{ input 16x16x3  global_avg_pool()  dense(4, activation=softmax) }}
data {{ source directory({str(tmp_path / "imgs")!r}, size=16x16)  labels sparse }}
""".replace("'", '"')
    compilation = compile_text(text, "m.cnn")
    (error,) = compilation.diagnostics.errors
    assert error.code == "E303"
    assert "the data has 3 classes (the class folders of" in error.message
    assert "cat, dog, emu), but the last layer has 4 units" in error.message
    # Where the folder is not (yet), nothing to compare: a warning that it is not there.
    elsewhere = text.replace(str(tmp_path / "imgs"), str(tmp_path / "nope"))
    compilation = compile_text(elsewhere, "m.cnn")
    assert [d.code for d in compilation.diagnostics] == ["W304"]


def test_each_backend_has_its_own_default_output_folder() -> None:
    from cnnspec.backends import backend

    spec = compile_text((Path(__file__).parent.parent / "specs" / "digits.cnn").read_text())
    assert spec.spec is not None
    texts = {name: backend(name).emit(spec.spec, "digits.cnn") for name in ("keras", "pytorch")}
    assert 'DEFAULT_OUTPUT_DIR = "runs/digits_keras"' in texts["keras"]
    assert 'DEFAULT_OUTPUT_DIR = "runs/digits_pytorch"' in texts["pytorch"]


# --------------------------------------------------------------------------------------------
# Issue 23: a newcomer's first hour, again


def test_validation_none_is_accepted_and_means_no_validation() -> None:
    """The README lists `none` among validation's values; the word must not be refused as the
    value none, nor must sweep's `pruner none` be."""
    text = """\
model m { input 8x8x1  conv2d(8)  global_avg_pool()  dense(10, activation=softmax) }
data { source digits  rescale 1/16  labels sparse  validation none }
sweep { objective loss  pruner none  space { model.conv2d_1.filters choice(4, 8) } }
"""
    compilation = compile_text(text, "m.cnn")
    assert [d.code for d in compilation.diagnostics] == []
    assert compilation.spec is not None
    assert compilation.spec.data.validation == "none"
    assert not compilation.spec.data.has_validation
    assert compilation.spec.sweep is not None and compilation.spec.sweep.pruner == "none"
    # No validation split, so a validation metric has nothing to be computed on.
    monitored = text.replace("sweep {", "train { early_stopping(monitor=val_loss) }\n#")
    codes = [d.code for d in compile_text(monitored, "m.cnn").diagnostics]
    assert codes == ["E306"]


def test_class_names_may_be_the_words_none_true_and_false() -> None:
    """A class called none (an X-ray with no finding) is a name, where a name goes; where
    none is a value of its own (a backbone's weights=none) it stays that value."""
    text = """\
model m { input 8x8x1  conv2d(8)  global_avg_pool()  dense(3, activation=softmax) }
data { source directory("x", size=8x8, color=grayscale, classes=[none, cat, true])
  labels sparse  classes [none, false, dog] }
"""
    compilation = compile_text(text, "m.cnn")
    assert [d.code for d in compilation.diagnostics] == ["W304"]  # no folder x here
    assert compilation.spec is not None
    assert compilation.spec.data.classes == ("none", "false", "dog")
    source = compilation.spec.data.source
    assert source is not None and source.class_names() == ("none", "cat", "true")
    backbone = """\
model m { input 32x32x3  backbone vgg16(weights=none)  global_avg_pool()  dense(10) }
"""
    spec = compile_text(backbone, "m.cnn").spec
    assert spec is not None and spec.model.backbone is not None
    assert spec.model.backbone.args.weights is None


def test_a_freeze_target_is_the_word_as_written() -> None:
    """`freeze none` names a layer called none, not Python's None."""
    text = """\
model m { input 8x8x1  conv2d(8)  global_avg_pool()  dense(10, activation=softmax) }
data { source digits  rescale 1/16  labels sparse }
train { freeze none  unfreeze true }
"""
    messages = [d.message for d in compile_text(text, "m.cnn").diagnostics]
    assert messages == ["freeze 'none' matches no layer", "unfreeze 'true' matches no layer"]


def _class_folders(root: Path, splits: dict[str, tuple[str, ...]]) -> None:
    for split, names in splits.items():
        for name in names:
            (root / split / name).mkdir(parents=True)


def test_an_image_folders_splits_must_have_the_same_class_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """val/ or test/ with a class folder missing or extra is refused before training (the
    scripts refuse it only once they run), at the source call, naming the folders."""
    _class_folders(
        tmp_path / "imgs",
        {
            "train": ("cat", "dog", "emu"),
            "val": ("cat", "dog"),
            "test": ("cat", "dog", "emu", "fox"),
        },
    )
    text = """\
model m { input 16x16x3  global_avg_pool()  dense(3, activation=softmax) }
data { source directory("imgs", size=16x16)  labels sparse  validation val }
"""
    monkeypatch.chdir(tmp_path)  # a relative path is read from the working directory
    compilation = compile_text(text, "m.cnn")
    found = [(d.span.line, d.span.column, d.code) for d in compilation.diagnostics]
    assert found == [(2, 15, "E309"), (2, 15, "E309")]
    test, val = sorted(compilation.diagnostics.errors, key=lambda d: d.message)
    assert test.message == "test/ of 'imgs' has the class folder 'fox', which train/ has not"
    assert val.message == "val/ of 'imgs' has no class folder 'emu', which train/ has"
    assert val.hint is not None and "train/'s class folders (cat, dog, emu)" in val.hint
    # The same class folders everywhere: nothing to say.
    (tmp_path / "imgs" / "val" / "emu").mkdir()
    (tmp_path / "imgs" / "test" / "fox").rmdir()
    assert [d.code for d in compile_text(text, "m.cnn").diagnostics] == []


def test_an_image_folders_splits_must_have_the_spec_s_classes(tmp_path: Path) -> None:
    """With classes in the spec, the scripts read exactly those folders in every split."""
    _class_folders(tmp_path, {"train": ("cat", "dog", "gnu"), "test": ("cat", "dog")})
    text = f"""\
model m {{ input 16x16x3  global_avg_pool()  dense(2, activation=softmax) }}
data {{ source directory({str(tmp_path)!r}, size=16x16, classes=["cat", "dog"])  labels sparse }}
""".replace("'", '"')
    messages = [d.message for d in compile_text(text, "m.cnn").diagnostics]
    assert messages == [
        f"train/ of {str(tmp_path)!r} has the class folder 'gnu', which is not one of the "
        "spec's classes"
    ]


def _batch_diagnostics(text: str) -> list[tuple[int, str, str, str | None]]:
    return [
        (d.span.line, d.code, d.message, d.hint) for d in compile_text(text, "m.cnn").diagnostics
    ]


DIGITS_BATCH = """\
model m { input 8x8x1  conv2d(8)  global_avg_pool()  dense(10, activation=softmax) }
data { source digits  rescale 1/16  labels sparse  validation 0.1 }
train { seed 0
  batch 1294 }
"""


def test_a_batch_larger_than_the_training_split_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each epoch would be one step: the digits' 1,797 images less 360 for the test split
    (scikit-learn's ceil(0.2 x 1,797)) less 144 for validation 0.1 leave 1,293."""
    monkeypatch.setenv("CNNSPEC_MEMORY_BYTES", str(2**40))  # only the split's size speaks
    (found,) = _batch_diagnostics(DIGITS_BATCH)
    assert found == (
        4,
        "W320",
        "batch 1,294 is larger than the training split (1,293 images), so each epoch is a "
        "single step",
        "the training split holds 1,293 images: 1,797 digits, less 360 for the test split "
        "(test_fraction 0.2), less 144 for validation 0.1; use a batch of at most 1,293",
    )
    assert _batch_diagnostics(DIGITS_BATCH.replace("1294", "1293")) == []
    # Validated on the test split, training keeps all 1,437 of them.
    assert _batch_diagnostics(DIGITS_BATCH.replace("validation 0.1", "validation test")) == []
    other = DIGITS_BATCH.replace("source digits", "source digits(test_fraction=0.5)")
    (found,) = _batch_diagnostics(other)
    assert "(808 images)" in found[2] and "less 899 for the test split" in (found[3] or "")
    cifar = """\
model m { input 32x32x3  global_avg_pool()  dense(10, activation=softmax) }
data { source cifar10  rescale 1/255  labels sparse  validation 0.2 }
train { batch 40001 }
"""
    (found,) = _batch_diagnostics(cifar)
    assert found[:2] == (3, "W320") and "(40,000 images)" in found[2]
    assert "CIFAR-10's 50,000 training images, less 10,000 for validation 0.2" in (found[3] or "")


def test_an_image_folders_training_split_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The images in train/'s class folders, as the scripts pick them (by suffix; none is
    opened), less the validation fraction; the default batch, 32, is judged too."""
    monkeypatch.setenv("CNNSPEC_MEMORY_BYTES", str(2**40))
    for split in ("train", "test"):
        for name, count in (("cat", 12), ("dog", 10)):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                (folder / f"{index}.{'PNG' if index % 2 else 'jpg'}").write_bytes(b"")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    text = f"""\
model m {{ input 16x16x3  global_avg_pool()  dense(2, activation=softmax) }}
data {{ source directory({str(tmp_path)!r}, size=16x16)  labels sparse  validation 0.1 }}
train {{ epochs 3 }}
""".replace("'", '"')
    (found,) = _batch_diagnostics(text)
    assert found[:3] == (
        3,
        "W320",
        "the default batch, 32, is larger than the training split (19 images), so each epoch "
        "is a single step",
    )
    assert f"22 images in {tmp_path}/train, less 3 for validation 0.1" in (found[3] or "")
    assert _batch_diagnostics(text.replace("epochs 3", "batch 19")) == []


MEMORY = """\
model m { input 224x224x3  conv2d(64, padding=same)  global_avg_pool()  dense(10, activation=softmax) }
train { batch 2048 }
"""


def test_a_batch_whose_activations_exceed_the_memory_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Training keeps each layer's output for the backward pass: 224 x 224 x 64 float32 values
    (12,845,056 bytes), 64 and 10 more, 12,845,352 bytes an example, times 2,048 is 24.5 GiB,
    more than a machine of 16 GiB has; 1,337 examples fit."""
    monkeypatch.setenv("CNNSPEC_MEMORY_BYTES", str(16 * 2**30))
    (found,) = _batch_diagnostics(MEMORY)
    assert found == (
        2,
        "W321",
        "batch 2,048 keeps 24.5 GiB of activations for the backward pass, more than the "
        "16.0 GiB of memory CNNSPEC_MEMORY_BYTES gives",
        "12.3 MiB an example (each layer's float32 output, as `cnnspec summary` counts it; "
        "the gradients, weights and optimizer state come on top): a batch of at most 1,337 "
        "fits in 16.0 GiB",
    )
    assert _batch_diagnostics(MEMORY.replace("2048", "1337")) == []
    # Where not even one example fits, the hint says so.
    monkeypatch.setenv("CNNSPEC_MEMORY_BYTES", str(2**20))
    (found,) = _batch_diagnostics(MEMORY.replace("2048", "1"))
    assert found[1] == "W321" and "not even one example fits in 1.0 MiB" in (found[3] or "")


def test_the_machines_memory_is_its_physical_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnspec.check import machine_memory

    monkeypatch.delenv("CNNSPEC_MEMORY_BYTES", raising=False)
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert machine_memory() == (physical, "this machine")
    monkeypatch.setenv("CNNSPEC_MEMORY_BYTES", "12345")
    assert machine_memory() == (12345, "CNNSPEC_MEMORY_BYTES")
    monkeypatch.setenv("CNNSPEC_MEMORY_BYTES", "16GiB")  # bytes only: the machine's then
    assert machine_memory() == (physical, "this machine")


def test_layers_no_gradient_reaches_keep_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen front keeps no activations: the count starts at the first layer a phase
    trains, and the phase that trains the most decides."""
    monkeypatch.setenv("CNNSPEC_MEMORY_BYTES", str(16 * 2**30))
    text = """\
model m {
  input 224x224x3
  block stem { conv2d(64, padding=same) }
  conv2d(8, stride=4)  global_avg_pool()  dense(10, activation=softmax)
}
train { batch 2048
  freeze stem }
"""
    assert _batch_diagnostics(text) == []
    phased = text.replace(
        "freeze stem }", "phase head { freeze stem }  phase all { unfreeze all } }"
    )
    assert [code for _, code, _, _ in _batch_diagnostics(phased)] == ["W321"]
    wide = text.replace("stride=4", "padding=same")  # 224 x 224 x 8 after the frozen stem
    (found,) = _batch_diagnostics(wide.replace("2048", "20000"))
    assert "conv2d_1 on, where phase 'train' starts training" in (found[3] or "")


def test_the_checker_counts_the_files_the_scripts_read() -> None:
    """The training split's size is counted with the scripts' own rule: the same suffixes."""
    import ast

    from cnnspec import check
    from cnnspec.backends import backend

    IMAGE_SUFFIXES = frozenset(check.IMAGE_SUFFIXES)

    text = "model m { input 8x8x3  global_avg_pool()  dense(2, activation=softmax) }\n"
    compiled = compile_text(text + 'data { source directory("imgs")  labels sparse }\n')
    assert compiled.spec is not None
    tree = ast.parse(backend("pytorch").emit(compiled.spec, "m.cnn"))
    (scripts,) = (
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "IMAGE_SUFFIXES" for t in node.targets)
    )
    assert set(scripts) == IMAGE_SUFFIXES


def test_only_image_files_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder named like an image, or a text file, is no training example."""
    monkeypatch.setenv("CNNSPEC_MEMORY_BYTES", str(2**40))
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
    for name in ("1.webp", "2.tiff", "3.PGM", "4.png"):
        (tmp_path / "train" / "a" / name).write_bytes(b"")
    (tmp_path / "train" / "a" / "5.png").mkdir()
    (tmp_path / "train" / "a" / "6.txt").write_text("")
    (tmp_path / "train" / "b" / "1.jpg").write_bytes(b"")
    text = f"""\
model m {{ input 16x16x3  global_avg_pool()  dense(1, activation=sigmoid) }}
data {{ source directory({str(tmp_path)!r}, size=16x16)  labels binary }}
train {{ batch 6 }}
""".replace("'", '"')
    (found,) = _batch_diagnostics(text)
    assert found[1] == "W320"
    assert found[3] == (
        f"the training split holds 5 images: 5 images in {tmp_path}/train; use a batch of at most 5"
    )
