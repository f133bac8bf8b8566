"""Every figure renders with no text over other text or over another panel (item 13).

Text = titles, axis labels, tick labels and legends, measured as drawn (matplotlib's window
extents after a full draw, the tight bounding boxes ``savefig(bbox_inches="tight")`` uses).
"""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import chipvi  # noqa: E402
from _analysis_data import make_adata, truth_mask, truth_posterior  # noqa: E402

TOL = 1.0  # px


def _texts(ax, renderer):
    out = []
    items = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    # tick labels that are drawn: those of ticks inside the view (others keep stale positions)
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    items += [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
    items += [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
    for t in items:
        if t.get_visible() and t.get_text().strip():
            out.append((t.get_text().replace("\n", " "), t.get_window_extent(renderer)))
    legend = ax.get_legend()
    if legend is not None and legend.get_visible():
        out.append(("legend", legend.get_window_extent(renderer)))
    return out


def _overlap(a, b) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > TOL and min(a.y1, b.y1) - max(a.y0, b.y0) > TOL


def overlaps(fig) -> list[str]:
    """Pairs of text items of different panels that overlap, and text over another panel."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [a for a in fig.axes if a.get_visible() and a.axison]
    texts = {i: _texts(a, renderer) for i, a in enumerate(axes)}
    found = []
    for i, j in itertools.combinations(range(len(axes)), 2):
        for (ta, ba), (tb, bb) in itertools.product(texts[i], texts[j]):
            if _overlap(ba, bb):
                found.append(f"{ta!r} (panel {i}) overlaps {tb!r} (panel {j})")
    for i in range(len(axes)):
        for j, other in enumerate(axes):
            if i == j:
                continue
            box = other.get_window_extent(renderer)
            for text, b in texts[i]:
                if _overlap(b, box):
                    found.append(f"{text!r} (panel {i}) lies over panel {j}")
    for i in range(len(axes)):  # within one panel: labels apart from each other
        for (t1, b1), (t2, b2) in itertools.combinations(texts[i], 2):
            if "legend" not in (t1, t2) and _overlap(b1, b2):
                found.append(f"{t1!r} overlaps {t2!r} in panel {i}")
    return found


@pytest.fixture
def adata():
    a = make_adata()
    truth_posterior(a, mu=1.1 * a.layers["control"])
    a.layers["chipvi_lfe"] += np.random.default_rng(0).normal(0, 0.1, a.shape)
    q = pd.DataFrame(
        {g: np.where(truth_mask(a.obs, g), 1e-5, 0.9) for g in ("A", "B")}, index=a.obs_names
    )
    a.obsm["q"] = q
    chipvi.tl.call_enriched_regions(a, key="q")
    return a


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_tracks_default_show_denoised_in_mb_with_units(adata, tmp_path):
    axes = chipvi.pl.tracks(adata, "chr1:0-8,000", samples=["A_1", "A_2"], show=False)
    labels = [a.get_ylabel() for a in axes]
    assert "raw (CPM)\nA_1" in labels and "control (CPM)\nA_1" in labels
    assert "denoised (log2 FE)\nA" in labels  # the denoised group track, in log2
    assert "(Mb)" in axes[-1].get_xlabel()
    ticks = [t.get_text() for t in axes[-1].get_xticklabels() if t.get_text()]
    assert ticks and all(t.replace(".", "").isdigit() for t in ticks)
    # log2 of the stored natural-log values
    denoised = next(a for a in axes if a.get_ylabel() == "denoised (log2 FE)\nA")
    heights = denoised.patches[0].get_data().values
    assert np.nanmax(heights) == pytest.approx(2.0 / np.log(2.0), rel=1e-6)
    ln = chipvi.pl.tracks(adata, "chr1:0-8,000", samples=["A_1"], log_base="e", show=False)
    assert "denoised (ln FE)\nA" in [a.get_ylabel() for a in ln]
    assert overlaps(axes[0].figure) == []


def _with_profile(adata) -> bool:
    chipvi.tl.profile(adata, adata.uns["chipvi_regions"]["regions"], upstream=1000, downstream=1000)
    return True


@pytest.mark.parametrize(
    "draw",
    [
        lambda a: chipvi.pl.tracks(a, "chr1:0-10,000", show=False)[0].figure,
        lambda a: chipvi.pl.concordance(a, group="A", denoised="chipvi_lfe", show=False)[0].figure,
        lambda a: chipvi.pl.fingerprint(a, show=False).figure,
        lambda a: _with_profile(a) and chipvi.pl.heatmap(a, return_fig=True),
        lambda a: _with_profile(a) and chipvi.pl.profile(a, show=False).figure,
    ],
    ids=["tracks", "concordance", "fingerprint", "heatmap", "profile"],
)
def test_no_text_overlaps(adata, draw):
    assert overlaps(draw(adata)) == []


def test_concordance_has_colour_bar_and_fingerprint_explains_controls(adata):
    axes = chipvi.pl.concordance(adata, group="A", denoised="chipvi_lfe", show=False)
    bars = [a for a in axes[0].figure.axes if a.get_ylabel() == "bins (log scale)"]
    assert len(bars) == 2
    ax = chipvi.pl.fingerprint(adata, show=False)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "its control (dashed)" in legend and "uniform coverage" in legend


def test_technical_fit_has_a_point_per_control_level(adata):
    axes = chipvi.pl.technical_fit(adata, samples=["A_1", "B_1"], show=False)
    n_levels = len(np.unique(adata.layers["control"][:, 0]))
    observed, _ = axes[0].get_lines()
    # equal steps in log(1 + control): every distinct low count is its own point
    assert len(observed.get_xdata()) >= min(n_levels, 10)
    assert overlaps(axes[0].figure) == []


def test_the_check_sees_colliding_labels():
    fig, axes = plt.subplots(2, 1, figsize=(3, 1.2))
    fig.subplots_adjust(hspace=0.0)
    for ax in axes:
        ax.plot([0, 1], [0, 70000])
        ax.tick_params(labelsize=12)
    assert overlaps(fig)  # the top panel's 0 sits on the lower panel's top tick label
