"""`cnnspec build`: generated scripts and the rules for writing them. No framework is needed here;
tests/frameworks/test_keras_script.py builds and trains what these scripts describe.

- Golden files: the generated script of every shipped spec and example, byte for byte
  (`pytest --update-golden` rewrites them). Every golden compiles, passes `ruff check` with the
  project's rule set and is already `ruff format`ted, under a stock configuration.
- Same spec, same bytes; a spec with errors writes nothing and exits 1.
- Files are written atomically and never over a file cnnspec did not write, or one edited since.
- Spec strings full of quotes, backslashes, newlines and `__import__` stay inert data.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnspec.artifact import MARKER, State, state_of
from cnnspec.backends import BACKENDS, backend
from cnnspec.backends import keras as keras_backend
from cnnspec.backends import pytorch as pytorch_backend
from cnnspec.compiler import compile_file, compile_text
from cnnspec.losses import LOSSES
from cnnspec.registry import REGISTRY
from tests.conftest import ROOT, SPECS
from tests.test_cli import no_traceback, run, write

GOLDEN = ROOT / "tests" / "golden"
SOURCES = [*SPECS, *sorted((ROOT / "examples").glob("*.cnn"))]
SOURCES = [path for path in SOURCES if compile_file(path).ok]
RUFF_RULES = "E,F,W,I,B,UP,SIM,RUF,PIE"


def generate(path: Path, backend_name: str = "keras") -> str:
    compilation = compile_file(path)
    assert compilation.ok and compilation.spec is not None
    return backend(backend_name).emit(compilation.spec, path.name)


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--isolated", "--no-cache"],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_golden_script(path: Path, backend_name: str, update_golden: bool) -> None:
    module = backend(backend_name)
    golden = GOLDEN / backend_name / f"{path.stem}{module.SUFFIX}"
    text = generate(path, backend_name)
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), "run pytest --update-golden"
    assert text == golden.read_text(encoding="utf-8"), f"{golden.name} differs from the golden"
    compile(text, str(golden), "exec")
    assert state_of(golden) is State.generated


def test_goldens_are_ruff_clean() -> None:
    goldens = sorted(GOLDEN.glob("*/*.py"))
    assert len(goldens) == len(SOURCES) * len(BACKENDS)
    checked = ruff("check", "--select", RUFF_RULES, *map(str, goldens))
    assert checked.returncode == 0, checked.stdout
    formatted = ruff("format", "--check", "--diff", *map(str, goldens))
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_same_spec_same_bytes(backend_name: str) -> None:
    path = ROOT / "specs" / "resnet18_cifar.cnn"
    assert generate(path, backend_name) == generate(path, backend_name)


def _test_inputs() -> str:
    """Every spec text the tests feed the tool: shipped specs, fixtures and test sources."""
    paths = [*ROOT.glob("specs/*.cnn"), *ROOT.glob("tests/**/*.cnn"), *ROOT.glob("tests/**/*.py")]
    return "\n".join(path.read_text("utf-8") for path in paths)


def test_every_kind_has_a_test_case() -> None:
    """A layer, join or augmentation that no spec, fixture or test writes is untested."""
    from cnnspec.augment import AUGMENTATIONS

    corpus = _test_inputs()
    for kind, cls in REGISTRY.items():
        pattern = rf"\b{kind} *\{{" if cls.is_join else rf"\b{kind}\("
        assert re.search(pattern, corpus), f"no spec or test uses layer kind {kind!r}"
    for kind in AUGMENTATIONS:
        assert re.search(rf"\b{kind}\(", corpus), f"no spec or test uses augmentation {kind!r}"


def test_every_augmentation_has_an_emitter_per_backend() -> None:
    """Each step becomes a Keras preprocessing layer and a call of the PyTorch script's own
    function, in the spec's order; only `fill`, an option of the others, becomes neither."""
    from cnnspec.augment import AUGMENTATIONS
    from cnnspec.backends.runtime import runtime_definitions

    required = {"degrees": 10.0, "factor": 0.1}
    for kind, cls in AUGMENTATIONS.items():
        needed = {k: v for k, v in required.items() if k in cls.model_fields}
        step = cls.model_validate(needed)
        keras_call = step.keras({"fill_mode": "nearest"})
        torch_call = step.torch()
        assert (keras_call is None) == (torch_call is None) == (kind == "fill"), kind
        for helper in step.torch_helpers():
            # A name of the backend's table, or a runtime module's `module:name`.
            assert runtime_definitions(helper, "torch", pytorch_backend.AUGMENTATIONS), helper
        for helper in step.keras_helpers():
            assert runtime_definitions(helper), (kind, helper)
        if torch_call is not None:
            assert torch_call.func == step.torch_helpers()[-1].split(":")[-1], kind


