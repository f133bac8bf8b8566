"""benchmarks/_scoring.py: the one scoring every benchmark uses."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _scoring import (  # noqa: E402
    artefact_rank,
    average_precision,
    pearson,
    replicate_concordance,
    roc_auc,
    spearman,
    top_fraction,
)


def test_average_precision_hand_worked_with_ties():
    # Scores 0.9 | 0.5 0.5 0.5 | 0.1 with labels 1 | 1 0 0 | 1: thresholds
    # >=0.9: P=1, R=1/3; >=0.5: P=2/4, R=2/3; >=0.1: P=3/5, R=1.
    labels = np.array([1, 1, 0, 0, 1], bool)
    score = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    expected = 1 / 3 * 1 + 1 / 3 * 0.5 + 1 / 3 * 0.6
    assert average_precision(labels, score) == pytest.approx(expected)
    # The order of tied bins in the input does not matter (a pessimistic tie rule would give
    # 1/3 + 1/3 * 2/4 + ... only when negatives happen to come first).
    perm = np.array([0, 3, 2, 1, 4])
    assert average_precision(labels[perm], score[perm]) == pytest.approx(expected)


def test_average_precision_all_equal_scores_is_prevalence():
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0], bool)
    assert average_precision(labels, np.zeros(8)) == pytest.approx(0.25)


def test_average_precision_perfect_and_reversed():
    labels = np.array([0, 0, 1, 1])
    assert average_precision(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    # Reversed: positives found at ranks 3 and 4 -> (1/2)(1/3) + (1/2)(2/4).
    assert average_precision(labels, np.array([0.4, 0.3, 0.2, 0.1])) == pytest.approx(
        0.5 / 3 + 0.25
    )


def test_average_precision_matches_sklearn_on_discrete_scores():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for _ in range(20):
        labels = rng.random(500) < 0.1
        labels[0] = True
        labels[1] = False
        score = np.round(rng.normal(size=500) + 2 * labels, 1)  # many ties
        assert average_precision(labels, score) == pytest.approx(
            metrics.average_precision_score(labels, score), abs=1e-12
        )


@pytest.mark.parametrize(
    ("labels", "score", "message"),
    [
        (np.zeros(4, bool), np.arange(4.0), "no positive"),
        (np.ones(4, bool), np.arange(4.0), "every one"),
        (np.array([1, 0, 0], bool), np.array([1.0, np.nan, 0.0]), "NaN"),
        (np.array([1, 0, 0], bool), np.arange(4.0), "one length"),
        (np.array([2, 0, 0]), np.arange(3.0), "0/1"),
    ],
)
def test_average_precision_bad_input_raises(labels, score, message):
    with pytest.raises(ValueError, match=message):
        average_precision(labels, score)


def test_roc_auc_ties_count_half():
    labels = np.array([1, 0, 1, 0], bool)
    assert roc_auc(labels, np.array([1.0, 1.0, 2.0, 0.0])) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="no positive"):
        roc_auc(np.zeros(3, bool), np.arange(3.0))


def test_correlations_and_constant_input():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert pearson(x, x**3) < 0.99
    assert np.isnan(spearman(x, np.ones(4)))
    assert np.isnan(pearson(np.ones(4), x))


def test_artefact_rank():
    score = np.array([5.0, 4.0, 1.0, 2.0])
    assert artefact_rank(np.array([1, 1, 0, 0], bool), score) == pytest.approx(3.5 / 4)
    with pytest.raises(ValueError, match="no artefact"):
        artefact_rank(np.zeros(4, bool), score)


def test_top_fraction_leaves_ties_out_and_refuses_a_flat_truth():
    truth = np.r_[np.zeros(80), np.ones(15), np.arange(2.0, 7.0)]
    # The 90 % quantile is 1.0, shared by 15 bins: only the 5 bins above it are positive.
    np.testing.assert_array_equal(np.flatnonzero(top_fraction(truth, 0.1)), np.arange(95, 100))
    with pytest.raises(ValueError, match="no bin lies above"):
        top_fraction(np.r_[np.zeros(85), np.ones(15)], 0.1)


def test_replicate_concordance_only_for_own_evidence():
    rng = np.random.default_rng(0)
    a = rng.normal(size=100)
    score = np.column_stack([a, a + rng.normal(scale=0.1, size=100)])
    own = replicate_concordance(score, "own")
    assert 0.9 < own["rep_pearson"] < 1.0
    assert np.isnan(replicate_concordance(score, "shared")["rep_pearson"])
    assert np.isnan(replicate_concordance(score, "pooled")["rep_spearman"])
    with pytest.raises(ValueError, match="evidence"):
        replicate_concordance(score, "mine")
