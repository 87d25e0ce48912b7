"""A refused import as the user reads it: the gaps grouped by cause, one line per cause with its
count and first place, so that a model refused at a hundred nodes for two reasons reads in four
lines, not a hundred and two."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cnnspec.importing.network import Gap, ImportFailure
from cnnspec.wording import plural

# The most lines a refusal takes, its header and `nothing written` included.
LIMIT = 10

# A `what` that names other layers or tensors (cnnspec.nesting's "its output also feeds c, j2",
# cnnspec.importing.weights' "no tensor for stem.weight") differs at every place for one cause:
# such gaps group by their `why` alone. Any other `what` is itself the cause ("ONNX op Gelu",
# "a LSTM layer"), and different ones stay apart even where their `why` is the same.
_NAMES_PLACES = re.compile(r"^(its output also feeds|no tensor for) ")

# The ONNX reader reports one gap per PyTorch module and counts the module's other nodes in
# its `why`; the count is summed over a cause rather than keeping causes apart.
_MODULE_TAIL = re.compile(r" \(and (\d+) more nodes? of [^()]*\)$")


@dataclass
class Cause:
    """The gaps of one cause, in the order they were found."""

    what: str
    why: str
    gaps: list[Gap] = field(default_factory=list)
    # Nodes of the gaps' modules beyond the ones named (see _MODULE_TAIL).
    more_nodes: int = 0

    @property
    def names_places(self) -> bool:
        return bool(_NAMES_PLACES.match(self.what))

    @property
    def places(self) -> list[str]:
        """Where the cause is, each place once: a reader may report one place once per way
        it meets the cause."""
        return list(dict.fromkeys(gap.where for gap in self.gaps))

    def line(self) -> str:
        first = self.gaps[0]
        places = self.places
        if len(self.gaps) == 1:
            return str(first)
        noun = _noun(places)
        differs = self.names_places and len(places) > 1
        what = f"{first.what} (the others likewise)" if differs else first.what
        why = self.why
        if self.more_nodes:
            why += f" (and {plural(self.more_nodes, 'more node')} of their modules)"
        counted = f"{plural(len(places), noun)}, first " if len(places) > 1 else ""
        return f"{counted}{first.where}: {what}: {why}"


def causes(gaps: list[Gap]) -> list[Cause]:
    """The gaps grouped by cause, the most frequent first (ties in the order found)."""
    groups: dict[tuple[str, str], Cause] = {}
    for gap in gaps:
        tail = _MODULE_TAIL.search(gap.why)
        why = gap.why[: tail.start()] if tail else gap.why
        key = ("", why) if _NAMES_PLACES.match(gap.what) else (gap.what, why)
        cause = groups.setdefault(key, Cause(gap.what, why))
        cause.gaps.append(gap)
        cause.more_nodes += int(tail.group(1)) if tail else 0
    return sorted(groups.values(), key=lambda cause: -len(cause.places))


def refusal(source: str, failure: ImportFailure) -> list[str]:
    """The lines `cnnspec import` prints to stderr for `failure`: at most LIMIT."""
    if not failure.gaps:
        return [f"cnnspec: error: {failure.message}", "nothing written"]
    grouped = causes(failure.gaps)
    room = LIMIT - 2
    shown = grouped if len(grouped) <= room else grouped[: room - 1]
    lines = [f"cnnspec: error: cannot import {source}: {failure.message}"]
    lines += [f"  {cause.line()}" for cause in shown]
    left = grouped[len(shown) :]
    if left:
        places = [where for cause in left for where in cause.places]
        more = plural(len(places), f"more {_noun(places)}")
        lines.append(f"  and {plural(len(left), 'more cause')} ({more})")
    lines.append("nothing written")
    return lines


def _noun(places: list[str]) -> str:
    """What the places are, for counting them: `node '/x' (Gelu)` is a node."""
    nouns = {_kind(where) for where in places}
    return nouns.pop() if len(nouns) == 1 else "place"


def _kind(where: str) -> str:
    word = where.split(" ", 1)[0]
    # The nesting and weights passes name a layer by its name alone where it has no origin.
    return word if " " in where and word in ("node", "layer", "input", "model") else "layer"
