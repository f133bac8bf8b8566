"""The exact log-likelihood of a piece of a chain, conditioned on the bins before it.

A training minibatch scores a run of bins ``[a, b)`` cut from a longer chain. Started from
the chain's stationary law at ``a`` it would be an approximation (the state at ``a`` depends on
the bins before it). Instead each piece ``[s, e)`` is scored as

    log p(y[s:e] | y[q:s]) = log p(y[q:e]) − log p(y[q:s]),      q = max(s − L, chain start)

with an overlap of ``L`` bins of conditioning context (:func:`overlap_length`: ten expected
dwell times of the stickiest stay class, at most :data:`OVERLAP`). Where a true chain start
(chromosome start or gap) lies within ``L`` bins before ``s``, ``q`` is that start and the
conditional is exact; otherwise its error is the chain's memory of the state at ``q``, which
decays geometrically in ``L`` (measured in benchmarks/log/2026-12-07-minibatch-overlap.md:
below float noise at stay probabilities up to 0.999). Summed over minibatches
that tile a chain, the pieces give the whole chain's log-likelihood and its gradient, for
any batch size and any number of threads (the CPU engine cuts a minibatch into one piece per
thread, each with its own overlap).

Both terms are the ordinary chain log-likelihood (:func:`._chain.chain_log_likelihood`) on
rows gathered by torch indexing, so autograd reaches the technical parameters of every row.
"""

from __future__ import annotations

import numpy as np
import torch

from ._chain import ChainInputs, chain_log_likelihood

#: Most bins of conditioning context before a cut (the rows a loader reads before a minibatch).
OVERLAP = 4096
#: Context in expected dwell times ``1 / (1 − stay)`` of the stickiest stay class.
DWELLS = 10
#: Least context, whatever the stay probabilities.
MIN_OVERLAP = 256


def overlap_length(stay: float) -> int:
    """Bins of context before a cut for the largest stay probability ``stay``:
    :data:`DWELLS` expected dwell times, between :data:`MIN_OVERLAP` and :data:`OVERLAP`."""
    dwell = 1.0 / max(1.0 - float(stay), 1e-12)
    return int(min(OVERLAP, max(MIN_OVERLAP, np.ceil(DWELLS * dwell))))


def cut_pieces(
    p: int, a: int, b: int, breaks: np.ndarray, n_pieces: int, overlap: int
) -> list[tuple[int, int, int]]:
    """``(q, s, e)`` per piece: the rows ``[a, b)`` cut into ``n_pieces`` runs ``[s, e)`` of
    about equal length, each with its context ``[q, s)``.

    ``p`` is the first row that may serve as context (a chain start, or the start of the
    rows the objective covers); ``breaks``: sorted rows where a true chain starts.
    """
    cuts = sorted({a + (b - a) * t // max(n_pieces, 1) for t in range(max(n_pieces, 1))})
    pieces = []
    for s, e in zip(cuts, [*cuts[1:], b], strict=True):
        if e <= s:
            continue
        before = breaks[: np.searchsorted(breaks, s, side="right")]
        q = max(p, s - overlap, int(before[-1]) if before.size else p)
        pieces.append((q, s, e))
    return pieces


def _gather(inputs: ChainInputs, spans: list[tuple[int, int]], breaks: np.ndarray):
    """The rows of ``spans`` (``[lo, hi)`` each) joined into one input, each span a chain
    (also broken at ``breaks`` inside it); ``None`` when no span has rows."""
    spans = [(lo, hi) for lo, hi in spans if hi > lo]
    if not spans:
        return None
    starts, offset = [], 0
    for lo, hi in spans:
        inside = breaks[(breaks > lo) & (breaks < hi)]
        starts += [offset, *(offset + inside - lo).tolist()]
        offset += hi - lo
    if len(spans) == 1:
        lo, hi = spans[0]
        take = slice(lo, hi)
    else:
        take = torch.as_tensor(np.concatenate([np.arange(lo, hi) for lo, hi in spans]))
        take = take.to(inputs.y.device)
    return ChainInputs(
        inputs.y[take], inputs.log_mu[take], inputs.log_r[take], inputs.w[take], inputs.gain,
        inputs.groups, tuple(int(s) for s in starts),
    )  # fmt: skip


def conditional_log_likelihood(
    inputs: ChainInputs,
    pieces: list[tuple[int, int, int]],
    breaks: np.ndarray,
    transition: dict,
    outlier: float,
    n_threads: int = 1,
) -> torch.Tensor:
    """``Σ_pieces log p(y[s:e] | y[q:s])`` of the chain (the ratio against no enrichment, as
    :func:`chain_log_likelihood`); ``inputs`` holds every row the pieces read."""
    total = None
    for sign, spans in (
        (1.0, [(q, e) for q, _, e in pieces]),
        (-1.0, [(q, s) for q, s, _ in pieces]),
    ):
        part = _gather(inputs, spans, breaks)
        if part is None:
            continue
        value = sign * chain_log_likelihood(
            part, outlier=outlier, n_threads=n_threads, **transition
        )
        total = value if total is None else total + value
    return total
