"""chipvi.settings (verbosity, threads, seed, progress bars) and quiet Lightning training."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import chipvi
from chipvi._settings import LIGHTNING_NOISE, available_cpus, default_num_threads, settings

SRC = str(Path(chipvi.__file__).resolve().parents[1])


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()


def test_settings_import_stays_light():
    # (dir() of the package and its subpackages: tests/test_package.py)
    # Importing chipvi and reading its settings pulls in neither torch nor numba nor anndata.
    out = _run(
        "import sys, chipvi; dir(chipvi); chipvi.settings.num_threads;"
        "print(sorted(m for m in ('torch','pyro','scvi','numba','anndata') if m in sys.modules))"
    )
    assert out == "[]"
    # The model is still there when asked for.
    assert _run("import sys, chipvi; chipvi.ChIPVI; print('torch' in sys.modules)") == "True"


def test_settings_validate_and_name_the_setting():
    with pytest.raises(chipvi.ChipviInputError, match="settings.verbosity"):
        settings.verbosity = "loud"
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(chipvi.ChipviInputError, match="settings.num_threads"):
            settings.num_threads = bad
    with pytest.raises(chipvi.ChipviInputError, match="settings.seed"):
        settings.seed = "one"
    with pytest.raises(chipvi.ChipviInputError, match="settings.seed"):
        settings.seed = -1
    with pytest.raises(chipvi.ChipviInputError, match="settings.progress_bar"):
        settings.progress_bar = "yes"
    assert settings.verbosity == "info" and settings.progress_bar is True
    assert settings.progress(None) is True and settings.progress(False) is False


def test_default_threads_follow_affinity():
    n = available_cpus()
    assert 1 <= n <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert n <= len(os.sched_getaffinity(0))
    assert default_num_threads() == min(n, 16)
    assert settings.num_threads == default_num_threads()


def test_num_threads_sets_torch_and_numba():
    import numba
    import torch

    before = torch.get_num_threads()
    try:
        settings.num_threads = 1
        assert torch.get_num_threads() == 1
        assert numba.get_num_threads() == 1
        assert settings.num_threads == 1
        settings.num_threads = None
        assert settings.num_threads == default_num_threads()
    finally:
        torch.set_num_threads(before)


def test_seed_seeds_numpy_and_torch():
    import torch

    settings.seed = 7
    a = (np.random.rand(3), torch.rand(3))  # noqa: NPY002 - the global RNG is seeded
    settings.seed = 7
    b = (np.random.rand(3), torch.rand(3))  # noqa: NPY002 - the global RNG is seeded
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert settings.seed == 7


def _lightning_noise():
    """What Lightning says while fitting: info logs and its three warnings."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    log.info("GPU available: False, used: False")
    warnings.warn("You passed in a `val_dataloader` but have no `validation_step`. Skipping.",
                  stacklevel=1)  # fmt: skip
    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning,
                  stacklevel=1)  # fmt: skip
    warnings.warn(
        "The number of training batches (6) is smaller than the logging interval "
        "Trainer(log_every_n_steps=10).",
        stacklevel=1,
    )
    warnings.warn("a real problem", UserWarning, stacklevel=1)


@pytest.mark.parametrize("verbosity", ["info", "debug"])
def test_lightning_context_quiet_by_default_loud_at_debug(verbosity, caplog):
    import lightning.pytorch  # noqa: F401 - imported before training, as ChIPVI.train has it

    settings.verbosity = verbosity
    caplog.set_level(logging.NOTSET)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with settings.lightning_context():
            _lightning_noise()
    messages = [str(w.message) for w in seen]
    info = [r.getMessage() for r in caplog.records if r.name.startswith("lightning")]
    # Other warnings are never muted.
    assert "a real problem" in messages
    if verbosity == "info":
        assert messages == ["a real problem"]
        assert info == []
    else:
        assert len(messages) == 4
        assert info == ["GPU available: False, used: False"]
    # Levels and filters are restored afterwards.
    assert logging.getLogger("lightning.pytorch").level != logging.WARNING or verbosity == "debug"
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        warnings.warn("You passed in a `val_dataloader` but have no `validation_step`.",
                      stacklevel=1)  # fmt: skip
    assert len(after) == 1
    assert len(LIGHTNING_NOISE) >= 3


def test_training_prints_no_lightning_chatter():
    """ChIPVI.train inside lightning_context: no GPU/TPU/litlogger lines, no Lightning warnings."""
    code = (
        "import sys, warnings; sys.path.insert(0, 'tests'); warnings.simplefilter('always');"
        "import chipvi; from _chipvi_synthetic import make_chip_adata;"
        "chipvi.settings.num_threads = 1;"
        "a, _ = make_chip_adata(n_bins=300); chipvi.ChIPVI.setup_anndata(a);"
        "m = chipvi.ChIPVI(a, n_hidden=8);"
        "ctx = chipvi.settings.lightning_context();"
        "ctx.__enter__(); m.train(max_epochs=1, batch_size=128, enable_progress_bar=False);"
        "ctx.__exit__(None, None, None); print('trained')"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "trained" in text
    for noise in ("GPU available", "TPU available", "litlogger", "val_dataloader", "LeafSpec",
                  "log_every_n_steps"):  # fmt: skip
        assert noise not in text, noise


def test_to_mudata_adds_no_future_warnings(tmp_path):
    import anndata as ad
    import mudata

    chip = ad.AnnData(np.ones((4, 2), np.float32))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mdata = chipvi.io.to_mudata(chip=chip)
        mdata.update()
        mdata.write(tmp_path / "x.h5mu")
        mudata.read_h5mu(tmp_path / "x.h5mu")
    assert [w for w in seen if issubclass(w.category, FutureWarning)] == []
