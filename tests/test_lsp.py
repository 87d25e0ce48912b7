"""The language server, driven over stdio by a real LSP client as an editor drives it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pygls")

from cnnspec.compiler import compile_text
from cnnspec.lsp import Lines
from cnnspec.source import Span
from tests.conftest import ROOT, SPECS
from tests.fuzzing import FUZZ_SEED, examples
from tests.lsp_client import LspClient, position

URI = "file:///work/spec.cnn"

BAD = """model tiny {
  input 32x32x3
  defaults conv2d(kernel=3, padding=same, activation=relu)
  block conv1 { conv2x(32)  maxpool(2) }
  head { flatten()  dense(10, activation=softmax) }
}
data { source cifar10  rescale 1/255  labels onehot  validation test }
train { freeze conv1  phase all { unfreeze conv1 } }
"""
GOOD = BAD.replace("conv2x(32)", "conv2d(32)")


@pytest.fixture(scope="module")
def client() -> Iterator[LspClient]:
    client = LspClient("--debounce-ms", "30")
    capabilities = client.initialize()["capabilities"]
    for provider in (
        "hoverProvider",
        "completionProvider",
        "documentFormattingProvider",
        "definitionProvider",
        "documentSymbolProvider",
        "inlayHintProvider",
    ):
        assert capabilities.get(provider), provider
    yield client
    assert client.close() == 0


def test_diagnostics_on_open_and_cleared_by_the_fix(client: LspClient) -> None:
    client.open(URI, BAD)
    published = client.wait_for("textDocument/publishDiagnostics", uri=URI)
    (error,) = published["diagnostics"]
    start = BAD.index("conv2x")
    assert error["code"] == "E110"
    assert error["severity"] == 1
    assert error["range"] == {
        "start": position(BAD, start),
        "end": position(BAD, start + len("conv2x")),
    }
    assert "unknown layer 'conv2x'" in error["message"]
    assert "hint: did you mean 'conv2d'?" in error["message"]

    client.change(URI, GOOD, version=2)
    fixed = client.wait_for("textDocument/publishDiagnostics", uri=URI, version=2)
    assert fixed["diagnostics"] == []

    # A burst of edits is checked once, on its final text; an edit back to an earlier text
    # is still published under its own version.
    client.change(URI, BAD, version=3)
    client.change(URI, GOOD.replace("maxpool(2)", "maxpool(64)"), version=4)
    client.change(URI, GOOD, version=5)
    final = client.wait_for("textDocument/publishDiagnostics", uri=URI, version=5)
    assert final["diagnostics"] == []


def test_an_error_inside_a_definition_names_its_call(client: LspClient) -> None:
    uri = "file:///work/defined.cnn"
    text = (
        "define c(f, k) { conv2d(f, k) }\n"
        "model m { input 8x8x1  c(4, 3)  c(4, 9)  flatten()  dense(2, activation=softmax) }\n"
    )
    client.open(uri, text)
    (error,) = client.wait_for("textDocument/publishDiagnostics", uri=uri)["diagnostics"]
    assert error["code"] == "E201"
    assert error["range"]["start"] == position(text, text.index("conv2d"))
    assert "\nnote: in c(...) at line 2, column 33" in error["message"]


def test_hover_shows_shape_params_and_arguments(client: LspClient) -> None:
    client.open("file:///work/hover.cnn", GOOD)
    at = GOOD.index("conv2d(32)") + 2
    hover = client.request(
        "textDocument/hover",
        {"textDocument": {"uri": "file:///work/hover.cnn"}, "position": position(GOOD, at)},
    )
    text = hover["contents"]["value"]
    assert "**conv1_conv2d_1**" in text
    assert "output: (32, 32, 32)" in text
    assert "params: 896 (896 trainable, 0 non-trainable)" in text
    assert "MACs: 884,736" in text
    assert "kernel=3" in text and "padding=valid" in text  # the arguments' defaults
    block = client.request(
        "textDocument/hover",
        {
            "textDocument": {"uri": "file:///work/hover.cnn"},
            "position": position(GOOD, GOOD.index("conv1 {") + 1),
        },
    )
    assert "**block conv1**: 2 layers" in block["contents"]["value"]
    model = client.request(
        "textDocument/hover",
        {"textDocument": {"uri": "file:///work/hover.cnn"}, "position": position(GOOD, 2)},
    )
    assert "**model tiny**" in model["contents"]["value"]
    assert "params: 82,826" in model["contents"]["value"]


def test_inlay_hints_give_each_layer_its_shape(client: LspClient) -> None:
    uri = "file:///work/hints.cnn"
    client.open(uri, GOOD)
    lines = GOOD.count("\n")
    hints = client.request(
        "textDocument/inlayHint",
        {
            "textDocument": {"uri": uri},
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": lines, "character": 0}},
        },
    )
    labels = {(h["position"]["line"], h["label"]) for h in hints}
    assert (3, " → (32, 32, 32) · 896 params") in labels
    assert (3, " → (16, 16, 32)") in labels
    assert (4, " → (8192,)") in labels
    assert (4, " → (10,) · 81,930 params") in labels
    conv = next(h for h in hints if h["label"].endswith("896 params"))
    assert conv["position"] == position(GOOD, GOOD.index("conv2d(32)") + len("conv2d(32)"))


def test_completion_knows_layers_arguments_and_values(client: LspClient) -> None:
    uri = "file:///work/complete.cnn"
    text = "model m {\n  input 8x8x3\n  conv2d(8, padding=)\n  \n}\n"
    client.open(uri, text)

    def labels(offset: int) -> list[str]:
        result = client.request(
            "textDocument/completion",
            {"textDocument": {"uri": uri}, "position": position(text, offset)},
        )
        return [item["label"] for item in result["items"]]

    assert labels(text.index("padding=") + len("padding=")) == ["same", "valid"]
    arguments = labels(text.index("(8") + 1)
    assert {"kernel=", "stride=", "activation=", "name="} <= set(arguments)
    items = labels(text.index("\n  \n") + 3)
    assert {"conv2d", "maxpool", "block", "residual", "backbone"} <= set(items)
    assert labels(0) == [
        "model",
        "data",
        "augment",
        "train",
        "evaluate",
        "track",
        "sweep",
        "define",
    ]


def test_definition_and_outline(client: LspClient) -> None:
    uri = "file:///work/definition.cnn"
    client.open(uri, GOOD)
    where = client.request(
        "textDocument/definition",
        {
            "textDocument": {"uri": uri},
            "position": position(GOOD, GOOD.index("freeze conv1") + len("freeze c")),
        },
    )
    label = GOOD.index("conv1 {")
    assert where == [
        {
            "uri": uri,
            "range": {"start": position(GOOD, label), "end": position(GOOD, label + 5)},
        }
    ]
    defaults = client.request(
        "textDocument/definition",
        {"textDocument": {"uri": uri}, "position": position(GOOD, GOOD.index("conv2d(32)"))},
    )
    assert [d["range"]["start"]["line"] for d in defaults] == [2]
    symbols = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    assert [s["name"] for s in symbols] == ["model tiny", "data", "train"]
    block = next(s for s in symbols[0]["children"] if s["name"] == "block conv1")
    assert [c["name"] for c in block["children"]] == ["conv1_conv2d_1", "conv1_maxpool_1"]


def test_formatting_returns_the_canonical_text(client: LspClient) -> None:
    from cnnspec.fmt import format_text

    uri = "file:///work/format.cnn"
    messy = "model   m {input 8x8x3\n\n\n   conv2d( 8 )  global_avg_pool() dense(2,activation=softmax)}\n"
    client.open(uri, messy)
    edits = client.request(
        "textDocument/formatting",
        {"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": True}},
    )
    expected = format_text(messy)
    assert expected is not None and expected != messy
    assert len(edits) == 1 and edits[0]["newText"] == expected
    assert edits[0]["range"]["start"] == {"line": 0, "character": 0}
    broken = "model m { conv2d( }"
    client.change(uri, broken, version=2)
    assert (
        client.request(
            "textDocument/formatting",
            {"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": True}},
        )
        == []
    )


def test_random_edits_never_kill_the_server(client: LspClient) -> None:
    """Fuzz: bursts of random edits to the shipped specs, with requests in between; the
    server answers every request, and its last diagnostics are those of the final text."""
    rng = random.Random(f"{FUZZ_SEED}/lsp")
    for number, path in enumerate([*SPECS, ROOT / "examples" / "mistakes.cnn"]):
        uri = f"file:///work/fuzz{number}.cnn"
        text = path.read_text()
        client.open(uri, text)
        version = 1
        for _ in range(examples(80)):
            text = _mutate(rng, text)
            version += 1
            client.change(uri, text, version)
            offset = rng.randrange(len(text) + 1)
            request = rng.choice(
                ["textDocument/hover", "textDocument/completion", "textDocument/definition"]
            )
            client.request(
                request, {"textDocument": {"uri": uri}, "position": position(text, offset)}
            )
        client.request(
            "textDocument/inlayHint",
            {
                "textDocument": {"uri": uri},
                "range": {"start": {"line": 0, "character": 0}, "end": position(text, len(text))},
            },
        )
        client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
        final = client.wait_for("textDocument/publishDiagnostics", uri=uri, version=version)
        expected = compile_text(text, path.name).diagnostics
        lines = Lines(text)
        assert [(d["code"], d["range"]) for d in final["diagnostics"]] == [
            (d.code, _range(lines, d.span)) for d in expected
        ]
    assert client.process.poll() is None


def _range(lines: Lines, span: Span) -> dict[str, dict[str, int]]:
    result = lines.range(span)
    return {
        "start": {"line": result.start.line, "character": result.start.character},
        "end": {"line": result.end.line, "character": result.end.character},
    }


def _mutate(rng: random.Random, text: str) -> str:
    """One editor-like change: type or delete a few characters, or paste a piece elsewhere."""
    at = rng.randrange(len(text) + 1)
    choice = rng.random()
    if choice < 0.4:
        return (
            text[:at]
            + rng.choice(["(", ")", "{", "}", "x", "=", ",", " ", "3", "#", '"'])
            + text[at:]
        )
    if choice < 0.8 and text:
        return text[:at] + text[at + rng.randrange(1, 6) :]
    piece = text[rng.randrange(len(text) + 1) :][: rng.randrange(1, 30)]
    return text[:at] + piece + text[at:]


def test_lines_count_utf16_like_lsp() -> None:
    text = "a\n# é 😀 x\nend"
    lines = Lines(text)
    x = text.index("x")
    at = lines.position(x)
    assert (at.line, at.character) == (1, 7)  # 😀 is 2 UTF-16 units
    assert lines.offset(lines.position(x)) == x
    assert lines.offset(lines.position(len(text))) == len(text)


def test_lsp_without_pygls_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['pygls'] = None; sys.modules['pygls.lsp.server'] = None\n"
        "sys.argv = ['cnnspec', 'lsp']\nfrom cnnspec.cli import main\nmain()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "cnnspec: error: the language server needs pygls: pip install 'cnnspec[lsp]'"
    )


def test_the_diagram_request_answers_the_page_for_the_current_text(client: LspClient) -> None:
    """What "cnnspec: Show Network Diagram" shows in VS Code: the HTML page of `cnnspec graph`
    for the text as edited (saved or not); a spec with errors gets a reason instead."""
    uri = "file:///work/diagram.cnn"
    client.open(uri, GOOD)
    page = client.request("cnnspec/diagram", {"uri": uri})
    spec = compile_text(GOOD, "diagram.cnn").spec
    assert spec is not None
    assert page["html"].startswith("<!DOCTYPE html>")
    assert all(f'"{node.name}"' in page["html"] for node in spec.model.nodes)  # its data
    client.change(uri, BAD, version=2)
    assert client.request("cnnspec/diagram", {"uri": uri}) == {
        "error": "the spec has 1 error: fix it to see its network"
    }
    client.change(uri, GOOD.replace("conv2d(32)", "conv2d(48)"), version=3)
    assert "conv2d(48" in client.request("cnnspec/diagram", {"uri": uri})["html"]


# The boundary: a handler's bug is logged, to the client and to the server's log, and the
# request gets its default answer.


def test_a_handler_that_fails_is_logged_and_answers_its_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from lsprotocol import types

    from cnnspec.lsp import build_server

    server = build_server()
    sent: list[types.LogMessageParams] = []
    monkeypatch.setattr(server, "window_log_message", sent.append)

    def broken(uri: str) -> None:
        raise KeyError("a bug on purpose")

    monkeypatch.setattr(server, "analysis", broken)
    features = server.protocol.fm.features
    hover = types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        position=types.Position(line=0, character=0),
    )
    with caplog.at_level(logging.ERROR, logger="cnnspec.lsp"):
        assert features[types.TEXT_DOCUMENT_HOVER](hover) is None
        answer = features["cnnspec/diagram"]({"uri": URI})
    assert answer == {"error": "internal error: see the cnnspec output channel"}
    assert [m.type for m in sent] == [types.MessageType.Error] * 2
    assert sent[0].message.startswith("cnnspec: internal error in hover:\nTraceback")
    assert "KeyError: 'a bug on purpose'" in sent[0].message
    assert "internal error in diagram" in sent[1].message
    records = [r for r in caplog.records if r.name == "cnnspec.lsp"]
    assert [r.getMessage() for r in records] == [
        "internal error in hover",
        "internal error in diagram",
    ]
    assert all(r.exc_info is not None and r.exc_info[0] is KeyError for r in records)


def test_a_failed_publish_is_logged_and_the_server_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import logging

    from cnnspec.lsp import build_server

    server = build_server(debounce=0)
    sent: list[object] = []
    monkeypatch.setattr(server, "window_log_message", sent.append)

    def broken(uri: str) -> None:
        raise ValueError("a bug on purpose")

    monkeypatch.setattr(server, "publish", broken)
    with caplog.at_level(logging.ERROR, logger="cnnspec.lsp"):
        asyncio.run(server._publish_later(URI))
    assert len(sent) == 1
    (record,) = [r for r in caplog.records if r.name == "cnnspec.lsp"]
    assert record.getMessage() == f"internal error in diagnostics for {URI}"
    assert record.exc_info is not None and record.exc_info[0] is ValueError
