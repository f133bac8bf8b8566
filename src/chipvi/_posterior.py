"""Reading the posterior that :meth:`chipvi.ChIPVI.add_posterior` wrote into an AnnData.

``add_posterior`` stores, per level (``"library"``, ``"group"``, ``"library_own"``,
``"technical"``) and kind, where each array lives: ``uns["chipvi_posterior"]["keys"][level][kind]
= "layers/NAME"`` or ``"obsm/NAME"``. ``tl``, ``pl`` and the CLI read model outputs through
these keys only, never through the model object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._errors import ChipviInputError

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

#: ``uns`` key that :meth:`chipvi.ChIPVI.add_posterior` writes with its default ``prefix``.
POSTERIOR_KEY = "chipvi_posterior"
#: Kinds computed from a stored one: ``fold_enrichment`` = exp(posterior mean log enrichment).
DERIVED = {"fold_enrichment": "log_fold_enrichment"}


def posterior_info(adata: AnnData, key: str = POSTERIOR_KEY) -> dict:
    """The ``uns[key]`` record of ``add_posterior`` (``params`` and ``keys``), checked."""
    info = adata.uns.get(key)
    if not isinstance(info, dict) or "keys" not in info:
        raise ChipviInputError(
            f"adata.uns has no posterior record {key!r}: run model.add_posterior(adata) first "
            "(it writes the layers and obsm keys that chipvi.tl reads)."
        )
    return info


def written_by(record, model) -> bool:
    """Whether a posterior record (``uns[f"{prefix}_posterior"]``) holds ``model``'s
    posterior: the same grid, stay probabilities, gains and enrichment threshold (a record of
    another model on the same bins is stale for this one)."""
    if not isinstance(record, dict) or not isinstance(record.get("params"), dict):
        return False
    params = record["params"]
    gains = params.get("gains", {})
    mine = model.gains.to_dict()
    if set(gains) != set(mine) or not all(np.isclose(gains[k], mine[k], rtol=1e-6) for k in gains):
        return False
    for name, value in (("grid", model.module.grid.cpu().numpy()),
                        ("stay", model.stay_probabilities)):  # fmt: skip
        stored = np.asarray(params.get(name, []), dtype=float)
        if stored.shape != np.shape(value) or not np.allclose(stored, value, rtol=1e-6):
            return False
    return bool(np.isclose(params.get("enrichment_threshold", np.nan), model.enrichment_threshold))


def posterior_location(
    adata: AnnData, kind: str, level: str = "group", key: str = POSTERIOR_KEY
) -> tuple[str, str]:
    """``(slot, name)`` of one stored posterior array: slot ``"layers"`` or ``"obsm"``
    (``adata`` may be a bins store, whose ``uns`` and arrays are read the same way)."""
    keys = posterior_info(adata, key)["keys"]
    if level not in keys:
        raise ChipviInputError(
            f"uns[{key!r}]['keys'] has no level {level!r}; levels: {sorted(keys)}."
        )
    if kind not in keys[level]:
        raise ChipviInputError(
            f"uns[{key!r}]['keys'][{level!r}] has no kind {kind!r}; kinds: "
            f"{sorted(keys[level]) + sorted(DERIVED)}."
        )
    slot, name = str(keys[level][kind]).split("/", 1)
    from .io import BinStore

    # A bins store lists its obsm names in ``obsm_keys`` (its ``obsm`` reads rows).
    names = (
        adata.obsm_keys if slot == "obsm" and isinstance(adata, BinStore) else getattr(adata, slot)
    )
    if name not in names:
        raise ChipviInputError(
            f"adata.{slot} has no {name!r} (uns[{key!r}] lists it for {level} {kind}): run "
            "model.add_posterior(adata) again on this AnnData."
        )
    return slot, name


def posterior_frame(
    adata: AnnData,
    kind: str = "log_fold_enrichment",
    level: str = "group",
    *,
    key: str = POSTERIOR_KEY,
    columns=None,
) -> pd.DataFrame:
    """One posterior quantity as a bins × libraries (or groups) float DataFrame.

    Parameters
    ----------
    adata
        AnnData on which ``model.add_posterior(adata)`` ran.
    kind
        A kind ``add_posterior`` stored (``log_fold_enrichment``, ``sd``,
        ``log_fold_enrichment_lower``, ``probability_enriched``; ``mu``/``r`` at level
        ``technical``) or ``fold_enrichment`` (exp of the posterior mean).
    level
        ``"group"``, ``"library"``, ``"library_own"`` or ``"technical"``.
    key
        ``uns`` key of the posterior record (``f"{prefix}_posterior"``).
    columns
        Libraries or groups to keep (default all).
    """
    from ._bins import signal_frame

    slot, name = posterior_location(adata, DERIVED.get(kind, kind), level, key)
    frame = signal_frame(adata, **({"layer": name} if slot == "layers" else {"key": name}),
                         columns=columns)  # fmt: skip
    return np.exp(frame) if kind in DERIVED else frame


def enrichment_threshold(adata: AnnData, key: str = POSTERIOR_KEY) -> float:
    """The natural-log fold enrichment behind the stored ``probability_enriched``."""
    return float(posterior_info(adata, key)["params"]["enrichment_threshold"])


#: How each stored kind reads on an axis (values in natural log, as ``add_posterior`` writes).
KIND_LABELS = {
    "log_fold_enrichment": "posterior mean ln fold enrichment",
    "sd": "posterior sd of ln fold enrichment",
    "log_fold_enrichment_lower": "5 % posterior quantile of ln fold enrichment",
    "probability_enriched": "P(enriched)",
    "mu": "technical mean (reads)",
    "r": "technical dispersion",
}


def describe(adata: AnnData, slot: str, name: str, key: str = POSTERIOR_KEY) -> str | None:
    """What a stored posterior array holds (``None`` for an array ``add_posterior`` did not
    write), e.g. ``"posterior mean ln fold enrichment (group, chipvi_group_lfe)"``."""
    info = adata.uns.get(key)
    keys = info.get("keys", {}) if isinstance(info, dict) else {}
    for level, kinds in keys.items():
        for kind, where in kinds.items():
            if where == f"{slot}/{name}":
                return f"{KIND_LABELS.get(kind, kind)} ({level}, {name})"
    return None
