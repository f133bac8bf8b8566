"""Gene-expression association from a small GTF / BED and expression tables built here."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import chipvi
from _analysis_data import make_adata
from chipvi._bins import log_cpm
from chipvi._errors import ChipviInputError

N_GENES = 20


def _write_gtf(path, *, with_name=True, version=True):
    """Genes on chr1; gene i has its TSS in bin 2i (+ strand: start, - strand: end - 1)."""
    lines = []
    for i in range(N_GENES):
        tss = 2 * i * 200 + 50
        strand = "+" if i % 2 == 0 else "-"
        start, end = (tss, tss + 3000) if strand == "+" else (tss - 3000, tss)  # 0-based half-open
        start = max(start, 0)
        attrs = f'gene_id "G{i}{".7" if version else ""}";'
        if with_name:
            attrs += f' gene_name "N{i}";'
        lines.append(
            f"chr1\tt\tgene\t{start + 1}\t{end if strand == '+' else end + 1}\t.\t{strand}\t.\t{attrs}"
        )
        lines.append(f"chr1\tt\texon\t{start + 1}\t{start + 100}\t.\t{strand}\t.\t{attrs}")
    far = 'gene_id "G_far";' + (' gene_name "far";' if with_name else "")
    lines.append(f"chrUn\tt\tgene\t1\t100\t.\t+\t.\t{far}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data(tmp_path):
    adata = make_adata(seed=2)
    rng = np.random.default_rng(5)
    lfe = pd.DataFrame(rng.normal(size=(adata.n_obs, 2)), index=adata.obs_names, columns=["A", "B"])
    adata.obsm["lfe"] = lfe
    tss_bins = 2 * np.arange(N_GENES)
    expression = pd.DataFrame(
        {"A": np.exp(lfe["A"].to_numpy()[tss_bins]), "B": -lfe["B"].to_numpy()[tss_bins]},
        index=[f"G{i}" for i in range(N_GENES)],
    )
    return adata, _write_gtf(tmp_path / "genes.gtf"), expression


def test_promoter_association_raw_and_denoised(data):
    adata, gtf, expression = data
    summary = chipvi.tl.gene_expression_association(
        adata, gtf, expression, denoised="lfe", window=0
    )
    assert list(summary.index) == ["A", "B"]
    assert (summary["n_genes"] == N_GENES).all()
    assert summary.loc["A", "spearman_denoised"] == pytest.approx(1.0)
    assert summary.loc["B", "spearman_denoised"] == pytest.approx(-1.0)
    raw_a = log_cpm(adata).loc[:, ["A_1", "A_2"]].mean(axis=1).to_numpy()[2 * np.arange(N_GENES)]
    from scipy.stats import spearmanr

    assert summary.loc["A", "spearman_raw"] == pytest.approx(spearmanr(raw_a, expression["A"])[0])
    genes = adata.uns["chipvi_gene_association"]["genes"]
    # Version suffixes stripped ("G3.7" matches "G3"); the chrUn gene is not on the bins.
    assert "G3" in genes.index and "G_far" not in genes.index
    np.testing.assert_allclose(
        genes["A:denoised"], adata.obsm["lfe"]["A"].to_numpy()[2 * np.arange(N_GENES)]
    )


def test_window_gene_body_and_expression_containers(data, tmp_path):
    adata, gtf, expression = data
    wide = chipvi.tl.gene_expression_association(adata, gtf, expression, denoised="lfe", window=200)
    # ± 200 bp around the TSS covers 3 bins: the correlation is no longer perfect.
    assert wide.loc["A", "spearman_denoised"] < 1.0
    body = chipvi.tl.gene_expression_association(
        adata, gtf, expression, denoised="lfe", region="gene_body", window=0, key_added=None
    )
    assert body["n_genes"].iloc[0] == N_GENES
    # Same expression as an RNA AnnData (two samples per group, averaged) and inside a MuData.
    samples = np.vstack(
        [expression["A"], expression["A"], expression["B"] - 1, expression["B"] + 1]
    )
    rna = ad.AnnData(
        samples,
        obs=pd.DataFrame({"group": ["A", "A", "B", "B"]}, index=["a1", "a2", "b1", "b2"]),
        var=pd.DataFrame(index=expression.index),
    )
    mdata = chipvi.io.to_mudata(chip=adata, rna=rna)
    assert set(mdata.mod) == {"chip", "rna"}
    via_mudata = chipvi.tl.gene_expression_association(adata, gtf, mdata, denoised="lfe", window=0)
    assert via_mudata.loc["B", "spearman_denoised"] == pytest.approx(-1.0)
    # Gene names instead of ids, from a BED file.
    bed = tmp_path / "genes.bed"
    bed.write_text(
        "".join(f"chr1\t{400 * i + 50}\t{400 * i + 3050}\tN{i}\t0\t+\n" for i in range(N_GENES))
    )
    by_name = expression.set_axis([f"N{i}" for i in range(N_GENES)])
    got = chipvi.tl.gene_expression_association(
        adata, bed, by_name, denoised="lfe", window=0, groups="A"
    )
    assert list(got.index) == ["A"] and got.loc["A", "spearman_denoised"] == pytest.approx(1.0)


def test_gene_association_errors(data, tmp_path):
    adata, gtf, expression = data
    with pytest.raises(ChipviInputError, match=r"Only 0 of 20 expression genes matched"):
        chipvi.tl.gene_expression_association(
            adata, gtf, expression.set_axis([f"X{i}" for i in range(20)])
        )
    with pytest.raises(ChipviInputError, match="no 'gene_name' attribute"):
        chipvi.tl.gene_expression_association(
            adata,
            _write_gtf(tmp_path / "noname.gtf", with_name=False),
            expression,
            gene_key="gene_name",
        )
    with pytest.raises(ChipviInputError, match="Only 0 of 20"):
        chipvi.tl.gene_expression_association(adata, gtf, expression, strip_version=False)
    with pytest.raises(ChipviInputError, match="missing from the ChIP groups"):
        chipvi.tl.gene_expression_association(adata, gtf, expression, groups=["C"])
    with pytest.raises(ChipviInputError, match="No expression column"):
        chipvi.tl.gene_expression_association(adata, gtf, expression.set_axis(["x", "y"], axis=1))
    with pytest.raises(ChipviInputError, match="does not exist"):
        chipvi.tl.gene_expression_association(adata, tmp_path / "none.gtf", expression)
    with pytest.raises(ChipviInputError, match="'rna' modality"):
        chipvi.tl.gene_expression_association(adata, gtf, chipvi.io.to_mudata(chip=adata))
    with pytest.raises(ChipviInputError, match="must be an AnnData"):
        chipvi.io.to_mudata(chip=adata, rna=expression)
