"""Property-based tests (hypothesis): parsers, bin aggregation and the NB likelihood.

Inputs are drawn at random rather than picked by hand: the parsers either return the value
that was written or raise :class:`chipvi.ChipviInputError` (never another exception), bin
aggregation keeps sums and read-weighted MAPQ means, and the NB log-probability is finite and
equal to scipy's for every valid parameter.
"""

from __future__ import annotations

import string
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from chipvi import ChipviInputError
from chipvi._bins import parse_region
from chipvi.io import read_samplesheet
from chipvi.module._nb import nb_log_prob
from chipvi.pp import aggregate_bins

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAME = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=12)
SPACE = st.sampled_from(["", " ", "  ", "\t"])


# ------------------------------------------------------------------ sample sheet
@st.composite
def sheets(draw):
    """A valid sheet as rows of values, and how it is written (BOM, line ends, padding)."""
    n = draw(st.integers(1, 5))
    samples = draw(st.lists(NAME, min_size=n, max_size=n, unique=True))
    rows = []
    for s in samples:
        rows.append(
            {
                "sample": s,
                "bam": f"{s}.bam",
                "control": draw(st.sampled_from(["", "input.bam", "ctl/input2.bam"])),
                "target": draw(st.sampled_from(["", "H3K4me3", "CTCF"])),
                "group": draw(NAME),
                "replicate": draw(st.sampled_from(["1", "2", "R1"])),
                "depth": draw(st.one_of(st.just(""), st.integers(0, 10**9).map(str))),
            }
        )
    columns = draw(st.permutations(list(rows[0])))
    style = {
        "bom": draw(st.booleans()),
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "pad": [draw(SPACE) for _ in range(2 * len(columns))],
    }
    return rows, columns, style


def _write(path, rows, columns, style) -> None:
    pad = style["pad"]

    def line(values):
        return ",".join(f"{pad[2 * i]}{v}{pad[2 * i + 1]}" for i, v in enumerate(values))

    text = style["newline"].join([line(columns)] + [line([r[c] for c in columns]) for r in rows])
    data = text.encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if style["bom"] else b"") + data + b"\n")


@FAST
@given(sheet=sheets())
def test_samplesheet_reads_back_what_was_written(tmp_path_factory, sheet):
    rows, columns, style = sheet
    path = tmp_path_factory.mktemp("sheet") / "samples.csv"
    _write(path, rows, columns, style)
    parsed = read_samplesheet(path)
    assert list(parsed["sample"]) == [r["sample"] for r in rows]
    assert list(parsed["group"]) == [r["group"] for r in rows]
    assert list(parsed["target"]) == [r["target"] for r in rows]
    folder = path.parent
    assert list(parsed["bam"]) == [str(folder / r["bam"]) for r in rows]
    assert list(parsed["control"]) == [
        str(folder / r["control"]) if r["control"] else "" for r in rows
    ]
    depth = [None if r["depth"] == "" else int(r["depth"]) for r in rows]
    assert [None if pd.isna(v) else int(v) for v in parsed["depth"]] == depth


@FAST
@given(sheet=sheets(), defect=st.sampled_from(["duplicate", "drop_column", "empty_group", "depth"]))
def test_samplesheet_defects_raise_input_errors(tmp_path_factory, sheet, defect):
    rows, columns, style = sheet
    if defect == "duplicate":
        rows = rows + [dict(rows[0])]
        match = "more than once"
    elif defect == "drop_column":
        columns = [c for c in columns if c != "group"]
        match = "lacks column"
    elif defect == "empty_group":
        rows = [dict(rows[0], group="")] + rows[1:]
        match = "empty 'group'"
    else:
        rows = [dict(rows[0], depth="-3")] + rows[1:]
        match = "non-negative integer"
    style = dict(style, pad=style["pad"] + ["", ""])
    path = tmp_path_factory.mktemp("sheet") / "samples.csv"
    _write(path, rows, columns, style)
    with pytest.raises(ChipviInputError, match=match):
        read_samplesheet(path)


@FAST
@given(data=st.binary(max_size=300))
def test_samplesheet_from_random_bytes_never_crashes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("sheet") / "samples.csv"
    path.write_bytes(data)
    try:
        sheet = read_samplesheet(path)
    except ChipviInputError:
        return
    assert len(sheet) > 0 and sheet["sample"].is_unique


def test_samplesheet_non_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        "sample,bam,control,target,group,replicate\nmüller,a.bam,,,g,1\n".encode("latin-1")
    )
    with pytest.raises(ChipviInputError, match="latin1.csv"):
        read_samplesheet(path)


