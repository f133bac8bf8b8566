"""Dev diagnostic: ChIPVI with given options against the peers on one bench_quality data set.

Trains ChIPVI (keyword arguments as JSON) on a simulation kept by
``bench_quality.py --keep $BQ`` (``sim1``, ``sim2``, ``sim3_specific0.3``, ...: the folder
name; its peer scores must be in the same folder) or on the bundled CSSQ chr19 data
(``real``), and prints the bench_quality metrics of the posterior mean and of the 5 % lower
quantile next to the peers'. On a data set with replicate-specific features it adds the
library-level metrics and, for the weak library, the mean score rank of bins its own truth
calls shared, strong-only (it lacks them), weak-only and background. It also prints the spread
of the library deviations (library - group output) relative to the group output, and their
correlation with the library's own residual log((y+0.5)/(mu+0.5)).

    BQ=/tmp/model_dev/bq SEED=0 python benchmarks/library_evidence.py sim3_specific0.3 \
        '{"library_smoothness": 0.9, "library_scale": 0.3}'
"""

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scvi
import torch
from scipy.stats import pearsonr, rankdata

import chipvi

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import (  # noqa: E402
    CHIPVI_KINDS,
    library_metrics,
    metrics,
    real_data_concordance,
    verdict,
)

warnings.filterwarnings("ignore")
for n in ("lightning", "lightning.pytorch", "scvi"):
    logging.getLogger(n).setLevel(logging.ERROR)

torch.set_num_threads(1)
BQ = Path(os.environ.get("BQ", "/tmp/model_dev/bq"))  # --keep folder of bench_quality.py
which, kw = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
scvi.settings.seed = int(os.environ.get("SEED", 0))
if which == "real":
    adata = chipvi.datasets.cssq_chr19()
else:
    cache = BQ / which / "auto.h5ad"  # counted as bench_quality does
    if cache.exists():
        adata = ad.read_h5ad(cache)
    else:
        sheet_path = BQ / which / "samplesheet.csv"
        adata = chipvi.read_bams(sheet_path, progress=False, max_per_position="auto")
        adata.write_h5ad(cache)
chipvi.ChIPVI.setup_anndata(adata)
model = chipvi.ChIPVI(adata, **kw)
t0 = time.perf_counter()
model.train(enable_progress_bar=False)
ts = time.perf_counter() - t0
ours = {
    n: model.get_denoised(kind=k, level=lv, return_numpy=True)
    for n, (k, lv) in CHIPVI_KINDS.items()
}
lib = ours["chipvi LFE"]
grp = model.get_denoised(level="group", return_numpy=True)
gidx = np.array([model.group_names.index(g) for g in adata.var["group"]])
dev = lib - grp[:, gidx]
mu = model.get_technical(return_numpy=True)["mu"]
resid = np.log((adata.X + 0.5) / (mu + 0.5))
n_lib = adata.n_vars
out = {"kw": kw, "data": which, "seed": scvi.settings.seed, "train_s": round(ts, 1)}
out["sd_dev/sd_group"] = [
    round(float(dev[:, j].std() / grp[:, gidx[j]].std()), 3) for j in range(n_lib)
]
out["corr(dev,own_resid)"] = [
    round(float(pearsonr(dev[:, j], resid[:, j])[0]), 3) for j in range(n_lib)
]
out["group_lfe_q99_max"] = [round(float(np.quantile(grp, 0.99)), 2), round(float(grp.max()), 2)]
print(json.dumps(out))
if which == "real":
    print(real_data_concordance(adata, ours)[0].round(3).to_string(index=False))
    sys.exit(0)
truth = pd.read_csv(BQ / which / "truth.tsv", sep="\t")
sheet = pd.read_csv(BQ / which / "samplesheet.csv")
strong = int(np.argmax(adata.var.loc[sheet["sample"], "depth"].to_numpy()))
weak = 1 - strong
peers = next(BQ.glob(f"peer_scores_seed{which[3:]}_*.npz"))
with np.load(peers) as saved:
    scores = {k: saved[k] for k in saved.files} | ours
specific = "specific" in which
if specific:
    samples = sheet["sample"].tolist()
    table = {k: library_metrics(v, truth, samples, strong, weak) for k, v in scores.items()}
else:
    table = {k: metrics(v, truth, sheet["group"].iloc[0], strong, weak) for k, v in scores.items()}
table = pd.DataFrame(table).T
print(table.round(3).to_string())
print(verdict(table).to_string())
if specific:
    own = [truth[f"enriched_{s}"].to_numpy() for s in samples]
    classes = {
        "shared": own[0] & own[1],
        "strong only (weak lacks)": own[strong] & ~own[weak],
        "weak only": own[weak] & ~own[strong],
        "background": ~(own[0] | own[1]),
    }
    ranks = {
        k: {c: (rankdata(v[:, weak]) / len(v))[m].mean() for c, m in classes.items()}
        for k, v in scores.items()
    }
    print("weak library: mean score rank (0-1) of its bins by own truth")
    print(pd.DataFrame(ranks).T.round(3).to_string())
