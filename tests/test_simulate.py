"""Tests of chipvi.datasets.simulate and its bulk BAM writer."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
from collections import defaultdict

import numpy as np
import pandas as pd
import pysam
import pytest

from chipvi import ChipviInputError
from chipvi.datasets import SCENARIOS, SimulationSpec, simulate
from chipvi.datasets._bam_writer import BGZF_EOF, BamWriter, reg2bin

FRAGMENT = 200
SMALL = {"n_chroms": 2, "chrom_length": 150_000, "control_depths": (30_000, 20_000)}


@pytest.fixture(scope="module")
def se_sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("se")
    return simulate(out, seed=1, depths=(60_000, 20_000), **SMALL)


@pytest.fixture(scope="module")
def pe_sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("pe")
    return simulate(out, seed=2, paired=True, n_groups=2, depths=(20_000, 10_000), **SMALL)


def _bams(sim):
    sheet = pd.read_csv(sim.samplesheet)
    folder = sim.samplesheet.parent
    return [folder / p for p in [*sheet["bam"], *sheet["control"]]]


def _centre_bins(path, truth, paired):
    """Per-read (mate 1 for pairs) 200 bp bin of the fragment centre, with MAPQ and flags."""
    offsets = truth.groupby("chrom", observed=True, sort=False).size().cumsum().shift(fill_value=0)
    rows = []
    with pysam.AlignmentFile(str(path)) as bam:
        for r in bam:
            if paired:
                if not r.is_read1:
                    continue
                left = min(r.reference_start, r.next_reference_start)
                centre = left + abs(r.template_length) // 2
            elif r.is_reverse:
                centre = r.reference_end - 1 - FRAGMENT // 2
            else:
                centre = r.reference_start + FRAGMENT // 2
            rows.append((offsets[r.reference_name] + centre // 200, r.mapping_quality))
    return np.array(rows, dtype=np.int64)


# ---------------------------------------------------------------- files, sorting, indexing


@pytest.mark.parametrize("which", ["se_sim", "pe_sim"])
def test_bams_sorted_indexed_and_complete(which, request):
    sim = request.getfixturevalue(which)
    libs = sim.libraries
    expected = dict(zip(libs["bam"], libs["depth"], strict=True))
    expected.update(zip(libs["control_bam"], libs["control_depth"], strict=True))
    for path in _bams(sim):
        assert path.with_name(path.name + ".bai").exists()
        with pysam.AlignmentFile(str(path)) as bam:
            assert bam.check_index()
            assert bam.header.to_dict()["HD"]["SO"] == "coordinate"
            assert dict(zip(bam.references, bam.lengths, strict=True)) == sim.chrom_sizes
            last = (-1, -1)
            n = 0
            for r in bam:
                key = (r.reference_id, r.reference_start)
                assert key >= last, f"{path.name} not sorted at {key}"
                last = key
                n += 1
                assert r.cigartuples == [(0, 50)]
                assert len(r.query_sequence) == 50 and set(r.query_sequence) <= set("ACGT")
                assert len(r.query_qualities) == 50
                assert r.reference_end <= sim.chrom_sizes[r.reference_name]
            # Index-based counts agree with the stream.
            assert sum(s.mapped for s in bam.get_index_statistics()) == n
        assert n == expected[str(path.resolve())] * (2 if sim.paired else 1)


def test_samtools_accepts_bams(se_sim):
    if shutil.which("samtools") is None:
        pytest.skip("samtools not installed")
    for path in _bams(se_sim):
        subprocess.run(["samtools", "quickcheck", str(path)], check=True)
        out = subprocess.run(
            ["samtools", "view", "-c", str(path)], check=True, capture_output=True, text=True
        )
        with pysam.AlignmentFile(str(path)) as bam:
            assert int(out.stdout) == bam.mapped


def test_sample_sheet_and_truth_files(pe_sim):
    sheet = pd.read_csv(pe_sim.samplesheet)
    assert list(sheet.columns) == ["sample", "bam", "control", "target", "group", "replicate"]
    assert list(sheet["sample"]) == ["G1_R1", "G1_R2", "G2_R1", "G2_R2"]
    assert list(sheet["group"]) == ["G1", "G1", "G2", "G2"]
    assert list(sheet["replicate"]) == [1, 2, 1, 2]
    for col in ("bam", "control"):  # relative paths that resolve against the sheet's folder
        assert all((pe_sim.samplesheet.parent / p).exists() for p in sheet[col])
        assert not any("/" in p for p in sheet[col])
    truth = pe_sim.truth
    from_file = pd.read_csv(pe_sim.truth_path, sep="\t")
    pd.testing.assert_frame_equal(
        from_file.drop(columns="chrom"), truth.drop(columns="chrom"), check_dtype=False
    )
    assert list(from_file["chrom"]) == list(truth["chrom"].astype(str))


def test_truth_layout(pe_sim):
    truth = pe_sim.truth
    for col in ("enriched_G1", "lfe_G1", "enriched_G2", "lfe_G2", "low_mappability"):
        assert col in truth
    assert list(truth["chrom"].cat.categories) == list(pe_sim.chrom_sizes)
    for chrom, length in pe_sim.chrom_sizes.items():
        t = truth[truth["chrom"] == chrom]
        assert t["start"].iloc[0] == 0 and t["end"].iloc[-1] == length
        np.testing.assert_array_equal(t["start"].to_numpy()[1:], t["end"].to_numpy()[:-1])
        assert ((t["end"] - t["start"]) <= 200).all()
    for g in ("G1", "G2"):
        np.testing.assert_array_equal(truth[f"enriched_{g}"], truth[f"lfe_{g}"] > 0)
        assert (truth[f"lfe_{g}"] >= 0).all()
        # Artefactual pile-ups are not enrichment.
        assert not (truth[f"enriched_{g}"] & truth["low_mappability"]).any()
    both = truth["enriched_G1"] & truth["enriched_G2"]
    only = truth["enriched_G1"] ^ truth["enriched_G2"]
    assert both.sum() > 0 and only.sum() > 0  # shared and group-specific features
    # Shared features have known, different strengths in the two groups.
    assert (truth.loc[both, "lfe_G1"] != truth.loc[both, "lfe_G2"]).mean() > 0.5
    lengths = _run_lengths(truth["feature"] == "broad")
    assert lengths.max() >= 20  # broad domains span tens of bins
    assert _run_lengths(truth["feature"] == "narrow").max() <= 5 + 5  # adjacent peaks at most


def _run_lengths(mask) -> np.ndarray:
    m = np.r_[False, np.asarray(mask, dtype=bool), False].astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return edges[1::2] - edges[0::2]


# ---------------------------------------------------------------- biology and nuisances


def test_enriched_bins_have_higher_chip_over_control(se_sim):
    truth = se_sim.truth
    enriched = truth["enriched_G1"].to_numpy()
    background = ~enriched & ~truth["low_mappability"].to_numpy()
    sheet = pd.read_csv(se_sim.samplesheet)
    for _, row in sheet.iterrows():
        folder = se_sim.samplesheet.parent
        chip = np.bincount(
            _centre_bins(folder / row["bam"], truth, False)[:, 0], minlength=len(truth)
        )
        ctrl = np.bincount(
            _centre_bins(folder / row["control"], truth, False)[:, 0], minlength=len(truth)
        )
        ratio_enriched = chip[enriched].sum() / ctrl[enriched].sum()
        ratio_background = chip[background].sum() / ctrl[background].sum()
        assert ratio_enriched > 2 * ratio_background
        # Bin-level: strongly enriched bins rank above background.
        strong = truth["lfe_G1"].to_numpy() > np.log(4)
        assert np.median(chip[strong]) > np.percentile(chip[background], 90)


def test_replicate_specific_features(se_sim, tmp_path):
    """Per-library truth equals the group's by default; with replicate_specific_fraction some
    features are carried by one replicate only, and only its reads show them."""
    truth = se_sim.truth
    for sample in ("G1_R1", "G1_R2"):
        np.testing.assert_array_equal(truth[f"lfe_{sample}"], truth["lfe_G1"])
        np.testing.assert_array_equal(truth[f"enriched_{sample}"], truth["enriched_G1"])
    sim = simulate(
        tmp_path / "rs",
        seed=1,
        depths=(60_000, 60_000),
        **SMALL,
        replicate_specific_fraction=0.5,
        jackpot_sample="",
    )
    t = sim.truth
    a, b = t["enriched_G1_R1"].to_numpy(), t["enriched_G1_R2"].to_numpy()
    np.testing.assert_array_equal(a | b, t["enriched_G1"])  # each feature is in >= 1 replicate
    only_a, only_b = a & ~b, b & ~a
    assert min(only_a.sum(), only_b.sum(), (a & b).sum()) >= 10
    for sample, mask in (("G1_R1", a), ("G1_R2", b)):
        lfe = t[f"lfe_{sample}"].to_numpy()
        np.testing.assert_array_equal(lfe[mask], t["lfe_G1"].to_numpy()[mask])
        assert (lfe[~mask] == 0).all()
    folder = sim.samplesheet.parent
    chip = [
        np.bincount(_centre_bins(folder / f"{s}.bam", t, False)[:, 0], minlength=len(t))
        for s in ("G1_R1", "G1_R2")
    ]
    # Equal depths: in features of R1 only, R1 has the reads; in those of R2 only, R2 has.
    assert chip[0][only_a].sum() > 2 * chip[1][only_a].sum()
    assert chip[1][only_b].sum() > 2 * chip[0][only_b].sum()


def test_low_mappability_reads_have_low_mapq_and_pile_up(se_sim):
    truth = se_sim.truth
    low = truth["low_mappability"].to_numpy()
    # Interior bins of blocks: fragment-length jitter cannot move a read's centre out of them.
    interior = low & np.r_[False, low[:-1]] & np.r_[low[1:], False]
    assert interior.sum() > 0
    sheet = pd.read_csv(se_sim.samplesheet)
    folder = se_sim.samplesheet.parent
    far = ~np.convolve(low, np.ones(5), mode="same").astype(bool)
    for name in [*sheet["bam"], *sheet["control"]]:
        reads = _centre_bins(folder / name, truth, False)
        in_block = interior[reads[:, 0]]
        assert in_block.sum() > 0
        assert reads[in_block, 1].max() <= 3
        assert np.median(reads[far[reads[:, 0]], 1]) == 60
        # Pile-ups: more reads per bin in the blocks than elsewhere, in ChIP and input alike.
        per_bin = np.bincount(reads[:, 0], minlength=len(truth))
        assert per_bin[interior].mean() > 2 * per_bin[far & ~truth["enriched_G1"]].mean()


def test_jackpots_only_in_chosen_replicate(se_sim):
    jackpots = se_sim.jackpots
    assert len(jackpots) > 0
    assert set(jackpots["sample"]) == {"G1_R2"}
    folder = se_sim.samplesheet.parent
    stacks = {}
    for name in ("G1_R1.bam", "G1_R2.bam"):
        counter = defaultdict(int)
        flagged = defaultdict(int)
        with pysam.AlignmentFile(str(folder / name)) as bam:
            for r in bam:
                key = (r.reference_name, r.reference_start, r.is_reverse)
                counter[key] += 1
                flagged[key] += r.is_duplicate
        stacks[name] = (counter, flagged)
    counter, flagged = stacks["G1_R2.bam"]
    for jp in jackpots.itertuples():
        key = (jp.chrom, jp.pos, jp.reverse)
        assert counter[key] >= jp.n_reads
        assert flagged[key] == jp.n_flagged
        assert jp.n_flagged < jp.n_reads / 2  # mostly not flagged
    # The strong replicate has no such stacks, and no duplicate flags at all.
    assert max(stacks["G1_R1.bam"][0].values()) < jackpots["n_reads"].min()
    assert sum(stacks["G1_R1.bam"][1].values()) == 0


def test_paired_mates_consistent(pe_sim):
    path = pe_sim.samplesheet.parent / "G2_R1.bam"
    mates = defaultdict(list)
    with pysam.AlignmentFile(str(path)) as bam:
        for r in bam:
            mates[r.query_name].append(r)
    assert len(mates) == pe_sim.libraries.set_index("sample").loc["G2_R1", "depth"]
    for pair in mates.values():
        assert len(pair) == 2
        a, b = pair
        assert a.is_paired and a.is_proper_pair and b.is_paired and b.is_proper_pair
        assert {a.is_read1, b.is_read1} == {True, False}
        assert a.reference_id == b.reference_id == a.next_reference_id == b.next_reference_id
        assert a.next_reference_start == b.reference_start
        assert b.next_reference_start == a.reference_start
        assert a.is_reverse != b.is_reverse
        assert a.mate_is_reverse == b.is_reverse and b.mate_is_reverse == a.is_reverse
        assert a.template_length == -b.template_length != 0
        fwd, rev = (a, b) if not a.is_reverse else (b, a)
        assert fwd.reference_start <= rev.reference_start
        assert fwd.template_length == rev.reference_end - fwd.reference_start
        assert a.mapping_quality == b.mapping_quality


def test_same_seed_same_output_other_seed_differs(tmp_path):
    kw = {"n_chroms": 1, "chrom_length": 20_000, "depths": 2_000, "control_depths": 1_000}
    a = simulate(tmp_path / "a", seed=5, **kw)
    b = simulate(tmp_path / "b", seed=5, **kw)
    simulate(tmp_path / "c", seed=6, **kw)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert (tmp_path / "a/G1_R1.bam").read_bytes() == (tmp_path / "b/G1_R1.bam").read_bytes()
    assert (tmp_path / "a/G1_R1.bam").read_bytes() != (tmp_path / "c/G1_R1.bam").read_bytes()


def test_relative_out_dir_gives_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kw = {"n_chroms": 1, "chrom_length": 10_000, "depths": 300, "control_depths": 300}
    sim = simulate("rel/sim", **kw)
    assert sim.samplesheet.is_absolute() and sim.truth_path.is_absolute()
    assert sim.samplesheet == (tmp_path / "rel/sim/samplesheet.csv")
    assert all(p.startswith(str(tmp_path)) for p in sim.libraries["bam"])


def test_custom_chrom_sizes_partial_last_bin(tmp_path):
    sizes = {"chrA": 30_050, "chrB": 12_345}
    sim = simulate(tmp_path, chrom_sizes=sizes, depths=3_000, control_depths=2_000, n_replicates=1)
    assert sim.chrom_sizes == sizes
    last = sim.truth.groupby("chrom", observed=True)["end"].max().to_dict()
    assert last == sizes
    with pysam.AlignmentFile(str(tmp_path / "G1_R1.bam")) as bam:
        assert list(bam.references) == ["chrA", "chrB"]
        assert bam.mapped == 3_000


# ---------------------------------------------------------------- BGZF / BAM writer


def test_bgzf_blocks_within_limits_and_eof(se_sim):
    data = (se_sim.samplesheet.parent / "G1_R1.bam").read_bytes()
    assert data.endswith(BGZF_EOF)
    offset, n_blocks = 0, 0
    while offset < len(data):
        assert data[offset : offset + 4] == b"\x1f\x8b\x08\x04"
        bsize = struct.unpack_from("<H", data, offset + 16)[0] + 1
        isize = struct.unpack_from("<I", data, offset + bsize - 4)[0]
        assert bsize <= 65536 and isize <= 65536
        offset += bsize
        n_blocks += 1
    assert offset == len(data) and n_blocks > 10


def _reg2bin_spec(beg: int, end: int) -> int:
    end -= 1
    if beg >> 14 == end >> 14:
        return ((1 << 15) - 1) // 7 + (beg >> 14)
    if beg >> 17 == end >> 17:
        return ((1 << 12) - 1) // 7 + (beg >> 17)
    if beg >> 20 == end >> 20:
        return ((1 << 9) - 1) // 7 + (beg >> 20)
    if beg >> 23 == end >> 23:
        return ((1 << 6) - 1) // 7 + (beg >> 23)
    if beg >> 26 == end >> 26:
        return ((1 << 3) - 1) // 7 + (beg >> 26)
    return 0


def test_reg2bin_matches_sam_spec():
    rng = np.random.default_rng(0)
    beg = np.r_[rng.integers(0, 1 << 29, 2000), 16383, 16384, (1 << 17) - 10, 0]
    length = np.r_[rng.integers(1, 1 << 18, 2000), 2, 50, 20, 1 << 27]
    expected = [_reg2bin_spec(int(b), int(b + n)) for b, n in zip(beg, length, strict=True)]
    np.testing.assert_array_equal(reg2bin(beg, beg + length), expected)


def test_writer_round_trip_fields(tmp_path):
    rng = np.random.default_rng(3)
    reference = rng.choice(np.array([1, 2, 4, 8], dtype=np.uint8), 5_000)
    pos = np.sort(rng.integers(0, 4_900, 600))
    flag = np.where(rng.random(600) < 0.5, 16, 0) | np.where(rng.random(600) < 0.1, 1024, 0)
    mapq = rng.integers(0, 61, 600)
    path = tmp_path / "w.bam"
    with BamWriter(path, {"c1": 5_000}, read_length=37, name_prefix="q") as writer:
        writer.write(0, pos, flag, mapq, np.arange(600), reference)
    pysam.index(str(path))
    letters = np.array(list("=AC?G???T"))
    with pysam.AlignmentFile(str(path)) as bam:
        reads = list(bam)
    assert len(reads) == 600
    for i, r in enumerate(reads):
        assert r.query_name == f"q{i:012d}"
        assert r.reference_start == pos[i] and r.flag == flag[i]
        assert r.mapping_quality == mapq[i] and r.cigarstring == "37M"
        assert r.query_sequence == "".join(letters[reference[pos[i] : pos[i] + 37]])
        assert r.next_reference_id == -1 and r.next_reference_start == -1
        assert r.bin == _reg2bin_spec(int(pos[i]), int(pos[i]) + 37)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_groups": 0}, "n_groups"),
        ({"n_replicates": 1.5}, "n_replicates"),
        ({"seed": -1}, "seed"),
        ({"chrom_length": 0}, "chrom_length"),
        ({"chrom_sizes": {}}, "chrom_sizes"),
        ({"chrom_sizes": {"c": -5}}, "chrom_sizes"),
        ({"chrom_sizes": {"c": 300}}, "shorter"),
        ({"depths": (1, 2, 3)}, "depths has 3 values"),
        ({"depths": (0, 10)}, "depths must all be >= 1"),
        ({"control_depths": ("x", 1)}, "not a number"),
        ({"gc_bias": (0.1,)}, "gc_bias"),
        ({"fragment_length": 30, "read_length": 50}, "fragment_length"),
        ({"read_length": 0}, "read_length"),
        ({"peak_fold": 0.5}, "peak_fold"),
        ({"shared_fraction": 1.5}, "shared_fraction"),
        ({"replicate_specific_fraction": -0.1}, "replicate_specific_fraction"),
        ({"overdispersion": -1}, "overdispersion"),
        ({"jackpot_sample": "nope"}, "jackpot_sample"),
        ({"compresslevel": 13}, "compresslevel"),
        ({"target": ""}, "target"),
    ],
)
def test_bad_arguments_raise_before_writing(tmp_path, kwargs, match):
    out = tmp_path / "out"
    with pytest.raises(ChipviInputError, match=match):
        simulate(out, **kwargs)
    assert not out.exists()


def test_refuses_to_overwrite(tmp_path):
    kw = {"n_chroms": 1, "chrom_length": 10_000, "depths": 500, "control_depths": 500}
    simulate(tmp_path, **kw)
    before = (tmp_path / "G1_R1.bam").read_bytes()
    with pytest.raises(ChipviInputError, match="overwrite"):
        simulate(tmp_path, seed=3, **kw)
    assert (tmp_path / "G1_R1.bam").read_bytes() == before
    simulate(tmp_path, seed=3, overwrite=True, **kw)
    assert (tmp_path / "G1_R1.bam").read_bytes() != before
    with pysam.AlignmentFile(str(tmp_path / "G1_R1.bam")) as bam:
        assert bam.check_index()


def test_out_dir_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ChipviInputError, match="not a folder"):
        simulate(target)


@pytest.mark.parametrize("which", ["se_sim", "pe_sim"])
def test_read_bams_on_simulation_matches_truth(which, request):
    """The simulation bins with chipvi.read_bams into the truth's bins, nuisances visible."""
    import chipvi

    sim = request.getfixturevalue(which)
    adata = chipvi.read_bams(sim.samplesheet, bin_size=200, progress=False)
    truth = sim.truth
    assert adata.n_obs == len(truth)
    np.testing.assert_array_equal(adata.obs["start"], truth["start"])
    np.testing.assert_array_equal(adata.obs["end"], truth["end"])
    libs = sim.libraries.set_index("sample").loc[adata.var_names]
    # Every read (pair) is counted once: duplicates are kept by default.
    np.testing.assert_array_equal(adata.X.sum(axis=0), libs["depth"])
    np.testing.assert_array_equal(adata.layers["control"].sum(axis=0), libs["control_depth"])
    low = truth["low_mappability"].to_numpy()
    interior = low & np.r_[False, low[:-1]] & np.r_[low[1:], False]
    assert adata.layers["mapq"][interior].max() <= 3
    assert adata.layers["control_mapq"][interior].max() <= 3
    for j, group in enumerate(adata.var["group"]):
        enriched = truth[f"enriched_{group}"].to_numpy()
        chip, ctrl = adata.X[:, j], adata.layers["control"][:, j]
        background = ~enriched & ~low
        assert chip[enriched].sum() / ctrl[enriched].sum() > 2 * (
            chip[background].sum() / ctrl[background].sum()
        )


