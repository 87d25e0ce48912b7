"""Spec syntax moved to cnnspec.spelling, below both the importer and the diagram. This name
stays for the one reader that still imports from it (keras_file's `value_text`)."""

from __future__ import annotations

from cnnspec.spelling import value_text

__all__ = ["value_text"]
