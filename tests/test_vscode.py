"""The VS Code extension in editors/vscode.

The manifest, the language configuration and the TextMate grammar must agree with each other and
with the compiler. The grammar is run with a small TextMate tokenizer (tests/textmate.py) over
every shipped spec, and each token is compared with what cnnspec's own lexer and parser read:
every comment, string, number, size, keyword, name, call, argument key and bracket must get the
scope its role in the parse tree calls for, as one token with the same extent. Every layer kind,
setting and section the compiler knows must be in the grammar.

Where node and npm are on the PATH (and CNNSPEC_TEST_NPM is not 0) two more tests download npm
packages (about 5 s): one builds the extension under strict TypeScript, one runs the grammar
through VS Code's own engine (vscode-textmate with Oniguruma) and checks that it tokenizes
exactly as tests/textmate.py does. An unreachable npm registry skips them; a failing build fails.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from lark import Lark, Tree
from lark import Token as LarkToken

from cnnspec.lower import MODEL_SECTIONS, MODEL_SETTINGS, TOP_SECTIONS
from cnnspec.registry import user_kinds
from cnnspec.sections import PHASE_SCHEMA, SCHEMAS, SPACE
from tests.conftest import ROOT, SPECS
from tests.textmate import Grammar, Token, Tokenized

VSCODE = ROOT / "editors" / "vscode"
MANIFEST = VSCODE / "package.json"
TSCONFIG = VSCODE / "tsconfig.json"
LANGUAGE_CONFIGURATION = VSCODE / "language-configuration.json"
GRAMMAR = VSCODE / "syntaxes" / "cnnspec.tmLanguage.json"
EXTENSION_SOURCE = VSCODE / "src" / "extension.ts"
SHIPPED = [
    *SPECS,
    *sorted((ROOT / "examples").glob("*.cnn")),
    *sorted((ROOT / "cnnspec" / "backbones").glob("*.cnn")),
]

ROOT_SCOPE = "source.cnnspec"
COMMENT = "comment.line.number-sign.cnnspec"
COMMENT_START = "punctuation.definition.comment.cnnspec"
DOUBLE = "string.quoted.double.cnnspec"
SINGLE = "string.quoted.single.cnnspec"
ESCAPE = "constant.character.escape.cnnspec"
DIMENSIONS = "constant.numeric.dimensions.cnnspec"
NUMBER = "constant.numeric.cnnspec"
CONSTANT = "constant.language.cnnspec"
SECTION = "keyword.control.section.cnnspec"
BLOCK = "keyword.control.block.cnnspec"
SECTION_NAME = "entity.name.section.cnnspec"
SETTING = "keyword.other.setting.cnnspec"
FUNCTION = "entity.name.function.cnnspec"
LAYER = "support.function.layer.cnnspec"
PARAMETER = "variable.parameter.cnnspec"
VALUE_NAME = "variable.other.cnnspec"
FREEZE_TARGET = "variable.other.block.cnnspec"
FRACTION = "keyword.operator.fraction.cnnspec"
INVALID = "invalid.illegal.character.cnnspec"
PUNCTUATION = {
    "LBRACE": "punctuation.section.block.begin.cnnspec",
    "RBRACE": "punctuation.section.block.end.cnnspec",
    "LSQB": "punctuation.section.brackets.begin.cnnspec",
    "RSQB": "punctuation.section.brackets.end.cnnspec",
    "COMMA": "punctuation.separator.comma.cnnspec",
    "EQUAL": "keyword.operator.assignment.cnnspec",
    "SLASH": FRACTION,
    "STAR": "keyword.operator.cnnspec",
    "PLUS": "keyword.operator.cnnspec",
    "MINUS": "keyword.operator.cnnspec",
    "COMPARE": "keyword.operator.cnnspec",
}
CALL_PARENS = (
    "punctuation.section.arguments.begin.cnnspec",
    "punctuation.section.arguments.end.cnnspec",
)
TUPLE_PARENS = (
    "punctuation.section.parens.begin.cnnspec",
    "punctuation.section.parens.end.cnnspec",
)

# Every construct of the syntax, valid: cross-checked against the parser like the shipped specs.
SAMPLE = """\
# every construct of the syntax
model sample_1 {
  input 32x32x3  defaults conv2d(kernel=(3, 5), padding=same, activation=leaky_relu(alpha=0.1))
  block outer { block inner { conv2d(8) relu6() } residual { conv2d(8, stride=-1, l2=1e-4) } }
  residual named { conv2d(8) shortcut { conv2d(8, kernel=1) } }   # a "comment" with (brackets)
  repeat 2 { spatial_dropout(.5)  zero_pad(padding=(1, 1)) }
  head { flatten() dense(10, activation=softmax, use_bias=true, name=none) }
}
data { source directory('data/#not a comment', size=224x224, classes=["a\\"b", 'c\\'d', "e\\\\"])
       rescale 1/127.5  normalize(mean=(0.5, 0.5, 0.5), std=[1.0, 2., -3e+2])  labels onehot }
train {
  seed 0 batch 32 epochs 10 optimizer adam(lr=1e-3) loss binary_crossentropy(label_smoothing=0.1)
  class_weight [1.0, 2.0]  freeze backbone  unfreeze backbone.block5  unfreeze "block5_*"
  unfreeze backbone.block_1*  freeze all  freeze head
  phase head { epochs 3 }  phase finetune{epochs 2 early_stopping(monitor=val_loss,patience=3,)}
}
evaluate { threshold 0.3 report(classification) }
"""

# Mistakes, for how the grammar recovers: each line is a separate case.
MISTAKES = """\
model = 3 ; conv2d(32 }
head { dense(1) ) }
source directory("unterminated
labels sparse)
evaluate { threshold 0.3 }
"""


@cache
def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def _grammar() -> Grammar:
    return Grammar(_json(GRAMMAR))


def tokenize(text: str) -> Tokenized:
    return _grammar().tokenize(text)


def token_at(text: str, needle: str, occurrence: int = 0) -> Token:
    """The token that starts where `needle` occurs (the `occurrence`-th time) in `text`."""
    offset = -1
    for _ in range(occurrence + 1):
        offset = text.index(needle, offset + 1)
    line = text.count("\n", 0, offset)
    column = offset - (text.rfind("\n", 0, offset) + 1)
    token = tokenize(text).at(line, column)
    assert token.start == column, f"{needle!r} does not start a token: {token}"
    return token


def scopes_of(text: str, needle: str, occurrence: int = 0) -> tuple[str, ...]:
    token = token_at(text, needle, occurrence)
    assert token.text == needle, f"{needle!r} is not one token: {token}"
    return token.scopes


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths]


# --------------------------------------------------------------------------------------------
# (a) The manifest and the files it names


JSON_FILES = [MANIFEST, TSCONFIG, LANGUAGE_CONFIGURATION, GRAMMAR]


@pytest.mark.parametrize("path", JSON_FILES, ids=_ids(JSON_FILES))
def test_json_files_are_valid(path: Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def _manifest_path(relative: str) -> Path:
    path = (VSCODE / relative).resolve()
    assert path.is_relative_to(VSCODE), f"{relative} points outside editors/vscode"
    return path


def test_manifest_paths_exist_and_agree() -> None:
    manifest = _json(MANIFEST)
    assert manifest["name"] == "cnnspec"
    assert manifest["publisher"] == "cnnspec"
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert manifest["engines"]["vscode"].startswith("^")
    assert manifest["devDependencies"]["@types/vscode"] == manifest["engines"]["vscode"]

    # main is the compiled form of src/extension.ts under tsconfig's rootDir and outDir.
    options = _json(TSCONFIG)["compilerOptions"]
    assert options["strict"] is True
    main = PurePosixPath(manifest["main"])
    assert main.parts[0] in (".", options["outDir"]) and main.suffix == ".js"
    compiled = main.relative_to(".") if main.parts[0] == "." else main
    assert compiled.parts[0] == options["outDir"], f"main {main} is not under outDir"
    source = (
        VSCODE / options["rootDir"] / compiled.relative_to(options["outDir"]).with_suffix(".ts")
    )
    assert source == EXTENSION_SOURCE and source.is_file()

    (language,) = manifest["contributes"]["languages"]
    assert language["id"] == "cnnspec"
    assert ".cnn" in language["extensions"]
    assert all(spec.suffix in language["extensions"] for spec in SHIPPED)
    assert _manifest_path(language["configuration"]) == LANGUAGE_CONFIGURATION
    assert f"onLanguage:{language['id']}" in manifest["activationEvents"]

    (grammar,) = manifest["contributes"]["grammars"]
    assert grammar["language"] == language["id"]
    assert _manifest_path(grammar["path"]) == GRAMMAR
    assert grammar["scopeName"] == _json(GRAMMAR)["scopeName"] == ROOT_SCOPE


def test_manifest_settings_and_commands_match_the_client() -> None:
    manifest = _json(MANIFEST)
    properties = manifest["contributes"]["configuration"]["properties"]
    command = properties["cnnspec.server.command"]
    assert command["type"] == "array" and command["items"] == {"type": "string"}
    assert command["default"] == ["cnnspec", "lsp"]
    assert properties["cnnspec.trace.server"]["enum"] == ["off", "messages", "verbose"]

    source = EXTENSION_SOURCE.read_text(encoding="utf-8")
    # vscode-languageclient reads `<client id>.trace.server`, and the client reads the command.
    assert 'new LanguageClient("cnnspec"' in source
    assert 'getConfiguration("cnnspec")' in source and '"server.command"' in source
    assert 'createOutputChannel("cnnspec")' in source
    for scheme in ("file", "untitled"):
        assert f'{{ scheme: "{scheme}", language: "cnnspec" }}' in source
    assert '"**/*.cnn"' in source
    for contributed in manifest["contributes"].get("commands", []):
        assert f'registerCommand("{contributed["command"]}"' in source, contributed


def test_default_server_command_runs() -> None:
    """`cnnspec lsp` exists. With TransportKind.stdio, vscode-languageclient appends `--stdio` to
    the command, so the client may only use it if the server accepts that flag."""
    properties = _json(MANIFEST)["contributes"]["configuration"]["properties"]
    program, *args = properties["cnnspec.server.command"]["default"]
    assert program == "cnnspec"
    if re.search(
        r"transport:\s*TransportKind\.stdio", EXTENSION_SOURCE.read_text(encoding="utf-8")
    ):
        args.append("--stdio")
    result = subprocess.run(
        [sys.executable, "-m", "cnnspec", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_vscodeignore_keeps_what_the_extension_needs() -> None:
    patterns = [
        line.strip()
        for line in (VSCODE / ".vscodeignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    manifest = _json(MANIFEST)
    needed = [
        "package.json",
        "README.md",
        str(PurePosixPath(manifest["main"]).relative_to(".")),
        str(PurePosixPath(manifest["contributes"]["grammars"][0]["path"]).relative_to(".")),
        str(
            PurePosixPath(manifest["contributes"]["languages"][0]["configuration"]).relative_to(".")
        ),
        "node_modules/vscode-languageclient/package.json",
    ]
    for path in needed:
        excluded = [
            p
            for p in patterns
            if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
        ]
        assert not excluded, f".vscodeignore leaves {path} out of the package: {excluded}"
    assert {"node_modules/", "out/", "*.vsix"} <= set(
        (VSCODE / ".gitignore").read_text(encoding="utf-8").split()
    )


def test_language_configuration() -> None:
    config = _json(LANGUAGE_CONFIGURATION)
    assert config["comments"]["lineComment"] == "#"
    pairs = [["{", "}"], ["[", "]"], ["(", ")"]]
    assert sorted(config["brackets"]) == sorted(pairs)
    quotes = [['"', '"'], ["'", "'"]]
    assert sorted([p["open"], p["close"]] for p in config["autoClosingPairs"]) == sorted(
        pairs + quotes
    )
    assert sorted(config["surroundingPairs"]) == sorted(pairs + quotes)

    # VS Code compiles these as JavaScript regexes; these ones mean the same in Python.
    word = re.compile(config["wordPattern"])
    for text in ("backbone.block5", "conv2_block1_out", "backbone.block_1*", "32x32x3", "1e-4"):
        assert word.fullmatch(text), text
    assert [m.group() for m in word.finditer("unfreeze backbone.block5  # ok")] == [
        "unfreeze",
        "backbone.block5",
        "ok",
    ]
    increase = re.compile(config["indentationRules"]["increaseIndentPattern"])
    decrease = re.compile(config["indentationRules"]["decreaseIndentPattern"])
    for opens in ("model m {", "  head {", "data {  # the data", "  phase head{"):
        assert increase.search(opens), opens
    for stays in ("block c1 { conv2d(6) }", "  conv2d(32)  # {", "}"):
        assert not increase.search(stays), stays
    assert decrease.search("  }") and not decrease.search("  conv2d(32) }")


# --------------------------------------------------------------------------------------------
# (b) The grammar, run over real specs

_UNPORTABLE_ESCAPES = set("hHGAzZKRXypPgkQE")


def _unportable(pattern: str) -> list[str]:
    """Constructs that Oniguruma and Python's `re` read differently, or only one of them has."""
    problems = []
    i, after_quantifier = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if pattern[i + 1 : i + 2] in _UNPORTABLE_ESCAPES:
                problems.append(pattern[i : i + 2])
            i, after_quantifier = i + 2, False
        elif char == "[":
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            j += pattern[j : j + 1] == "]"
            while j < len(pattern) and pattern[j] != "]":
                if pattern[j] == "[" or pattern.startswith("&&", j):
                    problems.append("a nested or intersected character class")
                j += 2 if pattern[j] == "\\" else 1
            i, after_quantifier = j + 1, False
        elif pattern.startswith("(?", i):
            head = pattern[i + 2 : i + 4]
            if head[:1] in (":", "=", "!"):
                i += 3
            elif head in ("<=", "<!"):
                i += 4
            else:
                problems.append(f"(?{head}")
                i += 2
            after_quantifier = False
        elif char in "*+?" or re.match(r"\{\d+(,\d*)?\}", pattern[i:]):
            if after_quantifier and char == "+":
                problems.append("a possessive quantifier")
            if after_quantifier:  # `+?` and friends: lazy; nothing may follow
                i, after_quantifier = i + 1, False
                continue
            quantifier = re.match(r"\{\d+(,\d*)?\}", pattern[i:])
            i += len(quantifier.group()) if quantifier else 1
            after_quantifier = True
        else:
            i, after_quantifier = i + 1, False
    return problems


def _regexes(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("match", "begin", "end") and isinstance(value, str):
                yield f"{where}/{key}", value
            else:
                yield from _regexes(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _regexes(value, f"{where}[{index}]")


def test_grammar_regexes_are_portable() -> None:
    regexes = list(_regexes(_json(GRAMMAR)))
    assert len(regexes) > 20
    for where, regex in regexes:
        re.compile(regex)
        assert not _unportable(regex), f"{where}: {regex!r} uses {_unportable(regex)}"
    # The checker itself catches what it should.
    assert _unportable(r"a*+") and _unportable(r"\G") and _unportable(r"(?<n>x)")
    assert _unportable(r"(?x)a") and _unportable(r"[a[b]]") and not _unportable(r"(?<!a)b+?")


def test_every_repository_rule_is_used() -> None:
    grammar = _json(GRAMMAR)
    used = set(re.findall(r'"include": "#([^"]+)"', json.dumps(grammar)))
    assert set(grammar["repository"]) == used


@cache
def _lark() -> Lark:
    grammar = (ROOT / "cnnspec" / "grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


SECTION_KEYWORDS = {*TOP_SECTIONS, SPACE}
BLOCK_KEYWORDS = {*MODEL_SECTIONS, "shortcut", "branch"} | {
    key for schema in SCHEMAS.values() for key in schema.sections
}
SETTING_KEYWORDS = {*MODEL_SETTINGS, *PHASE_SCHEMA.settings()} | {
    key for schema in SCHEMAS.values() for key in schema.settings()
}


def _name_roles(tree: Tree[LarkToken]) -> dict[tuple[int, int], tuple[str, ...]]:
    """The scopes each NAME token calls for, by its role in the parse tree, keyed by position."""
    roles: dict[tuple[int, int], tuple[str, ...]] = {}
    layers = set(user_kinds())

    def put(token: LarkToken, scopes: tuple[str, ...]) -> None:
        assert token.line is not None and token.column is not None
        roles[token.line - 1, token.column - 1] = scopes

    def value(node: Tree[LarkToken] | LarkToken | None, freezing: bool = False) -> None:
        if not isinstance(node, Tree):
            return
        if node.data == "name":
            (token,) = node.children
            assert isinstance(token, LarkToken)
            if freezing:
                put(token, (FREEZE_TARGET,))
            else:
                put(token, (CONSTANT,) if token in ("true", "false", "none") else (VALUE_NAME,))
        elif node.data == "call":
            call(node)
        elif node.data in ("list", "tuple", "binary", "paren"):
            for child in node.children:
                value(child)

    def call(node: Tree[LarkToken]) -> None:
        name, *args = node.children
        assert isinstance(name, LarkToken)
        put(name, (FUNCTION, LAYER) if name in layers else (FUNCTION,))
        for arg in args:
            if isinstance(arg, Tree):
                key, argument = arg.children
                if isinstance(key, LarkToken):
                    put(key, (PARAMETER,))
                value(argument)

    def item(node: Tree[LarkToken], space: bool = False) -> None:
        if node.data == "call":
            call(node)
            return
        key, *rest = node.children
        assert isinstance(key, LarkToken)
        if node.data == "setting" and space:  # a sweep's `PATH DISTRIBUTION`: a name
            put(key, (VALUE_NAME,))
            value(rest[0])
            return
        if node.data == "setting":
            assert key in SETTING_KEYWORDS, f"unknown setting {key!r}"
            put(key, (SETTING,))
            value(rest[0], freezing=key in ("freeze", "unfreeze"))
            return
        if node.data == "assignment":  # let NAME = value
            target, assigned = rest
            assert isinstance(target, LarkToken)
            put(key, (SETTING,))
            put(target, (VALUE_NAME,))
            value(assigned)
            return
        assert key in SECTION_KEYWORDS | BLOCK_KEYWORDS, f"unknown section {key!r}"
        put(key, (SECTION,) if key in SECTION_KEYWORDS else (BLOCK,))
        label, *items = rest
        if isinstance(label, Tree) and key in ("if", "repeat"):  # conditions and counts
            value(label)
        elif isinstance(label, Tree) and label.data in ("name", "number"):
            (token,) = label.children
            assert isinstance(token, LarkToken)
            put(token, (SECTION_NAME,) if label.data == "name" else (NUMBER,))
        elif isinstance(label, Tree):  # define's call, an if's condition
            value(label)
        for child in items:
            assert isinstance(child, Tree)
            item(child, space=key == SPACE)

    for child in tree.children:
        assert isinstance(child, Tree)
        item(child)
    return roles


def _check_against_parser(text: str) -> list[str]:
    """Every disagreement between the grammar's tokens and cnnspec's lexer and parser."""
    tokenized = tokenize(text)
    lines = text.split("\n")
    problems: list[str] = []
    if tokenized.open_rules:
        problems.append(f"the tokenizer ends inside {tokenized.open_rules}")
    roles = _name_roles(_lark().parse(text))
    covered: dict[int, set[int]] = {}
    parens: list[tuple[str, str]] = []
    previous: LarkToken | None = None

    def describe(line: int, column: int) -> str:
        return f"line {line + 1}, column {column + 1}: {lines[line].strip()!r}"

    for lexed in _lark().lex(text):
        assert lexed.line is not None and lexed.column is not None
        line, column = lexed.line - 1, lexed.column - 1
        end = column + len(lexed)
        covered.setdefault(line, set()).update(range(column, end))
        kind = lexed.type
        if kind == "STRING":
            quoted = DOUBLE if lexed.startswith('"') else SINGLE
            first, last = tokenized.at(line, column), tokenized.at(line, end - 1)
            if first.start != column or last.end != end:
                problems.append(f"string {lexed!r} is cut at {first.start}..{last.end}")
            for token in tokenized.lines[line]:
                if token.start < end and token.end > column and quoted not in token.scopes:
                    problems.append(f"{token.text!r} in {lexed!r} is not {quoted}")
            previous = lexed
            continue
        if kind == "NAME":
            expected = roles.get((line, column))
            if expected is None:
                problems.append(f"no role for NAME {lexed!r} at {describe(line, column)}")
                continue
        elif kind in ("INT", "NUMBER"):
            expected = (NUMBER,)
        elif kind == "DIMS":
            expected = (DIMENSIONS,)
        elif kind == "LPAR":
            parens.append(
                CALL_PARENS if previous is not None and previous.type == "NAME" else TUPLE_PARENS
            )
            expected = (parens[-1][0],)
        elif kind == "RPAR":
            expected = (parens.pop()[1],)
        else:
            expected = (PUNCTUATION[kind],)
        token = tokenized.at(line, column)
        if (token.start, token.end) != (column, end) or token.scopes[-len(expected) :] != expected:
            problems.append(
                f"{lexed!r} at {describe(line, column)}: expected one token {expected}, "
                f"got {token.text!r} {token.scopes[1:]}"
            )
        previous = lexed

    # What the lexer skipped besides whitespace is comments, each to the end of its line.
    for number, text_line in enumerate(lines):
        skipped = [
            i
            for i, c in enumerate(text_line)
            if not c.isspace() and i not in covered.get(number, ())
        ]
        comment = range(skipped[0], len(text_line)) if skipped else range(0)
        if skipped and text_line[skipped[0]] != "#":
            problems.append(
                f"the lexer skipped {text_line[skipped[0]]!r} at {describe(number, skipped[0])}"
            )
        for token in tokenized.lines[number]:
            for i in range(token.start, token.end):
                if (COMMENT in token.scopes) != (i in comment):
                    problems.append(f"comment scope is wrong at {describe(number, i)}")
                    break
        if skipped and COMMENT_START not in tokenized.at(number, skipped[0]).scopes:
            problems.append(f"# does not start a comment at {describe(number, skipped[0])}")
    return problems


@pytest.mark.parametrize("path", SHIPPED, ids=_ids(SHIPPED))
def test_shipped_spec_tokens(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    tokenized = tokenize(text)
    assert tokenized.open_rules == (), f"the tokenizer is stuck in {tokenized.open_rules}"
    for token in tokenized.tokens():
        where = f"{path.name}:{token.line + 1}:{token.start + 1} {token.text!r}"
        assert INVALID not in token.scopes, where
        if token.text.strip():  # a scope of its own, not just the root or a meta. container
            assert not token.scopes[-1].startswith(("meta.", ROOT_SCOPE)), where
    problems = _check_against_parser(text)
    assert not problems, "\n".join(problems[:25])


def test_sample_tokens_match_the_parser() -> None:
    problems = _check_against_parser(SAMPLE)
    assert not problems, "\n".join(problems[:25])


def test_comments_run_to_the_end_of_the_line_even_after_code() -> None:
    text = 'block c1 { conv2d(6)  avgpool(2) }     # 28x28x6 -> 14x14x6 ("s") { model\n'
    comment = token_at(text, "# 28x28x6")
    assert comment.text == "#" and comment.scopes[-2:] == (COMMENT, COMMENT_START)
    rest = token_at(text, " 28x28x6")
    assert rest.text == ' 28x28x6 -> 14x14x6 ("s") { model' and rest.scopes[-1] == COMMENT
    assert scopes_of(text, "avgpool")[-1] == LAYER
    assert tokenize(text).open_rules == ()
    assert scopes_of("# whole line\n", "#")[-2:] == (COMMENT, COMMENT_START)


def test_layer_calls_and_argument_keys() -> None:
    text = 'defaults conv2d(kernel=3, padding=same)  source directory("x", size=8x8)'
    assert scopes_of(text, "conv2d")[-2:] == (FUNCTION, LAYER)
    assert scopes_of(text, "kernel")[-1] == PARAMETER
    assert scopes_of(text, "padding")[-1] == PARAMETER
    assert scopes_of(text, "same")[-1] == VALUE_NAME
    assert scopes_of(text, "(")[-1] == CALL_PARENS[0]
    assert scopes_of(text, "directory")[-1] == FUNCTION  # a call, not a layer
    assert LAYER not in scopes_of(text, "directory")
    assert scopes_of("activation=leaky_relu(alpha=0.1)", "leaky_relu")[-1] == LAYER
    assert token_at("conv2d(kernel=(3, 5))", "(3").scopes[-1] == TUPLE_PARENS[0]
    assert token_at("conv2d(kernel=(3, 5))", "))").scopes[-1] == TUPLE_PARENS[1]
    # A layer's name used as a value is a value, not a call.
    assert scopes_of("dense(10, activation=softmax)", "softmax")[-1] == VALUE_NAME


def test_sizes_are_one_token() -> None:
    for size in ("32x32x3", "224x224", "8x8x1", "-1x3"):
        token = token_at(f"input {size}", size)
        assert token.text == size, f"{size} is split: {token}"
        assert token.scopes[-1] == DIMENSIONS
    assert scopes_of("directory('d', size=64x64)", "64x64")[-1] == DIMENSIONS


def test_numbers_and_constants() -> None:
    text = "f(1e-4, -1, 0.25, .5, 2., 3E+2, 42, true, false, none) rescale 1/255"
    for number in ("1e-4", "-1", "0.25", ".5", "2.", "3E+2", "42", "255"):
        assert scopes_of(text, number)[-1] == NUMBER, number
    assert token_at(text, "1/").text == "1" and token_at(text, "1/").scopes[-1] == NUMBER
    assert scopes_of(text, "/")[-1] == FRACTION
    for constant in ("true", "false", "none"):
        assert scopes_of(text, constant)[-1] == CONSTANT
    # Digits inside names stay names.
    assert scopes_of("relu6() conv2d(8) b5 = conv2_block1_out", "conv2_block1_out")[-1] != NUMBER


def test_strings() -> None:
    text = 'source directory("data/xrays", classes=[\'a # b\', "q\\"#\\\\"])  # note'
    data = token_at(text, '"data/xrays"')
    assert data.text == '"' and DOUBLE in data.scopes
    assert scopes_of(text, "data/xrays")[-1] == DOUBLE
    assert scopes_of(text, "a # b")[-1] == SINGLE  # a # inside a string is not a comment
    assert COMMENT not in scopes_of(text, "a # b")
    assert scopes_of(text, '\\"')[-1] == ESCAPE  # the escaped quote does not end the string
    assert scopes_of(text, "#", 1)[-1] == DOUBLE
    assert scopes_of(text, "\\\\")[-1] == ESCAPE
    assert token_at(text, "# note").scopes[-2:] == (COMMENT, COMMENT_START)
    assert tokenize(text).open_rules == ()


def test_keywords_and_names() -> None:
    text = SAMPLE
    assert scopes_of(text, "model")[-1] == SECTION
    assert scopes_of(text, "sample_1")[-1] == SECTION_NAME
    for section in ("data", "train", "evaluate"):
        assert token_at(text, f"{section} {{").scopes[-1] == SECTION
    assert scopes_of(text, "block")[-1] == BLOCK
    assert scopes_of(text, "outer")[-1] == SECTION_NAME
    assert scopes_of(text, "residual")[-1] == BLOCK
    assert scopes_of(text, "named")[-1] == SECTION_NAME
    assert scopes_of(text, "shortcut")[-1] == BLOCK
    assert scopes_of(text, "repeat")[-1] == BLOCK
    assert scopes_of("repeat 2 { relu() }", "2")[-1] == NUMBER
    assert scopes_of(text, "finetune")[-1] == SECTION_NAME
    assert token_at(text, "phase head").scopes[-1] == BLOCK
    assert scopes_of(text, "head", 2)[-1] == SECTION_NAME  # `phase head`: a name, not `head {`
    for setting in ("input", "defaults", "source", "rescale", "labels", "seed", "batch", "epochs"):
        assert scopes_of(text, setting)[-1] == SETTING, setting
    for setting in ("optimizer", "loss", "class_weight", "freeze", "unfreeze", "threshold"):
        assert scopes_of(text, setting)[-1] == SETTING, setting
    # What freeze and unfreeze name is a name, even a keyword or a dotted or starred one.
    assert scopes_of(text, "backbone")[-1] == FREEZE_TARGET
    assert scopes_of(text, "backbone.block5")[-1] == FREEZE_TARGET
    assert scopes_of(text, "backbone.block_1*")[-1] == FREEZE_TARGET
    assert scopes_of("freeze head  freeze all", "head")[-1] == FREEZE_TARGET
    # Keywords are words: not inside longer or dotted names, not argument keys or calls.
    assert scopes_of("f(input=1, model=2)", "input")[-1] == PARAMETER
    assert scopes_of("labels onehot  head_dense(1)", "head_dense")[-1] == FUNCTION
    assert scopes_of("unfreeze model.head", "model.head")[-1] == FREEZE_TARGET


def test_recovery_from_mistakes() -> None:
    tokenized = tokenize(MISTAKES)
    # A stray `=`, `;` or `)` is marked invalid.
    assert token_at(MISTAKES, "=").scopes[-1] == INVALID
    assert token_at(MISTAKES, ";").scopes[-1] == INVALID
    assert token_at(MISTAKES, ")", 1).scopes[-1] == INVALID
    # A call left open ends at the brace that closes its block, so the next line is read afresh.
    assert token_at(MISTAKES, "head").scopes[-1] == BLOCK
    # An unterminated string ends at the end of its line; the call it is in goes on.
    assert token_at(MISTAKES, "unterminated").scopes[-1] == DOUBLE
    assert token_at(MISTAKES, "labels").scopes[-1] == VALUE_NAME
    assert token_at(MISTAKES, "sparse)").scopes[-1] == VALUE_NAME
    assert token_at(MISTAKES, ")", 2).scopes[-1] == CALL_PARENS[1]
    assert token_at(MISTAKES, "evaluate").scopes[-1] == SECTION
    assert tokenized.open_rules == ()


# --------------------------------------------------------------------------------------------
# (c) The grammar knows every layer, setting and section the compiler knows

_GRAMMAR_FILE = "editors/vscode/syntaxes/cnnspec.tmLanguage.json"


def test_every_layer_kind_is_in_the_grammar() -> None:
    begin = _json(GRAMMAR)["repository"]["layer-call"]["begin"]
    found = re.search(r"\(((?:[A-Za-z0-9_]+\|)*[A-Za-z0-9_]+)\)", begin)
    assert found, f"no list of layer names in the layer-call rule: {begin!r}"
    listed = set(found.group(1).split("|"))
    kinds = set(user_kinds())
    assert not kinds - listed, (
        f"layer kinds missing from the grammar: {sorted(kinds - listed)}; add them to the "
        f"layer-call rule's 'begin' in {_GRAMMAR_FILE}"
    )
    assert not listed - kinds, (
        f"the grammar lists layers the compiler does not have: {sorted(listed - kinds)}; remove "
        f"them from the layer-call rule in {_GRAMMAR_FILE}"
    )
    for kind in sorted(kinds):
        assert scopes_of(f"{kind}(1)", kind)[-2:] == (FUNCTION, LAYER), kind
        assert LAYER not in scopes_of(f"{kind}x(1)", f"{kind}x"), kind


def test_every_setting_and_section_is_in_the_grammar() -> None:
    for key in sorted(SETTING_KEYWORDS):
        assert scopes_of(f"{key} x", key)[-1] == SETTING, (
            f"setting {key!r} is not highlighted as one; add it to the setting rule in "
            f"{_GRAMMAR_FILE}"
        )
    for key in sorted(SECTION_KEYWORDS | BLOCK_KEYWORDS):
        expected = SECTION if key in SECTION_KEYWORDS else BLOCK
        assert scopes_of(f"{key} {{ }}", key)[-1] == expected, (
            f"section {key!r} is not highlighted as one; add it to the section-keyword or "
            f"block-keyword rule in {_GRAMMAR_FILE}"
        )


# --------------------------------------------------------------------------------------------
# (d) npm: build the extension, and compare with VS Code's own tokenizer


def _npm_skip_reason() -> str | None:
    if os.environ.get("CNNSPEC_TEST_NPM") == "0":
        return "CNNSPEC_TEST_NPM=0"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not on the PATH"
    return None


needs_npm = pytest.mark.skipif(_npm_skip_reason() is not None, reason=_npm_skip_reason() or "")


def _npm(cwd: Path, *args: str) -> None:
    result = subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund"] if args[0] == "install" else ["npm", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    offline = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET", "ENETUNREACH")
    if result.returncode != 0 and args[0] == "install" and any(e in result.stderr for e in offline):
        pytest.skip(f"the npm registry is unreachable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, f"npm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


@needs_npm
def test_npm_build(tmp_path: Path) -> None:
    work = tmp_path / "vscode"
    shutil.copytree(VSCODE, work, ignore=shutil.ignore_patterns("node_modules", "out", "*.vsix"))
    _npm(work, "install")
    _npm(work, "run", "compile")
    assert (work / "out" / "extension.js").is_file()
    _diagram_page_runs_under_its_policy(work, tmp_path)


CHROMIUM = Path("/usr/bin/chromium")


def _diagram_page_runs_under_its_policy(work: Path, tmp_path: Path) -> None:
    """The webview's page (the compiled diagramPage.withPolicy over `cnnspec graph`'s HTML)
    runs its own script under its content security policy: in headless Chromium, the script
    has marked the first view's button, and the policy is in the page."""
    from cnnspec.compiler import compile_file
    from cnnspec.diagram import html

    spec = compile_file(ROOT / "specs" / "digits.cnn").spec
    assert spec is not None
    (tmp_path / "page.html").write_text(html(spec), encoding="utf-8")
    node = (
        "const fs = require('fs'); const page = require(process.argv[1]);"
        "fs.writeFileSync(process.argv[3], page.withPolicy(fs.readFileSync(process.argv[2], 'utf8')));"
    )
    webview = tmp_path / "webview.html"
    subprocess.run(
        [
            "node",
            "-e",
            node,
            str(work / "out" / "diagramPage.js"),
            str(tmp_path / "page.html"),
            str(webview),
        ],
        check=True,
        timeout=60,
    )
    text = webview.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in text and "<script nonce=" in text
    if not CHROMIUM.exists():
        return
    dom = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            webview.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'class="on"' in dom  # the script ran: it marks the view it shows
    blocked = webview.read_text(encoding="utf-8").replace("<script nonce=", "<script data-n=")
    webview.write_text(blocked, encoding="utf-8")
    dom = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            webview.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'class="on"' not in dom  # and the policy does block a script without the nonce


TOKENIZE_JS = """\
// usage: node tokenize.js GRAMMAR FILE... : each file's lines' tokens, as JSON
const fs = require("fs");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");
const [grammarPath, ...files] = process.argv.slice(2);
const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm")).buffer;
const onigLib = oniguruma.loadWASM(wasm).then(() => ({
  createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
  createOnigString: (text) => new oniguruma.OnigString(text),
}));
const raw = vsctm.parseRawGrammar(fs.readFileSync(grammarPath, "utf8"), grammarPath);
const registry = new vsctm.Registry({ onigLib, loadGrammar: async () => raw });
registry.loadGrammar(raw.scopeName).then((grammar) => {
  const out = {};
  for (const file of files) {
    let stack = vsctm.INITIAL;
    out[file] = fs.readFileSync(file, "utf8").split("\\n").map((line) => {
      const result = grammar.tokenizeLine(line, stack);
      stack = result.ruleStack;
      return result.tokens.map((t) => [t.startIndex, t.endIndex, t.scopes]);
    });
  }
  process.stdout.write(JSON.stringify(out));
});
"""


@needs_npm
def test_vscode_textmate_tokenizes_the_same(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text('{"private": true}', encoding="utf-8")
    _npm(tmp_path, "install", "vscode-textmate@9", "vscode-oniguruma@2")
    (tmp_path / "tokenize.js").write_text(TOKENIZE_JS, encoding="utf-8")
    (tmp_path / "sample.cnn").write_text(SAMPLE, encoding="utf-8")
    (tmp_path / "mistakes.cnn").write_text(MISTAKES, encoding="utf-8")
    files = [*SHIPPED, tmp_path / "sample.cnn", tmp_path / "mistakes.cnn"]
    result = subprocess.run(
        ["node", "tokenize.js", str(GRAMMAR), *map(str, files)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    reference = json.loads(result.stdout)
    for path in files:
        text = path.read_text(encoding="utf-8")
        ours = tokenize(text)
        for number, line in enumerate(text.split("\n")):
            theirs = [
                (start, min(end, len(line)), tuple(scopes))
                for start, end, scopes in reference[str(path)][number]
                if start < len(line)
            ]
            mine = [(t.start, t.end, t.scopes) for t in ours.lines[number]]
            assert mine == theirs, f"{path.name}:{number + 1}: {line!r}"
