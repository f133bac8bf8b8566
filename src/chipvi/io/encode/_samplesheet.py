"""ENCODE experiments → chipvi sample sheet (one row per ChIP BAM with its matched control).

Fields of the portal's API this module relies on (File schema:
https://www.encodeproject.org/profiles/file.json ; Experiment schema:
https://www.encodeproject.org/profiles/experiment.json ; search:
https://www.encodeproject.org/help/rest-api/):

- ``GET /search/?type=File&dataset=/experiments/<ENCSR>/&file_format=bam&output_type=alignments
  &frame=object&limit=all&format=json``: File objects of the experiments (``dataset`` repeated
  means any of them). ``frame=object`` gives linked objects as ``@id`` strings.
- File properties used: ``accession``, ``@id``, ``href`` (download path,
  ``/files/<ENCFF>/@@download/<ENCFF>.bam``; the portal redirects it to storage), ``md5sum``,
  ``file_size`` (bytes), ``file_format``, ``output_type``, ``assembly``,
  ``biological_replicates`` (list of replicate numbers; one number for a per-replicate BAM),
  ``controlled_by`` (``@id`` list of control files), ``status`` (only ``released`` is used),
  ``dataset`` (``@id`` of the experiment), ``date_created`` and ``preferred_default`` (to choose
  between two BAMs of one replicate), ``no_file_available``.
- Experiment properties used: ``possible_controls`` (the control experiments), ``target.label``,
  ``biosample_ontology.term_name`` (via :func:`~chipvi.io.encode.search_experiments`).

Control pairing, per ChIP BAM, among the released BAMs of the experiment's
``possible_controls`` in the same assembly: (1) a BAM named in the ChIP BAM's ``controlled_by``;
(2) else the control BAM of the same biological replicate; (3) else the largest control BAM
(``file_size`` as a proxy for depth). The rule used is recorded in ``control_match``. ENCODE
usually sets ``controlled_by`` on FASTQ files rather than on processed BAMs, so (2) is the common
case for alignments.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ..._errors import ChipviInputError
from ._client import EncodeClient
from ._search import (
    EXPERIMENT_COLUMNS,
    accession_from_id,
    accession_from_ref,
    as_list,
    fetch_experiments,
)

CONTRACT_COLUMNS = ["sample", "bam", "control", "target", "group", "replicate"]
SHEET_COLUMNS = CONTRACT_COLUMNS + [
    "experiment",
    "biosample",
    "assembly",
    "bam_accession",
    "bam_md5",
    "bam_size",
    "bam_url",
    "control_accession",
    "control_md5",
    "control_size",
    "control_url",
    "control_experiment",
    "control_match",
]
SKIPPED_COLUMNS = ["accession", "experiment", "role", "reason"]
_ACCESSION = re.compile(r"[A-Z]{3,}[0-9]{3}[A-Z0-9]{3,}")
_BATCH = 25  # experiments per file search: keeps the URL short


def build_samplesheet(
    experiments: pd.DataFrame | Sequence[str],
    *,
    output_type: str = "alignments",
    assembly: str | None = None,
    group_by: str = "experiment",
    require_control: bool = True,
    client: EncodeClient | None = None,
) -> pd.DataFrame:
    """Build the chipvi sample sheet for ENCODE experiments, with matched control BAMs.

    One row per released ChIP BAM (one per biological replicate), paired with a control BAM
    from the experiment's ``possible_controls`` in the same assembly (rule in the module
    docstring). Every file or experiment left out is listed with the reason in
    ``sheet.attrs["skipped"]`` (a DataFrame) and in one :class:`UserWarning`.

    Parameters
    ----------
    experiments
        Output of :func:`~chipvi.io.encode.search_experiments`, or experiment accessions
        (``ENCSR...``).
    output_type
        ENCODE ``output_type`` of the BAMs: ``"alignments"`` (filtered, the default) or
        ``"unfiltered alignments"``.
    assembly
        Genome assembly of the BAMs (``"GRCh38"``, ``"hg19"``, ``"mm10"``). ``None``: the assembly
        :func:`~chipvi.io.encode.search_experiments` searched for (``experiments.attrs``), else
        the only assembly the experiments' BAMs have; several is an error.
    group_by
        ``"experiment"``: ``group`` is the experiment accession (replicates of one experiment
        share biology); ``"biosample"``: the biosample term name (pools experiments of one
        biosample, e.g. several donors of one tissue).
    require_control
        Skip experiments without a usable control (default). ``False`` keeps their BAMs with
        an empty ``control``.
    client
        Portal client; default :class:`~chipvi.io.encode.EncodeClient`.

    Returns
    -------
    pandas.DataFrame
        Columns ``sample`` (ChIP file accession), ``bam`` and ``control`` (file names, resolved
        against the folder the sheet is written to by :func:`~chipvi.io.encode.download`),
        ``target``, ``group``, ``replicate`` (ENCODE biological replicate number), then
        ``experiment``, ``biosample``, ``assembly``, ``bam_accession``, ``bam_md5``, ``bam_size``,
        ``bam_url``, ``control_accession``, ``control_md5``, ``control_size`` (0 if none),
        ``control_url``, ``control_experiment``, ``control_match`` (``controlled_by``,
        ``replicate``, ``largest`` or ``""``).

    Raises
    ------
    chipvi.ChipviInputError
        Unknown ``group_by``; BAMs in several assemblies and no ``assembly``; nothing left after
        skipping (the message lists why each experiment was skipped).
    """
    if group_by not in ("experiment", "biosample"):
        raise ChipviInputError(f"group_by must be 'experiment' or 'biosample', got {group_by!r}.")
    client = client or EncodeClient()
    if assembly is None and isinstance(experiments, pd.DataFrame):
        assembly = experiments.attrs.get("assembly")
    exps = _experiment_table(experiments, client)
    skipped: list[dict[str, Any]] = []

    chip_files = _fetch_bams(client, exps["accession"], output_type)
    assembly = _resolve_assembly(chip_files, assembly, output_type)
    chip_bams = _select_bams(chip_files, assembly, "ChIP", skipped)

    control_accessions = sorted({c for cs in exps["possible_controls"] for c in cs})
    control_files = _fetch_bams(client, control_accessions, output_type)
    control_bams = _select_bams(control_files, assembly, "control", skipped)

    rows = []
    for exp in exps.itertuples(index=False):
        bams = chip_bams.get(exp.accession, [])
        if not bams:
            if exp.accession not in chip_files:
                skipped.append(_skip("", exp.accession, "experiment", "has no BAM files"))
            else:
                skipped.append(
                    _skip("", exp.accession, "experiment", f"has no usable {assembly} BAM")
                )
            continue
        candidates = [b for c in exp.possible_controls for b in control_bams.get(c, [])]
        if not candidates:
            if not exp.possible_controls:
                why = "lists no possible_controls"
            else:
                why = (
                    f"has no usable control: its control experiments "
                    f"({', '.join(exp.possible_controls)}) have no released {output_type} BAM "
                    f"in {assembly}"
                )
            if require_control:
                for bam in bams:
                    skipped.append(
                        _skip(bam["accession"], exp.accession, "ChIP", f"experiment {why}")
                    )
                continue
        group = exp.accession if group_by == "experiment" else exp.biosample
        for bam in bams:
            control, how = _pair(bam, candidates)
            rows.append(_row(client, exp, group, assembly, bam, control, how))

    skipped_frame = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
    if not rows:
        reasons = "; ".join(f"{s['accession'] or s['experiment']}: {s['reason']}" for s in skipped)
        raise ChipviInputError(
            f"No ENCODE ChIP BAM is usable ({len(exps)} experiment(s) checked, assembly "
            f"{assembly}). {reasons}. Pass require_control=False (CLI: --allow-no-control) to "
            f"keep BAMs without a control."
        )
    if skipped:
        listed = "\n".join(
            f"  {s['accession'] or s['experiment']} ({s['role']}, {s['experiment']}): {s['reason']}"
            for s in skipped
        )
        warnings.warn(
            f"build_samplesheet skipped {len(skipped)} file(s)/experiment(s):\n{listed}",
            UserWarning,
            stacklevel=2,
        )
    sheet = pd.DataFrame(rows, columns=SHEET_COLUMNS)
    sheet = sheet.sort_values(["group", "replicate", "sample"], ignore_index=True)
    sheet.attrs["skipped"] = skipped_frame
    return sheet


# -- inputs -----------------------------------------------------------------------------------
def _experiment_table(
    experiments: pd.DataFrame | Sequence[str], client: EncodeClient
) -> pd.DataFrame:
    if isinstance(experiments, pd.DataFrame):
        if "accession" not in experiments.columns:
            raise ChipviInputError(
                "experiments must have an 'accession' column (the output of search_experiments)."
            )
        if experiments.empty:
            raise ChipviInputError("experiments is empty: nothing to build a sample sheet from.")
        needed = {"target", "biosample", "possible_controls"}
        if needed - set(experiments.columns):
            return fetch_experiments(experiments["accession"], client=client)
        table = experiments.copy()
        table["possible_controls"] = [_accession_list(v) for v in table["possible_controls"]]
        return table[[c for c in EXPERIMENT_COLUMNS if c in table.columns]]
    if isinstance(experiments, str):
        experiments = [experiments]
    accessions = [str(a).strip() for a in experiments]
    bad = [a for a in accessions if not _ACCESSION.fullmatch(a)]
    if bad:
        raise ChipviInputError(f"Not ENCODE experiment accessions: {', '.join(bad)}.")
    return fetch_experiments(accessions, client=client)


def _accession_list(value: Any) -> list[str]:
    """Control accessions from a list, or from a string as saved in a CSV ("['ENCSR...']")."""
    if isinstance(value, str):
        return _ACCESSION.findall(value)
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    return [accession_from_ref(v) for v in as_list(value)]


# -- files ------------------------------------------------------------------------------------
def _fetch_bams(
    client: EncodeClient, experiment_accessions: Iterable[str], output_type: str
) -> dict[str, list[dict]]:
    """BAM File objects per experiment accession (every status; filtering is explained later)."""
    accessions = sorted(set(experiment_accessions))
    by_experiment: dict[str, list[dict]] = defaultdict(list)
    for start in range(0, len(accessions), _BATCH):
        chunk = accessions[start : start + _BATCH]
        payload = client.search(
            {
                "type": "File",
                "dataset": [f"/experiments/{a}/" for a in chunk],
                "file_format": "bam",
                "output_type": output_type,
                "frame": "object",
                "limit": "all",
            }
        )
        for item in payload.get("@graph") or []:
            if item.get("file_format", "bam") != "bam":
                continue
            by_experiment[accession_from_ref(item.get("dataset", ""))].append(item)
    return dict(by_experiment)


def _resolve_assembly(files: dict[str, list[dict]], assembly: str | None, output_type: str) -> str:
    counts: dict[str, int] = defaultdict(int)
    for items in files.values():
        for item in items:
            if item.get("status") == "released" and item.get("assembly"):
                counts[item["assembly"]] += 1
    if assembly is not None:
        if counts and assembly not in counts:
            listed = ", ".join(f"{a} ({n} BAMs)" for a, n in sorted(counts.items()))
            raise ChipviInputError(
                f"None of the experiments' released {output_type} BAMs is aligned to "
                f"{assembly!r}; they use {listed}. Pass one of these as assembly= (--assembly)."
            )
        return assembly
    if not counts:
        raise ChipviInputError(
            f"The experiments have no released {output_type} BAM files with an assembly."
        )
    if len(counts) > 1:
        listed = ", ".join(f"{a}: {n} BAM(s)" for a, n in sorted(counts.items()))
        raise ChipviInputError(
            f"The experiments' BAMs are aligned to several assemblies ({listed}); a sample "
            f"sheet must use one. Pass assembly= (CLI: --assembly), e.g. assembly="
            f"{max(counts, key=counts.get)!r}."
        )
    return next(iter(counts))


def _select_bams(
    files: dict[str, list[dict]], assembly: str, role: str, skipped: list[dict]
) -> dict[str, list[dict]]:
    """Released, downloadable, single-replicate BAMs of ``assembly``: one per replicate."""
    chosen: dict[str, list[dict]] = {}
    for experiment, items in sorted(files.items()):
        per_replicate: dict[int, list[dict]] = defaultdict(list)
        for item in items:
            accession = item.get("accession") or accession_from_id(item.get("@id", ""))
            reps = sorted({int(r) for r in as_list(item.get("biological_replicates"))})
            if item.get("status") != "released":
                reason = f"status is {item.get('status')!r}, not 'released'"
            elif item.get("no_file_available") or not item.get("href") or not item.get("md5sum"):
                reason = "no downloadable file (no href or md5sum)"
            elif item.get("assembly") != assembly:
                reason = f"aligned to {item.get('assembly')!r}, not {assembly!r}"
            elif len(reps) != 1:
                reason = (
                    f"pooled from biological replicates {', '.join(map(str, reps))}"
                    if reps
                    else "no biological replicate number"
                )
            else:
                per_replicate[reps[0]].append(item)
                continue
            skipped.append(_skip(accession, experiment, role, reason))
        kept = []
        for rep, group in sorted(per_replicate.items()):
            # Preferred default analysis first, then the newest, then by accession.
            group = sorted(group, key=lambda f: f.get("accession", ""))
            group = sorted(group, key=lambda f: f.get("date_created", ""), reverse=True)
            group = sorted(group, key=lambda f: not f.get("preferred_default", False))
            best = group[0]
            for other in group[1:]:
                skipped.append(
                    _skip(
                        other.get("accession", ""),
                        experiment,
                        role,
                        f"another BAM of biological replicate {rep} is preferred: "
                        f"{best.get('accession')} (preferred_default, then newest)",
                    )
                )
            kept.append({**best, "_replicate": rep})
        if kept:
            chosen[experiment] = kept
    return chosen


def _pair(bam: dict, candidates: list[dict]) -> tuple[dict | None, str]:
    if not candidates:
        return None, ""

    def largest(items: list[dict]) -> dict:
        return max(items, key=lambda f: (int(f.get("file_size") or 0), f.get("accession", "")))

    linked = {accession_from_ref(c) for c in as_list(bam.get("controlled_by"))}
    by_link = [c for c in candidates if c.get("accession") in linked]
    if by_link:
        same = [c for c in by_link if c["_replicate"] == bam["_replicate"]]
        return largest(same or by_link), "controlled_by"
    same_rep = [c for c in candidates if c["_replicate"] == bam["_replicate"]]
    if same_rep:
        return largest(same_rep), "replicate"
    return largest(candidates), "largest"


def _file_name(item: dict) -> str:
    name = accession_from_id(item.get("href", ""))
    return name if name.endswith(".bam") else f"{item['accession']}.bam"


def _row(client, exp, group, assembly, bam, control, how) -> dict[str, Any]:
    row = {
        "sample": bam["accession"],
        "bam": _file_name(bam),
        "control": _file_name(control) if control else "",
        "target": exp.target,
        "group": group,
        "replicate": int(bam["_replicate"]),
        "experiment": exp.accession,
        "biosample": exp.biosample,
        "assembly": assembly,
        "bam_accession": bam["accession"],
        "bam_md5": bam["md5sum"],
        "bam_size": int(bam.get("file_size") or 0),
        "bam_url": client.url(bam["href"]),
        "control_accession": control["accession"] if control else "",
        "control_md5": control["md5sum"] if control else "",
        "control_size": int(control.get("file_size") or 0) if control else 0,
        "control_url": client.url(control["href"]) if control else "",
        "control_experiment": accession_from_ref(control.get("dataset", "")) if control else "",
        "control_match": how,
    }
    return row


def _skip(accession: str, experiment: str, role: str, reason: str) -> dict[str, str]:
    return {"accession": accession, "experiment": experiment, "role": role, "reason": reason}
