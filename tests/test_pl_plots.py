"""Plots: the figures have the expected axes and artists; bad regions are refused; save, show
and return_fig follow scanpy."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import chipvi  # noqa: E402
from _analysis_data import make_adata, truth_mask, write_posterior  # noqa: E402
from chipvi._bins import parse_region  # noqa: E402
from chipvi._errors import ChipviInputError  # noqa: E402


@pytest.fixture
def adata():
    a = make_adata()
    a.layers["denoised"] = np.column_stack(
        [2.0 * truth_mask(a.obs, g) for g in a.var["group"]]
    ) + np.random.default_rng(0).normal(0, 0.1, a.shape)
    a.obsm["group_lfe"] = pd.DataFrame(
        {g: 2.0 * truth_mask(a.obs, g) for g in ("A", "B")}, index=a.obs_names
    )
    a.obsm["q"] = pd.DataFrame(
        {g: np.where(truth_mask(a.obs, g), 1e-5, 0.9) for g in ("A", "B")}, index=a.obs_names
    )
    chipvi.tl.call_enriched_regions(a, key="q")
    return a


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_parse_region():
    sizes = {"chr1": 2_000_000}
    assert parse_region("chr1:1,000,000-1,200,000", sizes) == ("chr1", 1_000_000, 1_200_000)
    assert parse_region("chr1", sizes) == ("chr1", 0, 2_000_000)
    with pytest.raises(ChipviInputError, match="does not parse"):
        parse_region("chr1:100", sizes)
    with pytest.raises(ChipviInputError, match="not in the data"):
        parse_region("chr2:1-5", sizes)
    with pytest.raises(ChipviInputError, match="outside chr1"):
        parse_region("chr1:1,900,000-2,100,000", sizes)
    with pytest.raises(ChipviInputError, match="greater than start"):
        parse_region("chr1:500-100", sizes)


def test_tracks_panels_and_region_boxes(adata, tmp_path):
    out = tmp_path / "tracks.png"
    axes = chipvi.pl.tracks(
        adata,
        "chr1:0-8,000",
        keys={"raw": "X", "denoised": "denoised", "group": "group_lfe", "control": "control"},
        samples=["A_1", "A_2"],
        save=out,
    )
    # raw, denoised, control: 2 libraries each; group-level: group A only; plus the region panel.
    assert len(axes) == 2 + 2 + 1 + 2 + 1
    assert out.stat().st_size > 0
    boxes = [p for p in axes[-1].patches if isinstance(p, Rectangle)]
    # Group A regions in chr1:0-8000: 1000-2000 and 6000-6400.
    assert sorted((b.get_x(), b.get_width()) for b in boxes) == [(1000, 1000), (6000, 400)]
    assert axes[-1].get_xlim() == (0, 8000)
    assert "group\nA" in [a.get_ylabel() for a in axes]
    before = out.stat().st_size
    chipvi.pl.tracks(adata, "chr1:0-8,000", keys=["X"], save=out)  # replaces it, as scanpy does
    assert 0 < out.stat().st_size != before
    with pytest.raises(ChipviInputError, match="outside chr2"):
        chipvi.pl.tracks(adata, "chr2:0-9,000")
    with pytest.raises(ChipviInputError, match="not 'X', a layer"):
        chipvi.pl.tracks(adata, "chr1", keys=["nope"])
    with pytest.raises(ChipviInputError, match="Unknown sample"):
        chipvi.pl.tracks(adata, "chr1", samples=["Z"])


def test_save_show_and_return_fig(adata, tmp_path):
    # show=False: the Axes; the figure of a saved plot is closed (loops do not pile them up).
    axes = chipvi.pl.tracks(adata, "chr1", keys=["X"], show=False, save=tmp_path / "t.pdf")
    assert len(axes) == 5 and not plt.fignum_exists(axes[0].figure.number)
    assert (tmp_path / "t.pdf").read_bytes()[:4] == b"%PDF"  # format from the suffix
    fig = chipvi.pl.fingerprint(adata, return_fig=True, save=tmp_path / "f.png")
    assert isinstance(fig, matplotlib.figure.Figure) and plt.fignum_exists(fig.number)
    assert chipvi.pl.fingerprint(adata, show=True) is None  # shown: nothing returned
    # show=None shows only an interactive session's figure that is not saved.
    assert chipvi.pl.fingerprint(adata) is not None
    # A plot drawn into the caller's Axes leaves their figure open after saving.
    _, own = plt.subplots()
    assert chipvi.pl.fingerprint(adata, ax=own, save=tmp_path / "g.png") is own
    assert plt.fignum_exists(own.figure.number)


def test_concordance_and_fingerprint(adata, tmp_path):
    axes = chipvi.pl.concordance(adata, group="B", denoised="denoised", save=tmp_path / "c.png")
    assert len(axes) == 2 and all(
        any(isinstance(c, PolyCollection) for c in a.collections) for a in axes
    )
    assert axes[0].get_xlabel() == "B_1" and "Pearson" in axes[1].get_title()
    with pytest.raises(ChipviInputError, match="Unknown group"):
        chipvi.pl.concordance(adata, group="Z")
    ax = chipvi.pl.fingerprint(adata, save=tmp_path / "fp.png")
    assert len(ax.get_lines()) == 4 + 4 + 1 + 1  # libraries, controls, diagonal, control legend
    assert "chipvi_fingerprint" in adata.uns
    with pytest.raises(ChipviInputError, match="No fingerprint"):
        chipvi.pl.fingerprint(adata, samples=["Z"])


class HistoryModel:
    """A trained model's ``history`` (scvi-tools: dict of per-epoch DataFrames)."""

    def __init__(self):
        epochs = pd.Index(np.arange(20), name="epoch")
        self.history = {
            "elbo_train": pd.DataFrame(
                {"elbo_train": 1000 / (1 + epochs.to_numpy())}, index=epochs
            ),
            "elbo_validation": pd.DataFrame({"elbo_validation": []}),
        }


