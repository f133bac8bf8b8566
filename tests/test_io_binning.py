"""BAM → bins: counts and MAPQ against a slow pysam reference, layout, and bad inputs."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pysam
import pytest

from _bam_factory import Read, random_reads, write_bam
from chipvi import ChipviInputError
from chipvi.io import read_bam_bins, read_bams

CONTIGS = [("chrA", 5003), ("chrB", 2000), ("chrC", 777)]


def reference_bins(
    bam,
    bin_size=200,
    fragment_length=200,
    min_mapq=0,
    keep_duplicates=True,
    chroms=None,
    max_per_position=None,
):
    """Per-read pysam loop implementing the documented counting rule, one read at a time."""
    with pysam.AlignmentFile(str(bam)) as f:
        lengths = dict(zip(f.references, f.lengths, strict=True))
        kept = [c for c in f.references if chroms is None or c in chroms]
        counts = {c: np.zeros(-(-lengths[c] // bin_size), np.int64) for c in kept}
        mapq_sum = {c: np.zeros(-(-lengths[c] // bin_size), np.int64) for c in kept}
        at_position, seen = None, {}  # reads counted per (strand, TLEN) at the current POS
        for read in f.fetch(until_eof=True):
            if read.is_unmapped or read.is_secondary or read.is_supplementary or read.is_qcfail:
                continue
            if read.is_duplicate and not keep_duplicates:
                continue
            if read.mapping_quality < min_mapq or read.reference_name not in counts:
                continue
            proper = (
                read.is_paired
                and read.is_proper_pair
                and not read.mate_is_unmapped
                and read.next_reference_id == read.reference_id
                and read.template_length != 0
            )
            if proper:
                if not read.is_read1:
                    continue
                left = min(read.reference_start, read.next_reference_start)
                centre = left + abs(read.template_length) // 2
            else:
                if read.is_paired and read.is_read2 and not read.mate_is_unmapped:
                    continue
                if read.is_reverse:
                    start = read.reference_end - fragment_length
                else:
                    start = read.reference_start
                centre = start + fragment_length // 2
            if max_per_position is not None:
                position = (read.reference_id, read.reference_start)
                if position != at_position:
                    at_position, seen = position, {}
                key = (read.is_reverse, read.template_length)
                if seen.get(key, 0) >= max_per_position:
                    continue
                seen[key] = seen.get(key, 0) + 1
            length = lengths[read.reference_name]
            centre = min(max(centre, 0), length - 1)
            counts[read.reference_name][centre // bin_size] += 1
            mapq_sum[read.reference_name][centre // bin_size] += read.mapping_quality
    x = np.concatenate([counts[c] for c in kept])
    s = np.concatenate([mapq_sum[c] for c in kept])
    mean = np.where(x > 0, s / np.maximum(x, 1), 0.0)
    return x, mean


@pytest.fixture(scope="module")
def bams(tmp_path_factory):
    """A single-end and a paired-end BAM (several BGZF blocks each) and a sample sheet."""
    d = tmp_path_factory.mktemp("bams")
    rng = np.random.default_rng(7)
    se = write_bam(d / "se.bam", random_reads(rng, CONTIGS, 3000), CONTIGS)
    pe = write_bam(d / "pe.bam", random_reads(rng, CONTIGS, 1500, paired=True), CONTIGS)
    ctrl = write_bam(d / "input.bam", random_reads(rng, CONTIGS, 800), CONTIGS)
    sheet = d / "sheet.csv"
    sheet.write_text(
        "sample,bam,control,target,group,replicate\n"
        "s1,se.bam,input.bam,H3K4me3,g1,1\n"
        "s2,pe.bam,input.bam,H3K4me3,g1,2\n"
        "s3,se.bam,,H3K4me3,g2,1\n"
    )
    return {"se": se, "pe": pe, "ctrl": ctrl, "sheet": sheet, "dir": d}


SETTINGS = [
    {},
    {"min_mapq": 30, "keep_duplicates": False},
    {"bin_size": 37, "fragment_length": 1},
    {"bin_size": 1000, "fragment_length": 147, "chroms": ["chrC", "chrA"]},
    {"max_per_position": 1},
    {"max_per_position": 2, "keep_duplicates": False, "min_mapq": 10},
]


@pytest.mark.parametrize("kind", ["se", "pe"])
@pytest.mark.parametrize("settings", SETTINGS)
def test_counts_and_mapq_match_pysam_reference(bams, kind, settings):
    adata = read_bam_bins(bams[kind], threads=2, **settings)
    x_ref, mapq_ref = reference_bins(bams[kind], **settings)
    np.testing.assert_array_equal(adata.X[:, 0], x_ref)
    np.testing.assert_allclose(adata.layers["mapq"][:, 0], mapq_ref, rtol=1e-6)
    assert adata.var["depth"].iloc[0] == x_ref.sum() == adata.X.sum()
    assert x_ref.sum() > 100  # the fixture leaves plenty of reads after every filter


def test_threads_do_not_change_result(bams):
    one = read_bam_bins(bams["pe"], threads=1)
    two = read_bam_bins(bams["pe"], threads=4)
    np.testing.assert_array_equal(one.X, two.X)
    np.testing.assert_array_equal(one.layers["mapq"], two.layers["mapq"])


def test_hand_placed_reads(tmp_path):
    """Fragment centres computed by hand: strands, CIGAR end, clamping, pairs, filters."""
    contigs = [("c1", 1000)]
    reads = [
        Read("c1", 10, flag=0, mapq=10),  # forward: centre 10 + 100 -> bin 0
        Read("c1", 600, flag=0x10, cigar="20M300D30M", mapq=20),  # reverse, end 950 -> 850 -> 4
        Read("c1", 950, flag=0, mapq=30),  # forward near end: 1050 clamped to 999 -> bin 4
        Read("c1", 5, flag=0x10, cigar="10S40M", mapq=40),  # reverse, end 45: -55 -> 0 -> bin 0
        Read("c1", 300, 0x1 | 0x2 | 0x40 | 0x20, 50, "50M", "c1", 500, 250),  # midpoint 425 -> 2
        Read("c1", 500, 0x1 | 0x2 | 0x80 | 0x10, 7, "50M", "c1", 300, -250),  # mate 2: skipped
        Read("c1", 400, flag=0x400, mapq=60),  # duplicate: 500 -> bin 2 unless dropped
        Read("c1", 400, flag=0x100, mapq=60),  # secondary: dropped
        Read("c1", 400, flag=0x800, mapq=60),  # supplementary: dropped
        Read("c1", 400, flag=0x200, mapq=60),  # QC fail: dropped
        Read("c1", 400, flag=0x4, mapq=0, cigar=""),  # unmapped: dropped
    ]
    bam = write_bam(tmp_path / "hand.bam", reads, contigs)
    adata = read_bam_bins(bam, bin_size=200, fragment_length=200, threads=1)
    np.testing.assert_array_equal(adata.X[:, 0], [2, 0, 2, 0, 2])
    np.testing.assert_allclose(adata.layers["mapq"][:, 0], [25, 0, 55, 0, 25])
    no_dup = read_bam_bins(bam, keep_duplicates=False, min_mapq=15, threads=1)
    np.testing.assert_array_equal(no_dup.X[:, 0], [1, 0, 1, 0, 2])


def test_max_per_position_by_hand(tmp_path):
    """Same-position duplicates: per strand and template length, in file order."""
    contigs = [("c1", 1000)]
    reads = [
        *[Read("c1", 100, flag=0, mapq=10 * k) for k in range(1, 4)],  # 3 forward at 100
        *[Read("c1", 100, flag=0x10, mapq=60) for _ in range(2)],  # 2 reverse at 100
        Read("c1", 101, flag=0, mapq=5),  # another position
        # Two copies of one proper pair and one pair of another length, all mate 1 at 500.
        Read("c1", 500, 0x1 | 0x2 | 0x40 | 0x20, 20, "50M", "c1", 600, 150),
        Read("c1", 500, 0x1 | 0x2 | 0x40 | 0x20, 20, "50M", "c1", 600, 150),
        Read("c1", 500, 0x1 | 0x2 | 0x40 | 0x20, 20, "50M", "c1", 700, 250),
    ]
    bam = write_bam(tmp_path / "dups.bam", reads, contigs)
    everything = read_bam_bins(bam, bin_size=200, threads=1)
    # Centres: forward at 100 and 101 -> 200, 201 (bin 1); reverse at 100, end 150 -> 50
    # (bin 0); pairs at 500 of TLEN 150 -> 575 (bin 2), of TLEN 250 -> 625 (bin 3).
    np.testing.assert_array_equal(everything.X[:, 0], [2, 4, 2, 1, 0])
    one = read_bam_bins(bam, bin_size=200, threads=1, max_per_position=1)
    np.testing.assert_array_equal(one.X[:, 0], [1, 2, 1, 1, 0])
    np.testing.assert_allclose(one.layers["mapq"][:, 0], [60, 7.5, 20, 20, 0])  # first kept
    two = read_bam_bins(bam, bin_size=200, threads=1, max_per_position=2)
    np.testing.assert_array_equal(two.X[:, 0], [2, 3, 2, 1, 0])
    assert one.uns["chipvi"]["max_per_position"] == 1
    assert everything.uns["chipvi"]["max_per_position"] is None


@pytest.mark.parametrize(
    ("n_reads", "genome", "expected"),
    # 0.25 reads per position and strand: P(X > 3) = 1.3e-4, P(X > 4) = 6.6e-6.
    [(500_000, 1_000_000, 4), (10_000_000, 3_000_000_000, 1), (0, 1000, 1)],
)
def test_auto_max_per_position_rule(n_reads, genome, expected):
    from chipvi.io._binning import auto_max_per_position

    assert auto_max_per_position(n_reads, genome) == expected


def test_max_per_position_auto_matches_its_integer(bams):
    from chipvi.io._binning import auto_max_per_position

    auto = read_bams(bams["sheet"], max_per_position="auto", progress=False, threads=2)
    table = auto.uns["chipvi"]["max_per_position_used"]
    used = dict(zip(table["bam"], table["max_per_position"], strict=True))
    assert auto.uns["chipvi"]["max_per_position"] == "auto"
    with pysam.AlignmentFile(str(bams["se"])) as f:
        n_mapped = f.mapped
    genome = sum(length for _, length in CONTIGS)
    assert used[str(bams["se"])] == auto_max_per_position(n_mapped, genome)
    for j, bam in enumerate(auto.var["bam"]):
        x_ref, _ = reference_bins(bam, max_per_position=used[bam])
        np.testing.assert_array_equal(auto.X[:, j], x_ref)


def test_max_per_position_auto_needs_index_counts(bams):
    """An index without mapped-read counts: 'auto' says what to do instead of guessing."""
    from dataclasses import replace

    from chipvi.io._bam import open_bam
    from chipvi.io._binning import _resolve_for_file, check_read_params

    info = open_bam(bams["se"])
    no_counts = replace(info, n_mapped=np.full_like(info.n_mapped, -1))
    params = check_read_params(200, 200, 0, True, "auto")
    with pytest.raises(ChipviInputError, match=r"se.bam.*samtools index.*integer"):
        _resolve_for_file(params, no_counts, info.contigs)
    assert _resolve_for_file(params, info, info.contigs).max_per_position >= 1


def test_record_larger_than_working_buffer(tmp_path):
    """A 300 kb read (one record spanning several BGZF blocks) is parsed intact."""
    contigs = [("c1", 1_000_000)]
    reads = [Read("c1", 1000, cigar="300000M"), Read("c1", 2000, flag=0x10, cigar="300000M")]
    reads += [Read("c1", 500_000 + i) for i in range(10)]
    bam = write_bam(tmp_path / "long.bam", reads, contigs)
    adata = read_bam_bins(bam, bin_size=1000, threads=1)
    x_ref, _ = reference_bins(bam, bin_size=1000)
    np.testing.assert_array_equal(adata.X[:, 0], x_ref)
    assert adata.X.sum() == 12


def test_csi_index(bams, tmp_path):
    bam = tmp_path / "csi.bam"
    shutil.copy(bams["se"], bam)
    pysam.index("-c", str(bam))
    assert (tmp_path / "csi.bam.csi").exists() and not (tmp_path / "csi.bam.bai").exists()
    np.testing.assert_array_equal(read_bam_bins(bam).X, read_bam_bins(bams["se"]).X)


@pytest.mark.parametrize("kind", ["bai", "csi"])
def test_truncated_index_is_named(bams, tmp_path, kind):
    """An index cut short anywhere (header, bins, chunks, linear index) is a clear error."""
    bam = tmp_path / "cut.bam"
    shutil.copy(bams["se"], bam)
    pysam.index(*(["-c"] if kind == "csi" else []), str(bam))
    index = tmp_path / f"cut.bam.{kind}"
    data = index.read_bytes()
    if kind == "csi":
        data = gzip.decompress(data)
    # (The last 8 bytes, the count of unplaced reads, are optional.)
    for cut in (len(data) - 12, len(data) // 2, 20):
        if kind == "csi":
            index.write_bytes(gzip.compress(data[:cut]))
        else:
            index.write_bytes(data[:cut])
        with pytest.raises(
            ChipviInputError, match=rf"{index.name} is corrupt.*index the BAM again"
        ):
            read_bam_bins(bam)


def test_layout_matches_contract(bams):
    adata = read_bams(bams["sheet"], bin_size=200, chroms=["chrC", "chrA"], progress=False)
    lengths = dict(CONTIGS)
    # obs: header order (not the order given), every bin from 0, last one ends at the chrom end.
    assert list(adata.obs["chrom"].cat.categories) == ["chrA", "chrC"]
    assert adata.n_obs == -(-5003 // 200) + -(-777 // 200)
    assert adata.obs_names[0] == "chrA:0-200" and adata.obs_names[-1] == "chrC:600-777"
    for chrom, part in adata.obs.groupby("chrom", observed=True):
        assert part["start"].iloc[0] == 0 and part["end"].iloc[-1] == lengths[chrom]
        np.testing.assert_array_equal(part["start"].to_numpy()[1:], part["end"].to_numpy()[:-1])
    assert adata.obs["start"].dtype == np.int64 and adata.obs["end"].dtype == np.int64
    assert list(adata.obs_names) == [
        f"{c}:{s}-{e}"
        for c, s, e in zip(adata.obs["chrom"], adata.obs["start"], adata.obs["end"], strict=True)
    ]
    assert adata.obs_names.is_unique
    # read_bams skips anndata's duplicate-name scan for its own construction only.
    import anndata as ad

    assert ad.settings.check_uniqueness is True
    # var
    assert list(adata.var_names) == ["s1", "s2", "s3"]
    for column in (
        "sample",
        "target",
        "group",
        "replicate",
        "depth",
        "control",
        "control_depth",
        "bam",
        "control_bam",
    ):
        assert column in adata.var.columns, column
    assert list(adata.var["control"]) == ["input", "input", ""]
    assert adata.var["bam"].iloc[0] == str(bams["se"].absolute())
    assert adata.var["control_bam"].iloc[2] == ""
    assert adata.var["depth"].dtype == np.int64 and adata.var["control_depth"].dtype == np.int64
    # X and layers
    assert isinstance(adata.X, np.ndarray) and adata.X.dtype == np.int32
    assert adata.layers["mapq"].dtype == np.float32
    assert adata.layers["control"].dtype == np.int32
    assert adata.layers["control_mapq"].dtype == np.float32
    uns = adata.uns["chipvi"]
    assert uns["bin_size"] == 200 and uns["fragment_length"] == 200
    assert uns["chrom_sizes"] == {"chrA": 5003, "chrC": 777}
    assert uns["min_mapq"] == 0 and uns["keep_duplicates"] is True and uns["version"]


def test_samplesheet_shared_and_empty_control(bams, tmp_path):
    adata = read_bams(bams["sheet"], min_mapq=1, progress=False, threads=2)
    se, _ = reference_bins(bams["se"], min_mapq=1)
    pe, _ = reference_bins(bams["pe"], min_mapq=1)
    ctrl, ctrl_mapq = reference_bins(bams["ctrl"], min_mapq=1)
    np.testing.assert_array_equal(adata.X[:, 0], se)
    np.testing.assert_array_equal(adata.X[:, 1], pe)
    np.testing.assert_array_equal(adata.X[:, 2], se)
    # One control serves s1 and s2; s3 has none.
    for j in (0, 1):
        np.testing.assert_array_equal(adata.layers["control"][:, j], ctrl)
        np.testing.assert_allclose(adata.layers["control_mapq"][:, j], ctrl_mapq, rtol=1e-6)
    assert not adata.layers["control"][:, 2].any() and not adata.layers["control_mapq"][:, 2].any()
    # Totals conserved.
    np.testing.assert_array_equal(adata.var["depth"], adata.X.sum(axis=0))
    np.testing.assert_array_equal(adata.var["control_depth"], [ctrl.sum(), ctrl.sum(), 0])


def test_depth_override_and_dataframe_sheet(bams):
    from chipvi.io import read_samplesheet

    sheet = read_samplesheet(bams["sheet"])
    sheet["depth"] = pd.array([1_000_000, None, 5], dtype="Int64")
    adata = read_bams(sheet, progress=False)
    assert list(adata.var["depth"]) == [1_000_000, adata.X[:, 1].sum(), 5]
    assert adata.uns["chipvi"]["samplesheet"] == ""


def test_missing_index_error_and_index_true(bams, tmp_path):
    bam = tmp_path / "noindex.bam"
    shutil.copy(bams["se"], bam)
    with pytest.raises(ChipviInputError, match=r"no index.*samtools index.*index=True"):
        read_bam_bins(bam)
    adata = read_bam_bins(bam, index=True)
    np.testing.assert_array_equal(adata.X, read_bam_bins(bams["se"]).X)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noindex.bam"]  # nothing written


def test_unsorted_bam_says_sort(tmp_path):
    reads = [Read("c1", 500), Read("c1", 10)]
    bam = write_bam(
        tmp_path / "u.bam", reads, [("c1", 1000)], sort_order="unsorted", sort=False, index=False
    )
    with pytest.raises(ChipviInputError, match="not coordinate-sorted.*samtools sort"):
        read_bam_bins(bam, index=True)
    # No @HD line and out of order: indexing fails, and the message still says to sort.
    bam2 = write_bam(
        tmp_path / "u2.bam", reads, [("c1", 1000)], sort_order=None, sort=False, index=False
    )
    with pytest.raises(ChipviInputError, match="samtools sort"):
        read_bam_bins(bam2, index=True)


def test_missing_and_unreadable_bam(tmp_path, bams):
    with pytest.raises(ChipviInputError, match="does not exist"):
        read_bam_bins(tmp_path / "nope.bam")
    text = tmp_path / "text.bam"
    text.write_text("not a bam\n")
    with pytest.raises(ChipviInputError, match="not a BAM file"):
        read_bam_bins(text)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.bam"
        shutil.copy(bams["se"], locked)
        locked.chmod(0)
        with pytest.raises(ChipviInputError, match="cannot be read"):
            read_bam_bins(locked)


def test_truncated_bam(bams, tmp_path):
    bam = tmp_path / "cut.bam"
    bam.write_bytes(bams["se"].read_bytes()[:-28])
    shutil.copy(str(bams["se"]) + ".bai", str(bam) + ".bai")
    with pytest.raises(ChipviInputError, match="truncated"):
        read_bam_bins(bam)


def test_corrupt_block(bams, tmp_path):
    data = bytearray(bams["se"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    bam = tmp_path / "corrupt.bam"
    bam.write_bytes(bytes(data))
    shutil.copy(str(bams["se"]) + ".bai", str(bam) + ".bai")
    with pytest.raises(ChipviInputError, match="corrupt"):
        read_bam_bins(bam)


def test_chip_and_control_with_different_contigs(bams, tmp_path):
    other = write_bam(tmp_path / "other.bam", [Read("chrA", 10)], [("chrA", 5003), ("chrB", 2100)])
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"sample,bam,control,target,group,replicate\ns1,{bams['se']},{other},t,g,1\n")
    with pytest.raises(
        ChipviInputError, match=r"different references \(chrB: length 2000 vs 2100\)"
    ):
        read_bams(sheet, progress=False)
    # Restricted to a chromosome both agree on, it works.
    adata = read_bams(sheet, chroms=["chrA"], progress=False)
    assert adata.layers["control"].sum() == 1


@pytest.mark.parametrize("bin_size", [0, -200, 2.5, 200.0, True, "200"])
def test_bad_bin_size(bams, bin_size):
    with pytest.raises(ChipviInputError, match="bin_size"):
        read_bam_bins(bams["se"], bin_size=bin_size)
    with pytest.raises(ChipviInputError, match="bin_size"):
        read_bams(bams["sheet"], bin_size=bin_size)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fragment_length": 0}, "fragment_length"),
        ({"min_mapq": 256}, "min_mapq"),
        ({"threads": 0}, "threads"),
        ({"max_per_position": 0}, "max_per_position"),
        ({"max_per_position": 1.5}, "max_per_position"),
        ({"max_per_position": "many"}, "max_per_position"),
    ],
)
def test_bad_parameters(bams, kwargs, match):
    with pytest.raises(ChipviInputError, match=match):
        read_bam_bins(bams["se"], **kwargs)


def test_no_reads_left_after_filters(tmp_path):
    bam = write_bam(tmp_path / "low.bam", [Read("c1", 10, mapq=5)], [("c1", 1000)])
    with pytest.raises(ChipviInputError, match=r"No reads of .*low.bam.*min_mapq=6"):
        read_bam_bins(bam, min_mapq=6)


def test_unknown_chroms(bams):
    with pytest.raises(ChipviInputError, match=r"\['chr19'\] are not in the header"):
        read_bams(bams["sheet"], chroms=["chrA", "chr19"], progress=False)


def test_missing_blacklist_file(bams, tmp_path):
    with pytest.raises(ChipviInputError, match=r"BED file .*none.bed does not exist"):
        read_bams(bams["sheet"], blacklist=tmp_path / "none.bed", progress=False)


def test_blacklist_removes_overlapping_bins_only(bams, tmp_path):
    bed = tmp_path / "blacklist.bed"
    bed.write_text("chrA\t250\t401\nchrC\t700\t777\n")
    full = read_bams(bams["sheet"], progress=False)
    kept = read_bams(bams["sheet"], blacklist=bed, progress=False)
    removed = {"chrA:200-400", "chrA:400-600", "chrC:600-777"}
    assert set(full.obs_names) - set(kept.obs_names) == removed
    assert kept.n_obs == full.n_obs - 3
    np.testing.assert_array_equal(kept.X, full[kept.obs_names].X)
    np.testing.assert_array_equal(kept.layers["control"], full[kept.obs_names].layers["control"])
    assert kept.uns["chipvi"]["filter_blacklist"]["n_bins_removed"] == 3


def test_region_keeps_the_bins_of_one_region_on_the_genome_grid(bams):
    from chipvi.pp import aggregate_bins

    whole = read_bams(bams["sheet"], chroms=["chrA"], progress=False)
    crop = read_bams(bams["sheet"], region="chrA:1,050-3,210", progress=False)
    # Bins overlapping [1050, 3210) on the 200 bp grid from 0: 1000-1200 ... 3200-3400.
    assert crop.obs_names[0] == "chrA:1000-1200" and crop.obs_names[-1] == "chrA:3200-3400"
    assert crop.n_obs == 12
    np.testing.assert_array_equal(crop.X, whole[crop.obs_names].X)
    np.testing.assert_array_equal(crop.layers["control"], whole[crop.obs_names].layers["control"])
    np.testing.assert_array_equal(crop.layers["mapq"], whole[crop.obs_names].layers["mapq"])
    assert crop.uns["chipvi"]["region"] == "chrA:1050-3210"
    assert crop.uns["chipvi"]["chrom_sizes"] == {"chrA": 5003}
    assert list(crop.obs["chrom"].cat.categories) == ["chrA"]
    np.testing.assert_array_equal(crop.var["depth"], whole.var["depth"])  # the chromosome's reads
    # A bare chromosome name is the whole chromosome; chroms naming the same one is accepted.
    same = read_bams(bams["sheet"], region="chrC", chroms="chrC", progress=False)
    assert same.n_obs == 4 and same.obs_names[-1] == "chrC:600-777"
    # Aggregating the crop gives the bins of a crop read at the wider size, cut at the region.
    wide = aggregate_bins(crop, 400, copy=True)
    assert wide.obs_names.tolist()[:2] == ["chrA:1000-1200", "chrA:1200-1600"]
    assert wide.obs_names[-1] == "chrA:3200-3400"
    np.testing.assert_array_equal(wide.X.sum(axis=0), crop.X.sum(axis=0))
    whole400 = aggregate_bins(whole, 400, copy=True)
    np.testing.assert_array_equal(wide["chrA:1200-1600"].X, whole400["chrA:1200-1600"].X)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"region": "chrZ:1-100"}, r"region .*'chrZ:1-100': chromosome 'chrZ' is not in the"),
        ({"region": "chrZ"}, r"chromosome 'chrZ' is not in the"),
        ({"region": "chrA:100"}, r"'chrA:100' does not parse; write it as 'chrom:start-end'"),
        ({"region": "chrA:500-100"}, r"end must be greater than start"),
        ({"region": "chrA:0-5,004"}, r"lies outside chrA \(length 5,003\); end must be <= 5,003"),
        ({"region": 7}, r"region must be a string"),
        ({"region": "chrA:0-100", "chroms": ["chrB"]}, r"lies on chrA but chroms=\['chrB'\]"),
    ],
)
def test_bad_region(bams, kwargs, match):
    with pytest.raises(ChipviInputError, match=match):
        read_bams(bams["sheet"], progress=False, **kwargs)


def _sheet_files(sheet_path):
    from chipvi.io import read_samplesheet

    sheet = read_samplesheet(sheet_path)
    return sheet, list(dict.fromkeys([*sheet["bam"], *[c for c in sheet["control"] if c]]))


def _assert_matches_reference(adata, sheet, **settings):
    for j, (chip, ctrl) in enumerate(zip(sheet["bam"], sheet["control"], strict=True)):
        x_ref, mapq_ref = reference_bins(chip, **settings)
        np.testing.assert_array_equal(adata.X[:, j], x_ref)
        np.testing.assert_allclose(adata.layers["mapq"][:, j], mapq_ref, rtol=1e-6)
        c_ref, cmapq_ref = reference_bins(ctrl, **settings)
        np.testing.assert_array_equal(adata.layers["control"][:, j], c_ref)
        np.testing.assert_allclose(adata.layers["control_mapq"][:, j], cmapq_ref, rtol=1e-6)
        assert x_ref.sum() > 0 and c_ref.sum() > 0


@pytest.mark.parametrize(
    "settings", [{}, {"min_mapq": 20, "bin_size": 1000, "fragment_length": 150}]
)
def test_bundled_real_bams_match_reference(settings):
    from chipvi.datasets import cssq_chr19_samplesheet

    sheet_path = cssq_chr19_samplesheet()
    adata = read_bams(sheet_path, chroms=["chr19"], progress=False, **settings)
    sheet, _ = _sheet_files(sheet_path)
    _assert_matches_reference(adata, sheet, chroms=["chr19"], **settings)
    # The sheet's depth columns (totals of the full libraries) override the counted reads.
    np.testing.assert_array_equal(adata.var["depth"], sheet["depth"].astype(np.int64))
    np.testing.assert_array_equal(
        adata.var["control_depth"], sheet["control_depth"].astype(np.int64)
    )


@pytest.mark.parametrize(
    ("paired", "max_per_position"), [(False, None), (True, None), (False, 1), (True, 1)]
)
def test_simulated_bams_match_reference(tmp_path, paired, max_per_position):
    from chipvi.datasets import simulate

    sim = simulate(
        tmp_path,
        seed=5,
        n_chroms=2,
        chrom_length=60_000,
        depths=(8_000, 3_000),
        control_depths=(4_000, 2_000),
        paired=paired,
    )
    settings = {"keep_duplicates": False, "max_per_position": max_per_position}
    adata = read_bams(sim.samplesheet, progress=False, threads=2, **settings)
    sheet, _ = _sheet_files(sim.samplesheet)
    _assert_matches_reference(adata, sheet, **settings)
    np.testing.assert_array_equal(adata.var["depth"], adata.X.sum(axis=0))


def test_corrupt_record_lengths(tmp_path):
    """A record whose CIGAR would run past its end is reported, not read out of bounds."""
    import zlib

    written = write_bam(tmp_path / "ok.bam", [Read("c1", 10), Read("c1", 20)], [("c1", 1000)])
    # Uncompressed BGZF (stored deflate blocks): bytes can be patched in place, index stays valid.
    bam = tmp_path / "bad.bam"
    pysam.view("-u", "-o", str(bam), str(written), catch_stdout=False)
    pysam.index(str(bam))
    with pysam.AlignmentFile(str(bam)) as f:
        offset = f.tell()  # virtual offset of the first record
    coffset, uoffset = offset >> 16, offset & 0xFFFF
    raw = bytearray(bam.read_bytes())
    bsize = int.from_bytes(raw[coffset + 16 : coffset + 18], "little") + 1
    payload = coffset + 18 + 5  # after the BGZF header and the stored-block header
    assert raw[coffset + 18] & 0x06 == 0  # BTYPE 00: stored
    raw[payload + uoffset + 16 : payload + uoffset + 18] = (60000).to_bytes(2, "little")
    data = raw[payload : coffset + bsize - 8]
    raw[coffset + bsize - 8 : coffset + bsize - 4] = zlib.crc32(data).to_bytes(4, "little")
    bam.write_bytes(bytes(raw))
    with (
        pytest.raises(ChipviInputError, match="corrupt BAM record"),
        pytest.warns(UserWarning, match="older than"),  # the BAM changed after indexing
    ):
        read_bam_bins(bam)


@pytest.mark.parametrize("chunk", [1, 3, 1 << 16])
@pytest.mark.parametrize("bin_size", [1, 7, 200, 10_000])
def test_bin_names_equal_fstring_definition(bin_size, chunk, monkeypatch):
    """The compiled name builder writes exactly f"{chrom}:{start}-{end}" for every bin, also
    when its pieces start or end inside a chromosome or span several."""
    from chipvi import _bins
    from chipvi._bins import bin_names, bin_obs

    monkeypatch.setattr(_bins, "_NAME_CHUNK", chunk)

    # Odd lengths, a chromosome shorter than a bin, digit-count boundaries, non-ASCII names.
    contigs = [("chr1", 10_001), ("c", 9), ("chrUn_KI270742v1", 999), ("chrß-é", 100), ("x", 1)]
    names = bin_names(contigs, bin_size)
    expected = [
        f"{chrom}:{start}-{min(start + bin_size, length)}"
        for chrom, length in contigs
        for start in range(0, length, bin_size)
    ]
    assert names.dtype == object and all(type(n) is str for n in names[:50])
    assert names.tolist() == expected
    obs = bin_obs(contigs, bin_size)
    assert obs.index.tolist() == expected and obs.index.dtype == object
    starts = [int(n.rsplit(":", 1)[1].split("-")[0]) for n in expected]
    np.testing.assert_array_equal(obs["start"].to_numpy(), starts)
    assert obs["start"].dtype == np.int64 and obs["end"].dtype == np.int64


def test_bin_names_are_unique_even_with_colons_in_contig_names():
    """read_bams skips anndata's duplicate-name scan, so uniqueness must hold by construction:
    names split at their last ":" (HLA contigs hold colons), and repeated contigs are refused."""
    from chipvi._bins import bin_obs

    contigs = [("HLA-A*01:01", 450), ("HLA-A*01", 450), ("a:1", 300), ("a", 300)]
    obs = bin_obs(contigs, 100)
    assert obs.index.is_unique and len(obs) == 5 + 5 + 3 + 3
    with pytest.raises(ChipviInputError, match=r"\['chr2'\] appear more than once"):
        bin_obs([("chr2", 500), ("chr1", 400), ("chr2", 500)], 100)


def test_bin_names_of_no_bins():
    from chipvi._bins import bin_names, bin_obs

    assert bin_names([], 200).tolist() == []
    obs = bin_obs([], 200)
    assert len(obs) == 0 and list(obs.columns) == ["chrom", "start", "end"]


def test_count_matrices_are_the_anndata_arrays(bams):
    """X and the layers are built before counting and filled in place: no stale zeros."""
    adata = read_bams(bams["sheet"], progress=False, threads=2)
    se, _ = reference_bins(bams["se"])
    ctrl, _ = reference_bins(bams["ctrl"])
    np.testing.assert_array_equal(adata.X[:, 2], se)
    np.testing.assert_array_equal(adata.layers["control"][:, 0], ctrl)
    assert (
        adata.var["depth"].tolist()[2] == se.sum()
        and adata.var["control_depth"].iloc[0] == ctrl.sum()
    )
    assert list(adata.var.columns)[:5] == ["sample", "target", "group", "replicate", "depth"]


# --------------------------------------------------------------------------------------------
# Chromosomes split between tasks at record starts listed by the index
# --------------------------------------------------------------------------------------------
LONG_CONTIGS = [("chrA", 300_000), ("chrB", 120_000)]


@pytest.fixture(scope="module")
def long_bams(tmp_path_factory):
    """BAMs whose chromosomes span many index bins (so many chunk starts) and BGZF blocks:
    written by htslib (pysam) and by chipvi's own simulator (records straddle blocks)."""
    from chipvi.datasets import simulate

    d = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(11)
    se = write_bam(d / "se.bam", random_reads(rng, LONG_CONTIGS, 12_000), LONG_CONTIGS)
    pe = write_bam(d / "pe.bam", random_reads(rng, LONG_CONTIGS, 6_000, paired=True), LONG_CONTIGS)
    sim = simulate(
        d / "sim",
        seed=3,
        n_chroms=1,
        chrom_length=400_000,
        n_groups=1,
        n_replicates=1,
        depths=(10_000,),
        control_depths=(1_000,),
        paired=True,
    )
    csi = d / "pe_csi.bam"
    shutil.copy(pe, csi)
    pysam.index("-c", "-m", "12", str(csi))  # CSI: no linear index; bins carry loffsets
    return {"se": se, "pe": pe, "csi": csi, "sim": Path(sim.samplesheet).parent / "G1_R1.bam"}


