"""The front end in one call: parse, lower, check. Imports no deep-learning framework."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnspec import codes
from cnnspec.check import check, resolved_data
from cnnspec.diagnostics import Diagnostics
from cnnspec.ir import Spec
from cnnspec.lower import lower_document
from cnnspec.sections import AugmentSection, EvaluateSection, TrackSection, TrainSection
from cnnspec.source import Source
from cnnspec.syntax import Document, parse


@dataclass
class Compilation:
    source: Source
    diagnostics: Diagnostics
    # None when the text does not parse or has no model. Present, but not to be emitted, when
    # there are errors: editors still show what is known.
    spec: Spec | None
    # The syntax tree, for editors (outline, go to definition); None when the text does not parse.
    document: Document | None = None

    @property
    def ok(self) -> bool:
        return self.spec is not None and not self.diagnostics.has_errors

    @property
    def checked(self) -> Spec:
        """The spec, for code past the check (`ok`, or `cnnspec`'s `_checked_or_exit`)."""
        assert self.spec is not None, "no spec: the compilation failed"
        return self.spec


def compile_source(source: Source, image_size: tuple[int, int] | None = None) -> Compilation:
    """Parse, lower and check. `image_size` replaces the height and width of the model's input,
    as the scripts' --image-size does: a spec written for 224x224 checks (and verifies) small."""
    diagnostics = Diagnostics(source)
    try:
        document = parse(source, diagnostics)
        if document is None:
            return Compilation(source, diagnostics, None)
        lowered = lower_document(document, diagnostics, image_size)
        phases = check(lowered, diagnostics)
        space = _sweep_space(lowered, document, diagnostics)
    except RecursionError:
        diagnostics.error(
            codes.NOT_USABLE_HERE,
            "sections are nested too deeply to check",
            source.span_at(0),
            "a few levels of block/residual/repeat are enough for any network",
        )
        return Compilation(source, diagnostics, None)
    if lowered.graph is None:
        return Compilation(source, diagnostics, None, document)
    spec = Spec(
        name=lowered.graph.name,
        source=source,
        model=lowered.graph,
        data=resolved_data(lowered),
        augment=lowered.augment or AugmentSection(),
        train=lowered.train or TrainSection(),
        evaluate=lowered.evaluate or EvaluateSection(),
        track=lowered.track or TrackSection.unwritten(),
        sweep=lowered.sweep,
        space=space,
        phases=phases,
    )
    return Compilation(source, diagnostics, spec, document)


def _sweep_space(lowered: Any, document: Document, diagnostics: Diagnostics) -> Any:
    """The sweep's space, read against the spec, and its objective checked (see
    cnnspec.search_space); None without a sweep section."""
    if lowered.sweep_section is None:
        return None
    from cnnspec.search_space import check_objective, read_space

    space = read_space(lowered.sweep_section, document, lowered.graph, diagnostics)
    if lowered.sweep is not None and lowered.train is not None and lowered.data is not None:
        names = ["loss", *lowered.train.metrics.names]
        check_objective(lowered.sweep, names, lowered.data.has_validation, diagnostics)
    return space


def compile_text(
    text: str, path: str = "<spec>", image_size: tuple[int, int] | None = None
) -> Compilation:
    return compile_source(Source(path, text), image_size)


def compile_file(path: str | Path, image_size: tuple[int, int] | None = None) -> Compilation:
    return compile_source(Source.read(path), image_size)
