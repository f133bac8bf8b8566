"""``chipvi init DIR``: write the starter configs (shipped in the package) to edit."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from .._errors import ChipviInputError

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
    staging = target.with_name(f".{target.name}.part")
    if staging.exists():
        shutil.rmtree(staging)
    try:  # written whole or not at all
        for path, text in planned.items():
            tmp = staging / path.relative_to(target)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
        for path in planned:
            path.parent.mkdir(parents=True, exist_ok=True)
            (staging / path.relative_to(target)).replace(path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    if not getattr(args, "quiet", False):
        print(f"chipvi init: {len(planned)} config files in {target}")
        print(f"  edit {target / 'data' / 'my_data.yaml'}, then:")
        print(f"  chipvi train --config-dir {target} data=my_data")
    return 0