def test_read_sequences_follow_the_gc_covariate(se_sim):
    truth = se_sim.truth
    gc_of_bin = truth["gc"].to_numpy()
    offsets = {c: int(np.flatnonzero(truth["chrom"] == c)[0]) for c in se_sim.chrom_sizes}
    high, low = [], []
    with pysam.AlignmentFile(str(se_sim.samplesheet.parent / "G1_R1_input.bam")) as bam:
        for r in bam:
            b = offsets[r.reference_name] + r.reference_start // 200
            frac = sum(base in "GC" for base in r.query_sequence) / 50
            if gc_of_bin[b] > 0.55:
                high.append(frac)
            elif gc_of_bin[b] < 0.45:
                low.append(frac)
    assert len(high) > 100 and len(low) > 100
    assert np.mean(high) > 0.55 and np.mean(low) < 0.45
    # Reads of two libraries at the same position carry the same bases (one genome).
    with (
        pysam.AlignmentFile(str(se_sim.samplesheet.parent / "G1_R1.bam")) as a,
        pysam.AlignmentFile(str(se_sim.samplesheet.parent / "G1_R2.bam")) as b,
    ):
        seq_a = {(r.reference_name, r.reference_start): r.query_sequence for r in a}
        shared = [
            (seq_a[key], r.query_sequence)
            for r in b
            if (key := (r.reference_name, r.reference_start)) in seq_a
        ]
    assert len(shared) > 100 and all(x == y for x, y in shared)


