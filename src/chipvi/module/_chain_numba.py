"""Exact forward-backward of the enrichment chain on CPU (numba, releases the GIL).

One call handles one chain: a run of consecutive bins of one group, whose libraries' counts
are joint evidence for the group's state. The state is ``(k, g)``: a stay class ``k`` and a
grid point ``grid[g]`` of the log fold enrichment. From one bin to the next the state stays
with probability ``stay[k]``, else it is redrawn from ``pi`` (over classes and grid); the
first bin is drawn from ``rho`` (the chain's stationary distribution). A step costs
O(classes × grid), not O(states²).

Emissions are log likelihood *ratios* against enrichment 0, so the state-independent part
of the likelihood (the count's law at the technical mean) stays in torch where autograd
differentiates it. For library ``j`` with technical mean μ, dispersion r, gain a and
likelihood weight w (mappability), at enrichment e::

    p(y | e) = (1 − ε)·NB(y | μ·exp(a·e), r) + ε·q(y),     q(y) = 1 / ((y + 1)(y + 2))
    log E(e) = w · [ log p(y | e) − log p(y | 0) ]

The outlier part (rate ε; ``log_out = -inf`` turns it off) lets one library's PCR jackpot
stand against its replicates' evidence instead of moving the shared state.

The pass returns the exact log marginal likelihood of the run (sum of the log ratios) and,
on request, its exact gradient with respect to every input (Fisher's identity: posterior
expectations of the emission gradients, and expected transition counts for the log stay,
log redraw, log ``pi`` and log ``rho`` inputs), and posterior summaries per bin of the
enrichment: mean, sd, a quantile, tail probabilities and draws from the marginal (for the
last three, each grid point's mass is spread evenly over its cell, between the midpoints to
its neighbours, so they vary continuously with the posterior and keep its mean).

Memory: forward messages are kept at every ``block``-th bin and recomputed one block at a
time in the backward pass, so a pass holds ``block × classes × grid`` floats whatever the
chain's length (the last block is kept from the forward pass, so a chain of one block is
never recomputed).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _logaddexp(a, b):
    top = max(a, b)
    if top == -np.inf:
        return top
    return top + np.log(np.exp(a - top) + np.exp(b - top))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _digamma(x):
    """ψ(x) for x > 0: recurrence up to 6, then the asymptotic series."""
    res = 0.0
    while x < 6.0:
        res -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    tail = f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))))
    return res + np.log(x) - 0.5 / x - tail


#: Counts below this take the exact finite sums below instead of lgamma / digamma.
_SMALL = 16
_LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in range(_SMALL)])


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _log_comb(yy, r):
    """``lgamma(y + r) − lgamma(r) − lgamma(y + 1)``; for a small whole count
    ``log(r (r + 1) ⋯ (r + y − 1)) − log(y!)`` (one log instead of three lgamma, and no
    cancellation between large lgamma values)."""
    if yy < _SMALL and yy == np.floor(yy):
        k = int(yy)
        if k == 0:
            return 0.0
        p = r
        for t in range(1, k):
            p *= r + t
        return np.log(p) - _LOG_FACTORIAL[k]
    return math.lgamma(yy + r) - math.lgamma(r) - math.lgamma(yy + 1.0)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _digamma_diff(yy, r):
    """``ψ(y + r) − ψ(r)``; for a small whole count the finite sum ``Σ_{t<y} 1 / (r + t)``."""
    if yy < _SMALL and yy == np.floor(yy):
        acc = 0.0
        for t in range(int(yy)):
            acc += 1.0 / (r + t)
        return acc
    return _digamma(yy + r) - _digamma(r)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _log_nb(yy, lmu_e, lr, r, log_r_plus_m, lc):
    """log NB(y | mean exp(lmu_e), dispersion r); ``log_r_plus_m = log(r + mean)``."""
    return lc + yy * lmu_e - (yy + r) * log_r_plus_m + r * lr


# Vector maths. The emission's transcendental functions run over the whole grid at once, in
# loops LLVM vectorises (numba's libm calls do not vectorise without Intel SVML, which the
# llvmlite wheels do not support): fdlibm's exp and log, accurate to 1 ulp, written as
# straight-line arithmetic plus integer work on the bits. ``error_model="numpy"`` everywhere:
# Python's model checks every float division for zero, which blocks vectorisation.
# The algorithms and constants below follow fdlibm's e_exp.c and e_log.c, whose notice is:
#   Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
#   Developed at SunSoft, a Sun Microsystems, Inc. business.
#   Permission to use, copy, modify, and distribute this software is freely granted,
#   provided that this notice is preserved.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
#: Lower clamp of :func:`_vexp`'s argument: exp(-700) ≈ 1e-304 stands for an underflow to 0
#: (relative to the values it is compared with, 1e-304 and 0 are the same).
_EXP_MIN = -700.0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _vexp(x, out, k):
    """``out = exp(max(x, -700))`` for ``x ≤ 709`` (fdlibm ``__ieee754_exp``); ``k``: int64
    scratch of the same size. ``out`` may be ``x``."""
    n = x.size
    for g in range(n):
        v = max(x[g], _EXP_MIN)
        kf = np.floor(v * 1.44269504088896338700e00 + 0.5)
        hi = v - kf * _LN2_HI
        lo = kf * _LN2_LO
        r = hi - lo
        rr = r * r
        c = r - rr * (
            1.66666666666666019037e-01
            + rr
            * (
                -2.77777777770155933842e-03
                + rr
                * (
                    6.61375632143793436117e-05
                    + rr * (-1.65339022054652515390e-06 + rr * 4.13813679705723846039e-08)
                )
            )
        )
        out[g] = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
        k[g] = np.int64(kf)
    bits = out.view(np.int64)
    for g in range(n):
        bits[g] += k[g] << 52


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _vlog(x, out, k, m):
    """``out = log(x)`` for positive normal ``x`` (fdlibm ``__ieee754_log``, musl's reduction);
    ``k`` (int64), ``m`` (float64): scratch of the same size. ``out`` must not be ``x``."""
    n = x.size
    xb = x.view(np.int64)
    mb = m.view(np.int64)
    for g in range(n):
        b = xb[g]
        # mantissa into [sqrt(2)/2, sqrt(2)), exponent into k
        hx = (b >> 32) + (0x3FF00000 - 0x3FE6A09E)
        k[g] = (hx >> 20) - 0x3FF
        mb[g] = (((hx & 0x000FFFFF) + 0x3FE6A09E) << 32) | (b & 0xFFFFFFFF)
    for g in range(n):
        f = m[g] - 1.0
        hfsq = 0.5 * f * f
        s = f / (2.0 + f)
        z = s * s
        w = z * z
        t1 = w * (
            3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01)
        )
        t2 = z * (
            6.666666666666735130e-01
            + w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01))
        )  # fmt: skip
        dk = np.float64(k[g])
        out[g] = s * (hfsq + (t2 + t1)) + dk * _LN2_LO - hfsq + f + dk * _LN2_HI


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _exp_shift(le, top, out, k):
    """``out = exp(le − top)`` over ``out``'s size (strict order: called from the
    reassociating pass)."""
    for g in range(out.size):
        out[g] = le[g] - top
    _vexp(out, out, k)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _exp_own_max(le, n_grid, k):
    """``le ← exp(le − max)`` in place, the max over the first ``n_grid`` entries returned."""
    top = le[0]
    for g in range(1, n_grid):
        top = max(top, le[g])
    _exp_shift(le, top, le, k)
    return top


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gain_grid(gain, grid, n_pad):
    """``(ag, eg)``: ``a_j · grid[g]`` and its exp, (J, ``n_pad``), the last point repeated."""
    n_lib, n_grid = gain.size, grid.size
    ag = np.empty((n_lib, n_pad))
    eg = np.empty((n_lib, n_pad))
    for j in range(n_lib):
        for g in range(n_pad):
            ag[j, g] = gain[j] * grid[min(g, n_grid - 1)]
            eg[j, g] = np.exp(ag[j, g])
    return ag, eg


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _log_emission(
    i, y, lmu, lr, w, gain, ag, eg, log_in, log_out, le, le_lib, keep, resp, resp0, sc, ik, n_grid
):
    """``le[g] = Σ_j log E_j(grid[g])`` for bin ``i``; returns the maximum. With ``le_lib``
    of ``J`` rows (not 0) each library's own term ``log E_j`` is written there too.

    Each library's count is NB with probability ``exp(log_in)`` and an outlier (a PCR
    jackpot, say: heavy-tailed ``q(y) = 1/((y+1)(y+2))``, blind to the enrichment) with
    ``exp(log_out)``. Kept for the gradient: ``keep[j, g] = log(r + μ·exp(a·e))`` and the
    NB component's responsibilities ``resp[j, g]`` and ``resp0[j]`` (at e = 0). ``ag[j, g]
    = a_j·grid[g]``, ``eg = exp(ag)``; ``sc`` (5, P) float64 and ``ik`` (P,) int64 scratch.
    Every array over the grid has ``P`` = :func:`padded` ``(G)`` entries (the last grid point
    repeated): the vector loops then have no scalar remainder; only the first ``n_grid`` of
    ``le`` are emissions.
    """
    n_pad = le.size
    for g in range(n_pad):
        le[g] = 0.0
    for j in range(le_lib.shape[0]):
        for g in range(n_pad):
            le_lib[j, g] = 0.0
    wi = w[i]
    if wi > 0.0:
        arg, top, t, lt, ms = sc[0], sc[1], sc[2], sc[3], sc[4]
        for j in range(y.shape[1]):
            yy = y[i, j]
            lrj = lr[i, j]
            lmuj = lmu[i, j]
            r = np.exp(lrj)
            mu = np.exp(lmuj)
            lc = _log_comb(yy, r)
            lq = log_out - np.log((yy + 1.0) * (yy + 2.0))
            l0 = log_in + _log_nb(yy, lmuj, lrj, r, np.log(r + mu), lc)
            m0 = _logaddexp(l0, lq)
            resp0[j] = np.exp(l0 - m0)
            base = log_in + lc + yy * lmuj + r * lrj
            yr = yy + r
            kj, rj, egj, agj = keep[j], resp[j], eg[j], ag[j]
            for g in range(n_pad):
                arg[g] = r + mu * egj[g]
            _vlog(arg, kj, ik, ms)
            # log(e^lgk + e^lq) = max + log(1 + e^-|lgk - lq|), and the NB share from the
            # same exp; rj holds lgk - lq until the share is known
            for g in range(n_pad):
                lgk = base + yy * agj[g] - yr * kj[g]
                d = lgk - lq
                rj[g] = d
                top[g] = max(lgk, lq)
                t[g] = -abs(d)
            _vexp(t, t, ik)
            for g in range(n_pad):
                arg[g] = 1.0 + t[g]
            _vlog(arg, lt, ik, ms)
            if le_lib.shape[0] > 0:
                lj = le_lib[j]
                for g in range(n_pad):
                    lj[g] = wi * (top[g] + lt[g] - m0)
                    le[g] += lj[g]
            else:
                for g in range(n_pad):
                    le[g] += wi * (top[g] + lt[g] - m0)
            for g in range(n_pad):
                rj[g] = (1.0 if rj[g] >= 0.0 else t[g]) / arg[g]
    top_ = le[0]
    for g in range(1, n_grid):
        top_ = max(top_, le[g])
    return top_


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _step_forward(first, prev, e, stay, pi, rho, out):
    """``out ∝ e · (T' prev)`` (or ``e · rho`` for the ``first`` bin of a chain), normalised;
    returns the sum."""
    n_class, n_grid = pi.shape
    total = 0.0
    if first:
        for k in range(n_class):
            for g in range(n_grid):
                out[k, g] = rho[k, g] * e[g]
                total += out[k, g]
    else:
        redraw = 0.0
        for k in range(n_class):
            mass = 0.0
            for g in range(n_grid):
                mass += prev[k, g]
            redraw += (1.0 - stay[k]) * mass
        for k in range(n_class):
            s = stay[k]
            for g in range(n_grid):
                out[k, g] = (s * prev[k, g] + redraw * pi[k, g]) * e[g]
                total += out[k, g]
    for k in range(n_class):
        for g in range(n_grid):
            out[k, g] /= total
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _step_backward(e, beta, stay, pi, u, out):
    """``out = T (e · beta)``, not normalised: the backward message of the bin before; ``u``
    receives ``e · beta`` (``out`` may be ``beta``). Returns the redraw mass and the sum."""
    n_class, n_grid = pi.shape
    redraw_in = 0.0
    for k in range(n_class):
        for g in range(n_grid):
            u[k, g] = e[g] * beta[k, g]
            redraw_in += pi[k, g] * u[k, g]
    total = 0.0
    for k in range(n_class):
        s = stay[k]
        for g in range(n_grid):
            out[k, g] = s * u[k, g] + (1.0 - s) * redraw_in
            total += out[k, g]
    return redraw_in, total


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _quantile(cdf, edges, q):
    """Inverse CDF at ``q``: each grid point's mass spread evenly over its cell ``edges``."""
    n_grid = cdf.size
    prev = 0.0
    for g in range(n_grid):
        if cdf[g] >= q:
            step = cdf[g] - prev
            f = (q - prev) / step if step > 0.0 else 1.0
            return edges[g] + f * (edges[g + 1] - edges[g])
        prev = cdf[g]
    return edges[n_grid]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _tail_cells(edges, thresholds, cell, frac):
    """Where each threshold falls among the cell ``edges``: ``cell[t]`` (``-1`` below the
    first edge, ``G`` at or past the last) and its fraction ``frac[t]`` of that cell, so that
    ``1 − F(t)`` costs O(1) per bin (thresholds are the same for every bin of a chain)."""
    n_grid = edges.size - 1
    for t in range(thresholds.size):
        x = thresholds[t]
        cell[t] = n_grid
        frac[t] = 0.0
        if x <= edges[0]:
            cell[t] = -1
            continue
        for g in range(n_grid):
            if x < edges[g + 1]:
                cell[t] = g
                frac[t] = (x - edges[g]) / (edges[g + 1] - edges[g])
                break


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tail(cdf, cell, frac):
    """``1 − F(t)`` of the distribution of :func:`_quantile` at the threshold of ``cell`` and
    ``frac`` (see :func:`_tail_cells`)."""
    if cell < 0:
        return 1.0
    if cell >= cdf.size:
        return 0.0
    prev = cdf[cell - 1] if cell > 0 else 0.0
    return 1.0 - (prev + frac * (cdf[cell] - prev))


def padded(n_grid: int) -> int:
    """Grid length rounded up to whole vectors (8 doubles: one AVX-512 register)."""
    return -(-int(n_grid) // 8) * 8


def workspace(block: int, n_class: int, n_grid: int, n_lib: int, want_grad: bool) -> tuple:
    """Scratch arrays of :func:`chain_pass` for chains of up to ``block`` bins per block
    (reused across calls: a fresh ~40 MB per minibatch costs as much as the emissions)."""
    rows = block if want_grad else 1
    n_pad = padded(n_grid)
    return (
        np.empty((block + 1, n_class, n_grid)),
        np.empty((block, n_grid)),
        np.empty((rows, n_lib, n_pad)),
        np.empty((rows, n_lib, n_pad)),
        np.empty((rows, n_lib)),
    )


def cell_edges(grid: np.ndarray) -> np.ndarray:
    """Edges of the cells around the grid points (midpoints; half a step past each end)."""
    grid = np.asarray(grid, np.float64)
    mid = (grid[1:] + grid[:-1]) / 2
    return np.r_[grid[0] - (grid[1] - grid[0]) / 2, mid, grid[-1] + (grid[-1] - grid[-2]) / 2]


# The recursion and the gradient are sums over the grid: reassociation lets LLVM vectorise
# them (sums in another order, equal to float rounding). The emission maths above are
# compiled apart (not inlined at numba level) and keep strict IEEE order.
@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def chain_pass(
    y,
    lmu,
    lr,
    w,
    gain,
    grid,
    stay,
    pi,
    rho,
    log_in,
    log_out,
    alpha_in,
    beta_in,
    alpha_out,
    want_grad,
    g_lmu,
    g_lr,
    g_gain,
    n_stay,
    n_redraw,
    n_into,
    n_init,
    want_post,
    q,
    thresholds,
    mean,
    sd,
    lower,
    prob,
    uniforms,
    draws,
    e_all,
    e_libs,
    top_libs,
    top_given,
    alpha,
    e_blk,
    keep,
    resp,
    resp0,
):
    """Forward-backward over one chain; see the module docstring.

    Shapes: ``y, lmu, lr`` (n, J); ``w`` (n,); ``gain`` (J,); ``grid`` (G,); ``stay`` (K,);
    ``pi, rho`` (K, G); ``log_in``, ``log_out``: log probabilities that a count is NB or an
    outlier (``log_out = -inf``: no outliers). A piece of a longer chain (posterior): ``alpha_in``
    (K, G), the normalised forward message of the bin before the first (the first bin is then
    reached by a transition, not drawn from ``rho``; the log likelihood returned is
    conditional on the bins before), ``beta_in`` (K, G), the normalised backward message of
    the last bin (the evidence of the bins after it, :func:`chain_backward`), and
    ``alpha_out`` (K, G), written with the last bin's normalised forward message; each
    ``(0, 0)`` when unused. Without gradients only: the expected transition counts into the
    first bin are not part of the gradient outputs. Gradient outputs (added to, not overwritten): ``g_lmu, g_lr`` (n, J),
    ``g_gain`` (J,), ``n_stay, n_redraw`` (K,), ``n_into, n_init`` (K, G). Posterior outputs
    (overwritten): ``mean, sd, lower`` (n,), ``prob`` (n, T) for ``thresholds`` (T,),
    ``draws`` (S, n) from ``uniforms`` (S, n). ``e_all``: ``(n, G)`` float32 scratch that keeps
    every bin's emissions when no gradient is asked for (recomputed blocks then cost no
    transcendental functions), or ``(0, G)`` to recompute them. Shared emissions (posterior:
    a group's chain and its libraries' own chains): ``e_libs`` (J, n, G) float32 and
    ``top_libs`` (J, n) receive each library's emissions as ``e_all`` and their shifts, or
    have 0 rows; ``top_given`` (n,): the shifts of emissions already in ``e_all`` (this
    chain's come from another's ``e_libs``: nothing is computed from the counts), else
    empty. Workspace (overwritten; see
    :func:`workspace`): ``alpha`` (block + 1, K, G) and ``e_blk`` (block, G) set the block;
    ``keep, resp`` (block, J, :func:`padded` (G)) and ``resp0`` (block, J), one row each
    without gradients.
    Returns the log marginal likelihood ratio.
    """
    n, n_lib = y.shape
    n_grid = grid.size
    n_class = stay.size
    if n == 0:
        return 0.0
    n_pad = keep.shape[2]
    ag, eg = _gain_grid(gain, grid, n_pad)
    sc = np.empty((5, n_pad))
    ik = np.empty(n_pad, np.int64)
    block = alpha.shape[0] - 1  # alpha's row 0: the bin before the block
    n_block = (n + block - 1) // block
    last_lo = (n_block - 1) * block
    ckpt = np.empty((n_block, n_class, n_grid))
    le = np.empty(n_pad)
    cur = np.empty((n_class, n_grid))
    prev = np.zeros((n_class, n_grid))
    has_in = alpha_in.shape[0] > 0
    if has_in:  # a piece continuing a chain: its first bin follows alpha_in
        prev[:] = alpha_in
        ckpt[0] = alpha_in
    # Without gradients, emissions may be kept for every bin (e_all of n rows, float32) so
    # that recomputing a block's forward messages costs no exp/log.
    cached = e_all.shape[0] == n and not want_grad
    given = cached and top_given.size == n
    n_share = e_libs.shape[0]
    le_lib = np.empty((n_share, n_pad))
    no_lib = np.empty((0, n_pad))
    log_z = 0.0
    # Forward: normalised messages; checkpoints at block borders; last block kept whole.
    for i in range(n):
        if given:
            top = top_given[i]
            for g in range(n_grid):
                le[g] = e_all[i, g]
        else:
            r_i = max(i - last_lo, 0) if want_grad else 0
            top = _log_emission(
                i, y, lmu, lr, w, gain, ag, eg, log_in, log_out, le, le_lib, keep[r_i],
                resp[r_i], resp0[r_i], sc, ik, n_grid,
            )  # fmt: skip
            for j in range(n_share):
                lj = le_lib[j]
                top_libs[j, i] = _exp_own_max(lj, n_grid, ik)
                for g in range(n_grid):
                    e_libs[j, i, g] = lj[g]
            _exp_shift(le, top, le, ik)
            if cached:
                for g in range(n_grid):
                    e_all[i, g] = le[g]
        total = _step_forward(i == 0 and not has_in, prev, le, stay, pi, rho, cur)
        log_z += top + np.log(total)
        if i >= last_lo:
            if i == last_lo and (i > 0 or has_in):
                alpha[0] = prev
            alpha[i - last_lo + 1] = cur
            e_blk[i - last_lo] = le[:n_grid]
        prev, cur = cur, prev
        if (i + 1) % block == 0 and i + 1 < n:
            ckpt[(i + 1) // block] = prev
    if alpha_out.shape[0] > 0:
        alpha_out[:] = prev
    if not want_grad and not want_post:
        return log_z

    beta = np.ones((n_class, n_grid))
    if beta_in.shape[0] > 0:  # the evidence of the bins after this piece
        beta[:] = beta_in
    new_beta = np.empty((n_class, n_grid))
    u = np.empty((n_class, n_grid))
    post = np.empty(n_grid)
    cdf = np.empty(n_grid)
    n_draw = uniforms.shape[0]
    edges = np.empty(n_grid + 1)
    edges[0] = grid[0] - (grid[1] - grid[0]) / 2
    for g in range(1, n_grid):
        edges[g] = (grid[g - 1] + grid[g]) / 2
    edges[n_grid] = grid[n_grid - 1] + (grid[n_grid - 1] - grid[n_grid - 2]) / 2
    t_cell = np.empty(thresholds.size, np.int64)
    t_frac = np.empty(thresholds.size)
    _tail_cells(edges, thresholds, t_cell, t_frac)
    for b in range(n_block - 1, -1, -1):
        lo = b * block
        hi = min(n, lo + block)
        if b != n_block - 1:
            # Recompute this block's forward messages from the checkpoint before it.
            if lo > 0 or has_in:
                alpha[0] = ckpt[b]
            for i in range(lo, hi):
                if cached:
                    for g in range(n_grid):
                        e_blk[i - lo, g] = e_all[i, g]
                else:
                    r_i = i - lo if want_grad else 0
                    top = _log_emission(
                        i, y, lmu, lr, w, gain, ag, eg, log_in, log_out, le, no_lib,
                        keep[r_i], resp[r_i], resp0[r_i], sc, ik, n_grid,
                    )  # fmt: skip
                    _exp_shift(le, top, e_blk[i - lo], ik)
                _step_forward(
                    i == 0 and not has_in, alpha[i - lo], e_blk[i - lo], stay, pi, rho,
                    alpha[i - lo + 1],
                )  # fmt: skip
        for i in range(hi - 1, lo - 1, -1):
            al = alpha[i - lo + 1]
            e = e_blk[i - lo]
            total = 0.0
            for g in range(n_grid):
                post[g] = 0.0
            for k in range(n_class):
                for g in range(n_grid):
                    p = al[k, g] * beta[k, g]
                    post[g] += p
                    total += p
                    if want_grad and i == 0 and not has_in:
                        u[k, g] = p
            for g in range(n_grid):
                post[g] /= total
            if want_grad and i == 0 and not has_in:
                for k in range(n_class):
                    for g in range(n_grid):
                        n_init[k, g] += u[k, g] / total
            if want_post:
                m = 0.0
                acc = 0.0
                for g in range(n_grid):
                    m += post[g] * grid[g]
                    acc += post[g]
                    cdf[g] = acc
                v = 0.0
                for g in range(n_grid):
                    v += post[g] * (grid[g] - m) ** 2
                mean[i] = m
                sd[i] = np.sqrt(v)
                lower[i] = _quantile(cdf, edges, q)
                for t in range(thresholds.size):
                    prob[i, t] = _tail(cdf, t_cell[t], t_frac[t])
                for s in range(n_draw):
                    draws[s, i] = _quantile(cdf, edges, uniforms[s, i])
            if want_grad and w[i] > 0.0:
                wi = w[i]
                for j in range(n_lib):
                    yy = y[i, j]
                    lrj = lr[i, j]
                    r = np.exp(lrj)
                    mu = np.exp(lmu[i, j])
                    yr = yy + r
                    # d log NB / d log r without the log(r + m) and 1/(r + m) parts
                    dpsi = _digamma_diff(yy, r) + lrj + 1.0
                    lg = keep[i - lo, j]
                    rg = resp[i - lo, j]
                    s_mu = 0.0
                    s_r = 0.0
                    s_a = 0.0
                    for g in range(n_grid):
                        m = mu * eg[j, g]
                        inv = 1.0 / (r + m)
                        pr = post[g] * rg[g]
                        d_lm = yy - yr * m * inv
                        s_mu += pr * d_lm
                        s_r += pr * (dpsi - lg[g] - yr * inv)
                        s_a += pr * grid[g] * d_lm
                    r0 = resp0[i - lo, j]
                    inv0 = 1.0 / (r + mu)
                    g_lmu[i, j] += wi * (s_mu - r0 * (yy - yr * mu * inv0))
                    g_lr[i, j] += wi * r * (s_r - r0 * (dpsi - np.log(r + mu) - yr * inv0))
                    g_gain[j] += wi * s_a
            if i > 0:
                ap = alpha[i - lo]  # forward message of bin i - 1
                redraw_in, total = _step_backward(e, beta, stay, pi, u, new_beta)
                if want_grad:
                    # Joint posterior of (bin i - 1, bin i), normalised by its total.
                    joint = 0.0
                    leave = 0.0
                    for k in range(n_class):
                        for g in range(n_grid):
                            joint += ap[k, g] * new_beta[k, g]
                    for k in range(n_class):
                        mass = 0.0
                        kept = 0.0
                        for g in range(n_grid):
                            mass += ap[k, g]
                            kept += ap[k, g] * u[k, g]
                        n_stay[k] += stay[k] * kept / joint
                        out = (1.0 - stay[k]) * mass * redraw_in / joint
                        n_redraw[k] += out
                        leave += (1.0 - stay[k]) * mass
                    for k in range(n_class):
                        for g in range(n_grid):
                            n_into[k, g] += leave * pi[k, g] * u[k, g] / joint
                for k in range(n_class):
                    for g in range(n_grid):
                        beta[k, g] = new_beta[k, g] / total
    return log_z


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def chain_backward(y, lmu, lr, w, gain, grid, stay, pi, log_in, log_out, own, betas):
    """Backward messages over a piece of a chain, from its last bin to the bin before its
    first: the boundary messages that let :func:`chain_pass` run a long chain in pieces.

    Shapes as :func:`chain_pass` (``y, lmu, lr`` (n, J) of one group). ``betas`` (1 +
    O, K, G), in and out: on entry the normalised backward message of the last bin (ones at
    a chain's end), on return that of the bin before the first; row 0 is the group's chain
    (every library of ``y``), row ``1 + t`` the chain of library ``own[t]`` alone (its own
    evidence, from the same emissions). Each bin's emissions are computed once.
    """
    n, n_lib = y.shape
    n_grid = grid.size
    n_class = stay.size
    n_pad = (n_grid + 7) // 8 * 8  # padded(n_grid)
    ag, eg = _gain_grid(gain, grid, n_pad)
    sc = np.empty((5, n_pad))
    ik = np.empty(n_pad, np.int64)
    le = np.empty(n_pad)
    le_lib = np.empty((n_lib if own.size > 0 else 0, n_pad))
    keep = np.empty((n_lib, n_pad))
    resp = np.empty((n_lib, n_pad))
    resp0 = np.empty(n_lib)
    u = np.empty((n_class, n_grid))
    for i in range(n - 1, -1, -1):
        top = _log_emission(
            i, y, lmu, lr, w, gain, ag, eg, log_in, log_out, le, le_lib, keep, resp, resp0,
            sc, ik, n_grid,
        )  # fmt: skip
        _exp_shift(le, top, le, ik)
        _normalised_step_backward(le, betas[0], stay, pi, u)
        for t in range(own.size):
            lj = le_lib[own[t]]
            _exp_own_max(lj, n_grid, ik)
            _normalised_step_backward(lj, betas[1 + t], stay, pi, u)


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _normalised_step_backward(e, beta, stay, pi, u):
    """``beta ← T (e · beta)``, normalised: the message of the bin before (``u``: scratch)."""
    _, total = _step_backward(e, beta, stay, pi, u, beta)
    n_class, n_grid = pi.shape
    for k in range(n_class):
        for g in range(n_grid):
            beta[k, g] /= total
