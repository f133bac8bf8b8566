"""An AnnData edited by hand before ChIPVI.setup_anndata: wrong dtypes, NaN, bins out of order.

Each defect is refused with a ChipviInputError that names it and says what to do; bins in
genomic order with gaps (a blacklist, a crop) are accepted and break the chain at the gaps.
"""

from __future__ import annotations

import numpy as np
import pytest

from _chipvi_synthetic import make_chip_adata
from chipvi import ChipviInputError
from chipvi.model import ChIPVI
from chipvi.model._chipvi import RUN_START_KEY


@pytest.fixture
def adata():
    return make_chip_adata(n_bins=400, seed=3)[0]


def _rows(adata, order):
    return adata[np.asarray(order)].copy()


@pytest.mark.parametrize(
    ("layer", "dtype", "match"),
    [
        (None, str, "adata.X must be numeric counts, got dtype <U"),
        (None, bool, "adata.X must be numeric counts, got dtype bool"),
        ("control", object, "layer 'control' must be numeric counts, got dtype object"),
        ("mapq", str, r"layer 'mapq' must hold numbers \(mean MAPQ\), got dtype <U"),
        ("control_mapq", bool, "layer 'control_mapq' must hold numbers"),
    ],
)
def test_wrong_dtype(adata, layer, dtype, match):
    if layer is None:
        adata.X = np.asarray(adata.X).astype(dtype)
    else:
        adata.layers[layer] = np.asarray(adata.layers[layer]).astype(dtype)
    with pytest.raises(ChipviInputError, match=match):
        ChIPVI.setup_anndata(adata)


@pytest.mark.parametrize("layer", [None, "control"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_infinite_counts(adata, layer, value):
    x = np.asarray(adata.X if layer is None else adata.layers[layer], np.float32).copy()
    x[17, 1] = value
    if layer is None:
        adata.X = x
    else:
        adata.layers[layer] = x
    where = "adata.X" if layer is None else f"layer '{layer}'"
    with pytest.raises(ChipviInputError, match=f"{where} contains NaN or infinite values"):
        ChIPVI.setup_anndata(adata)


def test_unsorted_bins_are_refused_with_the_fix(adata):
    n = adata.n_obs
    names = adata.obs_names
    shuffled = _rows(adata, np.random.default_rng(0).permutation(n))
    with pytest.raises(ChipviInputError, match="Bins are not in genomic order") as err:
        ChIPVI.setup_anndata(shuffled)
    assert "sort_values(['chrom', 'start'])" in str(err.value)
    # Reversed: the second row starts before the first one ends.
    with pytest.raises(ChipviInputError, match=rf"bin '{names[n - 2]}' \(row 1\) starts before"):
        ChIPVI.setup_anndata(_rows(adata, np.arange(n)[::-1]))
    # A bin twice.
    with pytest.warns(UserWarning, match="not unique"):  # anndata's, on the duplicated name
        twice = _rows(adata, np.r_[0:6, 5:n])
    with pytest.raises(ChipviInputError, match=rf"bin '{names[5]}' \(row 6\) starts before"):
        ChIPVI.setup_anndata(twice)
    # The fix the message gives restores the original order, and it is accepted.
    fixed = shuffled[shuffled.obs.sort_values(["chrom", "start"]).index].copy()
    assert list(fixed.obs_names) == list(names)
    ChIPVI.setup_anndata(fixed)


def test_chromosome_split_in_two_blocks_is_refused(adata):
    adata.obs["chrom"] = np.where(np.arange(adata.n_obs) < 200, "chr1", "chr2")
    adata.obs["start"] = np.r_[np.arange(200), np.arange(200)] * 200
    adata.obs["end"] = adata.obs["start"] + 200
    adata.obs_names = [f"{c}:{s}-{e}" for c, s, e in adata.obs[["chrom", "start", "end"]].values]
    ChIPVI.setup_anndata(adata)  # chr1 then chr2: fine
    order = np.r_[0:100, 200:300, 100:200, 300:400]  # chr1, chr2, chr1 again, chr2 again
    with pytest.raises(
        ChipviInputError, match=r"the bins of 'chr1' are split \(again at row 200\)"
    ):
        ChIPVI.setup_anndata(_rows(adata, order))


def test_sorted_bins_with_gaps_are_accepted_and_break_the_chain(adata):
    kept = _rows(adata, np.r_[0:100, 150:400])  # 50 bins removed (a blacklist)
    ChIPVI.setup_anndata(kept)
    starts = np.flatnonzero(kept.obs[RUN_START_KEY].to_numpy())
    assert starts.tolist() == [0, 100]
