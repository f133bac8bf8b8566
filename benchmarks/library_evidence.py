"""Dev diagnostic: does ChIPVI's library-level output carry each library's own evidence?

Trains ChIPVI (kwargs as JSON) on a simulated data set kept by ``bench_quality.py --keep $BQ``
(``simN``) or on the bundled CSSQ chr19 data (``real``) and prints: sd of (library - group)
LFE relative to the group's, its correlation with the library's own residual
log((y+0.5)/(mu+0.5)), and that of the replicate difference with the residual difference;
then the bench_quality metrics (sim) or replicate concordance / promoter AUPRC (real).

    BQ=/tmp/model_dev/bq SEED=0 python benchmarks/library_evidence.py sim1 '{"consistency_weight": [1, 0]}'
"""

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch
from scipy.stats import pearsonr

import chipvi

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import metrics, real_data_concordance, verdict  # noqa: E402

warnings.filterwarnings("ignore")
for n in ("lightning", "lightning.pytorch", "scvi"):
    logging.getLogger(n).setLevel(logging.ERROR)

torch.set_num_threads(1)
BQ = os.environ.get("BQ", "/tmp/model_dev/bq")  # --keep folder of bench_quality.py
which, kw = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
scvi.settings.seed = int(os.environ.get("SEED", 0))
if which == "real":
    adata = chipvi.datasets.cssq_chr19()
else:
    seed = int(which[3:])
    adata = chipvi.read_bams(f"{BQ}/sim{seed}/samplesheet.csv", progress=False)
chipvi.ChIPVI.setup_anndata(adata)
model = chipvi.ChIPVI(adata, **kw)
t0 = time.perf_counter()
model.train(enable_progress_bar=False)
ts = time.perf_counter() - t0
lib = model.get_denoised().to_numpy()
grp = model.get_denoised(level="group").to_numpy()
gnames = list(model.group_names)
gidx = np.array([gnames.index(g) for g in adata.var["group"]])
dev = lib - grp[:, gidx]
mu = model.get_technical()["mu"].to_numpy()
y = adata.X.astype(float)
resid = np.log((y + 0.5) / (mu + 0.5))
out = {"kw": kw, "data": which, "train_s": round(ts, 1)}
out["sd_dev/sd_group"] = [
    round(float(dev[:, j].std() / grp[:, gidx[j]].std()), 3) for j in range(y.shape[1])
]
out["corr(dev,own_resid)"] = [
    round(float(pearsonr(dev[:, j], resid[:, j])[0]), 3) for j in range(y.shape[1])
]
# residual relative to the group's mean residual (library-specific evidence)
gm = np.stack([resid[:, gidx == gidx[j]].mean(1) for j in range(y.shape[1])], 1)
out["corr(dev,own_resid-grp_resid)"] = [
    round(float(pearsonr(dev[:, j], (resid - gm)[:, j])[0]), 3) for j in range(y.shape[1])
]
pairs = [(a, b) for a in range(y.shape[1]) for b in range(a + 1, y.shape[1]) if gidx[a] == gidx[b]]
out["corr(dev_a-dev_b,resid_a-resid_b)"] = [
    round(float(pearsonr(dev[:, a] - dev[:, b], resid[:, a] - resid[:, b])[0]), 3) for a, b in pairs
]
print(json.dumps(out))
if which == "real":
    print(real_data_concordance(adata, {"chipvi LFE": lib})[0].round(3).to_string(index=False))
else:
    seed = int(which[3:])
    truth = pd.read_csv(next(Path(f"{BQ}/sim{seed}").glob("*truth*.tsv")), sep="\t")
    sheet = pd.read_csv(f"{BQ}/sim{seed}/samplesheet.csv")
    depth = adata.var.loc[sheet["sample"], "depth"].to_numpy()
    strong = int(np.argmax(depth))
    weak = 1 - strong
    group = sheet["group"].iloc[0]
    with np.load(f"{BQ}/peer_scores_seed{seed}_2500000.npz") as sv:
        scores = {k: sv[k] for k in sv.files}
    scores["chipvi LFE"] = lib
    scores["chipvi group"] = grp[:, gidx]
    table = pd.DataFrame({k: metrics(v, truth, group, strong, weak) for k, v in scores.items()}).T
    print(table.round(3).to_string())
    print("beats:", verdict(table).loc["chipvi LFE"].to_dict())
