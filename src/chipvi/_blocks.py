"""Bins of an AnnData or of a bins store, read a block of rows at a time.

The QC tools (:mod:`chipvi.tl`, :mod:`chipvi.pl`) compute over bins in blocks so a genome in a
bins store never sits in memory: a store is read a chunk at a time, an in-memory AnnData is one
block. Both go through the same reader, so the maths downstream is one implementation.

Built on the public :class:`chipvi.io.BinStore` API (``array``, ``obs``, ``obsm``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._errors import ChipviInputError
from ._posterior import POSTERIOR_KEY


class Blocks:
    """Rows ``[a, b)`` of counts, layers and ``obs`` of an AnnData (one block) or a bins
    store (a chunk at a time).

    Parameters
    ----------
    data
        An AnnData in the chipvi layout, a :class:`chipvi.io.BinStore` or its path.
    block
        Rows per block of a store (default: its chunk).
    """

    def __init__(self, data: Any, block: int | None = None) -> None:
        from anndata import AnnData

        from .io import is_store, open_store

        if is_store(data):
            self.store = open_store(data)
            self.adata = None
            self.n_obs = self.store.n_obs
            step = int(block or self.store.chunk)
            self.ranges = [(a, min(a + step, self.n_obs)) for a in range(0, self.n_obs, step)]
            self.where = str(self.store.path)
        elif isinstance(data, AnnData):
            self.store, self.adata = None, data
            self.n_obs = data.n_obs
            self.ranges = [(0, self.n_obs)]
            self.where = "adata"
        else:
            raise ChipviInputError(
                f"expected an AnnData or a bins store (.zarr), got {type(data).__name__}."
            )
        self.data = data if self.store is None else self.store

    @property
    def var(self) -> pd.DataFrame:
        return self.data.var

    @property
    def uns(self) -> dict:
        return self.data.uns

    @property
    def var_names(self) -> list[str]:
        return [str(v) for v in self.var.index]

    def check_layer(self, name: str | None, slot: str = "layers") -> None:
        """Raise a :class:`~chipvi.ChipviInputError` naming what to run when a layer (or an
        obsm key, ``slot="obsm"``) is absent."""
        if name is None:
            return
        if self.store is None:
            present = list(getattr(self.adata, slot).keys())
        else:
            present = list(self.store.layers if slot == "layers" else self.store.obsm_keys)
        if name in present:
            return
        what = "layer" if slot == "layers" else "obsm key"
        if name.startswith("chipvi_") and POSTERIOR_KEY not in self.uns:
            target = "adata" if self.store is None else "store"
            raise ChipviInputError(
                f"{self.where} has no {what} {name!r}: it holds no posterior yet. Run "
                f"model.add_posterior({target}) (or `chipvi denoise RUN` for a run) first "
                f"({slot}: {sorted(present)})."
            )
        raise ChipviInputError(
            f"{self.where} has no {what} {name!r}; available: {sorted(present)}"
            + ("." if self.store is None or slot != "layers" else
               " (a control layer comes from binning with controls: chipvi bin -o).")
        )  # fmt: skip

    def values(self, layer: str | None, a: int, b: int) -> np.ndarray:
        """Rows ``[a, b)`` of ``X`` (``layer=None``) or a layer, float64 (bins × libraries)."""
        self.check_layer(layer)
        if self.store is not None:
            return self.store.array(layer, a, b).astype(np.float64, copy=False)
        matrix = self.adata.X if layer is None else self.adata.layers[layer]
        matrix = matrix[a:b]
        if hasattr(matrix, "toarray"):
            matrix = matrix.toarray()
        return np.asarray(matrix, dtype=np.float64)

    def frame(self, source: str | pd.DataFrame, a: int, b: int) -> np.ndarray:
        """Rows ``[a, b)`` of library-level values: a layer name or a bins × libraries
        DataFrame (its columns the libraries, in ``var`` order)."""
        if isinstance(source, str):
            return self.values(source, a, b)
        if isinstance(source, pd.DataFrame):
            if list(source.columns) != self.var_names or len(source) != self.n_obs:
                raise ChipviInputError(
                    "A denoised DataFrame must be bins × libraries with the bins and library "
                    f"names of {self.where}."
                )
            return source.iloc[a:b].to_numpy(np.float64)
        raise ChipviInputError(
            f"denoised must be a layer name (e.g. 'chipvi_lfe' after model.add_posterior) or a "
            f"DataFrame, not {type(source).__name__}."
        )

    def obs(self, a: int, b: int) -> pd.DataFrame:
        """``chrom``, ``start``, ``end`` of rows ``[a, b)``."""
        if self.store is not None:
            return self.store.obs(a, b, names=False)
        return self.adata.obs.iloc[a:b]

    def depth(self, layer: str | None) -> np.ndarray:
        """Reads per library: ``var['depth']``, else the column sums (one pass)."""
        if "depth" in self.var:
            depth = self.var["depth"].to_numpy(dtype=np.float64)
        else:
            depth = sum(self.values(layer, a, b).sum(axis=0) for a, b in self.ranges)
        return np.where(depth > 0, depth, 1.0)

    def log_cpm(self, layer: str | None, depth: np.ndarray, a: int, b: int) -> np.ndarray:
        """log1p counts per million of rows ``[a, b)`` (as :func:`chipvi._bins.log_cpm`)."""
        return np.log1p(self.values(layer, a, b) * (1e6 / depth))

    def signal_readers(self, layer: str | None, denoised: str | pd.DataFrame | None) -> dict:
        """Readers of rows ``[a, b)`` for concordance: ``"raw"`` (log1p counts per million of
        ``layer``) and, with ``denoised``, ``"denoised"`` (:meth:`frame`); both sources are
        checked here, before any pass over the bins."""
        self.check_layer(layer)
        depth = self.depth(layer)
        readers = {"raw": lambda a, b: self.log_cpm(layer, depth, a, b)}
        if denoised is not None:
            self.frame(denoised, 0, 0)
            readers["denoised"] = lambda a, b: self.frame(denoised, a, b)
        return readers

    def blocks(self) -> Iterator[tuple[int, int]]:
        return iter(self.ranges)

    def select(self, columns: Sequence[str] | str | None, where: str) -> list[str]:
        """Library names ``columns`` (all when None), checked."""
        from ._bins import select_columns

        return select_columns(self.var_names, columns, where)


class Moments:
    """Count, means, centred sums of squares and cross products of ``(x, y)``, merged."""

    def __init__(self) -> None:
        self.n = 0
        self.mx = self.my = self.sxx = self.syy = self.sxy = 0.0
        self.lo = np.array([np.inf, np.inf])
        self.hi = np.array([-np.inf, -np.inf])

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        nb = x.size
        if not nb:
            return
        mx, my = float(x.mean()), float(y.mean())
        dx, dy = x - mx, y - my
        sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
        self.lo = np.minimum(self.lo, [x.min(), y.min()])
        self.hi = np.maximum(self.hi, [x.max(), y.max()])
        na, n = self.n, self.n + nb
        ex, ey = mx - self.mx, my - self.my
        self.sxx += sxx + ex * ex * na * nb / n
        self.syy += syy + ey * ey * na * nb / n
        self.sxy += sxy + ex * ey * na * nb / n
        self.mx += ex * nb / n
        self.my += ey * nb / n
        self.n = n

    @property
    def constant(self) -> bool:
        """Fewer than 3 values, or either column constant (no correlation defined)."""
        return self.n < 3 or bool(np.any(self.hi <= self.lo))

    def pearson(self) -> float:
        if self.constant:
            return np.nan
        return float(np.clip(self.sxy / np.sqrt(self.sxx * self.syy), -1.0, 1.0))