def test_training_history_and_technical_fit(adata, tmp_path):
    model = HistoryModel()
    ax = chipvi.pl.training_history(model, save=tmp_path / "h.png")
    assert [line.get_label() for line in ax.get_lines()] == ["elbo_train"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata()[:2], [1000, 500])
    with pytest.raises(ChipviInputError, match="No history entries"):
        chipvi.pl.training_history(model, keys=["nope"])
    with pytest.raises(ChipviInputError, match=r"run model.add_posterior\(adata\) first"):
        chipvi.pl.technical_fit(adata)
    # mu from the posterior keys: the technical mean is 1.1 x the control count.
    write_posterior(adata, adata.obsm["group_lfe"], mu=1.1 * adata.layers["control"])
    axes = chipvi.pl.technical_fit(adata, samples=["A_1", "B_2"], n_bins=5, save=tmp_path / "t.png")
    assert len(axes) == 2 and [a.get_title() for a in axes] == ["A_1", "B_2"]
    observed, expected = axes[0].get_lines()
    assert len(expected.get_xdata()) >= 3
    np.testing.assert_allclose(
        expected.get_ydata(), 1.1 * np.asarray(expected.get_xdata()), rtol=1e-6
    )


def test_differential_ma_plot(adata, tmp_path):
    table = pd.DataFrame(
        {
            "lfe1": [1.0, 0.0, 2.0],
            "lfe2": [0.0, 1.0, 2.0],
            "lfc_mean": [1.0, -1.0, 0.0],
            "direction": [1, -1, 0],
        },
        index=adata.obs_names[:3],
    )
    ax = chipvi.pl.differential(table, save=tmp_path / "ma.png")
    offsets = [c.get_offsets() for c in ax.collections]
    assert [len(o) for o in offsets] == [1, 1, 1]
    np.testing.assert_allclose(offsets[1][0], [0.5, 1.0])
    with pytest.raises(ChipviInputError, match="differential_enrichment first"):
        chipvi.pl.differential(adata)


def test_every_plot_takes_show_save_return_fig(adata, tmp_path):
    import inspect

    write_posterior(adata, adata.obsm["group_lfe"])
    chipvi.tl.differential_enrichment(adata, "A", "B")
    chipvi.tl.profile(adata, adata.uns["chipvi_regions"]["regions"])
    calls = {
        "concordance": lambda **kw: chipvi.pl.concordance(adata, **kw),
        "differential": lambda **kw: chipvi.pl.differential(adata, **kw),
        "fingerprint": lambda **kw: chipvi.pl.fingerprint(adata, **kw),
        "heatmap": lambda **kw: chipvi.pl.heatmap(adata, **kw),
        "profile": lambda **kw: chipvi.pl.profile(adata, **kw),
        "technical_fit": lambda **kw: chipvi.pl.technical_fit(adata, samples=["A_1"], **kw),
        "tracks": lambda **kw: chipvi.pl.tracks(adata, "chr1", **kw),
        "training_history": lambda **kw: chipvi.pl.training_history(HistoryModel(), **kw),
    }
    assert sorted(calls) == sorted(dir(chipvi.pl))
    for name, draw in calls.items():
        params = inspect.signature(getattr(chipvi.pl, name)).parameters
        assert {"show", "save", "return_fig"} <= set(params) and "overwrite" not in params
        path = tmp_path / f"{name}.png"
        path.write_text("an older figure")
        fig = draw(show=False, save=path, return_fig=True)
        assert isinstance(fig, matplotlib.figure.Figure), name
        assert path.read_bytes()[:4] == b"\x89PNG", name  # replaced, as scanpy does
        assert draw(show=False) is not None and draw(show=True) is None, name
        plt.close("all")
