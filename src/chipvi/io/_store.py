"""Bins on disk: a chunked, compressed AnnData in a zarr store, written and read in blocks.

A store is what ``anndata.write_zarr`` would write (``anndata.read_zarr`` reads it whole), but
it is built block by block (a chromosome or a few at a time) so the genome never sits in
memory, and read back the same way. Arrays are chunked along the bins (``chunk`` rows) and
compressed with zarr's default codec (zstd).

A store is written in a temporary folder next to its path and moved there at the end; its
root attribute ``"chipvi_store"`` (format, chipvi version, bin size, bins) is written last, as
the completion marker: a store without it (a copy of a run that was killed, or a folder filled
by hand) is refused, as is one from another chipvi version or of another bin size than asked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._errors import ChipviInputError
from .._utils import _temporary_name, atomic_dir, check_int

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

#: Root attribute of a complete store: the completion marker, written last.
MARKER = "chipvi_store"
#: Layout version of the store (what this module writes and reads).
FORMAT = 1
#: Bins per chunk of every array along the bins axis (2^17: 4 MiB of int32 per 8 libraries).
DEFAULT_CHUNK = 1 << 17
#: Chunks written per zarr call (bounds the encoded copies held at once).
_CHUNKS_PER_WRITE = 8


def _version() -> str:
    from .. import __version__

    return __version__


def _kwargs(chunks: tuple[int, ...] | None = None) -> dict:
    """``write_elem`` arguments: ``chunks`` rows per chunk, and no sharding (a shard would be
    rewritten whole by every append; anndata warns when ``shards`` is left unsaid)."""
    return {"shards": None, **({} if chunks is None else {"chunks": chunks})}


class _ChunkedArrays:
    """Appends rows to zarr arrays in whole chunks.

    Rows are buffered and written in whole chunks (a partial chunk would be read,
    decompressed and written again by every later append), the rest by ``flush``.
    """

    def __init__(self, group, chunk: int, paths: Sequence[str]) -> None:
        self._group = group
        self._chunk = chunk
        self._pending: dict[str, list[np.ndarray]] = {path: [] for path in paths}
        self._pending_rows = 0
        self.n_rows = 0

    def append(self, values: dict[str, np.ndarray]) -> None:
        """Append the same number of rows to each array (``values[path]``)."""
        n, held = len(next(iter(values.values()))), self._pending_rows
        self.n_rows += n
        if held + n < self._chunk:
            for path, value in values.items():
                self._pending[path].append(value)
            self._pending_rows += n
            return
        # Complete the held partial chunk, write whole chunks straight from the block, hold
        # a copy of the rest (not a view that would keep the whole block alive).
        head = self._chunk - held if held else 0
        whole = head + (n - head) // self._chunk * self._chunk
        for path, value in values.items():
            array = self._group[path]
            if held:
                array.append(np.concatenate([*self._pending[path], value[:head]]), axis=0)
            # A few chunks per call: zarr encodes every chunk of a call at once, so one call
            # for a whole chromosome would hold all of it encoded as well.
            for a in range(head, whole, _CHUNKS_PER_WRITE * self._chunk):
                array.append(value[a : min(whole, a + _CHUNKS_PER_WRITE * self._chunk)], axis=0)
            self._pending[path] = [value[whole:].copy()]
        self._pending_rows = n - whole

    def flush(self) -> None:
        """Write the rows still held (the last, partial chunk)."""
        if not self._pending_rows:
            return
        for path, parts in self._pending.items():
            self._group[path].append(np.concatenate(parts), axis=0)
            self._pending[path] = []
        self._pending_rows = 0


class StoreWriter:
    """Appends blocks of bins to a zarr store under construction (see :func:`store_writer`)."""

    def __init__(self, group, chunk: int) -> None:
        self._group = group
        self._chunk = chunk
        self._arrays: list[tuple[str, str | None]] = []  # (array path, obs column or None)
        self._categories: dict[str, list[str]] = {}
        self._used: dict[str, np.ndarray] = {}  # categories that bins use, per column
        self._layers: list[str] | None = None
        self._rows: _ChunkedArrays | None = None
        self.finished = False

    @property
    def n_obs(self) -> int:
        return 0 if self._rows is None else self._rows.n_rows

    def append(self, obs: pd.DataFrame, x: np.ndarray, layers: dict[str, np.ndarray]) -> None:
        """Append bins: their ``obs`` rows, ``X`` rows and the rows of each layer."""
        if not len(obs):
            return
        if self._layers is None:
            self._create(obs, x, layers)
        if list(layers) != self._layers:
            raise ValueError(f"layers {list(layers)} differ from {self._layers}")
        values = {}
        for path, column in self._arrays:
            if path == "obs/_index":
                values[path] = obs.index.to_numpy(dtype=object)
            elif path == "X":
                values[path] = np.asarray(x)
            elif column is None:
                values[path] = np.asarray(layers[path.removeprefix("layers/")])
            elif column in self._categories:
                values[path] = self._codes(obs, column)
            else:
                values[path] = obs[column].to_numpy()
        self._rows.append(values)

    def _create(self, obs: pd.DataFrame, x: np.ndarray, layers: dict[str, np.ndarray]) -> None:
        """Create every array empty (anndata's encodings), chunked along the bins."""
        from anndata.io import write_elem

        g = self._group
        write_elem(g, "obs", obs.iloc[:0], dataset_kwargs=_kwargs((self._chunk,)))
        write_elem(g, "X", x[:0], dataset_kwargs=_kwargs((self._chunk, *x.shape[1:])))
        layer_group = g.create_group("layers")
        layer_group.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        for key, value in layers.items():
            chunks = (self._chunk, *value.shape[1:])
            write_elem(layer_group, key, value[:0], dataset_kwargs=_kwargs(chunks))
        self._layers = list(layers)
        self._arrays = [("obs/_index", None), ("X", None)]
        for column in obs.columns:
            if hasattr(obs[column], "cat"):
                self._arrays.append((f"obs/{column}/codes", column))
                self._categories[column] = list(obs[column].cat.categories)
                self._used[column] = np.zeros(len(self._categories[column]), bool)
            else:
                self._arrays.append((f"obs/{column}", column))
        self._arrays += [(f"layers/{key}", None) for key in layers]
        self._rows = _ChunkedArrays(g, self._chunk, [path for path, _ in self._arrays])

    def _codes(self, obs: pd.DataFrame, column: str) -> np.ndarray:
        """Codes of ``obs[column]`` in the store's categories (a subset keeps fewer)."""
        import pandas as pd

        categories = self._categories[column]
        values = obs[column]
        if list(values.cat.categories) != categories:
            values = pd.Categorical(values, categories=categories)
            if (values.codes < 0).any():
                raise ValueError(f"obs['{column}'] has categories not in the first block's")
        codes = np.asarray(values.codes if hasattr(values, "codes") else values.cat.codes)
        self._used[column][np.unique(codes)] = True
        return codes

    def _drop_unused_categories(self) -> None:
        """Remove categories no bin uses (as an AnnData subset does), recoding the bins."""
        from anndata.io import write_elem

        for column, used in self._used.items():
            if used.all():
                continue
            new_code = np.cumsum(used) - 1
            codes = self._group[f"obs/{column}/codes"]
            for a in range(0, codes.shape[0], self._chunk):
                codes[a : a + self._chunk] = new_code[np.asarray(codes[a : a + self._chunk])]
            kept = np.asarray(self._categories[column], dtype=object)[used]
            group = self._group[f"obs/{column}"]
            del group["categories"]
            write_elem(group, "categories", kept, dataset_kwargs=_kwargs())

    def finish(self, var: pd.DataFrame, uns: dict) -> None:
        """Write ``var``, ``uns`` and the root attributes, the completion marker last."""
        from anndata.io import write_elem

        if self._layers is None:
            raise ChipviInputError("no bins to write: every bin was removed.")
        g = self._group
        self._rows.flush()
        self._drop_unused_categories()
        write_elem(g, "var", var, dataset_kwargs=_kwargs())
        write_elem(g, "uns", uns, dataset_kwargs=_kwargs())
        for key in ("obsm", "varm", "obsp", "varp"):
            write_elem(g, key, {})
        g.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        info = uns.get("chipvi", {})
        g.attrs[MARKER] = {
            "format": FORMAT,
            "version": _version(),
            "bin_size": int(info["bin_size"]),
            "n_obs": self.n_obs,
            "chunk": self._chunk,
        }
        self.finished = True


@contextlib.contextmanager
def store_writer(
    path: str | os.PathLike, *, chunk: int = DEFAULT_CHUNK, overwrite: bool = False
) -> Iterator[StoreWriter]:
    """Write a bins store at ``path`` block by block.

    The store is built in a temporary folder next to ``path`` and moved onto it only after
    ``finish``; if the body raises (a bad input, a full disk), the folder is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path
        The ``.zarr`` folder to write.
    chunk
        Bins per chunk of every array.
    overwrite
        Replace an existing ``path``.

    Yields
    ------
    StoreWriter
        ``append(obs, X, layers)`` blocks of bins in genome order, then ``finish(var, uns)``
        (``uns["chipvi"]["bin_size"]`` is recorded in the completion marker).

    Examples
    --------
    >>> with chipvi.io.store_writer("bins.zarr") as writer:  # doctest: +SKIP
    ...     writer.append(block.obs, block.X, dict(block.layers))
    ...     writer.finish(block.var, dict(block.uns))
    """
    import zarr

    chunk = check_int("chunk_size", chunk, 1)
    if Path(path).suffix != ".zarr":
        raise ChipviInputError(f"store path {path} must end in .zarr.")
    with atomic_dir(path, overwrite=overwrite) as tmp:
        writer = StoreWriter(zarr.open_group(tmp, mode="w", zarr_format=3), chunk)
        yield writer
        if not writer.finished:
            raise RuntimeError("store_writer: finish() was not called")


class StoreAdder:
    """Appends new layers and obsm tables to a complete store, bins in order (see
    :func:`store_adder`)."""

    def __init__(self, store: BinStore, group) -> None:
        self._store = store
        self._group = group
        self._rows: _ChunkedArrays | None = None
        self._layers: list[str] = []
        self._obsm: dict[str, list[str]] = {}
        self.finished = False

    @property
    def n_obs(self) -> int:
        return 0 if self._rows is None else self._rows.n_rows

    def append(self, layers: dict[str, np.ndarray], obsm: dict[str, pd.DataFrame]) -> None:
        """Append the next bins' rows of each new layer and obsm DataFrame (the same keys,
        columns and number of rows every time; the index is taken from the store)."""
        if self._rows is None:
            self._create(layers, obsm)
        if list(layers) != self._layers or {k: list(v.columns) for k, v in obsm.items()} != (
            self._obsm
        ):
            raise ValueError("every block must hold the same layers and obsm columns")
        values = {f"layers/{k}": np.asarray(v) for k, v in layers.items()}
        for key, frame in obsm.items():  # the index is the store's obs/_index (finish)
            for column in frame.columns:
                values[f"obsm/{key}/{column}"] = frame[column].to_numpy()
        self._rows.append(values)

    def _create(self, layers: dict[str, np.ndarray], obsm: dict[str, pd.DataFrame]) -> None:
        from anndata.io import write_elem

        chunk, g = self._store.chunk, self._group
        for slot in ("layers", "obsm"):
            g.create_group(slot).attrs.update(
                {"encoding-type": "dict", "encoding-version": "0.1.0"}
            )
        for key, value in layers.items():
            write_elem(g["layers"], key, value[:0],
                       dataset_kwargs=_kwargs((chunk, *value.shape[1:])))  # fmt: skip
        for key, frame in obsm.items():
            empty = frame.iloc[:0].copy()
            empty.index = empty.index.astype(str)
            write_elem(g["obsm"], key, empty, dataset_kwargs=_kwargs((chunk,)))
        self._layers = list(layers)
        self._obsm = {k: list(v.columns) for k, v in obsm.items()}
        paths = [f"layers/{k}" for k in layers]
        for key, columns in self._obsm.items():
            paths += [f"obsm/{key}/{c}" for c in columns]
        self._rows = _ChunkedArrays(g, chunk, paths)

    def finish(self, uns: dict) -> None:
        """Move the new arrays into the store, then write the ``uns`` entries (last: they
        are what says the arrays are complete)."""
        from anndata.io import write_elem

        if self.n_obs != self._store.n_obs:
            raise ValueError(f"{self.n_obs} bins appended, the store has {self._store.n_obs}")
        self._rows.flush()
        import zarr

        root = self._store.path
        # Each obsm frame's index is the bins' names: a copy of obs/_index as it is on disk
        # (its chunks, already encoded), not the names read, decoded and encoded again.
        for key in self._obsm:
            index = Path(self._group.store.root) / "obsm" / key / "_index"
            shutil.rmtree(index)
            shutil.copytree(root / "obs" / "_index", index)
        target = zarr.open_group(root, mode="r+")
        for key in uns:  # a record of an earlier pass no longer describes what is on disk
            if key in target["uns"]:
                del target["uns"][key]
        for slot, keys in (("layers", self._layers), ("obsm", list(self._obsm))):
            for key in keys:
                dest = root / slot / key
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(Path(self._group.store.root) / slot / key, dest)
        target = zarr.open_group(root, mode="r+")
        for key, value in uns.items():
            write_elem(target["uns"], key, value, dataset_kwargs=_kwargs())
        self._store._read_members()
        self.finished = True


@contextlib.contextmanager
def store_adder(store: str | os.PathLike | BinStore) -> Iterator[StoreAdder]:
    """Add layers, obsm DataFrames and ``uns`` entries to a complete bins store, bins in order.

    The new arrays are built in a temporary folder next to the store and moved in by
    ``finish``, then the ``uns`` entries are written: a stopped run leaves the store as it
    was, or (stopped during the moves) without the ``uns`` record that describes them.

    Yields
    ------
    StoreAdder
        ``append(layers, obsm)`` blocks of bins from the first to the last, then
        ``finish(uns)``.
    """
    import zarr

    store = open_store(store)
    prefix, suffix = _temporary_name(store.path, "part")
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=store.path.parent))
    try:
        adder = StoreAdder(store, zarr.open_group(tmp, mode="w", zarr_format=3))
        yield adder
        if not adder.finished:
            raise RuntimeError("store_adder: finish() was not called")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_store(obj) -> bool:
    """True for a :class:`BinStore` or a path to a ``.zarr`` folder."""
    if isinstance(obj, BinStore):
        return True
    return isinstance(obj, str | os.PathLike) and Path(obj).suffix == ".zarr"


