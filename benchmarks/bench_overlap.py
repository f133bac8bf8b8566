"""Minibatch overlap: the error of conditioning a piece of the chain on only L bins before it.

A training minibatch (or one thread's piece of it) ``[s, e)`` is scored as
``log p(y[s:e] | y[s-L:s])`` (``chipvi.module._overlap``). This script measures how far that
is from the conditional on the whole chain before ``s`` as L grows, on a model trained with
defaults on ``bench_scale.py``'s simulated counts (one long chromosome), at its learned stay
probabilities and with the highest stay class forced to 0.98, 0.99, 0.995 and 0.999 (the rest
of the model as learned). The reference conditions on ``--reference`` bins (its own error
is below float64 noise at these stays). Everything runs in float64, so the figures are the
truncation error itself, not float32 noise.

For each L it reports, over ``--cuts`` random cut points (pieces of ``--piece`` bins): the
largest |error| of the log-likelihood (nats) and the largest relative error of its gradient
(every input: technical mean and dispersion of every row, gains, stay, redraw prior).

With ``--samplesheet`` the model is trained on real reads instead (``read_bams`` at 200 bp,
e.g. the MACS3 CTCF chr22 library of /work/shared/data: one library, ~0.2 reads per bin, the
sparse regime where the chain remembers longest).

Usage::

    python benchmarks/bench_overlap.py --bins 300000 --libraries 2
    python benchmarks/bench_overlap.py --samplesheet /work/shared/data/macs3_ctcf_chr22/samplesheet.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
for _name in ("lightning", "lightning.pytorch", "scvi"):
    logging.getLogger(_name).setLevel(logging.ERROR)

sys.path.insert(0, str(Path(__file__).parent))

LS = (0, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
STAYS = (None, 0.98, 0.99, 0.995, 0.999)


def conditional(inputs, transition, outlier, q, s, e):
    """``log p(y[s:e] | y[q:s])`` and its gradient (flattened, every input), float64."""
    import torch

    from chipvi.module import ChainInputs
    from chipvi.module._overlap import conditional_log_likelihood

    leaves = {
        "log_mu": inputs.log_mu.clone().requires_grad_(),
        "log_r": inputs.log_r.clone().requires_grad_(),
        "gain": inputs.gain.clone().requires_grad_(),
    }
    trans = {k: v.clone().requires_grad_(k != "grid") for k, v in transition.items()}
    x = ChainInputs(inputs.y, leaves["log_mu"], leaves["log_r"], inputs.w, leaves["gain"],
                    inputs.groups, inputs.starts)  # fmt: skip
    value = conditional_log_likelihood(x, [(q, s, e)], np.zeros(1, np.int64), trans, outlier)
    value.backward()
    grads = [leaves[k].grad.flatten() for k in leaves]  # rows before q: zero
    grads += [trans[k].grad.flatten() for k in trans if k != "grid"]
    return float(value), torch.cat(grads).numpy()


def main(argv=None) -> int:
    import scvi
    import torch

    from bench_scale import simulate_counts
    from chipvi import ChIPVI
    from chipvi.module import ChainInputs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bins", type=int, default=300_000)
    parser.add_argument("--libraries", type=int, default=2)
    parser.add_argument("--cuts", type=int, default=8)
    parser.add_argument("--piece", type=int, default=8192)
    parser.add_argument("--reference", type=int, default=32768)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samplesheet", help="train on these BAMs (read_bams, 200 bp)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    if args.samplesheet:
        import chipvi

        adata = chipvi.read_bams(args.samplesheet, progress=False)
        args.bins, args.libraries = adata.n_obs, adata.n_vars
        print(f"{args.samplesheet}: {adata.n_obs} bins x {adata.n_vars} libraries, "
              f"{float(np.asarray(adata.X).sum()) / adata.n_obs:.2f} reads per bin")  # fmt: skip
    else:
        adata = simulate_counts([args.bins], args.libraries, seed=args.seed)
    ChIPVI.setup_anndata(adata)
    scvi.settings.seed = args.seed
    model = ChIPVI(adata)
    t0 = time.perf_counter()
    model.train(enable_progress_bar=False, accelerator="cpu")
    module = model.module
    learned = module.stay().detach().numpy()
    print(f"trained in {time.perf_counter() - t0:.0f} s; learned stay {np.round(learned, 4)}")

    tech = model._technical_all(adata, None)
    d = torch.float64
    inputs = ChainInputs(
        torch.as_tensor(tech["counts"], dtype=d), torch.as_tensor(tech["log_mu"], dtype=d),
        torch.as_tensor(tech["log_r"], dtype=d), torch.as_tensor(tech["weight"], dtype=d),
        module.gain().detach().to(d), module.groups, (0,),
    )  # fmt: skip
    rng = np.random.default_rng(args.seed)
    lo = args.reference
    cuts = rng.integers(lo, args.bins - args.piece, args.cuts)
    print(f"{args.cuts} cuts, pieces of {args.piece} bins, reference L = {args.reference}")
    print("| top stay | L | max abs error, nats | max rel. gradient error |")
    print("|---|---|---|---|")
    top = int(np.argmax(learned))
    for stay in STAYS:
        logit = module.stay_logit.detach().clone()
        if stay is not None:
            logit[top] = float(np.log(stay / (1 - stay)))
        with torch.no_grad():
            saved = module.stay_logit.detach().clone()
            module.stay_logit.copy_(logit)
            transition = {k: v.detach().to(d) for k, v in module.transition().items()}
            module.stay_logit.copy_(saved)
        label = f"{np.round(torch.sigmoid(logit).numpy(), 4).tolist()}"
        for length in LS:
            errs, gerrs = [], []
            for s in cuts:
                # one slice per cut: rows [s - reference, s + piece)
                a = s - args.reference
                part = ChainInputs(
                    inputs.y[a : s + args.piece], inputs.log_mu[a : s + args.piece],
                    inputs.log_r[a : s + args.piece], inputs.w[a : s + args.piece],
                    inputs.gain, inputs.groups, (0,),
                )  # fmt: skip
                ref, gref = conditional(part, transition, module.outlier, 0, s - a,
                                        s - a + args.piece)  # fmt: skip
                val, g = conditional(part, transition, module.outlier, s - a - length, s - a,
                                     s - a + args.piece)  # fmt: skip
                errs.append(abs(val - ref))
                gerrs.append(np.linalg.norm(g - gref) / np.linalg.norm(gref))
            print(f"| {label} | {length} | {max(errs):.2e} | {max(gerrs):.2e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
