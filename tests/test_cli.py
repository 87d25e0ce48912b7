"""The command line as a user sees it: real subprocesses, real exit statuses, real output.

Exit status: 0 when no spec has errors (warnings allowed), 1 when one has, 2 for usage errors.
Diagnostics go to stderr as

    path:line:col: error[CODE]: message
     N |   source line
       |   ^~~~~~
       = hint: ...

and never as a Python traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnspec import __version__
from cnnspec.compiler import compile_file
from tests.conftest import ROOT, SPECS

CONSOLE_SCRIPT = Path(sys.executable).parent / "cnnspec"

HEADER = re.compile(
    r"^(?P<path>\S+):(?P<line>\d+):(?P<column>\d+): (?P<severity>error|warning)"
    r"\[(?P<code>[EW]\d{3})\]: (?P<message>.+)$"
)
SOURCE_LINE = re.compile(r"^ (?P<gutter>\d+) \| (?P<text>.*)$")
CARET_LINE = re.compile(r"^ (?P<pad> +)\| (?P<indent> *)\^~*$")
HINT_LINE = re.compile(r"^ (?P<pad> +)= hint: (?P<hint>.+)$")
OK_LINE = re.compile(
    r"^(?P<path>\S+): ok: (?P<layers>\d+) layers, (?P<params>[\d,]+) params "
    r"\((?P<trainable>[\d,]+) trainable\), output \((?P<output>[\d, ]+)\)$"
)
JSON_KEYS = {
    "file",
    "line",
    "column",
    "end_line",
    "end_column",
    "severity",
    "code",
    "message",
    "hint",
    "notes",
}


def run(
    *args: str,
    cwd: Path = ROOT,
    script: bool = False,
    unset: tuple[str, ...] = (),
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`cnnspec ARGS...` in a subprocess; `unset` names environment variables to leave out,
    `input_text` is its standard input."""
    command = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "cnnspec"]
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env={**env, "NO_COLOR": "1"},
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
model good {
  input 8x8x1
  conv2d(4)
  flatten()
  dense(10, activation=softmax)
}
data { source digits  labels sparse }
"""

# One error, with a hint, on line 3 column 3.
BAD = """\
model bad {
  input 8x8x1
  conv2x(4)
  flatten()
  dense(10, activation=softmax)
}
data { source digits  labels sparse }
"""

# Warnings only: softmax over one unit, and relu applied twice.
WARNS = """\
model warns {
  input 8x8x1
  conv2d(4, activation=relu)  relu()
  flatten()
  dense(1, activation=softmax)
}
"""

# Phases with freeze and unfreeze. Parameters, by hand:
#   features_conv2d_1     conv2d(8) on 8x8x1, 3x3 valid -> 6x6x8:   3*3*1*8 + 8    =    80
#   features_batchnorm_1  8 channels: gamma, beta trainable; mean, var not:  16 + 16
#   features_conv2d_2     conv2d(16) on 6x6x8 -> 4x4x16:          3*3*8*16 + 16  = 1,168
#   head_dense_1          dense(10) on the 16 pooled channels:      16*10 + 10   =   170
# Total 80 + 32 + 1,168 + 170 = 1,450; trainable 80 + 16 + 1,168 + 170 = 1,434.
PHASED = """\
model phased {
  input 8x8x1
  block features { conv2d(8)  batchnorm()  conv2d(16)  maxpool(2) }
  head { global_avg_pool()  dense(10, activation=softmax) }
}
data { source digits  labels sparse  validation 0.1 }
train {
  epochs 30
  phase warmup { epochs 5  freeze features }
  phase middle { unfreeze features_conv2d_2 }
  phase finetune { unfreeze all  optimizer sgd(lr=0.001, momentum=0.9) }
}
"""


# --------------------------------------------------------------------------------------------
# check


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_check_shipped_spec(spec: Path) -> None:
    result = run("check", str(spec.relative_to(ROOT)))
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    # The only thing to say of a shipped spec: that its image folder is not in this checkout,
    # and of the tutorial's own pneumonia pipeline, that its input is not VGG16's.
    said = re.findall(r"^\S+:\d+:\d+: (\w+)\[(\w+)\]", result.stderr, re.MULTILINE)
    allowed = {("warning", "W304")}
    if spec.stem == "pneumonia_vgg16":
        allowed.add(("warning", "W308"))
        assert ("warning", "W308") in said
    assert set(said) <= allowed, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    match = OK_LINE.match(lines[0])
    assert match, lines[0]
    assert match["path"] == str(spec.relative_to(ROOT))
    checked = compile_file(spec).spec
    assert checked is not None and checked.model.output_shape is not None
    assert match["output"] == f"{checked.model.output_shape[0]},"


def test_check_ok_line_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "good.cnn", GOOD)
    result = run("check", str(path))
    assert result.returncode == 0
    # conv2d(4) on 8x8x1 with a 3x3 valid window: 6x6x4, 3*3*1*4 + 4 = 40 params;
    # flatten: 144; dense(10): 144*10 + 10 = 1,450. Three layers, 1,490 params.
    assert result.stdout == f"{path}: ok: 3 layers, 1,490 params (1,490 trainable), output (10,)\n"


def test_check_error_exact_format(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.cnn", BAD)
    result = run("check", str(path))
    no_traceback(result)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"{path}:3:3: error[E110]: unknown layer 'conv2x'\n"
        " 3 |   conv2x(4)\n"
        "   |   ^~~~~~\n"
        "   = hint: did you mean 'conv2d'?\n"
        "\n"
        "1 error, 0 warnings\n"
    )


def parse_blocks(stderr: str) -> list[dict[str, str]]:
    """Each diagnostic of a text report, checked line by line against the format."""
    blocks = []
    lines = stderr.splitlines()
    i = 0
    while i < len(lines):
        header = HEADER.match(lines[i])
        if header is None:
            i += 1
            continue
        source = SOURCE_LINE.match(lines[i + 1])
        caret = CARET_LINE.match(lines[i + 2])
        assert source, lines[i + 1]
        assert caret, lines[i + 2]
        assert source["gutter"] == header["line"]
        # The caret sits under the column, and the gutters line up.
        assert len(caret["indent"]) == int(header["column"]) - 1, (lines[i + 1], lines[i + 2])
        assert len(caret["pad"]) == len(source["gutter"]) + 1
        block = dict(header.groupdict())
        i += 3
        if i < len(lines) and (hint := HINT_LINE.match(lines[i])):
            assert len(hint["pad"]) == len(source["gutter"]) + 1
            block["hint"] = hint["hint"]
            i += 1
        blocks.append(block)
    return blocks


def test_check_format_of_every_diagnostic(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "many.cnn",
        "model many {\n"
        "  input 32x32x3\n"
        "  conv2d(32, kernal=3)\n"
        "  dropout(1.5)\n"
        + "\n"
        * 8
        + "  dense(10, activation=sofmax)\n"  # line 13: a two-digit gutter
        "}\n"
        "train { epochs 0 }\n",
    )
    result = run("check", str(path))
    no_traceback(result)
    assert result.returncode == 1
    blocks = parse_blocks(result.stderr)
    assert [(b["line"], b["column"], b["code"]) for b in blocks] == [
        ("3", "14", "E111"),
        ("4", "11", "E113"),
        ("13", "24", "E113"),
        ("15", "16", "E113"),
    ]
    assert all(b["path"] == str(path) and b["severity"] == "error" for b in blocks)
    assert blocks[0]["hint"] == "did you mean 'kernel'?"
    assert blocks[2]["hint"] == "did you mean 'softmax'?"
    assert result.stderr.rstrip().splitlines()[-1] == "4 errors, 0 warnings"


def test_check_warnings_only_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, "warns.cnn", WARNS)
    result = run("check", str(path))
    no_traceback(result)
    assert result.returncode == 0
    blocks = parse_blocks(result.stderr)
    assert {(b["code"], b["severity"]) for b in blocks} == {
        ("W203", "warning"),
        ("W202", "warning"),
    }
    assert result.stderr.rstrip().splitlines()[-1] == "0 errors, 2 warnings"
    assert OK_LINE.match(result.stdout.strip())


def test_check_json(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.cnn", BAD)
    result = run("check", "--format", "json", str(path))
    no_traceback(result)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert isinstance(report, list) and len(report) == 1
    (entry,) = report
    assert set(entry) == JSON_KEYS
    assert entry == {
        "file": str(path),
        "line": 3,
        "column": 3,
        "end_line": 3,
        "end_column": 9,
        "severity": "error",
        "code": "E110",
        "message": "unknown layer 'conv2x'",
        "hint": "did you mean 'conv2d'?",
        "notes": [],
    }


def test_check_json_several_files_and_null_hint(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.cnn", BAD)
    good = write(tmp_path, "good.cnn", GOOD)
    warns = write(tmp_path, "warns.cnn", WARNS)
    nohint = write(tmp_path, "nohint.cnn", GOOD.replace("conv2d(4)", "dropout(1.5)"))
    result = run("check", "-f", "json", str(bad), str(good), str(warns), str(nohint))
    no_traceback(result)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert all(set(entry) == JSON_KEYS for entry in report)
    assert [(e["file"], e["code"]) for e in report] == [
        (str(bad), "E110"),
        (str(warns), "W203"),
        (str(warns), "W202"),
        (str(nohint), "E113"),
    ]
    assert report[-1]["hint"] is None
    assert {e["severity"] for e in report} == {"error", "warning"}
    for entry in report:
        assert isinstance(entry["line"], int) and isinstance(entry["column"], int)
        assert (entry["end_line"], entry["end_column"]) > (entry["line"], entry["column"])


def test_check_json_clean_spec_is_an_empty_list(tmp_path: Path) -> None:
    result = run("check", "--format", "json", str(write(tmp_path, "good.cnn", GOOD)))
    assert result.returncode == 0
    assert json.loads(result.stdout) == []


def test_check_several_files_reports_all(tmp_path: Path) -> None:
    first = write(tmp_path, "first.cnn", BAD)
    good = write(tmp_path, "good.cnn", GOOD)
    second = write(tmp_path, "second.cnn", GOOD.replace("conv2d(4)", "conv2d(4, filters=8)"))
    result = run("check", str(first), str(good), str(second))
    no_traceback(result)
    assert result.returncode == 1
    blocks = parse_blocks(result.stderr)
    assert [(b["path"], b["code"]) for b in blocks] == [
        (str(first), "E110"),
        (str(second), "E115"),
    ]
    assert result.stdout.startswith(f"{good}: ok: ")
    assert result.stderr.rstrip().splitlines()[-1] == "2 errors, 0 warnings"


def test_check_all_shipped_specs_at_once() -> None:
    result = run("check", *(str(s.relative_to(ROOT)) for s in SPECS))
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == len(SPECS)


def test_syntax_error_through_the_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "open.cnn", "model open {\n  input 8x8x1\n  flatten()\n")
    result = run("check", str(path))
    no_traceback(result)
    assert result.returncode == 1
    (block,) = parse_blocks(result.stderr)
    assert (block["line"], block["column"], block["code"]) == ("3", "12", "E003")
    assert "'{' opened at line 1 is never closed" in block["message"]
    assert block["hint"] == "add '}' to close it"


# --------------------------------------------------------------------------------------------
# Usage errors


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.cnn"
    result = run("check", str(missing))
    no_traceback(result)
    assert result.returncode == 2
    assert f"no such file: {missing}" in result.stderr


def test_missing_file_among_good_ones(tmp_path: Path) -> None:
    result = run("check", str(write(tmp_path, "good.cnn", GOOD)), str(tmp_path / "nope.cnn"))
    no_traceback(result)
    assert result.returncode == 2


@pytest.mark.parametrize("command", ["check", "summary"])
def test_directory_and_binary_files(tmp_path: Path, command: str) -> None:
    result = run(command, str(tmp_path))
    no_traceback(result)
    assert result.returncode == 2
    assert "is a directory" in result.stderr
    binary = tmp_path / "binary.cnn"
    binary.write_bytes(b"\xff\xfe\x00model")
    result = run(command, str(binary))
    no_traceback(result)
    assert result.returncode == 2
    assert "not UTF-8" in result.stderr


def test_summary_missing_file(tmp_path: Path) -> None:
    result = run("summary", str(tmp_path / "nope.cnn"))
    no_traceback(result)
    assert result.returncode == 2


@pytest.mark.parametrize(
    "args", [["check"], ["check", "--format", "xml", "specs/lenet5.cnn"], ["frobnicate"]]
)
def test_bad_command_lines(args: list[str]) -> None:
    result = run(*args)
    no_traceback(result)
    assert result.returncode == 2


# --------------------------------------------------------------------------------------------
# summary


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_summary_table(spec: Path) -> None:
    table = run("summary", str(spec))
    no_traceback(table)
    assert table.returncode == 0, table.stderr
    data = json.loads(run("summary", "--format", "json", str(spec)).stdout)
    for layer in data["layers"]:
        assert re.search(rf"\b{re.escape(layer['name'])}\b", table.stdout), layer["name"]
    lines = table.stdout.splitlines()
    assert f"total params: {data['total_params']:,}" in lines
    assert f"trainable params: {data['trainable_params']:,}" in lines
    assert f"non-trainable params: {data['non_trainable_params']:,}" in lines
    assert f"MACs per example: {data['total_macs']:,}" in lines


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_summary_json(spec: Path) -> None:
    result = run("summary", "--format", "json", str(spec))
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {
        "total_params",
        "trainable_params",
        "non_trainable_params",
        "total_macs",
        "layers",
        "phases",
    } <= set(data)
    assert data["total_params"] == data["trainable_params"] + data["non_trainable_params"]
    assert data["layers"]
    for layer in data["layers"]:
        assert {
            "name",
            "kind",
            "output_shape",
            "params",
            "trainable_params",
            "macs",
            "receptive_field",
        } <= set(layer)
    assert sum(layer["params"] for layer in data["layers"]) == data["total_params"]
    assert sum(layer["macs"] for layer in data["layers"]) == data["total_macs"]
    assert len({layer["name"] for layer in data["layers"]}) == len(data["layers"])
    checked = compile_file(spec).spec
    assert checked is not None
    assert [phase["name"] for phase in data["phases"]] == [p.phase.name for p in checked.phases]
    for phase in data["phases"]:
        assert {"name", "trainable_params", "frozen_layers", "unfrozen_layers"} <= set(phase)
        assert phase["trainable_params"] + phase["non_trainable_params"] == data["total_params"]
    if len(data["phases"]) == 1:  # one implicit phase trains everything
        assert data["phases"][0]["trainable_params"] == data["trainable_params"]
    else:  # the transfer specs: the first phase trains the head on a frozen backbone
        assert data["phases"][0]["trainable_params"] < data["phases"][-1]["trainable_params"]


def test_summary_of_a_bad_spec(tmp_path: Path) -> None:
    result = run("summary", str(write(tmp_path, "bad.cnn", BAD)))
    no_traceback(result)
    assert result.returncode == 1
    assert parse_blocks(result.stderr)[0]["code"] == "E110"
    assert result.stdout == ""


def test_summary_phases(tmp_path: Path) -> None:
    path = write(tmp_path, "phased.cnn", PHASED)
    check = run("check", str(path))
    assert check.returncode == 0 and check.stderr == "", check.stderr
    data = json.loads(run("summary", "--format", "json", str(path)).stdout)
    assert data["total_params"] == 80 + 32 + 1168 + 170 == 1450
    assert data["trainable_params"] == 80 + 16 + 1168 + 170 == 1434
    phases = {phase["name"]: phase for phase in data["phases"]}
    assert list(phases) == ["warmup", "middle", "finetune"]
    # warmup freezes the whole features block: only the dense head trains.
    assert phases["warmup"]["trainable_params"] == 170
    assert phases["warmup"]["epochs"] == 5
    # The layers with weights it freezes, in model order; the pooling has none to freeze, and
    # the table counts the same three.
    assert phases["warmup"]["frozen_layers"] == [
        "features_conv2d_1",
        "features_batchnorm_1",
        "features_conv2d_2",
    ]
    # middle starts from warmup's freeze set and unfreezes the second convolution.
    assert phases["middle"]["trainable_params"] == 170 + 1168 == 1338
    assert phases["middle"]["epochs"] == 30  # from train
    # finetune unfreezes everything: batchnorm's moving statistics stay non-trainable.
    assert phases["finetune"]["trainable_params"] == 1434
    assert phases["finetune"]["frozen_layers"] == []
    for phase in phases.values():
        assert phase["trainable_params"] + phase["non_trainable_params"] == 1450

    table = run("summary", str(path)).stdout.splitlines()
    assert "phase warmup: 170 trainable params, 5 epochs, 3 layers frozen" in table
    assert (
        "phase middle: 1,338 trainable params, 30 epochs, 2 layers frozen; "
        "unfreezes 1 layer: features_conv2d_2" in table
    )
    assert (
        "phase finetune: 1,434 trainable params, 30 epochs; unfreezes 2 layers: "
        "features_conv2d_1, features_batchnorm_1" in table
    )


# --------------------------------------------------------------------------------------------
# `python -m cnnspec` and the `cnnspec` script are the same program


@pytest.mark.parametrize(
    "args",
    [
        ["check", "specs/lenet5.cnn"],
        ["check", "specs/lenet5.cnn", "specs/digits.cnn"],
        ["summary", "--format", "json", "specs/digits.cnn"],
        ["summary", "specs/lenet5.cnn"],
        ["check", "specs/missing.cnn"],
        ["version"],
    ],
)
def test_module_and_script_agree(args: list[str]) -> None:
    assert CONSOLE_SCRIPT.exists(), CONSOLE_SCRIPT
    module = run(*args)
    script = run(*args, script=True)
    assert (module.returncode, module.stdout, module.stderr) == (
        script.returncode,
        script.stdout,
        script.stderr,
    )


def test_module_and_script_agree_on_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.cnn", BAD)
    for args in (["check", str(path)], ["check", "-f", "json", str(path)]):
        module, script = run(*args), run(*args, script=True)
        assert module.returncode == script.returncode == 1
        assert (module.stdout, module.stderr) == (script.stdout, script.stderr)


# --------------------------------------------------------------------------------------------
# Found by probing: once bugs, now fixed


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.cnn"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode("utf-8"))
    result = run("check", str(path))
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------
# Standard input and per-layer memory


def test_check_reads_standard_input() -> None:
    good = (ROOT / "specs" / "digits.cnn").read_text(encoding="utf-8")
    for text, code in ((good, 0), (good.replace("conv2d(64)", "conv2x(64)"), 1)):
        result = subprocess.run(
            [sys.executable, "-m", "cnnspec", "check", "-"],
            input=text,
            cwd=ROOT,
            env={**os.environ, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        no_traceback(result)
        assert result.returncode == code, result.stderr
        if code:
            line = next(n for n, t in enumerate(text.splitlines(), 1) if "conv2x" in t)
            assert f"<stdin>:{line}:" in result.stderr
            assert "error[E110]: unknown layer 'conv2x'" in result.stderr
        else:
            assert result.stdout.startswith("<stdin>: ok:")


def test_summary_table_shows_each_layers_memory() -> None:
    result = run("summary", "specs/lenet5.cnn")
    assert result.returncode == 0, result.stderr
    # c1_conv2d_1 outputs 28x28x6 float32 values: 28*28*6*4 = 18,816 bytes = 18.4 KiB.
    row = next(line for line in result.stdout.splitlines() if "c1_conv2d_1" in line)
    assert "18.4 KiB" in row
    assert "activation memory per example (float32): 32.1 KiB" in result.stdout


# --------------------------------------------------------------------------------------------
# A pipe closed early (`cnnspec layers | head -1`)


@pytest.mark.parametrize(
    "args",
    [
        ["layers"],
        ["summary", "specs/cifar10.cnn"],
        ["summary", "--format", "json", "specs/cifar10.cnn"],
        ["check", "specs/cifar10.cnn"],
    ],
)
def test_a_closed_pipe_ends_the_command_quietly(args: list[str]) -> None:
    """Whatever reads the output has gone before the command writes (its read end is closed
    before the command starts): no message, and 141 as for a tool that SIGPIPE ended."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnspec", *args],
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read().decode("utf-8")
    assert process.wait(timeout=120) == 141, stderr
    assert stderr == ""


