"""The ``chipvi`` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chipvi`` command."""
    print("chipvi: command line not implemented yet", file=sys.stderr)
    return 2
