"""A minimal Language Server Protocol client over stdio, for tests: it drives `cnnspec lsp` as an
editor does (Content-Length framed JSON-RPC), with a reader thread so that notifications the
server sends on its own (publishDiagnostics) are never lost."""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class LspClient:
    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnnspec", "lsp", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
        )
        self.ids = itertools.count(1)
        self.responses: dict[int, Any] = {}
        self.notifications: queue.Queue[dict[str, Any]] = queue.Queue()
        self.condition = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    # ---- the wire -----------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        assert self.process.stdin is not None
        self.process.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.process.stdin.flush()

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                key, _, value = line.decode("ascii").partition(":")
                if key.lower() == "content-length":
                    length = int(value.strip())
            assert length is not None
            message = json.loads(stream.read(length))
            if "id" in message and "method" not in message:
                with self.condition:
                    self.responses[message["id"]] = message
                    self.condition.notify_all()
            elif "id" in message:  # a request from the server (e.g. configuration): decline
                self._send({"id": message["id"], "result": None})
            else:
                self.notifications.put(message)

    # ---- requests and notifications -----------------------------------------------------

    def request(self, method: str, params: Any, timeout: float = 20.0) -> Any:
        number = next(self.ids)
        self._send({"id": number, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        with self.condition:
            while number not in self.responses:
                left = deadline - time.monotonic()
                assert left > 0, f"no answer to {method} within {timeout} s"
                self.condition.wait(left)
            message = self.responses.pop(number)
        assert "error" not in message, message["error"]
        return message["result"]

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def wait_for(self, method: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        """The next notification `method` whose params contain `match`; others are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {method} {match} within {timeout} s"
            try:
                message = self.notifications.get(timeout=left)
            except queue.Empty:
                continue
            params = message.get("params", {})
            if message.get("method") == method and all(
                params.get(k) == v for k, v in match.items()
            ):
                return params

    # ---- a session ----------------------------------------------------------------------

    def initialize(self) -> dict[str, Any]:
        result = self.request(
            "initialize",
            {
                "processId": None,
                "rootUri": None,
                "capabilities": {
                    "textDocument": {
                        "hover": {"contentFormat": ["markdown", "plaintext"]},
                        "publishDiagnostics": {"versionSupport": True},
                        "inlayHint": {},
                        "completion": {"completionItem": {"snippetSupport": False}},
                    }
                },
            },
        )
        self.notify("initialized", {})
        return result  # type: ignore[no-any-return]

    def open(self, uri: str, text: str, version: int = 1) -> None:
        self.notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": uri,
                    "languageId": "cnnspec",
                    "version": version,
                    "text": text,
                }
            },
        )

    def change(self, uri: str, text: str, version: int) -> None:
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]},
        )

    def close(self) -> int:
        try:
            self.request("shutdown", None, timeout=10)
            self.notify("exit", None)
            return self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def position(text: str, offset: int) -> dict[str, int]:
    """The LSP position of an offset in an ASCII text."""
    line = text.count("\n", 0, offset)
    return {"line": line, "character": offset - (text.rfind("\n", 0, offset) + 1)}
