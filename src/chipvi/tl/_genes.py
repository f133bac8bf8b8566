"""Gene-expression association: ChIP signal at promoters (or gene bodies) vs expression."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from .._bins import interval_bin_ranges, log_cpm, signal_frame
from .._errors import ChipviInputError
from .._store import store

_VERSION = re.compile(r"\.\d+$")


def _read_gene_intervals(genes: pd.DataFrame | str | os.PathLike, gene_key: str) -> pd.DataFrame:
    """Genes as ``chrom, start, end, strand, gene`` (0-based half-open) from a GTF, BED or table.

    The one place that parses gene annotations (GTF through pyranges); swap for the shared
    ``chipvi.io`` interval adapter when it exists.
    """
    if isinstance(genes, pd.DataFrame):
        table = genes.rename(
            columns={"Chromosome": "chrom", "Start": "start", "End": "end", "Strand": "strand"}
        )
        need = ["chrom", "start", "end", gene_key]
        missing = [c for c in need if c not in table.columns]
        if missing:
            raise ChipviInputError(
                f"Gene table lacks column(s) {missing}; it has {list(table.columns)}."
            )
        strand = table["strand"] if "strand" in table else "+"
        return pd.DataFrame(
            {
                "chrom": table["chrom"].astype(str),
                "start": table["start"].astype(np.int64),
                "end": table["end"].astype(np.int64),
                "strand": strand,
                "gene": table[gene_key].astype(str),
            }
        ).reset_index(drop=True)
    path = Path(genes)
    if not path.is_file():
        raise ChipviInputError(f"Gene annotation {path} does not exist.")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".gtf", ".gff", ".gff2")):
        import pyranges as pr

        try:
            gtf = pr.read_gtf(str(path), as_df=True)
        except Exception as err:  # pyranges raises assorted errors on malformed lines
            raise ChipviInputError(f"Could not parse {path} as GTF: {err}") from err
        if gene_key not in gtf.columns:
            raise ChipviInputError(
                f"{path} has no {gene_key!r} attribute; attributes found: "
                f"{[c for c in gtf.columns if c[0].islower()]}. Pass gene_key= one of them."
            )
        rows = gtf[gtf["Feature"].astype(str) == "gene"]
        if rows.empty:  # no gene lines: span each gene's transcripts/exons
            rows = gtf.groupby(gtf[gene_key].astype(str), observed=True).agg(
                Chromosome=("Chromosome", "first"), Start=("Start", "min"), End=("End", "max"),
                Strand=("Strand", "first"),
            ).reset_index()  # fmt: skip
        if rows[gene_key].isna().all():
            raise ChipviInputError(
                f"{path} has no {gene_key!r} attribute on its gene records; pass gene_key= an "
                "attribute they carry (e.g. 'gene_id')."
            )
        rows = rows[rows[gene_key].notna()]
        return pd.DataFrame(
            {
                "chrom": rows["Chromosome"].astype(str).to_numpy(),
                "start": rows["Start"].to_numpy(dtype=np.int64),
                "end": rows["End"].to_numpy(dtype=np.int64),
                "strand": rows["Strand"].astype(str).to_numpy(),
                "gene": rows[gene_key].astype(str).to_numpy(),
            }
        )
    if name.endswith(".bed"):
        bed = pd.read_csv(path, sep="\t", header=None, comment="#")
        if bed.shape[1] < 4:
            raise ChipviInputError(f"{path}: gene BED needs a 4th column (gene name/id).")
        return pd.DataFrame(
            {
                "chrom": bed[0].astype(str),
                "start": bed[1].astype(np.int64),
                "end": bed[2].astype(np.int64),
                "strand": bed[5].astype(str) if bed.shape[1] > 5 else "+",
                "gene": bed[3].astype(str),
            }
        )
    raise ChipviInputError(f"{path}: gene annotation must be .gtf, .gff or .bed (optionally .gz).")


def _expression_table(expression: Any) -> pd.DataFrame:
    """Genes × groups table from a DataFrame, an RNA AnnData or a MuData with an ``rna`` modality."""
    if type(expression).__name__ == "MuData":  # avoid importing mudata just to check
        if "rna" not in expression.mod:
            raise ChipviInputError(
                f"The MuData has no 'rna' modality (modalities: {list(expression.mod)})."
            )
        expression = expression.mod["rna"]
    if isinstance(expression, AnnData):
        x = expression.X.toarray() if hasattr(expression.X, "toarray") else np.asarray(expression.X)
        groups = (
            expression.obs["group"].astype(str)
            if "group" in expression.obs
            else pd.Series(expression.obs_names, index=expression.obs_names)
        )
        frame = pd.DataFrame(x, index=groups.to_numpy(), columns=expression.var_names)
        return frame.groupby(level=0).mean().T
    if isinstance(expression, pd.DataFrame):
        return expression.astype(np.float64)
    raise ChipviInputError(
        "expression must be a genes × groups DataFrame, an RNA AnnData (samples × genes) or a "
        f"MuData with an 'rna' modality, not {type(expression).__name__}."
    )


def _gene_windows(genes: pd.DataFrame, region: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    if region == "promoter":
        tss = np.where(genes["strand"].astype(str) == "-", genes["end"] - 1, genes["start"])
        return np.maximum(tss - window, 0), tss + window + 1
    if region == "gene_body":
        return np.maximum(genes["start"].to_numpy() - window, 0), genes["end"].to_numpy() + window
    raise ChipviInputError(f"region must be 'promoter' or 'gene_body', not {region!r}.")


def _mean_over_ranges(values: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Mean of sorted-bin ``values`` (bins × columns) over each range ``first:last``."""
    csum = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    width = (last - first)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(width > 0, (csum[last] - csum[first]) / np.maximum(width, 1), np.nan)