# ---------------------------------------------------------------- SimulationSpec


def test_standard_seeded_output_pinned(tmp_path):
    """The standard scenario's seeded output, pinned: hashes of truth.tsv and of every read's
    (chromosome, position, flag, MAPQ), taken before SimulationSpec (commit aa8fe07). A change
    here changes every simulation a seed names; if numpy's generators changed, say so."""
    import hashlib

    expected = {
        False: ("a9cfa8eae0b41d72", "5c8a156605b47183"),
        True: ("0eaacc29072a9d83", "1babecabf5f04d6d"),
    }
    kw = {"seed": 5, "chrom_length": 20_000, "depths": 2_000, "control_depths": 1_000}
    for paired, extra in ((False, {"n_chroms": 1}), (True, {"n_chroms": 2, "n_groups": 2})):
        out = tmp_path / str(paired)
        simulate(out, paired=paired, **kw, **extra)
        reads = hashlib.sha256()
        for name in sorted(p.name for p in out.glob("*.bam")):
            with pysam.AlignmentFile(str(out / name)) as bam:
                rows = [(r.reference_id, r.reference_start, r.flag, r.mapping_quality) for r in bam]
            reads.update(np.array(rows, dtype=np.int64).tobytes())
        truth_hash = hashlib.sha256((out / "truth.tsv").read_bytes()).hexdigest()[:16]
        assert (truth_hash, reads.hexdigest()[:16]) == expected[paired]