class BinStore:
    """A complete bins store written by chipvi, opened for reading in blocks of bins.

    Parameters
    ----------
    path
        The ``.zarr`` folder (``chipvi.read_bams(..., out=path)``, ``chipvi bin -o path``).
    bin_size
        Refuse a store of another bin size.
    layers
        Refuse a store that lacks any of these layers.

    Raises
    ------
    ChipviInputError
        If the folder is missing or not a store, the store is incomplete (its writer was
        stopped), it was written by another chipvi version, or its bin size or layers differ
        from those asked.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        bin_size: int | None = None,
        layers: Sequence[str] = (),
    ) -> None:
        import zarr
        from anndata.io import read_elem

        self.path = Path(path)
        if not self.path.is_dir():
            raise ChipviInputError(
                f"{self.path} is not a bins store (no such folder); write one with "
                "chipvi.read_bams(..., out=...) or chipvi bin -o."
            )
        try:
            group = zarr.open_group(self.path, mode="r")
        except Exception as e:  # zarr raises several kinds for a folder that is not a group
            raise ChipviInputError(f"{self.path} is not a zarr store ({e}).") from None
        marker = group.attrs.get(MARKER)
        if not isinstance(marker, dict):
            raise ChipviInputError(
                f"{self.path} is not a complete chipvi bins store: its completion marker is "
                "missing (the run that wrote it was stopped, or the disk filled). Delete it "
                f"(rm -r {self.path}) and write it again."
            )
        if marker.get("format") != FORMAT or marker.get("version") != _version():
            raise ChipviInputError(
                f"{self.path} was written by chipvi {marker.get('version')} (store format "
                f"{marker.get('format')}); this is chipvi {_version()} (format {FORMAT}). "
                "Write it again with this version."
            )
        self.bin_size = int(marker["bin_size"])
        if bin_size is not None and bin_size != self.bin_size:
            raise ChipviInputError(
                f"{self.path} holds {self.bin_size} bp bins, not {bin_size} bp; bin again with "
                f"bin_size={bin_size} or aggregate it (chipvi.pp.aggregate_bins)."
            )
        self.chunk = int(marker["chunk"])
        #: The completion marker (format, version, bin size, bins, chunk).
        self.marker = dict(marker)
        self._group = group
        self.n_obs = int(group["X"].shape[0])
        self._read_members()
        self.require_layers(layers)
        self.var = read_elem(group["var"])
        self._columns = list(group["obs"].attrs["column-order"])

    def _read_members(self) -> None:
        """The layers, obsm keys and ``uns`` as they are on disk now."""
        import zarr
        from anndata.io import read_elem

        group = self._group = zarr.open_group(self.path, mode="r")
        self.layers = list(group["layers"].keys()) if "layers" in group else []
        self.obsm_keys = list(group["obsm"].keys()) if "obsm" in group else []
        self.uns = _chrom_order(read_elem(group["uns"]), self._chroms())

    @property
    def n_vars(self) -> int:
        return len(self.var)

    def __repr__(self) -> str:
        return (
            f"BinStore({str(self.path)!r}: {self.n_obs} bins x {self.n_vars} libraries, "
            f"{self.bin_size} bp, layers {self.layers})"
        )

    def require_layers(self, layers: Sequence[str]) -> None:
        """Raise a :class:`~chipvi.ChipviInputError` naming the layers the store lacks."""
        missing = [k for k in layers if k not in self.layers]
        if missing:
            raise ChipviInputError(
                f"{self.path} has no layer {missing} (layers: {self.layers}); bin the sample "
                "sheet again with controls, or pass a store that has them."
            )

    def obs(self, start: int, stop: int, names: bool = True) -> pd.DataFrame:
        """The ``obs`` rows of bins ``[start, stop)``; without ``names`` the index is the
        row numbers as str (reading the names costs more than the rest together)."""
        import pandas as pd

        g = self._group["obs"]
        if names:
            index = np.asarray(g["_index"][start:stop]).astype(object)
        else:
            index = pd.RangeIndex(start, stop).astype(str)
        columns = {}
        for column in self._columns:
            node = g[column]
            if node.attrs.get("encoding-type") == "categorical":
                categories = [str(c) for c in np.asarray(node["categories"][:])]
                codes = np.asarray(node["codes"][start:stop])
                columns[column] = pd.Categorical.from_codes(codes, categories=categories)
            else:
                columns[column] = np.asarray(node[start:stop])
        return pd.DataFrame(columns, index=pd.Index(index, dtype=object))

    def array(self, key: str | None, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of ``X`` (``key=None``) or of a layer."""
        self.require_layers([key] if key is not None else [])
        path = "X" if key is None else f"layers/{key}"
        return np.asarray(self._group[path][start:stop])

    def obs_names(self) -> Iterator[np.ndarray]:
        """The bin names, a chunk at a time."""
        names = self._group["obs"]["_index"]
        for a in range(0, self.n_obs, self.chunk):
            yield np.asarray(names[a : a + self.chunk])

    def names_at(self, rows: np.ndarray) -> np.ndarray:
        """The names of bins ``rows`` (int array), read for those rows only."""
        rows = np.asarray(rows, dtype=np.int64)
        if not rows.size:
            return np.empty(0, dtype=object)
        return np.asarray(self._group["obs"]["_index"].oindex[rows]).astype(object)

    def chrom_ranges(self) -> list[tuple[str, int, int]]:
        """``(chromosome, first row, last row + 1)`` of each chromosome's bins, in row order
        (bins are in genomic order). Read a chunk at a time."""
        chroms, codes = self._chroms(), self._group["obs"]["chrom"]["codes"]
        cuts, previous = [], None
        for a in range(0, self.n_obs, self.chunk):
            code = np.asarray(codes[a : a + self.chunk])
            new = np.r_[code[0] != previous, code[1:] != code[:-1]]
            cuts += [(a + i, int(code[i])) for i in np.flatnonzero(new)]
            previous = code[-1]
        bounds = [c[0] for c in cuts] + [self.n_obs]
        return [(chroms[code], start, stop)
                for (start, code), stop in zip(cuts, bounds[1:], strict=True)]  # fmt: skip

    def rows(self, key: str | None):
        """``X`` (``key=None``) or a layer as a zarr array: slicing rows reads them."""
        self.require_layers([key] if key is not None else [])
        return self._group["X" if key is None else f"layers/{key}"]

    def obsm(self, key: str, start: int, stop: int) -> pd.DataFrame:
        """Rows ``[start, stop)`` of the obsm DataFrame ``key`` (index: row numbers as str)."""
        import pandas as pd

        if key not in self.obsm_keys:
            raise ChipviInputError(f"{self.path} has no obsm {key!r} (obsm: {self.obsm_keys}).")
        g = self._group["obsm"][key]
        columns = list(g.attrs["column-order"])
        return pd.DataFrame(
            {c: np.asarray(g[c][start:stop]) for c in columns},
            index=pd.RangeIndex(start, stop).astype(str),
        )

    def run_starts(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start,)`` bool: where a chain of adjacent bins starts (as
        :func:`chipvi._bins.run_starts` on the whole ``obs``: a new chromosome or a gap)."""
        from .._bins import chain_starts

        g = self._group["obs"]
        lo = max(start - 1, 0)
        new = chain_starts(
            stop - lo,
            np.asarray(g["chrom"]["codes"][lo:stop]),
            np.asarray(g["start"][lo:stop]),
            np.asarray(g["end"][lo:stop]),
        )
        return new[start - lo :]

    def run_ranges(self, max_bins: int) -> list[tuple[int, int]]:
        """Row ranges of whole chains (never cut inside one), neighbouring chains joined
        while a range holds at most ``max_bins`` bins (a longer chain is a range alone).
        Read a chunk at a time."""
        cuts = np.concatenate(
            [a + np.flatnonzero(self.run_starts(a, min(a + self.chunk, self.n_obs)))
             for a in range(0, self.n_obs, self.chunk)]
        ).tolist()  # fmt: skip
        bounds = [*cuts, self.n_obs]
        ranges, a = [], 0
        for s, e in zip(bounds[1:-1], bounds[2:], strict=True):  # each chain after the first
            if e - a > max_bins:  # the chain [s, e) would overfill [a, s): close it
                ranges.append((a, s))
                a = s
        return [*ranges, (a, self.n_obs)] if self.n_obs else ranges

    def block(
        self, start: int, stop: int, layers: Sequence[str] | None = None, names: bool = True
    ) -> ad.AnnData:
        """Bins ``[start, stop)`` as an in-memory AnnData (``var`` and ``uns`` of the store);
        ``names=False``: row numbers as ``obs_names`` (see :meth:`obs`)."""
        import anndata as ad

        keys = self.layers if layers is None else list(layers)
        return ad.AnnData(
            X=self.array(None, start, stop),
            obs=self.obs(start, stop, names),
            var=self.var.copy(),
            layers={k: self.array(k, start, stop) for k in keys},
            uns={"chipvi": dict(self.uns.get("chipvi", {}))},
        )

    def block_ranges(self, size: int | None = None) -> list[tuple[int, int]]:
        """Row ranges of at most ``size`` bins that split no chromosome's grid of
        ``size * bin_size`` bp windows: each starts at a chromosome's first bin or at a bin
        starting on a multiple of ``size * bin_size`` (so aggregating by a factor dividing
        ``size`` never needs two blocks). Read a chunk at a time."""
        size = self.chunk if size is None else check_int("chunk_size", size, 1)
        step = size * self.bin_size
        g = self._group["obs"]
        codes, starts = g["chrom"]["codes"], g["start"]
        cuts: list[int] = []
        previous = None
        for a in range(0, self.n_obs, self.chunk):
            b = min(a + self.chunk, self.n_obs)
            code = np.asarray(codes[a:b])
            new = np.asarray(starts[a:b]) % step == 0
            new[1:] |= code[1:] != code[:-1]
            new[0] |= previous is None or code[0] != previous
            previous = code[-1]
            cuts += (a + np.flatnonzero(new)).tolist()
        bounds = [*cuts, self.n_obs]
        # Gaps (removed bins) can leave more than ``size`` rows between grid cuts: split them.
        ranges = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            ranges += [(s, min(s + size, b)) for s in range(a, b, size)]
        return ranges

    def _chroms(self) -> list[str]:
        """The chromosome categories of ``obs`` (genome order)."""
        return [str(c) for c in np.asarray(self._group["obs"]["chrom"]["categories"][:])]

    def to_memory(self) -> ad.AnnData:
        """The whole store as an in-memory AnnData (``anndata.read_zarr``, chromosome order
        of ``uns`` restored)."""
        import anndata as ad

        adata = ad.read_zarr(self.path)
        adata.uns = _chrom_order(dict(adata.uns), self._chroms())
        return adata


def _chrom_order(uns: dict, chroms: list[str]) -> dict:
    """``uns`` with ``["chipvi"]["chrom_sizes"]`` in genome order again.

    A zarr group lists its members in no set order, so the dict read back has lost the
    order it was written in (the BAM header's, which bins follow); ``obs["chrom"]``'s
    categories keep it.
    """
    info = uns.get("chipvi")
    if not isinstance(info, dict) or "chrom_sizes" not in info:
        return uns
    sizes = {str(c): int(n) for c, n in info["chrom_sizes"].items()}
    rank = {c: i for i, c in enumerate(chroms)}
    order = sorted(sizes, key=lambda c: (rank.get(c, len(rank)), c))
    return {**uns, "chipvi": {**info, "chrom_sizes": {c: sizes[c] for c in order}}}


def open_store(
    path: str | os.PathLike | BinStore,
    *,
    bin_size: int | None = None,
    layers: Sequence[str] = (),
) -> BinStore:
    """Open a bins store written by :func:`chipvi.read_bams` with ``out=`` (checked).

    Parameters
    ----------
    path
        The ``.zarr`` folder, or an open :class:`BinStore` (checked again).
    bin_size
        Refuse a store of another bin size.
    layers
        Refuse a store that lacks any of these layers.

    Returns
    -------
    BinStore
        Its ``var``, ``uns``, ``n_obs``; ``block(start, stop)`` reads bins as an AnnData.

    Examples
    --------
    >>> store = chipvi.io.open_store("bins.zarr")  # doctest: +SKIP
    >>> adata = store.block(0, 100_000)  # doctest: +SKIP
    """
    if isinstance(path, BinStore):
        path.require_layers(layers)
        if bin_size is not None and bin_size != path.bin_size:
            return BinStore(path.path, bin_size=bin_size)  # raises the usual message
        return path
    return BinStore(path, bin_size=bin_size, layers=layers)
