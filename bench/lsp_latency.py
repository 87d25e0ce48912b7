"""How quickly does the language server answer? A benchmark, not a test.

    .venv/bin/python bench/lsp_latency.py [--layers 300] [--edits 30] [--debounce-ms 150]

It writes a spec of `--layers` layers (bench/check_speed.py's `deep_spec`), starts `cnnspec lsp`
over stdio and drives it as an editor does (tests/lsp_client.py), side by side in one run:

(a) diagnostics: the time from sending a `didChange` (a one-character edit that adds or removes
    an error, alternately) to receiving the `publishDiagnostics` for that version, minus the
    server's debounce (the wait it makes on purpose for more keystrokes): the work the editor
    waits for. Goal: under 50 ms.
(b) hover: the round trip of a hover request on a layer in the middle of the spec.
(c) a whole `cnnspec check FILE` process on the same file: what an editor without a server
    would pay per check.

Medians and ranges over `--edits` measurements each; wall times on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from check_speed import deep_spec  # noqa: E402

from tests.lsp_client import LspClient, position  # noqa: E402


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):7.1f} ms   range {min(values):.1f}-{max(values):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=300)
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--debounce-ms", type=int, default=150)
    args = parser.parse_args()

    text = deep_spec(args.layers)
    broken = text.replace("relu()", "reluu()", 1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"deep{args.layers}.cnn"
        path.write_text(text)
        uri = path.as_uri()

        client = LspClient("--debounce-ms", str(args.debounce_ms))
        client.initialize()
        client.open(uri, text)
        client.wait_for("textDocument/publishDiagnostics", uri=uri)

        diagnostics: list[float] = []
        for version in range(2, args.edits + 2):
            current = broken if version % 2 == 0 else text  # every edit changes the text
            started = time.perf_counter()
            client.change(uri, current, version)
            published = client.wait_for("textDocument/publishDiagnostics", uri=uri, version=version)
            elapsed = (time.perf_counter() - started) * 1000 - args.debounce_ms
            assert bool(published["diagnostics"]) == (current is broken)
            diagnostics.append(elapsed)

        middle = text.index("conv2d(", len(text) // 2) + 2
        hovers: list[float] = []
        for _ in range(args.edits):
            started = time.perf_counter()
            answer = client.request(
                "textDocument/hover",
                {"textDocument": {"uri": uri}, "position": position(text, middle)},
            )
            hovers.append((time.perf_counter() - started) * 1000)
            assert answer and "output:" in answer["contents"]["value"]
        assert client.close() == 0

        checks: list[float] = []
        for _ in range(max(5, args.edits // 3)):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "cnnspec", "check", str(path)],
                check=True,
                capture_output=True,
            )
            checks.append((time.perf_counter() - started) * 1000)

    print(
        f"{args.layers}-layer spec, {args.edits} measurements each, "
        f"debounce {args.debounce_ms} ms (subtracted)"
    )
    print(f"  didChange -> publishDiagnostics  {summary(diagnostics)}   (goal < 50 ms)")
    print(f"  hover round trip                 {summary(hovers)}")
    print(f"  `cnnspec check` whole process     {summary(checks)}")
    ratio = statistics.median(checks) / statistics.median(diagnostics)
    print(f"  whole check process / server diagnostics: {ratio:.1f}x")
    verdict = "met" if statistics.median(diagnostics) < 50 else "NOT met"
    print(f"  goal (diagnostics under 50 ms after the debounce): {verdict}")


if __name__ == "__main__":
    main()
