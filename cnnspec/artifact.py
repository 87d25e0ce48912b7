"""Writing generated files safely: atomically, and never over a file a person wrote or edited.

A generated file starts with two comment lines: who generated it, and the sha256 of everything
after them. A file without that marker was not written by cnnspec; a file whose text no longer
matches its hash was edited. Either one is only overwritten when the user says so (`--force`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

MARKER = "# cnnspec-sha256: "


def stamp(first_line: str, body: str) -> str:
    """The file's text: `first_line`, the hash line, then `body`."""
    assert first_line.startswith("#") and "\n" not in first_line
    return f"{first_line}\n{MARKER}{_digest(body)}\n{body}"


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


# The same two lines for XML files (a diagram's SVG): comments before the root element.
XML_MARKER = "<!-- cnnspec-sha256: "


def stamp_xml(first_line: str, body: str) -> str:
    """`<!-- first_line -->`, the hash comment, then `body` (an SVG)."""
    assert "--" not in first_line and "\n" not in first_line
    return f"<!-- {first_line} -->\n{XML_MARKER}{_digest(body)} -->\n{body}"


def xml_state_of(path: Path) -> State:
    return _state(path, "<!-- ", XML_MARKER, " -->")


class State(StrEnum):
    absent = "absent"
    generated = "generated"  # written by cnnspec and untouched since
    edited = "edited"  # written by cnnspec, then changed
    foreign = "foreign"  # not written by cnnspec


def state_of(path: Path) -> State:
    return _state(path, "#", MARKER)


def _state(path: Path, comment: str, marker: str, end: str = "") -> State:
    """What `path` is, by its two stamp lines: a comment, then `marker`, the body's digest and
    `end`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return State.absent
    except (UnicodeDecodeError, IsADirectoryError):
        return State.foreign
    first, _, rest = text.partition("\n")
    second, _, body = rest.partition("\n")
    if not first.startswith(comment) or not second.startswith(marker):
        return State.foreign
    digest = second.removeprefix(marker).removesuffix(end)
    return State.generated if digest == _digest(body) else State.edited


# A PNG carries its stamp in a tEXt chunk: the first line, then the digest of every other
# chunk, so that an image changed by an editor (which drops or keeps the chunk) reads as edited.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEYWORD = b"cnnspec"


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, chunk bytes) of each chunk, and ("", rest) for bytes that are no whole chunk;
    ValueError if `data` is no PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks, at = [], len(PNG_SIGNATURE)
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        end = at + 12 + length
        if end > len(data):  # a cut-off chunk, or bytes after the image: part of the file
            chunks.append((b"", data[at:]))
            break
        chunks.append((data[at + 4 : at + 8], data[at:end]))
        at = end
    if not chunks or chunks[0][0] != b"IHDR":
        raise ValueError("a PNG without its header")
    return chunks


def _png_digest(chunks: list[tuple[bytes, bytes]]) -> str:
    own = [raw for kind, raw in chunks if not _is_stamp(kind, raw)]
    return hashlib.sha256(b"".join(own)).hexdigest()


def _is_stamp(kind: bytes, raw: bytes) -> bool:
    return kind == b"tEXt" and raw[8:].startswith(PNG_KEYWORD + b"\0")


def stamp_png(first_line: str, data: bytes) -> bytes:
    """The PNG with a tEXt chunk after its header: `first_line` and the digest of the rest."""
    chunks = [(kind, raw) for kind, raw in _png_chunks(data) if not _is_stamp(kind, raw)]
    text = f"{first_line}\n{_png_digest(chunks)}".encode("latin-1", "replace")
    body = b"tEXt" + PNG_KEYWORD + b"\0" + text
    chunk = len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    header, rest = chunks[0][1], b"".join(raw for _, raw in chunks[1:])
    return PNG_SIGNATURE + header + chunk + rest


def binary_state(path: Path, judge: Callable[[bytes], State]) -> State:
    """What a binary file is: absent, a folder (foreign), or what `judge` makes of its bytes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return State.absent
    except IsADirectoryError:
        return State.foreign
    return judge(data)


def png_state_of(path: Path) -> State:
    return binary_state(path, _png_state)


def _png_state(data: bytes) -> State:
    try:
        chunks = _png_chunks(data)
    except ValueError:
        return State.foreign
    stamps = [raw for kind, raw in chunks if _is_stamp(kind, raw)]
    if not stamps:
        return State.foreign
    text = stamps[0][8 + len(PNG_KEYWORD) + 1 : -4].decode("latin-1")
    digest = text.rpartition("\n")[2]
    return State.generated if digest == _png_digest(chunks) else State.edited


class Outcome(StrEnum):
    written = "wrote"
    unchanged = "unchanged"


@dataclass
class Refused(Exception):
    path: Path
    state: State

    def __str__(self) -> str:
        why = {
            State.edited: "was edited after cnnspec generated it",
            State.foreign: "was not generated by cnnspec",
        }.get(self.state, f"is {self.state}")
        return f"{self.path} {why}; not overwriting it"


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_generated(
    path: Path,
    content: str | bytes,
    force: bool = False,
    state: Callable[[Path], State] | None = None,
) -> Outcome:
    """Write `content` to `path` atomically (a temporary file in the same folder, then a
    rename), refusing to replace a foreign or edited file unless `force`. `state` tells what an
    existing file is (default: the text marker of `stamp`)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    current = (state or state_of)(path)
    if current in (State.foreign, State.edited) and not force:
        raise Refused(path, current)
    if current is State.generated and path.read_bytes() == data:
        return Outcome.unchanged
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private; give it the mode a plain write would have.
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Outcome.written


def replace_together(moves: list[tuple[Path, Path]]) -> None:
    """Rename each written file (source, in a folder beside its target) over its target, in
    order, each with the mode a plain write would give it: files that belong together (a model
    and its data file) are replaced together. If a rename fails, the targets already replaced
    get their earlier files back (kept as hard links until the end), so that nothing is left
    half replaced."""
    done: list[tuple[Path, Path | None]] = []
    try:
        for source, target in moves:
            os.chmod(source, _mode_for(target))
            backup = source.with_name(f"{source.name}.old")
            if target.exists():
                try:
                    os.link(target, backup)
                except OSError:  # no hard links here: the earlier file is moved aside instead
                    os.replace(target, backup)
                done.append((target, backup))
            else:
                done.append((target, None))
            os.replace(source, target)
    except BaseException:
        for target, earlier in reversed(done):
            if earlier is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(earlier, target)
        raise
    finally:
        for source, _ in moves:
            source.with_name(f"{source.name}.old").unlink(missing_ok=True)
