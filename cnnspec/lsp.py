"""`cnnspec lsp`: a Language Server Protocol server over stdio, built with pygls.

Diagnostics are the checker's own (codes, exact ranges, hints), published when a document opens
and, debounced, after it changes; hovers, inlay hints, completion, go to definition and the
outline come from `cnnspec.editor`, formatting from `cnnspec.fmt`. Each document is compiled at
most once per version. A handler is a boundary: one that fails logs the error with its
traceback, to the client (window/logMessage: the editor's output channel for cnnspec) and to
the server's own log (`logging`, on standard error), and answers nothing; the server keeps
serving.

Positions: LSP counts lines from 0 and characters in UTF-16 code units; cnnspec's spans count
from 1 in code points. `Lines` converts between the two.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from cnnspec import __version__, editor
from cnnspec.compiler import Compilation, compile_source
from cnnspec.diagnostics import Severity
from cnnspec.source import Source, Span

DEBOUNCE_SECONDS = 0.15
LOG = logging.getLogger(__name__)
# A request of cnnspec's own: {"uri": ...} -> {"html": the page `cnnspec graph -o OUT.html`
# writes, for the document's current text} or {"error": why there is none}. The VS Code
# extension shows the page in a webview ("cnnspec: Show Network Diagram").
DIAGRAM_REQUEST = "cnnspec/diagram"


class Lines:
    """Offsets in a text, to and from LSP positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]

    def position(self, offset: int) -> types.Position:
        offset = max(0, min(offset, len(self.text)))
        line = bisect_right(self.starts, offset) - 1
        prefix = self.text[self.starts[line] : offset]
        return types.Position(line=line, character=len(prefix.encode("utf-16-le")) // 2)

    def offset(self, position: types.Position) -> int:
        if position.line >= len(self.starts):
            return len(self.text)
        start = self.starts[position.line]
        end = self.starts[position.line + 1] - 1 if position.line + 1 < len(self.starts) else None
        line = self.text[start:end]
        units = 0
        for index, char in enumerate(line):
            if units >= position.character:
                return start + index
            units += 2 if ord(char) > 0xFFFF else 1
        return start + len(line)

    def range(self, span: Span) -> types.Range:
        return types.Range(start=self.position(span.start), end=self.position(span.end))


@dataclass
class Analysis:
    version: int | None
    text: str
    lines: Lines
    compilation: Compilation


class CnnspecServer(LanguageServer):
    def __init__(self, debounce: float = DEBOUNCE_SECONDS) -> None:
        super().__init__("cnnspec", __version__)
        self.debounce = debounce
        self.analyses: dict[str, Analysis] = {}
        self.pending: dict[str, asyncio.Task[None]] = {}

    def analysis(self, uri: str) -> Analysis:
        """The document's current text, compiled (once per version)."""
        document = self.workspace.get_text_document(uri)
        text = document.source
        cached = self.analyses.get(uri)
        if cached is not None and cached.text == text:
            cached.version = document.version  # an edit that restores an earlier text
            return cached
        path = document.path or uri
        compilation = compile_source(Source(path, text))
        fresh = Analysis(document.version, text, Lines(text), compilation)
        self.analyses[uri] = fresh
        return fresh

    def publish(self, uri: str) -> None:
        result = self.analysis(uri)
        diagnostics = [
            types.Diagnostic(
                range=result.lines.range(d.span),
                severity=types.DiagnosticSeverity.Error
                if d.severity is Severity.ERROR
                else types.DiagnosticSeverity.Warning,
                code=d.code,
                source="cnnspec",
                message=d.message
                + (f"\nhint: {d.hint}" if d.hint else "")
                + "".join(f"\nnote: {note}" for note in d.notes),
            )
            for d in result.compilation.diagnostics
        ]
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=result.version)
        )

    def schedule(self, uri: str) -> None:
        """Publish after the edits pause: each change restarts the wait, so a burst of
        keystrokes is compiled once, on its final text."""
        previous = self.pending.pop(uri, None)
        if previous is not None:
            previous.cancel()
        self.pending[uri] = asyncio.get_running_loop().create_task(self._publish_later(uri))

    async def _publish_later(self, uri: str) -> None:
        await asyncio.sleep(self.debounce)
        self.pending.pop(uri, None)
        try:
            self.publish(uri)
        except Exception:  # the boundary of the debounced task: logged, and serving goes on
            self.report(f"diagnostics for {uri}")

    def report(self, what: str) -> None:
        """Log the exception being handled, a bug in cnnspec, with its traceback: to the
        server's log and to the client's."""
        LOG.exception("internal error in %s", what)
        self.window_log_message(
            types.LogMessageParams(
                type=types.MessageType.Error,
                message=f"cnnspec: internal error in {what}:\n{traceback.format_exc()}",
            )
        )


R = TypeVar("R")


