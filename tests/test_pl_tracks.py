"""pl.tracks: differential regions are drawn; a user's track label keeps its own unit."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import chipvi  # noqa: E402
from _analysis_data import make_adata, truth_mask, write_posterior  # noqa: E402


@pytest.fixture
def adata():
    a = make_adata()
    lfe = pd.DataFrame({g: 3.0 * truth_mask(a.obs, g) for g in ("A", "B")}, index=a.obs_names)
    return write_posterior(a, lfe, 0.2)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _boxes(ax) -> list[tuple[float, float]]:
    return sorted((b.get_x(), b.get_width()) for b in ax.patches if isinstance(b, Rectangle))


def test_differential_regions_are_drawn(adata):
    """The comparison's regions (group "A_vs_B", not a group of the data) fill the panel."""
    chipvi.tl.differential_enrichment(adata, "A", "B")
    table = adata.uns["chipvi_differential"]["regions"]
    assert set(table["group"]) == {"A_vs_B"}
    axes = chipvi.pl.tracks(adata, "chr1:0-10,050", keys=["X"], regions="chipvi_differential")
    # Only group A is enriched at chr1 bins 30-31 (6000-6400); bins 5-9 are enriched in both.
    assert _boxes(axes[-1]) == [(6000, 400)]
    assert [t.get_text() for t in axes[-1].get_yticklabels()] == ["A_vs_B"]
    # Restricting the libraries still keeps a comparison's rows, and drops other groups' rows.
    # chr2: bins 10-14 enriched in A only, 20-27 in B only; both are differential.
    both = [(2000, 1000), (4000, 1600)]
    axes = chipvi.pl.tracks(adata, "chr2", keys=["X"], samples=["B_1"], regions=table)
    assert _boxes(axes[-1]) == both
    extra = pd.DataFrame(
        {"chrom": "chr2", "start": [0, 600], "end": [400, 800], "group": ["A", "B"]}
    )
    regions = pd.concat([table, extra], ignore_index=True)
    axes = chipvi.pl.tracks(adata, "chr2", keys=["X"], samples=["B_1"], regions=regions)
    assert _boxes(axes[-1]) == sorted(both + [(600, 200)])  # group A's row is not shown


def test_track_label_keeps_a_unit_it_already_gives(adata):
    axes = chipvi.pl.tracks(
        adata,
        "chr1",
        keys={
            "ChIP (CPM)": "X",
            "raw": "X",
            "lfe": "chipvi_group_lfe",
            "log2 FE": "chipvi_group_lfe",
        },
        samples=["A_1"],
        regions=None,
    )
    labels = [a.get_ylabel() for a in axes]
    assert labels == ["ChIP (CPM)\nA_1", "raw (CPM)\nA_1", "lfe (log2 FE)\nA", "log2 FE\nA"]
