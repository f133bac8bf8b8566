"""Experiment search on the ENCODE portal.

Fields of the portal's API this module relies on (searches documented at
https://www.encodeproject.org/help/rest-api/ ; the Experiment schema and its facets at
https://www.encodeproject.org/profiles/experiment.json ; the search response shape in the
portal's search code, https://github.com/ENCODE-DCC/snovault, ``elasticsearch/searches``):

- ``GET /search/?type=Experiment&<field>=<value>...&format=json&limit=all`` with filters on
  ``assay_title`` (e.g. "Histone ChIP-seq", "TF ChIP-seq"), ``target.label``,
  ``biosample_ontology.term_name``, ``assembly``,
  ``replicates.library.biosample.donor.organism.scientific_name`` and ``status``; a repeated
  parameter means OR.
- ``field=`` parameters restrict each hit to the listed (dotted, embedded) properties, which
  keeps ``limit=all`` answers small: ``accession``, ``assay_title``, ``target.label``,
  ``biosample_ontology.term_name``, ``biosample_ontology.classification``,
  ``biosample_summary``, ``possible_controls`` (embedded objects with ``accession``, or ``@id``
  strings such as ``/experiments/ENCSR000AAA/``: both are accepted), ``assembly`` (list),
  ``replicates.biological_replicate_number`` and ``status``.
- The response keys ``@graph`` (hits), ``total`` and ``facets``: a list of
  ``{"field": ..., "title": ..., "terms": [{"key": value, "doc_count": n}, ...]}``, used to
  suggest close matches when a target or biosample is unknown.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ..._errors import ChipviInputError
from ._client import EncodeClient

ORGANISM_FIELD = "replicates.library.biosample.donor.organism.scientific_name"

# User-facing argument -> portal search field.
FILTER_FIELDS = {
    "target": "target.label",
    "biosample": "biosample_ontology.term_name",
    "assay": "assay_title",
    "assembly": "assembly",
    "organism": ORGANISM_FIELD,
    "status": "status",
}

EXPERIMENT_FIELDS = (
    "accession",
    "assay_title",
    "target.label",
    "biosample_ontology.term_name",
    "biosample_ontology.classification",
    "biosample_summary",
    "possible_controls",
    "assembly",
    "replicates.biological_replicate_number",
    "status",
)

EXPERIMENT_COLUMNS = [
    "accession",
    "assay",
    "target",
    "biosample",
    "biosample_type",
    "assembly",
    "possible_controls",
    "replicates",
    "status",
    "description",
]


def search_experiments(
    target: str | Sequence[str] | None = None,
    assay: str | Sequence[str] | None = "Histone ChIP-seq",
    biosample: str | Sequence[str] | None = None,
    assembly: str | Sequence[str] | None = "GRCh38",
    organism: str | Sequence[str] | None = "Homo sapiens",
    status: str | Sequence[str] | None = "released",
    limit: int | None = None,
    *,
    client: EncodeClient | None = None,
) -> pd.DataFrame:
    """Find ChIP-seq experiments on the ENCODE portal.

    Each argument filters on one portal field (``None`` = no filter; a list = any of its
    values): ``target`` → ``target.label`` (e.g. ``"H3K27me3"``, ``"CTCF"``), ``assay`` →
    ``assay_title`` (``"Histone ChIP-seq"``, ``"TF ChIP-seq"``), ``biosample`` →
    ``biosample_ontology.term_name`` (``"K562"``, ``"spleen"``), ``assembly`` → ``assembly``,
    ``organism`` → ``replicates.library.biosample.donor.organism.scientific_name``, ``status``
    → ``status``. See the module docstring for the API fields used.

    Parameters
    ----------
    target, assay, biosample, assembly, organism, status
        Portal filters, see above.
    limit
        Most experiments to return; ``None`` asks for all (``limit=all``).
    client
        Portal client; default :class:`EncodeClient` on ``$CHIPVI_ENCODE_URL``.

    Returns
    -------
    pandas.DataFrame
        One row per experiment, sorted by accession, columns ``accession``, ``assay``,
        ``target``, ``biosample``, ``biosample_type``, ``assembly`` (list), ``possible_controls``
        (list of control experiment accessions), ``replicates`` (biological replicate numbers),
        ``status``, ``description``. ``attrs["assembly"]`` holds ``assembly`` when one was
        given; :func:`~chipvi.io.encode.build_samplesheet` uses it by default.

    Raises
    ------
    chipvi.ChipviInputError
        Nothing matches. The message names each value the portal does not know (with close
        matches from the search facets) or, when every value exists but not together, what the
        other filters do offer.
    chipvi.io.encode.EncodeError
        The portal does not answer, or answers with HTML instead of JSON.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ChipviInputError(f"limit must be a positive integer or None, got {limit!r}.")
    client = client or EncodeClient()
    filters = _filters(
        target=target,
        assay=assay,
        biosample=biosample,
        assembly=assembly,
        organism=organism,
        status=status,
    )
    params: dict[str, Any] = {"type": "Experiment", **filters}
    params["field"] = list(EXPERIMENT_FIELDS)
    params["limit"] = "all" if limit is None else limit
    payload = client.search(params)
    hits = payload.get("@graph") or []
    if not hits:
        raise ChipviInputError(_explain_no_results(client, filters))
    frame = experiments_frame(hits)
    # Remember the searched assembly so build_samplesheet picks those BAMs by default.
    assemblies = filters.get("assembly", [])
    if len(assemblies) == 1:
        frame.attrs["assembly"] = assemblies[0]
    return frame


