"""``-q``: keep library chatter (Lightning, scvi-tools) and warnings off the terminal."""

from __future__ import annotations

import logging
import warnings

_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "scvi",
    "py.warnings",
)


def silence_libraries() -> None:
    """Raise the libraries' log levels to ERROR and ignore warnings (call after importing them)."""
    warnings.filterwarnings("ignore")
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
