"""Write one benchmark's current table into ``benchmarks/RESULTS.md``.

``RESULTS.md`` holds one section per benchmark (``## name``): today's table, when and where it
was measured, and the exact command. A benchmark script called with ``--write-results``
replaces its own section through :func:`write_section` and leaves the others as they are;
dated experiments and negative results go to ``benchmarks/log/`` by hand.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
_TITLE = "# Benchmark results\n"


def _commit() -> str:
    """Short commit of the checkout, with ``+dirty`` when files differ from it."""
    here = Path(__file__).parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty else "")


def machine() -> str:
    """One line describing where the benchmark ran."""
    cores = os.cpu_count()
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    return f"{platform.machine()} {platform.system()}, {cores} cores{mem}, Python {platform.python_version()}"


def command_line() -> str:
    """The command that ran this script, as typed from the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path(__file__).parent.parent.resolve())
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def markdown(table, index: bool = True) -> str:
    """A pandas DataFrame as a Markdown table (cells as printed by ``str``)."""
    frame = table.reset_index() if index else table
    head = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def measuring_command(table: Path) -> str:
    """For a script called with ``--table DIR/file.tsv``: the command that measured it.

    The saved table is the output of the same command run with ``--keep DIR`` and without
    ``--table`` (the report is the same code either way).
    """
    args = sys.argv[1:]
    kept: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--table":
            skip = True
            continue
        if a.startswith("--table=") or a == "--write-results":
            continue
        kept.append(a)
    script = command_line().split()[1]
    if "--keep" not in kept and not any(a.startswith("--keep=") for a in kept):
        kept += ["--keep", str(Path(table).parent)]
    return shlex.join(["python", script, *kept])


def add_table_argument(parser, saved: str) -> None:
    """``--table``: report a saved run (``saved``, written by ``--keep``) instead of running."""
    parser.add_argument(
        "--table",
        type=Path,
        help=f"report the {saved} a --keep run saved instead of running (give the same "
        "arguments as that run)",
    )


def report_saved(args, report, name: str) -> bool:
    """With ``--table``: print the saved run's report (and record it with ``--write-results``).

    ``report(frame, args)`` builds the Markdown; returns whether a saved table was reported.
    """
    if args.table is None:
        return False
    import pandas as pd

    body = report(pd.read_csv(args.table, sep="\t"), args)
    if args.write_results:
        write_section(name, body, command=measuring_command(args.table))
    return True


def write_section(name: str, body: str, *, command: str | None = None) -> Path:
    """Replace (or append) the section ``## name`` of ``RESULTS.md``.

    Parameters
    ----------
    name
        Section title, one per benchmark (e.g. ``"Quality (bench_quality.py)"``).
    body
        Markdown: the table(s) and at most a few lines saying how to read them.
    command
        The exact command (default: this process's command line).

    Returns
    -------
    The path written. The file is replaced atomically: a failed write leaves the old one.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"## {name}\n\n"
        f"{stamp}, commit {_commit()}, {machine()}.\n\n"
        f"    {command or command_line()}\n\n"
        f"{body.strip()}\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else _TITLE
    sections = _split(text)
    head = sections.pop(0)
    for i, (title, _) in enumerate(sections):
        if title == name:
            sections[i] = (name, section)
            break
    else:
        sections.append((name, section))
    out = head.rstrip() + "\n\n" + "\n".join(s.rstrip() + "\n" for _, s in sections)
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".RESULTS.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(out)
        os.replace(tmp, RESULTS)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return RESULTS


@contextlib.contextmanager
def tee():
    """Capture what the body prints while still printing it; yields a ``StringIO``.

    For scripts that print their Markdown tables: ``with tee() as out: ...`` then
    ``write_section(name, out.getvalue())``.
    """

    class _Both(io.TextIOBase):
        def write(self, s):
            sys.__stdout__.write(s)
            captured.write(s)
            return len(s)

        def flush(self):
            sys.__stdout__.flush()

    captured = io.StringIO()
    with contextlib.redirect_stdout(_Both()):
        yield captured


def _split(text: str) -> list:
    """``[head, (title, section), ...]`` split at level-2 headings outside code blocks."""
    parts: list = [""]
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            parts.append([line[3:].strip(), line])
        elif len(parts) == 1:
            parts[0] += line
        else:
            parts[-1][1] += line
    return [parts[0]] + [tuple(p) for p in parts[1:]]