# --------------------------------------------------------------------------------------------
# --help: every text whole


def _normal(text: str) -> str:
    return " ".join(text.split())


# A help text that ends on one of these stops mid-sentence ("...or one edited since").
DANGLING = {"a", "an", "and", "as", "by", "for", "from", "in", "of", "or", "since", "the", "to"}


def _parsers() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    from cnnspec.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, commands


@pytest.mark.parametrize("width", ["60", "100"])
def test_every_help_text_shows_whole(monkeypatch, width: str) -> None:
    """What the parser definitions say appears whole in `cnnspec COMMAND --help`, at any
    terminal width: no text cut at a line of its docstring, no flag broken at its hyphen."""
    monkeypatch.setenv("COLUMNS", width)
    parser, commands = _parsers()
    for name, sub in [("", parser), *commands.choices.items()]:
        shown = sub.format_help()
        assert not re.search(r"\w-\n", shown), f"{name}: a word broken at its hyphen:\n{shown}"
        for paragraph in (sub.description or "").split("\n\n"):
            assert _normal(paragraph) in _normal(shown), (name, paragraph)
        for action in sub._actions:
            if action.help in (None, argparse.SUPPRESS):
                continue
            text = action.help % {"default": action.default, "prog": sub.prog}
            assert _normal(text) in _normal(shown), (name, action.option_strings, text)
            last = re.findall(r"[\w']+", text)[-1].lower()
            assert last not in DANGLING, f"{name} {action.option_strings}: {text!r} stops short"
    listing = _normal(parser.format_help())
    for command in commands._choices_actions:
        # In `cnnspec --help`, each command says what it does in a whole sentence.
        assert command.help is not None and command.help.endswith("."), (command.dest, command.help)
        assert _normal(command.help) in listing, command.help