def test_spec_and_keywords_give_the_same_files(tmp_path):
    kw = {"n_chroms": 1, "chrom_length": 20_000, "depths": 2_000, "control_depths": 1_000}
    spec = SimulationSpec(seed=4, **kw)
    a = simulate(tmp_path / "a", spec=spec)
    b = simulate(tmp_path / "b", seed=4, **kw)
    c = simulate(tmp_path / "c", spec=SimulationSpec(seed=9, **kw), seed=4)  # keyword wins
    assert a.spec == b.spec == c.spec == spec
    for sim in (b, c):
        for name in ("G1_R1.bam", "G1_R2_input.bam", "truth.tsv"):
            assert (sim.samplesheet.parent / name).read_bytes() == (
                tmp_path / "a" / name
            ).read_bytes()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3
    assert dataclasses.replace(spec, n_replicates=3).samples == ("G1_R1", "G1_R2", "G1_R3")


def test_unknown_field_and_scenario_are_named(tmp_path):
    with pytest.raises(ChipviInputError, match=r"unknown simulation field\(s\) \['depth'\]"):
        simulate(tmp_path / "x", depth=10)
    assert list(SCENARIOS) == [
        "standard",
        "chip_bias",
        "mapq_partial",
        "offgrid",
        "dispersion",
        "sparse",
        "misspecified",
    ]
    with pytest.raises(ChipviInputError) as err:
        SimulationSpec(scenario="chipbias")
    assert all(name in str(err.value) for name in SCENARIOS)
    with pytest.raises(ChipviInputError, match="scenario"):
        simulate(tmp_path / "y", scenario="nope")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ---------------------------------------------------------------- scenarios

