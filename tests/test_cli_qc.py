"""`chipvi qc`: the per-library QC table (fingerprint, NSC/RSC, FRiP, concordance) and figures."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest

import chipvi
from chipvi.cli import main


@pytest.fixture(scope="module")
def binned(tmp_path_factory):
    out = tmp_path_factory.mktemp("qc")
    args = ["simulate", str(out / "sim"), "--seed", "3", "--n-chroms", "1", "--chrom-length",
            "200000", "--depths", "20000,8000", "-q"]  # fmt: skip
    assert main(args) == 0
    assert (
        main(["bin", str(out / "sim" / "samplesheet.csv"), "-o", str(out / "bins.h5ad"), "-q"]) == 0
    )
    return out


def test_qc_table_matches_the_tl_functions(binned, capsys):
    truth = pd.read_csv(binned / "sim" / "truth.tsv", sep="\t")
    peaks = truth.loc[truth["enriched_G1"], ["chrom", "start", "end"]]
    bed = binned / "truth.bed"
    peaks.to_csv(bed, sep="\t", header=False, index=False)

    status = main(["qc", str(binned / "bins.h5ad"), "--peaks", str(bed)])
    out = capsys.readouterr()
    assert status == 0, out.err
    folder = binned / "bins_qc"
    table = pd.read_csv(folder / "qc.tsv", sep="\t", index_col="library")
    adata = anndata.read_h5ad(binned / "bins.h5ad")
    assert list(table.index) == list(adata.var_names)
    # the same numbers as chipvi.tl computes (qc.tsv keeps 4 significant digits)
    fp = chipvi.tl.fingerprint(adata, key_added=None)
    np.testing.assert_allclose(table["auc"], fp["auc"], rtol=1e-3)
    frip = chipvi.tl.frip(adata, peaks, key_added=None)
    np.testing.assert_allclose(table["frip"], frip, rtol=1e-3)
    # simulated peaks hold far more than their share of bins' reads: enrichment is seen
    share = len(peaks) / adata.n_obs
    assert (table["frip"] > 1.5 * share).all()  # 45 % of bins hold ~77 % of reads
    cc = chipvi.tl.strand_cross_correlation(adata, key_added=None)
    np.testing.assert_allclose(table["nsc"], cc["nsc"], rtol=1e-3)
    assert (table["nsc"] > 1.05).all()  # ENCODE's threshold for enrichment
    conc = pd.read_csv(folder / "concordance.tsv", sep="\t")
    assert list(conc[["library_1", "library_2"]].iloc[0]) == ["G1_R1", "G1_R2"]
    assert 0 < conc["pearson_raw"].iloc[0] <= 1
    for name in ("fingerprint.png", "concordance_G1.png"):
        assert (folder / name).stat().st_size > 1000
    # the table is printed too
    assert "G1_R1" in out.out and "nsc" in out.out and "FRiP" not in out.out

    # an existing output folder is kept unless --overwrite
    assert main(["qc", str(binned / "bins.h5ad")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["qc", str(binned / "bins.h5ad"), "--overwrite", "--no-strand", "-q"]) == 0
    again = pd.read_csv(folder / "qc.tsv", sep="\t", index_col="library")
    assert "nsc" not in again and "frip" not in again


def test_qc_refuses_what_it_cannot_read(tmp_path, capsys):
    assert main(["qc", str(tmp_path / "nope.h5ad")]) == 2
    assert "neither a run directory nor an existing .h5ad" in capsys.readouterr().err


def test_qc_and_profile_of_a_store_equal_the_h5ad(binned):
    """`chipvi bin -o x.zarr`: qc and plot-profile read the store a chunk at a time and write
    what they write for the same bins as an .h5ad (NSC/RSC from the BAMs as there)."""
    sheet = str(binned / "sim" / "samplesheet.csv")
    store = binned / "store.zarr"
    assert main(["bin", sheet, "-o", str(store), "-q", "--chunk-size", "128"]) == 0
    truth = pd.read_csv(binned / "sim" / "truth.tsv", sep="\t")
    bed = binned / "peaks_g1.bed"
    truth.loc[truth["enriched_G1"], ["chrom", "start", "end"]].to_csv(
        bed, sep="\t", header=False, index=False
    )
    for source in (store, binned / "bins.h5ad"):
        assert main(["qc", str(source), "--peaks", str(bed), "-q", "--overwrite"]) == 0
        args = ["plot-profile", str(source), "-r", str(bed), "-q", "--overwrite"]
        assert main(args) == 0
    for name in ("qc.tsv", "concordance.tsv"):
        got, want = (pd.read_csv(binned / f"{s}_qc" / name, sep="\t") for s in ("store", "bins"))
        pd.testing.assert_frame_equal(got, want)
    got, want = (pd.read_csv(binned / f"{s}_profile" / "profile.tsv", sep="\t")
                 for s in ("store", "bins"))  # fmt: skip
    pd.testing.assert_frame_equal(got, want)
    assert {p.name for p in (binned / "store_qc").iterdir()} >= {"fingerprint.png",
                                                                  "concordance_G1.png"}  # fmt: skip