# --------------------------------------------------------------------------------------------
# Counts: one is singular


# One weight: dense(1) without a bias on a single input value.
ONE_PARAM = """\
model one {
  input 1x1x1
  flatten()
  dense(1, activation=sigmoid, use_bias=false)
}
data { labels binary }
"""


def test_a_count_of_one_is_singular(tmp_path: Path) -> None:
    spec = write(tmp_path, "one.cnn", ONE_PARAM)
    result = run("check", str(spec))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{spec}: ok: 2 layers, 1 param (1 trainable), output (1,)\n"
    drawing = tmp_path / "one.svg"
    result = run("graph", str(spec), "-o", str(drawing))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {drawing} (2 layers)\n"
    assert ">(1,)  1 param</text>" in drawing.read_text()  # the dense layer's box
    page = tmp_path / "one.html"
    assert run("graph", str(spec), "-o", str(page)).returncode == 0
    assert "one: 2 layers, 1 parameter (1 trainable)" in page.read_text()  # the page's caption


# --------------------------------------------------------------------------------------------
# The boundary: a bug in cnnspec


BROKEN_COMMAND = """\
import sys
import cnnspec.cli
def broken(args):
    raise KeyError("a bug on purpose")
cnnspec.cli.version = broken
cnnspec.cli.main(sys.argv[1:])
"""


