import pytest

import chipvi


def test_version_and_public_api():
    assert chipvi.__version__
    for name in ("io", "pp", "tl", "pl", "datasets", "read_bams", "read_samplesheet"):
        assert hasattr(chipvi, name), name


def test_io_pp_tl_pl_do_not_import_torch():
    # DESIGN: io never imports torch; binning must not pay for the model's imports.
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, chipvi; chipvi.io; chipvi.pp; chipvi.tl; chipvi.pl; chipvi.datasets;"
        "print(sorted(m for m in ('torch', 'pyro', 'scvi') if m in sys.modules))"
    )
    src = str(Path(chipvi.__file__).resolve().parents[1])  # the chipvi under test
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"


def test_console_script_freezes_the_collector_before_exit(monkeypatch):
    """The console script skips the interpreter's final collections; main() does not."""
    import gc

    import chipvi.cli as cli

    monkeypatch.setattr(cli, "main", lambda: 3)
    before = gc.get_freeze_count()
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.console_main()
        assert exit_info.value.code == 3
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
