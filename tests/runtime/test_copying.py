"""How a backend copies the runtime modules' definitions into a script
(cnnspec.backends.runtime.code): exactly the text written, slots filled or dropped at their
indentation, a definition renamed for the script, and every mistake in a backend's request
an error rather than a script with a hole in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cnnspec.backends import runtime

MODULE = '''"""A runtime module for the test."""

import os


# Why the helper exists: copied with it.
@staticmethod
def helper(x):
    """Double x."""
    return 2 * x


def loader(data_dir):
    path = os.path.join(data_dir, "x")
    # <EXTRA>
    return path
    # <TAIL>


LIMIT = 3
'''


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "sample.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.setattr(runtime, "RUNTIME", tmp_path)
    runtime.definitions.cache_clear()
    yield "sample"
    runtime.definitions.cache_clear()


def test_definitions_are_copied_with_their_comments_and_decorators(module: str) -> None:
    text = runtime.code(module, "helper", "LIMIT")
    assert text == (
        "# Why the helper exists: copied with it.\n"
        "@staticmethod\n"
        "def helper(x):\n"
        '    """Double x."""\n'
        "    return 2 * x\n"
        "\n\n"
        "LIMIT = 3\n"
    )
    assert "import os" not in runtime.code(module, "loader", EXTRA="", TAIL="")


def test_slots_are_filled_at_their_indentation_or_dropped(module: str) -> None:
    filled = runtime.code(
        module, "loader", EXTRA="if not path:\n    raise ValueError(path)", TAIL=""
    )
    assert "    if not path:\n        raise ValueError(path)\n    return path\n" in filled
    assert "<" not in filled and "TAIL" not in filled
    # A slot after the last statement belongs to the definition too.
    tail = runtime.code(module, "loader", EXTRA="", TAIL="print(path)")
    assert tail.endswith("    return path\n    print(path)\n")


def test_a_definition_takes_the_scripts_name(module: str) -> None:
    text = runtime.code(module, "helper", rename={"helper": "double"})
    assert "def double(x):" in text and "def helper" not in text


def test_a_backends_mistakes_are_errors(module: str) -> None:
    with pytest.raises(KeyError, match="defines no missing"):
        runtime.code(module, "missing")
    with pytest.raises(KeyError, match="slot <TAIL> is not filled"):
        runtime.code(module, "loader", EXTRA="")
    with pytest.raises(KeyError, match="no slot named OTHER"):
        runtime.code(module, "helper", OTHER="x = 1")
