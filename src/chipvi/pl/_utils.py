"""Shared plumbing for chipvi plots: saving, showing and what a plot returns (scanpy's rules)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._utils import atomic_path


def finish(
    fig,
    axes: Any,
    *,
    show: bool | None,
    save: str | os.PathLike | None,
    return_fig: bool,
    own_figure: bool = True,
) -> Any:
    """Save and/or show a finished figure and return what the plot function returns.

    ``save`` writes the file atomically and replaces an existing one (as scanpy does); the
    format follows the suffix (png without one). ``show=None`` shows the figure when nothing
    is saved and matplotlib is interactive (a notebook, ``plt.ion()``). Returns the figure with
    ``return_fig``, else ``None`` when shown and ``axes`` otherwise. A figure the plot made
    itself (``own_figure``) is closed after saving unless shown, so loops do not pile figures
    up; one drawn into the caller's ``ax`` is left open.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        save = Path(save)
        fmt = save.suffix.lstrip(".").lower() or "png"
        with atomic_path(save, overwrite=True) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
    if show is None:
        show = save is None and plt.isinteractive()
    if show:
        plt.show()
    elif save is not None and own_figure and not return_fig:
        plt.close(fig)
    if return_fig:
        return fig
    return None if show else axes