def _count_pieces(info, tid, length, params, pieces):
    from chipvi.io._binning import _count_piece

    n_bins = -(-length // params.bin_size)
    parts = [_count_piece(info, tid, length, params, n_bins, piece) for piece in pieces]
    for counts, _, _, touched in parts:
        # The bins a piece reports touching (all its merge adds) are exactly its first to last.
        nonzero = np.flatnonzero(counts)
        span = (nonzero[0], nonzero[-1] + 1) if nonzero.size else (0, 0)
        assert (touched.start, touched.stop) == span
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def _record_offsets(bam):
    """(reference id, virtual offset) of every record, read with htslib."""
    out = []
    with pysam.AlignmentFile(str(bam)) as f:
        while True:
            offset = f.tell()
            try:
                read = next(f)
            except StopIteration:
                return out
            out.append((read.reference_id, offset))


@pytest.mark.parametrize("kind", ["se", "pe", "csi", "sim"])
def test_split_at_record_starts_equals_unsplit(long_bams, kind):
    """Two pieces cut at a record start count exactly what one piece counts: at every record
    start the index lists, at records starting a BGZF block and at records inside one."""
    from chipvi.io._bam import open_bam
    from chipvi.io._binning import _Piece, _split_reference, check_read_params

    info = open_bam(long_bams[kind])
    params = check_read_params(200, 200, 0, True)
    records = _record_offsets(long_bams[kind])
    kinds_seen = set()
    listed_total = 0
    for tid, (_, length) in enumerate(info.contigs):
        begin, end = int(info.span_begin[tid]), int(info.span_end[tid])
        (whole,) = _split_reference(info, tid, 1)
        assert whole == _Piece(begin, -1, end)
        x, mapq_sum, n = _count_pieces(info, tid, length, params, [whole])
        listed = [int(c) for c in info.record_starts[tid]]
        n_listed = len([c for c in listed if begin < c < end])
        # A BAI's linear index lists a record per 16 kb window; a CSI of a small file fewer.
        assert kind == "csi" or n_listed >= 5, "want many listed record starts"
        listed_total += n_listed
        own = [offset for t, offset in records if t == tid]
        assert set(listed) <= set(own)  # the index lists record starts only
        at_block_start = [c for c in own if c & 0xFFFF == 0]
        cuts = set(listed) | set(at_block_start[:: len(at_block_start) // 15 + 1])
        cuts |= set(own[:: len(own) // 15 + 1])
        for cut in sorted(c for c in cuts if begin < c < end):
            kinds_seen.add("block start" if cut & 0xFFFF == 0 else "inside a block")
            pieces = [_Piece(begin, cut, end), _Piece(cut, -1, end)]
            xs, ms, ns = _count_pieces(info, tid, length, params, pieces)
            np.testing.assert_array_equal(xs, x)
            np.testing.assert_array_equal(ms, mapq_sum)
            assert ns == n
        # Many pieces at once, as the task planner cuts them.
        pieces = _split_reference(info, tid, 6)
        assert len(pieces) <= min(6, n_listed + 1) and (kind == "csi" or len(pieces) > 2)
        assert pieces[0].begin == begin and pieces[-1].stop == -1
        assert all(a.stop == b.begin for a, b in zip(pieces, pieces[1:], strict=False))
        xs, ms, ns = _count_pieces(info, tid, length, params, pieces)
        np.testing.assert_array_equal(xs, x)
        assert ns == n and n > 1000
    assert listed_total >= 1
    # htslib starts a new block at a record when the next one does not fit; chipvi's
    # simulator lets records straddle blocks.
    assert kinds_seen == (
        {"inside a block"} if kind == "sim" else {"block start", "inside a block"}
    )


@pytest.mark.parametrize(
    ("kind", "bin_size"), [("se", 200), ("pe", 200), ("csi", 200), ("sim", 200), ("pe", 1)]
)
def test_split_tasks_match_reference_and_single_thread(long_bams, kind, bin_size, monkeypatch):
    import chipvi.io._binning as binning

    settings = {"bin_size": bin_size, "keep_duplicates": False}
    one = read_bam_bins(long_bams[kind], threads=1, **settings)
    monkeypatch.setattr(binning, "_MIN_PIECE", 1)  # cut every chromosome into 4 x threads
    split = read_bam_bins(long_bams[kind], threads=3, **settings)
    x_ref, mapq_ref = reference_bins(long_bams[kind], **settings)
    np.testing.assert_array_equal(split.X[:, 0], x_ref)
    np.testing.assert_allclose(split.layers["mapq"][:, 0], mapq_ref, rtol=1e-6)
    np.testing.assert_array_equal(split.X, one.X)
    np.testing.assert_array_equal(split.layers["mapq"], one.layers["mapq"])
    assert split.var["depth"].iloc[0] == x_ref.sum()


def test_split_planner_cuts_large_chromosomes_only(long_bams, monkeypatch):
    import chipvi.io._binning as binning
    from chipvi.io._bam import open_bam

    info = open_bam(long_bams["se"])
    planned = []
    real_split = binning._split_reference

    def spy(info, tid, n_pieces):
        pieces = real_split(info, tid, n_pieces)
        planned.append((tid, n_pieces, len(pieces)))
        return pieces

    monkeypatch.setattr(binning, "_split_reference", spy)
    read_bam_bins(long_bams["se"], threads=1)
    assert [p[1] for p in planned] == [1, 1]  # one thread: no cuts
    planned.clear()
    read_bam_bins(long_bams["se"], threads=2)
    assert [p[1] for p in planned] == [1, 1]  # small file: pieces would be under _MIN_PIECE
    planned.clear()
    monkeypatch.setattr(binning, "_MIN_PIECE", 1)
    read_bam_bins(long_bams["se"], threads=2)
    sizes = [int(info.span_end[t] >> 16) - int(info.span_begin[t] >> 16) for t in (0, 1)]
    # 8 pieces of the file's compressed bytes, shared in proportion to each chromosome's size.
    assert [p[1] for p in planned] == [-(-s // (sum(sizes) // 8)) for s in sizes]
    assert all(1 < p[2] <= p[1] for p in planned)


def test_stop_inside_a_record_is_reported(long_bams):
    from chipvi.io._bam import open_bam
    from chipvi.io._binning import _Piece, check_read_params

    info = open_bam(long_bams["se"])
    params = check_read_params(200, 200, 0, True)
    begin, end = int(info.span_begin[0]), int(info.span_end[0])
    cut = int(info.record_starts[0][info.record_starts[0] > begin][3])
    with pytest.raises(ChipviInputError, match="stale index"):
        _count_pieces(info, 0, LONG_CONTIGS[0][1], params, [_Piece(begin, cut + 1, end)])
