"""Where tools put their results: scanpy's convention, one place.

A tool writes its result under ``key_added`` (``adata.uns``, and ``obsm`` / ``var`` where the
result is per bin / per library) and its parameters in ``adata.uns[key_added]["params"]``, so a
saved ``.h5ad`` says how every stored result was made. ``key_added=None`` stores nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData

from ._errors import ChipviInputError


def clean_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as plain values an ``.h5ad`` holds (unset ones left out)."""
    out = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, tuple | list):
            value = [str(v) for v in value]
        out[name] = value
    return out


def store(adata: AnnData, key_added: str | None, params: dict[str, Any], **results: Any) -> dict:
    """``adata.uns[key_added] = {"params": params, **results}`` (nothing stored when
    ``key_added`` is None); returns that record."""
    entry = {"params": clean_params(params), **results}
    if key_added is not None:
        adata.uns[key_added] = entry
    return entry


def stored(adata: AnnData, key: str, field: str, tool: str) -> Any:
    """``adata.uns[key][field]`` of a tool's result, or an error saying which tool writes it."""
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or field not in entry:
        raise ChipviInputError(
            f"adata.uns has no {tool} result under {key!r}: run chipvi.tl.{tool}(adata, "
            f"key_added={key!r}) first (uns keys: {sorted(adata.uns.keys())})."
        )
    return entry[field]