def _safe(default: Any) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Log a handler's internal error to the client and answer `default`: one bad request
    never takes the server down."""

    def wrap(handler: Callable[..., R]) -> Callable[..., R]:
        @wraps(handler)
        def run(server: CnnspecServer, params: Any) -> R:
            try:
                return handler(server, params)
            except Exception:  # the boundary: one request's bug, logged; the server goes on
                server.report(handler.__name__)
                return default

        return run

    return wrap


def build_server(debounce: float = DEBOUNCE_SECONDS) -> CnnspecServer:
    server = CnnspecServer(debounce)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    @_safe(None)
    def did_open(ls: CnnspecServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    @_safe(None)
    def did_change(ls: CnnspecServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    @_safe(None)
    def did_close(ls: CnnspecServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.analyses.pop(uri, None)
        pending = ls.pending.pop(uri, None)
        if pending is not None:
            pending.cancel()
        ls.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=[])
        )

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    @_safe(None)
    def hover(ls: CnnspecServer, params: types.HoverParams) -> types.Hover | None:
        result = ls.analysis(params.text_document.uri)
        text = editor.hover(result.compilation, result.lines.offset(params.position))
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))

    @server.feature(types.TEXT_DOCUMENT_INLAY_HINT)
    @_safe([])
    def inlay_hints(ls: CnnspecServer, params: types.InlayHintParams) -> list[types.InlayHint]:
        result = ls.analysis(params.text_document.uri)
        first = result.lines.offset(params.range.start)
        last = result.lines.offset(params.range.end)
        return [
            types.InlayHint(
                position=result.lines.position(offset),
                label=label,
                kind=types.InlayHintKind.Type,
            )
            for offset, label in editor.inlay_hints(result.compilation)
            if first <= offset <= last
        ]

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=["(", ",", "=", " "]),
    )
    @_safe(None)
    def completion(ls: CnnspecServer, params: types.CompletionParams) -> types.CompletionList:
        document = ls.workspace.get_text_document(params.text_document.uri)
        lines = Lines(document.source)
        items = editor.completions(document.source, lines.offset(params.position))
        return types.CompletionList(
            is_incomplete=False,
            items=[
                types.CompletionItem(
                    label=item.label,
                    kind=_COMPLETION_KINDS[item.kind],
                    detail=item.detail or None,
                    documentation=item.documentation or None,
                    insert_text=item.insert_text,
                )
                for item in items
            ],
        )

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    @_safe(None)
    def formatting(
        ls: CnnspecServer, params: types.DocumentFormattingParams
    ) -> list[types.TextEdit] | None:
        from cnnspec.fmt import format_text

        document = ls.workspace.get_text_document(params.text_document.uri)
        text = document.source
        formatted = format_text(text, document.path or params.text_document.uri)
        if formatted is None or formatted == text:
            return []
        lines = Lines(text)
        return [types.TextEdit(range=lines.range(_whole(text)), new_text=formatted)]

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    @_safe(None)
    def definition(ls: CnnspecServer, params: types.DefinitionParams) -> list[types.Location]:
        result = ls.analysis(params.text_document.uri)
        spans = editor.definition(result.compilation, result.lines.offset(params.position))
        uri = params.text_document.uri
        return [types.Location(uri=uri, range=result.lines.range(span)) for span in spans]

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    @_safe(None)
    def symbols(
        ls: CnnspecServer, params: types.DocumentSymbolParams
    ) -> list[types.DocumentSymbol]:
        result = ls.analysis(params.text_document.uri)
        return [_document_symbol(s, result.lines) for s in editor.outline(result.compilation)]

    @server.feature(DIAGRAM_REQUEST)
    @_safe({"error": "internal error: see the cnnspec output channel"})
    def diagram(ls: CnnspecServer, params: Any) -> dict[str, str]:
        from cnnspec.diagram import html

        uri = params["uri"] if isinstance(params, dict) else params.uri
        compilation = ls.analysis(uri).compilation
        errors = compilation.diagnostics.errors
        if compilation.spec is None or errors:
            which = "1 error: fix it" if len(errors) == 1 else f"{len(errors)} errors: fix them"
            return {"error": f"the spec has {which} to see its network"}
        return {"html": html(compilation.spec)}

    return server


_COMPLETION_KINDS = {
    "layer": types.CompletionItemKind.Function,
    "keyword": types.CompletionItemKind.Keyword,
    "argument": types.CompletionItemKind.Property,
    "value": types.CompletionItemKind.EnumMember,
    "backbone": types.CompletionItemKind.Module,
    "setting": types.CompletionItemKind.Keyword,
    "call": types.CompletionItemKind.Function,
}

_SYMBOL_KINDS = {
    "module": types.SymbolKind.Module,
    "namespace": types.SymbolKind.Namespace,
    "class": types.SymbolKind.Class,
    "function": types.SymbolKind.Function,
    "property": types.SymbolKind.Property,
}


def _document_symbol(symbol: editor.Symbol, lines: Lines) -> types.DocumentSymbol:
    return types.DocumentSymbol(
        name=symbol.name,
        kind=_SYMBOL_KINDS[symbol.kind],
        range=lines.range(symbol.span),
        selection_range=lines.range(symbol.selection),
        detail=symbol.detail or None,
        children=[_document_symbol(child, lines) for child in symbol.children] or None,
    )


def _whole(text: str) -> Span:
    return Span(1, 1, 1, 1, 0, len(text))


def serve(debounce: float = DEBOUNCE_SECONDS) -> None:
    """Serve over stdin and stdout until the client says exit. The server's log is standard
    error, where editors keep a language server's output."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    build_server(debounce).start_io()
