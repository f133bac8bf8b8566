"""Shared plumbing for chipvi plots: figure saving and showing."""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import ChipviInputError
from .._utils import atomic_path


def finish(fig, *, show: bool | None, save: str | os.PathLike | None, overwrite: bool) -> None:
    """Save (atomically; refuses an existing file unless ``overwrite``) and/or show a figure."""
    if save is not None:
        save = Path(save)
        fmt = save.suffix.lstrip(".").lower() or "png"
        with atomic_path(save, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
    if show:
        import matplotlib.pyplot as plt

        plt.show()


def check_save(save: str | os.PathLike | None, overwrite: bool) -> None:
    """Refuse an existing output before drawing anything."""
    if save is not None and Path(save).exists() and not overwrite:
        raise ChipviInputError(f"{save} already exists; pass overwrite=True to replace it.")