@pytest.mark.parametrize("debug", [False, True])
def test_an_internal_error_is_one_line_and_its_traceback_a_file(
    tmp_path: Path, debug: bool
) -> None:
    """A bug is the one exception the command line catches whole: it says what it was in a
    line, writes the traceback (with the version and the command) to a file the user can send,
    and prints it too with CNNSPEC_DEBUG; the exit status is 70 (EX_SOFTWARE)."""
    env = {k: v for k, v in os.environ.items() if k != "CNNSPEC_DEBUG"}
    env.update(TMPDIR=str(tmp_path), NO_COLOR="1")
    if debug:
        env["CNNSPEC_DEBUG"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_COMMAND, "version"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 70
    (log,) = tmp_path.glob("cnnspec-internal-error-*.log")
    text = log.read_text(encoding="utf-8")
    assert text.startswith(f"cnnspec {__version__}, Python ")
    assert "command: cnnspec version" in text
    assert "Traceback" in text and "KeyError: 'a bug on purpose'" in text
    lines = result.stderr.splitlines()
    assert lines[0] == "cnnspec: internal error: KeyError: 'a bug on purpose'"
    assert lines[-1].startswith(f"  = please report this, with {log} (the traceback)")
    if debug:
        assert "Traceback (most recent call last):" in result.stderr
    else:
        assert len(lines) == 2 and "CNNSPEC_DEBUG=1 prints the traceback here" in lines[-1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"these are not weights\n", "cannot read {path}: Error while deserializing header"),
        ("truncated", "cannot read {path}: Error while deserializing header"),
        ("bfloat16", "{path} holds conv.weight as BF16, a type numpy has not"),
    ],
)
def test_a_weights_file_that_cannot_be_read_is_one_line(
    tmp_path: Path, content: object, message: str
) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("safetensors")
    import struct

    from safetensors.numpy import save

    numpy = pytest.importorskip("numpy")
    good = save({"conv.weight": numpy.ones((4, 1, 3, 3), numpy.float32)})
    if content == "truncated":
        data = good[: len(good) - 20]
    elif content == "bfloat16":
        header = b'{"conv.weight":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}'
        data = struct.pack("<Q", len(header)) + header + bytes(4)
    else:
        assert isinstance(content, bytes)
        data = content
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    spec = ROOT / "specs" / "digits.cnn"
    result = run("export", str(spec), "--weights", str(path), "-o", str(tmp_path / "d.onnx"))
    no_traceback(result)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("cnnspec: error: " + message.format(path=path)), line
    assert not (tmp_path / "d.onnx").exists()
