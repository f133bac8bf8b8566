"""Bad input to ChIPVI: each gives a clear ChipviInputError (or a warning) before any work."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from _chipvi_synthetic import make_chip_adata
from chipvi import ChipviInputError
from chipvi.model import ChIPVI


@pytest.fixture
def adata():
    return make_chip_adata(n_bins=400, seed=3)[0]


def test_not_set_up(adata):
    with pytest.raises(ChipviInputError, match="setup_anndata"):
        ChIPVI(adata)


@pytest.mark.parametrize("layer", ["control", "mapq", "control_mapq"])
def test_missing_layer(adata, layer):
    del adata.layers[layer]
    with pytest.raises(ChipviInputError, match=repr(layer)):
        ChIPVI.setup_anndata(adata)


def test_missing_named_count_layer(adata):
    with pytest.raises(ChipviInputError, match="'raw'"):
        ChIPVI.setup_anndata(adata, layer="raw")


@pytest.mark.parametrize("column", ["group", "depth", "control_depth"])
def test_missing_var_column(adata, column):
    adata.var = adata.var.drop(columns=column)
    with pytest.raises(ChipviInputError, match=repr(column)):
        ChIPVI.setup_anndata(adata)


def test_non_integer_counts(adata):
    adata.X = adata.X.astype(np.float32)
    adata.X[5, 1] = 2.5
    with pytest.raises(ChipviInputError, match="non-integer count"):
        ChIPVI.setup_anndata(adata)


def test_negative_counts(adata):
    adata.X[7, 0] = -1
    with pytest.raises(ChipviInputError, match="negative count"):
        ChIPVI.setup_anndata(adata)


def test_negative_control(adata):
    adata.layers["control"][3, 0] = -4
    with pytest.raises(ChipviInputError, match="'control'.*negative"):
        ChIPVI.setup_anndata(adata)


@pytest.mark.parametrize(("layer", "value"), [("mapq", np.nan), ("control_mapq", np.inf)])
def test_non_finite_covariates(adata, layer, value):
    adata.layers[layer][11, 1] = value
    with pytest.raises(ChipviInputError, match=f"{layer!r} contains NaN or infinite"):
        ChIPVI.setup_anndata(adata)


def test_bad_depth(adata):
    adata.var["depth"] = [0, 100]
    with pytest.raises(ChipviInputError, match="positive read totals"):
        ChIPVI.setup_anndata(adata)


def test_single_library_group_warns_and_turns_consistency_off(adata):
    adata.var["group"] = ["A", "B"]
    ChIPVI.setup_anndata(adata)
    with pytest.warns(UserWarning, match="single library"):
        model = ChIPVI(adata)
    assert model.module.groups == ((0,), (1,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ChIPVI(adata, consistency=())  # no consistency asked for: nothing to warn about


def test_bad_options(adata):
    ChIPVI.setup_anndata(adata)
    with pytest.raises(ChipviInputError, match="technical"):
        ChIPVI(adata, technical="nope")
    with pytest.raises(ChipviInputError, match=r"control_slope.*'log_control_1kb'.*mu_r"):
        ChIPVI(adata, covariates="no_window")  # the default technical model needs the windows
    ChIPVI(adata, covariates="no_window", technical="mu_r")
    with pytest.raises(ChipviInputError, match="consistency terms"):
        ChIPVI(adata, consistency=("mse", "cosine"))
    with pytest.raises(ChipviInputError, match="one weight per"):
        ChIPVI(adata, consistency=("mse",), consistency_weight=(1.0, 2.0))
    with pytest.raises(ChipviInputError, match="consistency_weight must be >= 0"):
        ChIPVI(adata, consistency_weight=-1.0)
    for grid in ((0.0, 6.0, 40), (-3.0, 6.0, 4), (-3.0, np.nan, 40), "fine"):
        with pytest.raises(ChipviInputError, match="grid"):
            ChIPVI(adata, grid=grid)
    for stay in ((0.8, 1.0), (), (0.5,) * 5, ("x",)):
        with pytest.raises(ChipviInputError, match="stay"):
            ChIPVI(adata, stay=stay)
    with pytest.raises(ChipviInputError, match="enrichment_threshold"):
        ChIPVI(adata, enrichment_threshold=7.0)
    with pytest.raises(ChipviInputError, match="low_mapq"):
        ChIPVI(adata, low_mapq=-1)


def test_library_without_reads(adata):
    adata.X[:, 1] = 0
    with pytest.raises(ChipviInputError, match=r"libraries \['A_R2'\] have no reads"):
        ChIPVI.setup_anndata(adata)


def test_bad_batch_size_and_warmup(adata):
    ChIPVI.setup_anndata(adata)
    model = ChIPVI(adata)
    with pytest.raises(ChipviInputError, match="batch_size"):
        model.train(max_epochs=1, batch_size=0)
    with pytest.raises(ChipviInputError, match="warmup_fraction"):
        model.train(max_epochs=1, warmup_fraction=1.5)
    assert not model.is_trained_


def test_gpu_without_gpu(adata):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    ChIPVI.setup_anndata(adata)
    model = ChIPVI(adata)
    with pytest.raises(ChipviInputError, match="no CUDA GPU"):
        model.train(max_epochs=1, accelerator="gpu")
    assert not model.is_trained_
