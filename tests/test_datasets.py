"""Tests of the bundled real data set (chipvi.datasets.cssq_chr19)."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pysam
import pytest

import chipvi
from chipvi.datasets import cssq_chr19, cssq_chr19_samplesheet

# Read counts of the bundled slices and full-library totals, from the data's README.
READS = {
    "HESC_IP_R1.bam": 1691,
    "HESC_IP_R2.bam": 2184,
    "HSMM_IP_R1.bam": 9015,
    "HSMM_IP_R2.bam": 2961,
    "HESC_IN_R1.bam": 838,
    "HESC_IN_R2.bam": 314,
    "HSMM_IN_R1.bam": 798,
    "HSMM_IN_R2.bam": 825,
}
TOTALS = {
    "HESC_R1": (282252, 230532),
    "HESC_R2": (392885, 133898),
    "HSMM_R1": (890043, 201461),
    "HSMM_R2": (354181, 245937),
}


@pytest.fixture(scope="module")
def sheet():
    return pd.read_csv(cssq_chr19_samplesheet())


def test_samplesheet_columns_and_values(sheet):
    assert list(sheet.columns) == [
        "sample",
        "bam",
        "control",
        "target",
        "group",
        "replicate",
        "depth",
        "control_depth",
    ]
    assert list(sheet["sample"]) == list(TOTALS)
    assert list(sheet["group"]) == ["HESC", "HESC", "HSMM", "HSMM"]
    assert list(sheet["replicate"]) == [1, 2, 1, 2]
    assert set(sheet["target"]) == {"H3K4me3"}
    for row in sheet.itertuples():
        assert (row.depth, row.control_depth) == TOTALS[row.sample]
        assert row.bam == f"{row.group}_IP_R{row.replicate}.bam"
        assert row.control == f"{row.group}_IN_R{row.replicate}.bam"


def test_bams_present_indexed_and_complete(sheet):
    folder = cssq_chr19_samplesheet().parent
    for name in [*sheet["bam"], *sheet["control"]]:
        path = folder / name  # relative paths resolve against the sheet's folder
        assert path.with_name(name + ".bai").exists()
        with pysam.AlignmentFile(str(path)) as bam:
            assert bam.check_index()
            assert bam.header.to_dict()["HD"]["SO"] == "coordinate"
            stats = {s.contig: s.mapped for s in bam.get_index_statistics() if s.mapped}
            assert stats == {"chr19": READS[name]}
            assert sum(1 for _ in bam.fetch("chr19", 1_230_000, 1_410_000)) == READS[name]


def test_source_and_licence_recorded_with_checksums():
    folder = cssq_chr19_samplesheet().parent
    source = (folder / "SOURCE.md").read_text()
    assert "Artistic-2.0" in source and "CSSQ" in source and "ENCODE" in source
    sums = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", source, re.M)
    )
    assert set(sums) == {*READS, "chr19_regions.bed"}
    for name, digest in sums.items():  # the copied files are unchanged
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


@pytest.mark.skipif(not hasattr(chipvi, "read_bams"), reason="chipvi.read_bams not merged yet")
def test_cssq_chr19_contract_layout(sheet):
    adata = cssq_chr19(region=None)
    folder = cssq_chr19_samplesheet().parent
    assert list(adata.var_names) == list(sheet["sample"])
    assert list(adata.var["group"]) == list(sheet["group"])
    np.testing.assert_array_equal(adata.var["depth"], sheet["depth"])
    np.testing.assert_array_equal(adata.var["control_depth"], sheet["control_depth"])
    assert list(adata.obs["chrom"].cat.categories) == ["chr19"]
    with pysam.AlignmentFile(str(folder / sheet["bam"][0])) as bam:
        chr19 = bam.get_reference_length("chr19")
    assert adata.uns["chipvi"]["chrom_sizes"] == {"chr19": chr19}
    assert adata.n_obs == -(-chr19 // 200)
    assert adata.obs["end"].iloc[-1] == chr19
    assert adata.obs_names[0] == "chr19:0-200"
    assert adata.X.dtype == np.int32 and adata.layers["control"].dtype == np.int32
    assert adata.layers["mapq"].dtype == np.float32
    # Every read is counted once (no MAPQ filter by default).
    ip_reads = [READS[b] for b in sheet["bam"]]
    in_reads = [READS[c] for c in sheet["control"]]
    np.testing.assert_array_equal(adata.X.sum(axis=0), ip_reads)
    np.testing.assert_array_equal(adata.layers["control"].sum(axis=0), in_reads)
    assert adata.uns["chipvi"]["bin_size"] == 200


def test_cssq_chr19_default_keeps_the_sequenced_slice(sheet):
    full = cssq_chr19(region=None)
    adata = cssq_chr19()
    assert adata.obs_names[0] == "chr19:1236000-1236200"
    assert adata.obs_names[-1] == "chr19:1409800-1410000"
    assert adata.n_obs == (1_410_000 - 1_236_000) // 200
    # The slice holds every read: nothing outside it was sequenced.
    np.testing.assert_array_equal(adata.X.sum(axis=0), full.X.sum(axis=0))
    np.testing.assert_array_equal(
        adata.layers["control"].sum(axis=0), full.layers["control"].sum(axis=0)
    )
    assert adata.uns["chipvi"]["region"] == "chr19:1236000-1410000"


def test_aggregate_bins_on_the_bundled_data_as_loaded():
    """Issue 17.6: the bundled data is cropped to its slice and still aggregates."""
    from chipvi.pp import aggregate_bins

    adata = cssq_chr19()
    wide = aggregate_bins(adata, 400, copy=True)
    direct = cssq_chr19(400)
    # The slice starts and ends on the 400 bp grid: the same bins as binning at 400 bp.
    assert wide.obs_names.tolist() == direct.obs_names.tolist()
    assert wide.n_obs == (1_410_000 - 1_236_000) // 400
    np.testing.assert_array_equal(wide.X, direct.X)
    np.testing.assert_array_equal(wide.layers["control"], direct.layers["control"])
    np.testing.assert_allclose(wide.layers["mapq"], direct.layers["mapq"], rtol=1e-6)
    assert wide.uns["chipvi"]["aggregated_from"] == 200 and adata.n_obs == 870
