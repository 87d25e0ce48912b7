"""Checking a spec never imports a deep-learning framework.

`cnnspec check` and `cnnspec summary` must start fast and work where no framework is installed,
so the front end (parse, lower, check, summary, the CLI's check) must not import TensorFlow,
Keras, PyTorch or ONNX, not even lazily; neither may `cnnspec build`, which only writes code that
imports them. A fresh interpreter does all of it and then reports
what is in `sys.modules`, and every import of a framework it even *tried* (an import that fails
or is caught is still recorded by a meta-path hook installed before cnnspec is imported).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, SPECS

FRAMEWORKS = ("tensorflow", "keras", "torch", "onnx", "onnxruntime")

SCRIPT = textwrap.dedent(
    """
    import contextlib
    import importlib.abc
    import io
    import json
    import sys
    from pathlib import Path
    from unittest import mock

    FRAMEWORKS = {frameworks!r}
    attempted = []

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FRAMEWORKS:
                attempted.append(name)
            return None

    sys.meta_path.insert(0, Recorder())

    import cnnspec
    import cnnspec.cli
    from cnnspec.compiler import compile_file
    from cnnspec.summary import render_table, to_json

    specs = sorted(Path({root!r}, "specs").glob("*.cnn"))
    assert specs
    for spec in specs:
        compilation = compile_file(spec)
        assert compilation.ok and compilation.spec is not None, spec
        json.dumps(to_json(compilation.spec))
        render_table(compilation.spec)

    def main(*argv):
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(sys, "argv", ["cnnspec", *argv]), \\
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cnnspec.cli.main()
            except SystemExit as exit:
                return exit.code, out.getvalue(), err.getvalue()
        return 0, out.getvalue(), err.getvalue()

    check = main("check", *map(str, specs))
    summary = main("summary", "--format", "json", str(specs[0]))
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        built = [
            main("build", str(spec), "--backend", "keras", "-o", str(Path(out, spec.name)))[0]
            for spec in specs
        ]
    loaded = sorted(
        name for name in sys.modules if name.split(".")[0] in FRAMEWORKS
    )
    print(json.dumps({{
        "loaded": loaded,
        "attempted": attempted,
        "check": check[:2],
        "summary_exit": summary[0],
        "summary_keys": sorted(json.loads(summary[1])),
        "built": built,
    }}))
    """
)


def test_front_end_imports_no_framework() -> None:
    script = SCRIPT.format(frameworks=FRAMEWORKS, root=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The script really did the work.
    exit_code, output = report["check"]
    assert exit_code == 0
    assert output.count(": ok: ") == len(SPECS)
    assert report["summary_exit"] == 0
    assert "layers" in report["summary_keys"]
    assert report["built"] == [0] * len(SPECS)
    # And it imported no framework, nor tried to.
    assert report["loaded"] == []
    assert report["attempted"] == []
