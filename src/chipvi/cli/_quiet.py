"""``-q``: the command line's quiet mode is ``chipvi.settings.verbosity = "error"``.

One mechanism for the whole package (:mod:`chipvi._settings`): library loggers and the
Lightning warnings are held back while Lightning runs
(:meth:`~chipvi._settings.ChipviSettings.lightning_context`), never by muting all warnings.
"""

from __future__ import annotations


def silence_libraries() -> None:
    """Set chipvi's verbosity to ``"error"`` (quiet library loggers and Lightning warnings)."""
    from .._settings import settings

    settings.verbosity = "error"