def test_pytorch_augments_in_the_spec_order() -> None:
    text = (ROOT / "specs" / "cifar10.cnn").read_text("utf-8")
    reordered = text.replace(
        "augment { rotation(15)  shift(width=0.1, height=0.1)  flip(horizontal)  zoom(0.1)",
        "augment { zoom(0.1)  flip(horizontal)  shift(width=0.1, height=0.1)  rotation(15)",
    )
    assert reordered != text
    for source, order in (
        (text, ["rotation", "translation", "flip", "zoom"]),
        (reordered, ["zoom", "flip", "translation", "rotation"]),
    ):
        compilation = compile_text(source, "cifar10.cnn")
        assert compilation.spec is not None
        script = backend("pytorch").emit(compilation.spec, "cifar10.cnn")
        body = script[script.index("def augment(") :]
        calls = re.findall(r"images = random_(\w+)\(", body.split("return images")[0])
        assert calls == order


def test_every_backend_is_registered_once() -> None:
    """The CLI's choices, `verify`'s runners and the script generators read one table."""
    from cnnspec import cli, verify
    from cnnspec.backends import REGISTRY

    assert set(verify.RUNNERS) == set(REGISTRY)
    assert tuple(name for name, b in REGISTRY.items() if b.script) == BACKENDS
    for name in BACKENDS:
        assert backend(name).SUFFIX.endswith(".py")
    parser = cli._parser()
    build = next(
        a
        for a in parser._subparsers._group_actions[0].choices["build"]._actions
        if "--backend" in a.option_strings
    )
    assert tuple(build.choices) == BACKENDS


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_layer_a_backend_cannot_express_is_located(
    backend_name: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An emitter that raises Unsupported becomes E401 at the layer's line, not a traceback,
    and nothing is written."""
    from cnnspec import cli
    from cnnspec.layers import Dense
    from cnnspec.registry import Unsupported

    def refuse(self: object, *args: object) -> object:
        raise Unsupported("no dense here", hint="use a 1x1 conv2d")

    monkeypatch.setattr(Dense, "keras" if backend_name == "keras" else "torch", refuse)
    target = tmp_path / "out.py"
    spec = ROOT / "specs" / "digits.cnn"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["build", str(spec), "--backend", backend_name, "-o", str(target)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    line = next(i for i, t in enumerate(spec.read_text().splitlines(), 1) if "dense(64" in t)
    assert (
        f"digits.cnn:{line}:5: error[E401]: {backend_name} cannot express this: no dense here"
        in err
    )
    assert "hint: use a 1x1 conv2d" in err and "Traceback" not in err
    assert not target.exists()


class _RecordingBuilder:
    """An OnnxBuilder that records what an emitter asks for, without onnx."""

    def __init__(self) -> None:
        self.outputs: list[str] = []
        self.weights: set[str] = set()

    def op(self, op_type: str, inputs: list[str], name: str, **attributes: object) -> str:
        assert op_type[0].isupper() and all(isinstance(i, str) for i in inputs)
        self.outputs.append(f"{name}#{len(self.outputs)}")
        return self.outputs[-1]

    def weight(self, key: str) -> str:
        self.weights.add(key)
        return key

    def constant(
        self, name: str, values: list[float], shape: tuple[int, ...] = (), dtype: str = "float32"
    ) -> str:
        assert dtype in ("float32", "int64")
        return name


# ---- the command -------------------------------------------------------------------------


def test_build_writes_the_default_path(tmp_path: Path) -> None:
    spec = write(tmp_path, "tiny.cnn", (ROOT / "specs" / "digits.cnn").read_text())
    result = run("build", str(spec), "--backend", "keras", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    target = tmp_path / "build" / "tiny_keras.py"
    assert result.stdout.startswith(f"wrote {Path('build') / 'tiny_keras.py'} (keras, ")
    assert target.read_text() == generate(spec)
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode
    torch_build = run("build", str(spec), "--backend", "pytorch", cwd=tmp_path)
    assert torch_build.returncode == 0, torch_build.stderr
    assert (tmp_path / "build" / "tiny_pytorch.py").read_text() == generate(spec, "pytorch")

    again = run("build", str(spec), cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("unchanged ")


def test_build_refuses_a_file_it_did_not_write(tmp_path: Path) -> None:
    target = write(tmp_path, "train.py", "print('my own training script')\n")
    result = run("build", str(ROOT / "specs" / "digits.cnn"), "-o", str(target))
    assert result.returncode == 1
    assert "was not generated by cnnspec; not overwriting it" in result.stderr
    assert "--force" in result.stderr
    no_traceback(result)
    assert target.read_text() == "print('my own training script')\n"

    forced = run("build", str(ROOT / "specs" / "digits.cnn"), "-o", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert state_of(target) is State.generated


def test_build_refuses_a_file_edited_since(tmp_path: Path) -> None:
    target = tmp_path / "digits_keras.py"
    spec = str(ROOT / "specs" / "digits.cnn")
    assert run("build", spec, "-o", str(target)).returncode == 0
    edited = target.read_text().replace("BATCH_SIZE = 32", "BATCH_SIZE = 128")
    target.write_text(edited)
    assert state_of(target) is State.edited

    result = run("build", spec, "-o", str(target))
    assert result.returncode == 1
    assert "was edited after cnnspec generated it" in result.stderr
    assert target.read_text() == edited
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_keras.py"]  # no temp left


def test_a_spec_with_errors_writes_nothing(tmp_path: Path) -> None:
    spec = write(tmp_path, "bad.cnn", "model bad {\n  input 8x8x1\n  conv2x(4)\n}\n")
    result = run("build", str(spec), cwd=tmp_path)
    assert result.returncode == 1
    assert "bad.cnn:3:3: error[E110]: unknown layer 'conv2x'" in result.stderr
    assert "nothing written" in result.stderr
    no_traceback(result)
    assert not (tmp_path / "build").exists()


def test_unknown_backend_is_a_usage_error() -> None:
    result = run("build", str(ROOT / "specs" / "digits.cnn"), "--backend", "caffe")
    assert result.returncode == 2
    no_traceback(result)


def test_header_records_the_hash_of_the_body() -> None:
    text = generate(ROOT / "specs" / "cifar10.cnn")
    first, second, _ = text.split("\n", 2)
    assert first.startswith("# Generated by cnnspec ") and '"cifar10.cnn"' in first
    assert second.startswith(MARKER)


# ---- injection ---------------------------------------------------------------------------

HOSTILE = [
    'a"b',
    "it's",
    "back\\slash",
    "new\nline",
    "__import__('os').system('echo pwned')",
    '"""; import os; """',
    "\\u0022",
]


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


HOSTILE_PATH = "data/x'\"\\\n__import__('os')"


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_hostile_strings_stay_data(tmp_path: Path, backend_name: str) -> None:
    classes = ", ".join(_quoted(v) for v in HOSTILE)
    path_text = _quoted(HOSTILE_PATH)
    text = f"""
model safe {{
  input 16x16x3
  conv2d(4, padding=same, activation=relu)  global_avg_pool()
  dense({len(HOSTILE)}, activation=softmax)
}}
data {{
  source directory({path_text}, size=16x16, classes=[{classes}])
  labels sparse  validation val
}}
"""
    compilation = compile_text(text, "safe.cnn")
    assert compilation.ok, [d.message for d in compilation.diagnostics]
    assert compilation.spec is not None
    script = backend(backend_name).emit(compilation.spec, "we'ird\"\n name.cnn")
    tree = ast.parse(script)  # compiles: nothing broke out of a string or a comment
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("CLASS_NAMES", "DATA_PATH")
    }
    assert constants["CLASS_NAMES"] == HOSTILE
    assert constants["DATA_PATH"] == HOSTILE_PATH
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert "__import__" not in calls
    assert all(not line.startswith("import os;") for line in script.splitlines())
    path = tmp_path / "safe_keras.py"
    path.write_text(script)
    checked = ruff("check", "--select", "E9,F", str(path))
    assert checked.returncode == 0, checked.stdout


def test_injection_through_the_command_line(tmp_path: Path) -> None:
    """The spec's file name reaches the header comment: a newline there must not end it."""
    name = "evil\nimport os\n.cnn"
    try:
        spec = write(tmp_path, name, (ROOT / "specs" / "digits.cnn").read_text())
    except OSError:
        pytest.skip("this file system refuses newlines in names")
    result = run("build", str(spec), "-o", str(tmp_path / "out.py"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    script = (tmp_path / "out.py").read_text()
    assert "\nimport os\n" not in script.split('"""', 1)[0]
    compile(script, "out.py", "exec")


LIBRARIES = ("tensorflow", "keras", "torch", "numpy", "sklearn", "matplotlib")
PROBE = """
import runpy, sys
sys.argv = [{script!r}, *{args!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exit:
    code = exit.code
loaded = sorted(m for m in {libraries!r} if m in sys.modules)
print("LOADED", code, *loaded)
"""


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("args", [["--help"], ["--epochs", "three"], ["--no-such-flag"]])
def test_scripts_answer_the_command_line_before_loading_libraries(
    backend_name: str, args: list[str], tmp_path: Path
) -> None:
    """`--help` and a mistyped flag answer at once: the script parses its command line before
    it imports TensorFlow, PyTorch, numpy or scikit-learn (which take seconds)."""
    script = tmp_path / f"digits{backend(backend_name).SUFFIX}"
    script.write_text(generate(ROOT / "specs" / "digits.cnn", backend_name), encoding="utf-8")
    probe = PROBE.format(script=str(script), args=args, libraries=LIBRARIES)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    line = result.stdout.strip().splitlines()[-1]
    expected_code = 0 if args == ["--help"] else 2
    assert line == f"LOADED {expected_code}", result.stdout + result.stderr
    if args == ["--help"]:
        assert "--output-dir" in result.stdout
    else:
        assert "error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_every_loss_carries_both_backends_code(kind: str) -> None:
    loss = LOSSES[kind].model_validate({})
    keras_call = loss.keras()  # type: ignore[attr-defined]
    assert keras_call.func.startswith("keras.losses.")
    torch_code = loss.torch()  # type: ignore[attr-defined]
    # Statements that set `losses` from `logits` and `targets`, valid inside a function.
    tree = ast.parse("def f(logits, targets):\n    " + torch_code + "\n    return losses")
    assert tree.body


def test_every_metric_is_an_entry_with_both_backends_code() -> None:
    from cnnspec.codegen import Call
    from cnnspec.metrics import METRICS

    for name, entry in METRICS.items():
        metric = entry.model_validate({})
        assert metric.kind == name
        for labels in ("onehot", "sparse", "binary"):
            keras_code = metric.keras(labels)
            assert keras_code == name or isinstance(keras_code, Call), (name, labels)
        body = metric.torch().replace("\n", "\n    ")
        assert ast.parse(f"def f(probabilities, predicted, targets):\n    {body}").body


@pytest.mark.parametrize("backend_name", ["keras", "pytorch"])
def test_every_data_source_names_a_loader_each_script_has(backend_name: str) -> None:
    from cnnspec.sections import SOURCES

    script = {"keras": keras_backend, "pytorch": pytorch_backend}[backend_name]._Script
    for kind, source in SOURCES.items():
        names = source.loaders.get(backend_name)  # type: ignore[attr-defined]
        assert names, f"{kind} has no {backend_name} loader"
        assert set(names) <= set(script.LOADERS), (kind, set(names) - set(script.LOADERS))