def fetch_experiments(accessions: Iterable[str], *, client: EncodeClient) -> pd.DataFrame:
    """Metadata of experiments by accession, in the shape of :func:`search_experiments`."""
    accessions = sorted(set(accessions))
    if not accessions:
        raise ChipviInputError("No experiment accessions given.")
    frames = []
    for start in range(0, len(accessions), 50):
        chunk = accessions[start : start + 50]
        payload = client.search(
            {
                "type": "Experiment",
                "accession": chunk,
                "field": list(EXPERIMENT_FIELDS),
                "limit": "all",
            }
        )
        frames.append(experiments_frame(payload.get("@graph") or []))
    found = pd.concat(frames, ignore_index=True) if frames else experiments_frame([])
    missing = sorted(set(accessions) - set(found["accession"]))
    if missing:
        raise ChipviInputError(
            f"ENCODE has no experiment with accession {', '.join(missing)}; check the "
            f"accessions (experiments start with ENCSR)."
        )
    return found.sort_values("accession", ignore_index=True)


def experiments_frame(hits: Sequence[dict]) -> pd.DataFrame:
    """Turn portal Experiment objects into the documented DataFrame."""
    rows = []
    for hit in hits:
        reps = sorted(
            {
                int(r["biological_replicate_number"])
                for r in hit.get("replicates") or []
                if isinstance(r, dict) and r.get("biological_replicate_number") is not None
            }
        )
        ontology = hit.get("biosample_ontology") or {}
        if not isinstance(ontology, dict):
            ontology = {}
        rows.append(
            {
                "accession": hit.get("accession") or accession_from_id(hit.get("@id", "")),
                "assay": hit.get("assay_title", ""),
                "target": target_label(hit.get("target")),
                "biosample": ontology.get("term_name", ""),
                "biosample_type": ontology.get("classification", ""),
                "assembly": sorted(as_list(hit.get("assembly"))),
                "possible_controls": [
                    accession_from_ref(c) for c in hit.get("possible_controls") or []
                ],
                "replicates": reps,
                "status": hit.get("status", ""),
                "description": hit.get("biosample_summary", ""),
            }
        )
    frame = pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)
    return frame.sort_values("accession", ignore_index=True)


