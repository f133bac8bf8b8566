"""The one exception type for bad user input."""

from __future__ import annotations


class ChipviInputError(ValueError):
    """Bad user input.

    The message names the offending file, field or value and says what to do about it. Raised
    before anything is written, so a failed call never leaves a half-written output behind.
    """
