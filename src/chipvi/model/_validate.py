"""Input checks for ChIPVI: every problem is reported before anything is trained or written."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse

from .._errors import ChipviInputError


def dense(matrix) -> np.ndarray:
    """Dense ``numpy`` view of a layer (sparse layers are densified)."""
    return matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)


def get_layer(adata: AnnData, layer: str | None, what: str) -> np.ndarray:
    """Return ``adata.X`` (``layer=None``) or ``adata.layers[layer]`` as a dense array."""
    if layer is None:
        if adata.X is None:
            raise ChipviInputError(f"adata.X is empty; {what} are needed there.")
        return dense(adata.X)
    if layer not in adata.layers:
        raise ChipviInputError(
            f"adata.layers has no {layer!r} ({what}); available layers: {sorted(adata.layers)}. "
            "Build the AnnData with chipvi.read_bams or name the layer in setup_anndata."
        )
    return dense(adata.layers[layer])


def check_counts(values: np.ndarray, where: str, first_bin: int = 0) -> None:
    """Counts must be finite, non-negative integers (``first_bin``: the row number of
    ``values[0]``, for the message)."""
    if not np.issubdtype(values.dtype, np.number):
        raise ChipviInputError(f"{where} must be numeric counts, got dtype {values.dtype}.")
    if not np.all(np.isfinite(values)):
        raise ChipviInputError(f"{where} contains NaN or infinite values; counts must be finite.")
    if (values < 0).any():
        i, j = np.argwhere(values < 0)[0]
        raise ChipviInputError(
            f"{where} has a negative count ({values[i, j]}) at bin {first_bin + i}, library {j}."
        )
    if not np.issubdtype(values.dtype, np.integer) and not np.all(values == np.round(values)):
        i, j = np.argwhere(values != np.round(values))[0]
        raise ChipviInputError(
            f"{where} has a non-integer count ({values[i, j]}) at bin {first_bin + i}, "
            f"library {j}; "
            "ChIPVI models raw read counts."
        )


def check_finite(values: np.ndarray, where: str, first_bin: int = 0) -> None:
    """Covariates must be finite and non-negative."""
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.bool_):
        raise ChipviInputError(f"{where} must hold numbers (mean MAPQ), got dtype {values.dtype}.")
    if not np.all(np.isfinite(values)):
        i, j = np.argwhere(~np.isfinite(values))[0]
        raise ChipviInputError(
            f"{where} contains NaN or infinite values (first at bin {first_bin + i}, library {j})."
        )
    if (values < 0).any():
        raise ChipviInputError(f"{where} contains negative values; MAPQ is between 0 and 255.")


def check_bin_order(obs) -> None:
    """Bins must follow the genome: each chromosome's bins in one block, by increasing start,
    not overlapping (gaps are fine: they break the chain). Bins in another order would each
    start a chain of their own and the model would silently lose the neighbours' evidence."""
    if not {"chrom", "start", "end"} <= set(obs.columns) or len(obs) < 2:
        return
    codes = np.asarray(obs["chrom"].astype("category").cat.codes)
    start, end = obs["start"].to_numpy(), obs["end"].to_numpy()
    same = codes[1:] == codes[:-1]
    back = np.flatnonzero(same & (start[1:] < end[:-1]))
    blocks = 1 + int(np.count_nonzero(~same))
    if back.size == 0 and blocks == len(np.unique(codes)):
        return
    if back.size:
        i = int(back[0]) + 1
        what = f"bin {obs.index[i]!r} (row {i}) starts before the end of {obs.index[i - 1]!r}"
    else:
        seen, i = set(), 0
        for i in np.flatnonzero(np.r_[True, ~same]):
            if codes[i] in seen:
                break
            seen.add(codes[i])
        what = f"the bins of {obs['chrom'].iloc[i]!r} are split (again at row {i})"
    raise ChipviInputError(
        f"Bins are not in genomic order: {what}. ChIPVI's chain runs along the genome; sort the "
        "bins by chromosome and start and drop duplicates, e.g. "
        "adata = adata[adata.obs.sort_values(['chrom', 'start']).index].copy()."
    )


def check_var_column(adata: AnnData, key: str, what: str) -> None:
    if key not in adata.var.columns:
        raise ChipviInputError(
            f"adata.var has no {key!r} column ({what}); columns: {list(adata.var.columns)}."
        )


def read_arrays(adata: AnnData, keys: dict[str, str | None]) -> dict[str, np.ndarray]:
    """Read and check the four data layers named in ``keys`` (setup arguments)."""
    arrays = {
        "X": get_layer(adata, keys["layer"], "ChIP counts"),
        "control": get_layer(adata, keys["control_layer"], "matched control counts"),
        "mapq": get_layer(adata, keys["mapq_layer"], "mean ChIP MAPQ"),
        "control_mapq": get_layer(adata, keys["control_mapq_layer"], "mean control MAPQ"),
    }
    check_arrays(arrays, keys)
    check_reads(arrays["X"].sum(0), adata.var_names, keys)
    return arrays


def check_arrays(arrays: dict[str, np.ndarray], keys: dict, first_bin: int = 0) -> None:
    """Check rows of the four data arrays (from bin ``first_bin`` on)."""
    check_counts(arrays["X"], _where(keys), first_bin)
    check_counts(arrays["control"], f"layer {keys['control_layer']!r}", first_bin)
    check_finite(arrays["mapq"], f"layer {keys['mapq_layer']!r}", first_bin)
    check_finite(arrays["control_mapq"], f"layer {keys['control_mapq_layer']!r}", first_bin)


def check_reads(totals: np.ndarray, var_names, keys: dict) -> None:
    """Every library has reads somewhere (``totals``: ChIP reads per library)."""
    empty = np.flatnonzero(np.asarray(totals) == 0)
    if empty.size:
        names = [str(var_names[j]) for j in empty]
        raise ChipviInputError(
            f"{_where(keys)}: libraries {names} have no reads in any bin; check their BAMs "
            "and the region counted, or drop them (adata[:, mask])."
        )


def _where(keys: dict) -> str:
    return "adata.X" if keys["layer"] is None else f"layer {keys['layer']!r}"


def read_library_table(adata: AnnData, keys: dict[str, str]) -> dict[str, np.ndarray]:
    """Group labels and depths per library, checked."""
    check_var_column(adata, keys["group_key"], "biological group of each library")
    check_var_column(adata, keys["depth_key"], "reads of each ChIP library")
    check_var_column(adata, keys["control_depth_key"], "reads of each matched control")
    groups = adata.var[keys["group_key"]]
    if groups.isna().any() or (groups.astype(str) == "").any():
        raise ChipviInputError(f"adata.var[{keys['group_key']!r}] has empty group labels.")
    depth = adata.var[keys["depth_key"]].to_numpy(dtype=float)
    control_depth = adata.var[keys["control_depth_key"]].to_numpy(dtype=float)
    if not np.all(np.isfinite(depth)) or (depth <= 0).any():
        raise ChipviInputError(
            f"adata.var[{keys['depth_key']!r}] must be positive read totals, got {depth.tolist()}."
        )
    if not np.all(np.isfinite(control_depth)) or (control_depth < 0).any():
        raise ChipviInputError(
            f"adata.var[{keys['control_depth_key']!r}] must be >= 0, got {control_depth.tolist()}."
        )
    return {"group": groups.astype(str).to_numpy(), "depth": depth, "control_depth": control_depth}
