"""``chipvi download``: ENCODE experiments → verified BAMs + sample sheet in one command."""

from __future__ import annotations

import argparse
import sys
import warnings

from .._errors import ChipviInputError

DESCRIPTION = """\
Find ENCODE ChIP-seq experiments, pair each ChIP BAM with a control BAM, download them
(parallel, resumable, md5-verified, indexed) and write OUT/samplesheet.csv for `chipvi bin` /
chipvi.read_bams. Re-running resumes and skips verified files. The portal URL is
$CHIPVI_ENCODE_URL (default https://www.encodeproject.org).

examples:
  chipvi download --target H3K27me3 --biosample K562 --assembly GRCh38 --out data/
  chipvi download --experiment ENCSR000AAA --experiment ENCSR000BBB --out data/ --dry-run
  chipvi download --samplesheet data/samplesheet.csv --out data/
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``download`` subcommand to the ``chipvi`` parser's ``subparsers``."""
    parser = subparsers.add_parser(
        "download",
        help="download ENCODE BAMs and write a sample sheet",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to download")
    what.add_argument("--target", action="append", help="target label, e.g. H3K27me3 (repeatable)")
    what.add_argument(
        "--biosample", action="append", help="biosample term name, e.g. K562 (repeatable)"
    )
    what.add_argument(
        "--assay", default="Histone ChIP-seq", help="assay title (default: %(default)s)"
    )
    what.add_argument("--assembly", default="GRCh38", help="genome assembly (default: %(default)s)")
    what.add_argument("--organism", default="Homo sapiens", help="organism (default: %(default)s)")
    what.add_argument("--limit", type=int, default=None, help="at most this many experiments")
    what.add_argument(
        "--experiment",
        action="append",
        metavar="ENCSR",
        help="experiment accession instead of a search (repeatable)",
    )
    what.add_argument(
        "--samplesheet", help="download the files of a sample sheet written by a previous run"
    )
    sheet = parser.add_argument_group("sample sheet")
    sheet.add_argument(
        "--group-by",
        choices=["experiment", "biosample"],
        default="experiment",
        help="what the `group` column holds (default: %(default)s)",
    )
    sheet.add_argument(
        "--output-type", default="alignments", help="BAM output_type (default: %(default)s)"
    )
    sheet.add_argument(
        "--allow-no-control",
        action="store_true",
        help="keep ChIP BAMs whose experiment has no usable control (empty control)",
    )
    transfer = parser.add_argument_group("transfer")
    transfer.add_argument("--out", required=True, help="output folder")
    transfer.add_argument("--threads", type=int, default=4, help="parallel downloads (default: 4)")
    transfer.add_argument("--retries", type=int, default=5, help="retries per file (default: 5)")
    transfer.add_argument(
        "--timeout", type=float, default=60.0, help="network timeout in seconds (default: 60)"
    )
    transfer.add_argument("--no-index", action="store_true", help="do not build .bai indexes")
    transfer.add_argument(
        "--dry-run", action="store_true", help="show the sample sheet and sizes, download nothing"
    )
    # SUPPRESS: an unset flag must not overwrite the top-level `chipvi -q`.
    transfer.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bar or summary",
    )
    transfer.add_argument("--url", default=None, help="portal base URL (overrides the env)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``chipvi download``; returns the exit status (0 ok, 2 bad input, 1 network)."""
    from ..io import encode

    quiet = bool(getattr(args, "quiet", False))
    try:
        client = encode.EncodeClient(args.url, retries=args.retries, timeout=args.timeout)
        if args.samplesheet:
            source = args.samplesheet
        else:
            source = _build_sheet(args, client, quiet)
        if args.dry_run:
            _print_plan(source)
            return 0
        result = encode.download(
            source,
            args.out,
            threads=args.threads,
            index=not args.no_index,
            progress=not quiet,
            client=client,
        )
        if quiet:
            print(result.samplesheet or args.out)
        return 0
    except ChipviInputError as error:
        print(f"chipvi download: error: {error}", file=sys.stderr)
        return 2
    except encode.EncodeError as error:
        print(f"chipvi download: error: {error}", file=sys.stderr)
        return 1


def _build_sheet(args: argparse.Namespace, client, quiet: bool):
    from ..io import encode

    if args.experiment:
        experiments = args.experiment
        assembly = args.assembly
    else:
        if not (args.target or args.biosample):
            raise ChipviInputError(
                "Say what to download: --target and/or --biosample, --experiment, or --samplesheet."
            )
        experiments = encode.search_experiments(
            target=args.target,
            assay=args.assay,
            biosample=args.biosample,
            assembly=args.assembly,
            organism=args.organism,
            limit=args.limit,
            client=client,
        )
        assembly = args.assembly
    with warnings.catch_warnings():
        # The skipped files are printed below as a table, not as a Python warning.
        warnings.simplefilter("ignore", UserWarning)
        sheet = encode.build_samplesheet(
            experiments,
            output_type=args.output_type,
            assembly=assembly,
            group_by=args.group_by,
            require_control=not args.allow_no_control,
            client=client,
        )
    skipped = sheet.attrs.get("skipped")
    if skipped is not None and len(skipped) and not quiet:
        print(f"Skipped {len(skipped)} file(s)/experiment(s):", file=sys.stderr)
        for row in skipped.itertuples(index=False):
            print(
                f"  {row.accession or row.experiment} ({row.role}, {row.experiment}): {row.reason}",
                file=sys.stderr,
            )
    return sheet


def _print_plan(sheet) -> None:
    import pandas as pd

    if not isinstance(sheet, pd.DataFrame):
        sheet = pd.read_csv(sheet, dtype=str, keep_default_na=False)
    columns = ["sample", "bam", "control", "target", "group", "replicate"]
    columns += [c for c in ("control_match",) if c in sheet.columns]
    print(sheet[columns].to_string(index=False))
    sizes = {}
    for prefix, name in (("bam", "bam"), ("control", "control")):
        if f"{prefix}_size" in sheet.columns:
            for file_name, size in zip(sheet[name], sheet[f"{prefix}_size"], strict=False):
                if str(file_name):
                    sizes[str(file_name)] = int(float(size))
    total = sum(sizes.values())
    print(f"{len(sheet)} ChIP BAM(s), {len(sizes)} file(s) to fetch, {total / 2**30:.2f} GiB")