# Two chromosomes of 150 kb (1500 bins); more artefact blocks and domains than the default
# so that a small genome has several.
SCENARIO_KW = {
    **SMALL,
    "depths": (60_000, 20_000),
    "lowmap_blocks_per_mb": 20.0,
    "domains_per_mb": 10.0,
}
EXTRA_COLUMNS = ["low_mapq", "chip_bias_G1", "overdispersion", "overlap_G1"]


@pytest.fixture(scope="module")
def scenario_sims(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenarios")
    sims = {
        name: simulate(out / name, seed=3, scenario=name, **SCENARIO_KW)
        for name in ("standard", "chip_bias", "mapq_partial", "misspecified")
    }
    # "sparse" sets its own depths.
    kw = {k: v for k, v in SCENARIO_KW.items() if k not in ("depths", "control_depths")}
    sims["sparse"] = simulate(out / "sparse", seed=3, scenario="sparse", **kw)
    return sims


def _counts(sim):
    import chipvi

    adata = chipvi.read_bams(sim.samplesheet, bin_size=200, progress=False)
    assert adata.n_obs == len(sim.truth)
    return adata


def test_scenarios_keep_the_standard_truth(scenario_sims):
    """Scenario terms draw from their own streams: same features and nuisances as the
    standard simulation of the seed; the truth file equals the returned table."""
    standard = scenario_sims["standard"].truth
    assert not set(EXTRA_COLUMNS) & set(standard.columns)
    for name in ("chip_bias", "mapq_partial", "sparse"):
        sim = scenario_sims[name]
        truth = sim.truth
        assert list(truth.columns) == [*standard.columns, *EXTRA_COLUMNS]
        pd.testing.assert_frame_equal(truth[standard.columns], standard)
        pd.testing.assert_frame_equal(sim.features, scenario_sims["standard"].features)
        from_file = pd.read_csv(sim.truth_path, sep="\t")
        pd.testing.assert_frame_equal(
            from_file.drop(columns="chrom"), truth.drop(columns="chrom"), check_dtype=False
        )


def test_chip_bias_is_in_chip_only(scenario_sims):
    sim = scenario_sims["chip_bias"]
    truth = sim.truth
    bias = truth["chip_bias_G1"].to_numpy()
    background = ~truth["enriched_G1"].to_numpy() & ~truth["low_mappability"].to_numpy()
    low, mid, high = (bias < 0.5), (bias > 0.8) & (bias < 1.25), (bias > 1.6)

    def ratios(sim):
        adata = _counts(sim)
        chip, ctrl = adata.X.astype(float), adata.layers["control"].astype(float)
        out = {}
        for name, m in (("low", low), ("mid", mid), ("high", high)):
            m = m & background
            assert m.sum() > 20
            out[name] = (chip[m].sum() / ctrl[m].sum(), ctrl[m].mean())
        return out

    # The standard simulation of the seed has the same truth and nuisances without the
    # ChIP bias: against it, ChIP over input drops in the depleted and rises in the open
    # stretches, while the input does not change.
    biased, standard = ratios(sim), ratios(scenario_sims["standard"])
    chip = {k: biased[k][0] / standard[k][0] for k in biased}
    ctrl = {k: biased[k][1] / standard[k][1] for k in biased}
    assert chip["low"] < 0.6 * chip["mid"]
    assert chip["high"] > 1.4 * chip["mid"]
    assert all(0.9 < v < 1.1 for v in ctrl.values())
    # Within the biased simulation alone, the same holds against the unbiased stretches.
    assert biased["low"][0] < 0.6 * biased["mid"][0] < 0.6 * biased["high"][0]


def test_mapq_partial_artefacts_and_low_mapq_disagree(scenario_sims):
    sim = scenario_sims["mapq_partial"]
    truth = sim.truth
    adata = _counts(sim)
    artefact = truth["low_mappability"].to_numpy()
    low_mapq = truth["low_mapq"].to_numpy()
    mapq = adata.layers["control_mapq"][:, 0]
    ctrl = adata.layers["control"][:, 0].astype(float)
    far = ~artefact & ~low_mapq & ~truth["enriched_G1"].to_numpy()
    # Pile-ups that map uniquely: artefact bins with high mean MAPQ and many reads.
    hidden = artefact & (mapq > 30)
    assert hidden.sum() >= 3
    assert np.median(ctrl[hidden]) > 2 * np.median(ctrl[far])
    # Low-MAPQ bins without a pile-up (interior ones: no reads jitter in from outside).
    interior = low_mapq & np.r_[False, low_mapq[:-1]] & np.r_[low_mapq[1:], False]
    benign = interior & ~artefact & (ctrl > 0)
    assert benign.sum() >= 10
    assert np.median(mapq[benign]) <= 3 and mapq[benign].max() < 10
    assert 0.6 < np.median(ctrl[benign]) / np.median(ctrl[far]) < 1.5
    # In the standard simulation of the seed the two coincide: artefact bins are low-MAPQ.
    standard = _counts(scenario_sims["standard"])
    inner = artefact & np.r_[False, artefact[:-1]] & np.r_[artefact[1:], False]
    assert inner.sum() >= 3 and standard.layers["control_mapq"][inner, 0].max() <= 3


def test_offgrid_features_are_not_bin_aligned(tmp_path):
    kw = {**SCENARIO_KW, "depths": 60_000, "domains_per_mb": 20.0, "jackpot_sample": ""}
    sim = simulate(tmp_path, seed=2, scenario="offgrid", **kw)
    features, truth = sim.features, sim.truth
    width = features["end"] - features["start"]
    narrow, broad = features["kind"] == "narrow", features["kind"] == "broad"
    assert narrow.sum() >= 10 and broad.sum() >= 1
    assert width[narrow].between(150, 600).all() and width[narrow].nunique() >= 5
    assert width[broad].between(5_000, 50_000).all()
    assert (features["start"] % 200 != 0).mean() > 0.7
    # Truth per bin: fractional overlaps, lfe > 0 wherever a feature touches, and "enriched"
    # for bins at least half covered or holding a feature's middle.
    overlap = truth["overlap_G1"].to_numpy()
    assert ((overlap > 0) & (overlap < 1)).sum() >= narrow.sum()
    enriched = truth["enriched_G1"].to_numpy()
    assert enriched[overlap >= 0.5].all() and not enriched[overlap == 0].any()
    middle_bins = set()
    for f in features.itertuples():
        i = np.flatnonzero(
            (truth["chrom"] == f.chrom) & (truth["start"] <= (f.start + f.end - 1) // 2)
        )[-1]
        middle_bins.add(i)
        assert enriched[i]
    assert set(np.flatnonzero(enriched & (overlap < 0.5))) <= middle_bins
    assert (truth["lfe_G1"].to_numpy()[(overlap > 0) & ~enriched] > 0).all()
    # Reads centre on the features, not on the bins: per narrow peak, the mean fragment
    # centre of the ChIP reads within 300 bp of its middle.
    with pysam.AlignmentFile(str(sim.samplesheet.parent / "G1_R1.bam")) as bam:
        centres = {c: [] for c in sim.chrom_sizes}
        for r in bam:
            centre = (
                r.reference_end - 1 - FRAGMENT // 2
                if r.is_reverse
                else r.reference_start + FRAGMENT // 2
            )
            centres[r.reference_name].append(centre)
    centres = {c: np.asarray(v) for c, v in centres.items()}
    read_error, grid_error = [], []
    for f in features[narrow].itertuples():
        middle = (f.start + f.end) / 2
        near = centres[f.chrom][np.abs(centres[f.chrom] - middle) <= 300]
        read_error.append(abs(near.mean() - middle))
        grid_error.append(abs(middle % 200 - 100))  # distance to the middle of its bin
    assert np.median(read_error) < 25 and np.median(grid_error) > 20


def test_dispersion_varies_along_the_genome(tmp_path):
    """Without other nuisances, the overdispersion estimated from the counts follows the
    truth's field; in the standard simulation the same bins do not differ."""
    kw = {
        "seed": 1,
        "n_chroms": 1,  # one chromosome: one copy number
        "chrom_length": 300_000,
        "n_replicates": 1,
        "depths": 150_000,
        "control_depths": 150_000,
        "peaks_per_mb": 0,
        "domains_per_mb": 0,
        "cnv_segments_per_mb": 0,
        "background_sd": 0,
        "gc_bias": 0,
        "lowmap_blocks_per_mb": 0,
        "jackpot_sample": "",
    }
    sim = simulate(tmp_path / "d", scenario="dispersion", **kw)
    field = sim.truth["overdispersion"].to_numpy()
    assert np.median(field) == pytest.approx(0.05, rel=0.3)
    lo, hi = np.quantile(field, [1 / 3, 2 / 3])
    low, high = field < lo, field > hi

    def alpha(x):  # method of moments: var = mean + alpha * mean^2
        return (x.var() - x.mean()) / x.mean() ** 2

    standard = _counts(simulate(tmp_path / "s", scenario="standard", **kw))
    adata = _counts(sim)
    for layer in (adata.X, adata.layers["control"]):
        x = layer[:, 0].astype(float)
        assert alpha(x[high]) > 4 * alpha(x[low])
        assert alpha(x[low]) == pytest.approx(field[low].mean(), rel=0.5)
    for layer in (standard.X, standard.layers["control"]):
        x = layer[:, 0].astype(float)
        assert 0.5 < alpha(x[high]) / alpha(x[low]) < 2


def test_sparse_depth(scenario_sims):
    sim = scenario_sims["sparse"]
    n_bins = len(sim.truth)
    for path in _bams(sim):
        with pysam.AlignmentFile(str(path)) as bam:
            per_bin = bam.mapped / n_bins
        if "_input" not in path.name:
            assert 0.2 <= per_bin <= 0.5
    assert {"narrow", "broad"} <= set(sim.truth["feature"])


def test_misspecified_combines_the_departures(scenario_sims):
    truth = scenario_sims["misspecified"].truth
    assert (truth["chip_bias_G1"] < 0.5).sum() > 20
    assert (truth["low_mapq"] != truth["low_mappability"]).sum() > 10
    assert truth["overdispersion"].max() > 4 * truth["overdispersion"].min()
    assert ((truth["overlap_G1"] > 0) & (truth["overlap_G1"] < 1)).sum() > 10
    assert not (truth["enriched_G1"] & truth["low_mappability"]).any()


# ---------------------------------------------------------------- command line


def test_cli_scenario(tmp_path, capsys):
    from chipvi.cli import build_parser, main

    args = ["--n-chroms", "1", "--chrom-length", "100000", "--seed", "2"]
    assert main(["simulate", str(tmp_path / "s"), "--scenario", "sparse", *args]) == 0
    assert "chipvi simulate (sparse)" in capsys.readouterr().out
    truth = pd.read_csv(tmp_path / "s" / "truth.tsv", sep="\t")
    assert "low_mapq" in truth  # the columns of a scenario other than standard
    with pysam.AlignmentFile(str(tmp_path / "s" / "G1_R1.bam")) as bam:
        assert 0.2 <= bam.mapped / len(truth) <= 0.5
    assert main(["simulate", str(tmp_path / "x"), "--scenario", "worst", *args]) == 2
    err = capsys.readouterr().err
    assert "scenario 'worst'" in err and all(name in err for name in SCENARIOS)
    assert not (tmp_path / "x").exists()
    # The help names every scenario (the parser does not import the simulator to list them).
    sub = build_parser()._subparsers._group_actions[0].choices["simulate"]
    help_text = next(a.help for a in sub._actions if "--scenario" in a.option_strings)
    assert all(name in help_text for name in SCENARIOS)