# -- helpers shared with the sample-sheet builder ---------------------------------------------
def as_list(value: Any) -> list:
    """``None`` → [], a scalar → [scalar], a list → the list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def accession_from_id(at_id: str) -> str:
    """``/experiments/ENCSR000AAA/`` → ``ENCSR000AAA``."""
    parts = [p for p in str(at_id).split("/") if p]
    return parts[-1] if parts else ""


def accession_from_ref(ref: Any) -> str:
    """Accession from an embedded object (``accession`` or ``@id``) or an ``@id`` string."""
    if isinstance(ref, dict):
        return ref.get("accession") or accession_from_id(ref.get("@id", ""))
    return accession_from_id(ref)


def target_label(target: Any) -> str:
    """``target.label`` of an embedded target, or the label part of a ``/targets/X-human/`` id."""
    if isinstance(target, dict):
        return target.get("label") or accession_from_id(target.get("@id", "")).rsplit("-", 1)[0]
    if isinstance(target, str) and target:
        return accession_from_id(target).rsplit("-", 1)[0]
    return ""


def _filters(**kwargs: Any) -> dict[str, list[str]]:
    filters = {}
    for name, value in kwargs.items():
        values = [str(v) for v in as_list(value) if v is not None and str(v) != ""]
        if values:
            filters[FILTER_FIELDS[name]] = values
    return filters


def _facet_terms(payload: dict) -> dict[str, dict[str, int]]:
    terms: dict[str, dict[str, int]] = {}
    for facet in payload.get("facets") or []:
        if not isinstance(facet, dict) or "field" not in facet:
            continue
        terms[facet["field"]] = {
            str(t.get("key")): int(t.get("doc_count") or 0)
            for t in facet.get("terms") or []
            if isinstance(t, dict) and t.get("key") is not None
        }
    return terms


def _close_matches(value: str, known: Iterable[str]) -> list[str]:
    known = list(known)
    by_lower = {k.lower(): k for k in known}
    exact_case = by_lower.get(value.lower())
    if exact_case is not None:
        return [exact_case]
    lowered = difflib.get_close_matches(value.lower(), list(by_lower), n=5, cutoff=0.6)
    return [by_lower[m] for m in lowered]


def _describe(filters: dict[str, list[str]]) -> str:
    names = {field: name for name, field in FILTER_FIELDS.items()}
    return ", ".join(f"{names[f]}={'|'.join(v)}" for f, v in filters.items())


def _explain_no_results(client: EncodeClient, filters: dict[str, list[str]]) -> str:
    names = {field: name for name, field in FILTER_FIELDS.items()}
    # Facets of all experiments: does each requested value exist at all?
    everything = _facet_terms(
        client.search({"type": "Experiment", "field": "accession", "limit": 1})
    )
    unknown = []
    for field, values in filters.items():
        known = everything.get(field)
        if not known:
            continue  # the portal did not facet this field: cannot judge
        for value in values:
            if value in known:
                continue
            close = _close_matches(value, known)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            unknown.append(f"ENCODE has no {names[field]} {value!r} ({field}).{hint}")
    if unknown:
        return " ".join(unknown)
    # Every value exists, just not together: list what the other filters offer.
    message = f"No ENCODE experiments match {_describe(filters)}."
    for dropped in ("biosample_ontology.term_name", "target.label", "assembly"):
        if dropped not in filters:
            continue
        rest = {f: v for f, v in filters.items() if f != dropped}
        payload = client.search({"type": "Experiment", **rest, "field": "accession", "limit": 1})
        options = _facet_terms(payload).get(dropped, {})
        if options:
            listed = sorted(options.items(), key=lambda kv: (-kv[1], kv[0]))[:15]
            shown = ", ".join(f"{k} ({n})" for k, n in listed)
            more = f" and {len(options) - len(listed)} more" if len(options) > len(listed) else ""
            message += (
                f" With {_describe(rest) or 'no other filter'}, ENCODE has these "
                f"{names[dropped]} values (experiments): {shown}{more}."
            )
        break
    return message