def gene_expression_association(
    adata: AnnData,
    genes: pd.DataFrame | str | os.PathLike,
    expression: Any,
    *,
    denoised: str | pd.DataFrame | None = None,
    layer: str | None = None,
    region: Literal["promoter", "gene_body"] = "promoter",
    window: int = 1000,
    gene_key: str = "gene_id",
    strip_version: bool = True,
    groups: Sequence[str] | str | None = None,
    min_genes: int = 10,
    key_added: str | None = "chipvi_gene_association",
) -> pd.DataFrame:
    """Spearman correlation between ChIP signal at genes and their expression, per group.

    Signal per gene is the mean over the bins overlapping its promoter (TSS ± ``window``, strand
    aware) or its gene body (± ``window``). Raw signal is the group's mean log1p counts per
    million over its replicates; denoised signal is the group-level log fold enrichment.

    Parameters
    ----------
    adata
        ChIP AnnData in the chipvi layout (``var['group']``).
    genes
        GTF/GFF (``gene`` lines, else spans of each gene's lines), BED (name in column 4,
        strand in column 6) or a table with ``chrom, start, end, strand`` and ``gene_key``.
    expression
        Genes × groups DataFrame (index gene ids/names, columns ChIP groups), an RNA AnnData
        (samples × genes, ``obs['group']``; samples of a group are averaged) or a MuData whose
        ``rna`` modality is such an AnnData (see :func:`chipvi.io.to_mudata`).
    denoised
        Group-level denoised values: an ``adata.obsm`` key (DataFrame with group columns; after
        ``model.add_posterior(adata)``: ``"chipvi_group_lfe"``) or a bins × groups DataFrame.
        ``None`` reports raw only.
    layer
        Raw counts (``None``: ``X``).
    region, window
        Promoter (TSS ± window bp) or gene body (± window bp).
    gene_key
        GTF attribute (or table column) matched against the expression table's gene ids,
        typically ``"gene_id"`` or ``"gene_name"``.
    strip_version
        Ignore Ensembl-style version suffixes (``ENSG…​.12``) on both sides when matching.
    groups
        Groups to report (default: ChIP groups that are expression columns).
    min_genes
        Fewer matched genes than this is an error (ids probably do not match).
    key_added
        Store ``{'params': ..., 'summary': ..., 'genes': ...}`` in ``adata.uns[key_added]``
        (``None``: do not store).

    Returns
    -------
    pandas.DataFrame
        One row per group: ``n_genes``, ``spearman_raw``, ``pvalue_raw`` and, with
        ``denoised``, ``spearman_denoised``, ``pvalue_denoised``.
    """
    if int(window) < 0:
        raise ChipviInputError(f"window must be >= 0, got {window}.")
    table = _read_gene_intervals(genes, gene_key)
    expr = _expression_table(expression)
    chip_groups = list(pd.unique(adata.var["group"].astype(str)))
    if groups is None:
        wanted = [g for g in chip_groups if g in expr.columns]
        if not wanted:
            raise ChipviInputError(
                f"No expression column names a ChIP group; expression columns "
                f"{list(expr.columns)[:8]}, ChIP groups {chip_groups}."
            )
    else:
        wanted = [groups] if isinstance(groups, str) else list(groups)
        bad = [g for g in wanted if g not in chip_groups or g not in expr.columns]
        if bad:
            raise ChipviInputError(
                f"Group(s) {bad} missing from the ChIP groups {chip_groups} or the expression "
                f"columns {list(expr.columns)[:8]}."
            )
    key = (lambda s: s.str.replace(_VERSION, "", regex=True)) if strip_version else (lambda s: s)
    table["gene"] = key(table["gene"].astype(str))
    expr.index = key(pd.Index(expr.index.astype(str)).to_series()).to_numpy()
    expr = expr.groupby(level=0).mean()
    table = table.drop_duplicates("gene")
    on_bins = table["chrom"].isin(set(adata.obs["chrom"].astype(str)))
    matched = table[on_bins & table["gene"].isin(expr.index)]
    if len(matched) < int(min_genes):
        raise ChipviInputError(
            f"Only {len(matched)} of {len(expr)} expression genes matched a {gene_key!r} of the "
            f"{int(on_bins.sum())} annotated genes on the binned chromosomes (need {min_genes}); "
            f"e.g. expression ids {list(expr.index[:3])} vs annotation ids "
            f"{list(table['gene'][:3])}. Try gene_key='gene_name' or 'gene_id'."
        )
    lo, hi = _gene_windows(matched, region, int(window))
    order, first, last = interval_bin_ranges(adata, matched["chrom"].to_numpy(), lo, hi)

    raw_lib = log_cpm(adata, layer)
    lib_group = adata.var["group"].astype(str)
    raw = pd.DataFrame(
        {g: raw_lib.loc[:, (lib_group == g).to_numpy()].mean(axis=1) for g in wanted}
    )
    sources = {"raw": raw}
    if denoised is not None:
        if isinstance(denoised, str):
            sources["denoised"] = signal_frame(adata, key=denoised, columns=wanted)
        elif isinstance(denoised, pd.DataFrame):
            sources["denoised"] = denoised.loc[:, wanted].astype(np.float64)
        else:
            raise ChipviInputError(
                "denoised must be an obsm key (e.g. 'chipvi_group_lfe' after "
                f"model.add_posterior(adata)) or a DataFrame, not {type(denoised).__name__}."
            )
    per_gene = pd.DataFrame(index=matched["gene"].to_numpy())
    for name, frame in sources.items():
        means = _mean_over_ranges(frame.to_numpy(dtype=np.float64)[order], first, last)
        for j, g in enumerate(wanted):
            per_gene[f"{g}:{name}"] = means[:, j]
    for g in wanted:
        per_gene[f"{g}:expression"] = expr.loc[per_gene.index, g].to_numpy()
    rows = []
    for g in wanted:
        row: dict[str, Any] = {"group": g}
        for name in sources:
            x, y = per_gene[f"{g}:{name}"], per_gene[f"{g}:expression"]
            ok = x.notna() & y.notna()
            row["n_genes"] = int(ok.sum())
            rho, p = stats.spearmanr(x[ok], y[ok]) if ok.sum() > 2 else (np.nan, np.nan)
            row[f"spearman_{name}"], row[f"pvalue_{name}"] = float(rho), float(p)
        rows.append(row)
    summary = pd.DataFrame(rows).set_index("group")
    params = {
        "genes": None if isinstance(genes, pd.DataFrame) else str(genes),
        "denoised": denoised if isinstance(denoised, str) else None, "layer": layer,
        "region": region, "window": int(window), "gene_key": gene_key,
        "strip_version": bool(strip_version), "groups": wanted,
    }  # fmt: skip
    store(adata, key_added, params, summary=summary, genes=per_gene)
    return summary
