"""Every tl function follows scanpy's storage convention: its result under ``key_added`` with
the parameters in ``adata.uns[key_added]["params"]``, ``var`` columns prefixed ``chipvi_``,
``key_added=None`` stores nothing, and everything stored survives ``.h5ad``."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import chipvi
from _analysis_data import ENRICHED, make_adata, truth_posterior, write_fragment_bam


def _genes(adata) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One gene per bin of chr1 (TSS at the bin start), expression = its group's truth."""
    obs = adata.obs[adata.obs["chrom"] == "chr1"]
    genes = pd.DataFrame(
        {"chrom": "chr1", "start": obs["start"].to_numpy(), "end": obs["end"].to_numpy(),
         "strand": "+", "gene_id": [f"g{i}" for i in range(len(obs))]}
    )  # fmt: skip
    lfe = adata.obsm["chipvi_group_lfe"].loc[obs.index]
    expr = pd.DataFrame(np.exp(lfe.to_numpy()), index=genes["gene_id"], columns=lfe.columns)
    return genes, expr


def _plain(params: dict) -> dict:
    """Lists come back from h5ad as arrays."""
    return {k: list(v) if isinstance(v, np.ndarray | list) else v for k, v in params.items()}


@pytest.fixture(scope="module")
def bam(tmp_path_factory):
    return write_fragment_bam(tmp_path_factory.mktemp("bam") / "chip.bam", n_background=3000)


def _run_every_tool(adata, bam, key_added):
    """Each tl function once, storing under ``key_added(name)``."""
    tl = chipvi.tl
    genes, expr = _genes(adata)
    regions = pd.DataFrame(
        [(c, f * 200, (last + 1) * 200) for c, f, last in ENRICHED["A"]],
        columns=["chrom", "start", "end"],
    )
    adata.var["bam"] = str(bam)
    tl.call_enriched_regions(adata, key_added=key_added("call_enriched_regions"))
    tl.differential_enrichment(adata, "A", "B", key_added=key_added("differential_enrichment"))
    tl.replicate_concordance(
        adata, denoised="chipvi_own_lfe", key_added=key_added("replicate_concordance")
    )
    tl.fingerprint(adata, key_added=key_added("fingerprint"))
    tl.frip(adata, regions, key_added=key_added("frip"))
    tl.gene_expression_association(
        adata, genes, expr, denoised="chipvi_group_lfe", window=0,
        key_added=key_added("gene_expression_association"),
    )  # fmt: skip
    tl.profile(adata, regions, key_added=key_added("profile"))
    tl.strand_cross_correlation(
        adata, max_shift=300, key_added=key_added("strand_cross_correlation")
    )


def test_every_tool_stores_result_and_params_under_key_added(bam, tmp_path):
    adata = truth_posterior(make_adata())
    _run_every_tool(adata, bam, key_added=lambda name: f"my_{name}")
    ran = [name.removeprefix("my_") for name in adata.uns if name.startswith("my_")]
    assert sorted(dir(chipvi.tl)) == sorted(["BROAD_DOMAINS", *ran])  # every tool was run
    for name in [k for k in adata.uns if k.startswith("my_")]:
        assert isinstance(adata.uns[name]["params"], dict), name
    params = adata.uns["my_call_enriched_regions"]["params"]
    assert params["q"] == 0.05 and params["level"] == "group"
    assert adata.uns["my_profile"]["params"]["upstream"] == 2000
    assert adata.uns["my_gene_expression_association"]["params"]["denoised"] == "chipvi_group_lfe"
    assert "my_differential_enrichment" in adata.obsm  # the per-bin table
    added = [c for c in adata.var.columns if c not in make_adata().var.columns]
    assert sorted(added) == ["chipvi_fragment_length", "chipvi_nsc", "chipvi_rsc", "my_frip"]
    path = tmp_path / "all.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    for name in [k for k in adata.uns if k.startswith("my_")]:
        assert _plain(back.uns[name]["params"]) == _plain(adata.uns[name]["params"]), name
    pd.testing.assert_frame_equal(
        back.uns["my_call_enriched_regions"]["regions"],
        adata.uns["my_call_enriched_regions"]["regions"],
        check_dtype=False,
    )


def test_key_added_none_stores_nothing(bam):
    adata = truth_posterior(make_adata())
    before = (set(adata.uns), set(adata.obsm), set(adata.var.columns) | {"bam"})
    _run_every_tool(adata, bam, key_added=lambda name: None)
    assert (set(adata.uns), set(adata.obsm), set(adata.var.columns)) == before
