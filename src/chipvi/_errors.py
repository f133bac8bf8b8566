"""The one exception type for bad user input."""

from __future__ import annotations


class ChipviInputError(ValueError):
    """Bad user input.

    The message names the offending file, field or value and says what to do about it. Raised
    before anything is written, so a failed call never leaves a half-written output behind.
    """


class ChipviTrainingError(RuntimeError):
    """Training could not go on: the objective or a gradient became NaN or infinite.

    The message names the epoch and step, the term of the objective and, when it can, the
    libraries involved, and says what to try.
    """
