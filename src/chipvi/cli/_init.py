"""``chipvi init DIR``: write the starter configs (shipped in the package) to edit."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from .._errors import ChipviInputError
from .._utils import _temporary_name, atomic_dir

#: A data file for one's own sample sheet, written next to the shipped ones.
MY_DATA = """\
# Your own data: a sample sheet (CSV: sample,bam,control,target,group,replicate; relative BAM
# paths resolve against the sheet's folder), or bins from `chipvi bin` (set h5ad: instead and
# samplesheet: null). Every other key is an argument of chipvi.read_bams.
# Use it with: chipvi train --config-dir {dir} data=my_data
samplesheet: samples.csv
h5ad: null
bin_size: 200
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init",
        help="write starter configs for `chipvi train` to a folder",
        description=(
            "Copy the configs shipped with chipvi (config.yaml, data/, model/, experiment/) to "
            "DIR, plus data/my_data.yaml for your own sample sheet. Then edit them and run "
            "`chipvi train --config-dir DIR data=my_data`."
        ),
    )
    p.add_argument(
        "dir", type=Path, nargs="?", default=Path("configs"), help="folder (default ./configs)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace files that exist in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ._config import shipped_config_dir

    source = shipped_config_dir()
    target: Path = args.dir
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix in (".yaml", ".md"))
    planned = {target / p.relative_to(source): p.read_text() for p in files}
    planned[target / "data" / "my_data.yaml"] = MY_DATA.format(dir=target)
    clash = [str(p) for p in planned if p.exists()]
    if clash and not args.overwrite:
        raise ChipviInputError(
            f"{target} already holds {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}; "
            "pass --overwrite to replace them or choose another folder."
        )
    if target.exists() and not target.is_dir():
        raise ChipviInputError(f"{target} exists and is not a folder.")
    _write_all(target, {path.relative_to(target): text for path, text in planned.items()})
    if not getattr(args, "quiet", False):
        print(f"chipvi init: {len(planned)} config files in {target}")
        print(f"  edit {target / 'data' / 'my_data.yaml'}, then:")
        print(f"  chipvi train --config-dir {target} data=my_data")
    return 0


def _write_all(target: Path, files: dict[Path, str]) -> None:
    """Write ``files`` (paths relative to ``target``) all or none: a new folder appears whole
    (:func:`chipvi._utils.atomic_dir`); into an existing one (other files of the user's stay)
    they are first written to a temporary folder beside it, then moved in."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(target) as tmp:
            _write_files(tmp, files)
        return
    prefix, suffix = _temporary_name(target, "part")  # a killed run's is found by leftovers()
    staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
    try:
        _write_files(staging, files)
        for rel in files:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).replace(target / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_files(folder: Path, files: dict[Path, str]) -> None:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