# ------------------------------------------------------------------ regions
@FAST
@given(
    chrom=st.text(string.ascii_letters + string.digits + "_.", min_size=1, max_size=10),
    start=st.integers(0, 10**9),
    length=st.integers(1, 10**7),
    sep=st.sampled_from(["", ",", "_"]),
)
def test_region_round_trip(chrom, start, length, sep):
    end = start + length

    def fmt(v):
        return f"{v:,}".replace(",", sep)

    assert parse_region(f" {chrom}:{fmt(start)}-{fmt(end)} ") == (chrom, start, end)
    sizes = {chrom: end + 5}
    assert parse_region(chrom, sizes) == (chrom, 0, end + 5)
    with pytest.raises(ChipviInputError, match="outside"):
        parse_region(f"{chrom}:{start}-{end + 6}", sizes)


@FAST
@given(text=st.text(max_size=40))
def test_region_from_random_text_never_crashes(text):
    try:
        chrom, start, end = parse_region(text)
    except ChipviInputError:
        return
    assert chrom and 0 <= start < end


# ------------------------------------------------------------------ aggregation
@st.composite
def binned(draw):
    """A read_bams-shaped AnnData: one or two chromosomes of 25 bp bins, counts and MAPQ."""
    lengths = draw(st.lists(st.integers(1, 40), min_size=1, max_size=2))
    n_lib = draw(st.integers(1, 3))
    chrom, start, end, sizes = [], [], [], {}
    for c, n_bins in enumerate(lengths):
        size = 25 * n_bins - draw(st.integers(0, 24))
        sizes[f"chr{c + 1}"] = size
        for b in range(n_bins):
            chrom.append(f"chr{c + 1}")
            start.append(25 * b)
            end.append(min(25 * b + 25, size))
    n = len(chrom)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    counts = rng.poisson(rng.gamma(0.5, 4.0, (n, n_lib))).astype(np.int32)
    mapq = np.where(counts > 0, rng.uniform(0, 60, (n, n_lib)), 0).astype(np.float32)
    obs = pd.DataFrame({"chrom": pd.Categorical(chrom), "start": start, "end": end})
    obs.index = [f"{c}:{s}-{e}" for c, s, e in zip(chrom, start, end, strict=True)]
    adata = ad.AnnData(
        X=counts,
        obs=obs,
        var=pd.DataFrame(index=[f"lib{j}" for j in range(n_lib)]),
        layers={
            "mapq": mapq,
            "control": counts[:, ::-1].copy(),
            "control_mapq": mapq[:, ::-1].copy(),
        },
        uns={"chipvi": {"bin_size": 25, "chrom_sizes": sizes}},
    )
    return adata, draw(st.sampled_from([50, 100, 200, 1000]))


@FAST
@given(case=binned())
def test_aggregation_keeps_sums_and_weighted_mapq(case):
    adata, size = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = aggregate_bins(adata, size, copy=True)
    x = np.asarray(adata.X, np.int64)
    assert np.asarray(out.X).sum(axis=0).tolist() == x.sum(axis=0).tolist()
    assert (out.obs["end"].to_numpy() - out.obs["start"].to_numpy() <= size).all()
    # Each new bin: sum of the old bins it covers; MAPQ their read-weighted mean.
    for row, (c, s, e) in enumerate(out.obs[["chrom", "start", "end"]].itertuples(index=False)):
        inside = (
            (adata.obs["chrom"] == c).to_numpy()
            & (adata.obs["start"].to_numpy() >= s)
            & (adata.obs["end"].to_numpy() <= e)
        )
        reads = x[inside]
        np.testing.assert_array_equal(np.asarray(out.X)[row], reads.sum(axis=0))
        q = adata.layers["mapq"][inside].astype(np.float64)
        got = out.layers["mapq"][row]
        for j in range(x.shape[1]):
            if reads[:, j].sum() == 0:
                assert got[j] == 0
                continue
            expected = (reads[:, j] * q[:, j]).sum() / reads[:, j].sum()
            assert got[j] == pytest.approx(expected, rel=1e-5, abs=1e-4)
            present = q[reads[:, j] > 0, j]
            assert present.min() - 1e-3 <= got[j] <= present.max() + 1e-3


# ------------------------------------------------------------------ NB likelihood
@FAST
@given(
    y=st.integers(0, 10**6),
    log_mu=st.floats(-12, 12),
    log_r=st.floats(-8, 10),
)
def test_nb_log_prob_finite_and_equal_to_scipy(y, log_mu, log_r):
    got = nb_log_prob(
        torch.tensor([float(y)], dtype=torch.float64),
        torch.tensor([log_mu], dtype=torch.float64),
        torch.tensor([log_r], dtype=torch.float64),
    ).item()
    assert np.isfinite(got) and got <= 1e-12
    mu, r = np.exp(log_mu), np.exp(log_r)
    expected = stats.nbinom.logpmf(y, r, r / (r + mu))
    if np.isfinite(expected):
        assert got == pytest.approx(expected, rel=1e-8, abs=1e-8)
