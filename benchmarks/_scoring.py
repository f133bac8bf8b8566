"""One scoring for every benchmark: ranking metrics of a per-bin score against a truth.

* :func:`average_precision`: area under the precision-recall curve with tied scores grouped
  into one threshold, as scikit-learn's ``average_precision_score`` does (a discrete score,
  e.g. a peer's fold enrichment with many equal values, is neither helped nor penalised by the
  order in which ties happen to be sorted);
* :func:`spearman`, :func:`pearson`: rank and linear correlation (NaN when either side is
  constant);
* :func:`artefact_rank`: mean rank (0-1, ties averaged; lower is better) of artefact bins;
* :func:`roc_auc`: probability that a positive outscores a negative (ties count half);
* :func:`top_fraction`: the bins of a continuous truth that count as positives;
* :func:`replicate_concordance`: replicate Pearson / Spearman, reported only for outputs whose
  replicates do not share evidence.

Bad input (lengths that differ, NaN, no positive or no negative) raises ``ValueError`` naming
what is wrong: a benchmark must not print a score computed from a degenerate truth.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, rankdata, spearmanr

#: How the two replicate columns of an output relate; concordance is only meaningful for "own".
EVIDENCE = ("own", "shared", "pooled")


def _check(labels: np.ndarray, score: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    score = np.asarray(score, dtype=float)
    if labels.shape != score.shape or labels.ndim != 1:
        raise ValueError(
            f"{what}: labels and score must be 1-d of one length, got {labels.shape} and "
            f"{score.shape}."
        )
    if np.isnan(score).any():
        raise ValueError(f"{what}: the score has {int(np.isnan(score).sum())} NaN values.")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{what}: labels must be boolean or 0/1.")
        labels = labels.astype(bool)
    n_pos = int(labels.sum())
    if n_pos == 0:
        raise ValueError(f"{what}: no positive label among {labels.size} bins.")
    if n_pos == labels.size:
        raise ValueError(f"{what}: every one of the {labels.size} bins is positive.")
    return labels, score


def average_precision(labels: np.ndarray, score: np.ndarray) -> float:
    """Average precision with tied scores forming one threshold.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score values ``k`` taken from the
    highest down, where ``P_k`` and ``R_k`` are the precision and recall of calling every bin
    with a score of at least value ``k`` positive (scikit-learn's definition).

    Parameters
    ----------
    labels
        True for the positive bins (boolean or 0/1).
    score
        Higher means more likely positive; no NaN.

    Returns
    -------
    float
        In (0, 1]; a constant score gives the fraction of positives.

    Raises
    ------
    ValueError
        Lengths differ, NaN in ``score``, or ``labels`` has no positive or no negative.
    """
    labels, score = _check(labels, score, "average_precision")
    order = np.argsort(-score, kind="stable")
    s, y = score[order], labels[order]
    # Last index of each run of equal scores: one threshold per distinct value.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(y)[last].astype(float)
    called = (last + 1).astype(float)
    precision = tp / called
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(labels: np.ndarray, score: np.ndarray) -> float:
    """Probability that a positive bin outscores a negative one (ties count half)."""
    labels, score = _check(labels, score, "roc_auc")
    ranks = rankdata(score)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _constant(x: np.ndarray) -> bool:
    return bool(np.ptp(x) == 0)


def _correlation(func, name: str, truth: np.ndarray, score: np.ndarray) -> float:
    truth, score = np.asarray(truth, float), np.asarray(score, float)
    if truth.shape != score.shape:
        raise ValueError(f"{name}: shapes differ, {truth.shape} and {score.shape}.")
    if _constant(truth) or _constant(score):
        return float("nan")
    return float(func(truth, score)[0])


def spearman(truth: np.ndarray, score: np.ndarray) -> float:
    """Spearman rank correlation; NaN when either side is constant."""
    return _correlation(spearmanr, "spearman", truth, score)


def pearson(truth: np.ndarray, score: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    return _correlation(pearsonr, "pearson", truth, score)


def artefact_rank(artefact: np.ndarray, score: np.ndarray) -> float:
    """Mean rank of the artefact bins as a fraction of all bins (ties averaged; lower is better).

    0.5 means the artefacts rank like the genome as a whole; a score that ranks every artefact
    bin first gets ``1 - n_artefact / (2 n)``.
    """
    artefact, score = np.asarray(artefact, bool), np.asarray(score, float)
    if artefact.shape != score.shape:
        raise ValueError(f"artefact_rank: shapes differ, {artefact.shape} and {score.shape}.")
    if not artefact.any():
        raise ValueError("artefact_rank: no artefact bin.")
    return float(rankdata(score)[artefact].mean() / score.size)


def top_fraction(truth: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Positives of a continuous truth: bins strictly above its ``1 - fraction`` quantile.

    Ties at the quantile are all left out, so at most ``fraction`` of the bins are positive
    (fewer where the truth is discrete, e.g. smoothed counts of a sparse library).

    Raises
    ------
    ValueError
        No bin lies above the quantile (the truth is too discrete for this fraction).
    """
    truth = np.asarray(truth, float)
    if not 0 < fraction < 1:
        raise ValueError(f"top_fraction: fraction must lie in (0, 1), got {fraction}.")
    cut = np.quantile(truth, 1 - fraction)
    labels = truth > cut
    if not labels.any():
        raise ValueError(
            f"top_fraction: no bin lies above the {1 - fraction:.0%} quantile ({cut:g}) of the "
            "truth; use a larger fraction or a smoother truth."
        )
    return labels


def replicate_concordance(score: np.ndarray, evidence: str) -> dict[str, float]:
    """Pearson and Spearman between the first two columns of ``score``.

    Reported only where ``evidence == "own"`` (each column from its own library's reads): for a
    shared output (the columns borrow from each other) or a pooled one (one column copied)
    concordance is near 1 by construction, so NaN is returned and tables say why.
    """
    if evidence not in EVIDENCE:
        raise ValueError(f"replicate_concordance: evidence must be one of {EVIDENCE}.")
    if evidence != "own":
        return {"rep_pearson": float("nan"), "rep_spearman": float("nan")}
    a, b = score[:, 0], score[:, 1]
    return {"rep_pearson": pearson(a, b), "rep_spearman": spearman(a, b)}
