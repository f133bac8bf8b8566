"""``chipvi.settings``: verbosity, CPU threads, random seed and progress bars for the package.

Like ``scvi.settings`` and ``scanpy.settings``: one object whose attributes are checked when
set. Importing this module imports neither torch nor numba; settings that concern them are
applied to whichever is loaded, and again when training starts
(:meth:`ChipviSettings.lightning_context`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from ._errors import ChipviInputError

#: verbosity name -> level of chipvi's own logger.
VERBOSITY = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO,
             "debug": logging.DEBUG}  # fmt: skip

#: Loggers of the training libraries: quiet (WARNING) unless verbosity is "debug".
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                   "lightning_utilities", "scvi")  # fmt: skip

#: Lightning warnings that say nothing useful about a chipvi run (regexes of their start):
#: chipvi validates without a validation step, Lightning's own deprecated torch API, and the
#: logging interval, which chipvi sets per epoch. Shown at verbosity "debug".
LIGHTNING_NOISE = (
    r"You passed in a `val_dataloader` but have no `validation_step`",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r".*does not have many workers which may be a bottleneck",
)

#: Most threads chipvi uses by default: past this, small models and the binning pool gain
#: nothing, and a shared machine loses a lot (see ``default_num_threads``).
MAX_DEFAULT_THREADS = 16


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, further limited by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        n = os.cpu_count() or 1
    try:  # cgroup v2 quota of a container: "max 100000" or "<quota> <period>"
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def default_num_threads() -> int:
    """``settings.num_threads`` when the user sets none: available CPUs, at most 16.

    torch's default (one thread per core it sees) plus numba's plus other processes
    oversubscribe small machines: two threads were measured 10–40 × slower than one on a
    loaded 2-core box. Counting the CPUs this process may actually use (affinity, container
    quota) avoids the worst of it; set ``chipvi.settings.num_threads = 1`` on shared machines.
    """
    return min(available_cpus(), MAX_DEFAULT_THREADS)


class ChipviSettings:
    """Package-wide settings (``chipvi.settings``).

    Attributes
    ----------
    verbosity
        ``"error"``, ``"warning"``, ``"info"`` (default) or ``"debug"``. At ``"info"`` chipvi's
        own messages and progress bars show and Lightning's start-up chatter does not; at
        ``"debug"`` Lightning's and scvi-tools' messages and warnings show too.
    num_threads
        CPU threads for torch, numba and the BAM binning pool (default:
        :func:`default_num_threads`). Setting it applies it to torch and numba at once when
        they are loaded.
    seed
        Random seed; setting it seeds Python's ``random``, NumPy, torch and Pyro (``None``:
        not seeded).
    progress_bar
        Show progress bars (binning, training) by default.
    """

    def __init__(self) -> None:
        self._verbosity = "info"
        self._num_threads: int | None = None
        self._seed: int | None = None
        self._progress_bar = True
        self._logger = logging.getLogger("chipvi")
        if not self._logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)
            self._logger.propagate = False  # one copy per message, as scanpy and scvi-tools do
        self._logger.setLevel(VERBOSITY[self._verbosity])

    def __repr__(self) -> str:
        return (
            f"chipvi.settings(verbosity={self.verbosity!r}, num_threads={self.num_threads}, "
            f"seed={self.seed}, progress_bar={self.progress_bar})"
        )

    # -- verbosity ---------------------------------------------------------------------------
    @property
    def verbosity(self) -> str:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: str) -> None:
        if value not in VERBOSITY:
            raise ChipviInputError(
                f"settings.verbosity must be one of {', '.join(map(repr, VERBOSITY))}, "
                f"got {value!r}."
            )
        self._verbosity = value
        self._logger.setLevel(VERBOSITY[value])

    # -- threads -----------------------------------------------------------------------------
    @property
    def num_threads(self) -> int:
        return self._num_threads if self._num_threads is not None else default_num_threads()

    @num_threads.setter
    def num_threads(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ChipviInputError(
                f"settings.num_threads must be a positive integer (or None for the default "
                f"{default_num_threads()}), got {value!r}."
            )
        self._num_threads = value
        self.apply_threads()

    def apply_threads(self) -> None:
        """Give torch and numba ``num_threads`` threads, where they are loaded."""
        n = self.num_threads
        # numba first: launching its OpenMP threading layer resets the OpenMP thread count
        # that torch shares (measured: torch back at 2 threads after numba.set_num_threads(1)).
        if "numba" in sys.modules:
            import numba

            # numba's pool is sized once (NUMBA_NUM_THREADS); it cannot grow past that.
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        if "torch" in sys.modules:
            import torch

            if torch.get_num_threads() != n:
                torch.set_num_threads(n)

    # -- seed --------------------------------------------------------------------------------
    @property
    def seed(self) -> int | None:
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ChipviInputError(f"settings.seed must be an integer or None, got {value!r}.")
        if value is not None and not 0 <= value < 2**32:
            raise ChipviInputError(f"settings.seed must lie in [0, 2**32), got {value}.")
        self._seed = value
        if value is not None:
            import pyro

            pyro.set_rng_seed(value)  # Python's random, NumPy and torch

    # -- progress bars -----------------------------------------------------------------------
    @property
    def progress_bar(self) -> bool:
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ChipviInputError(f"settings.progress_bar must be True or False, got {value!r}.")
        self._progress_bar = value

    def progress(self, value: bool | None) -> bool:
        """A function's ``progress`` argument: ``None`` means :attr:`progress_bar`."""
        return self._progress_bar if value is None else bool(value)

    # -- training ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lightning_context(self) -> Iterator[None]:
        """Run Lightning / scvi-tools code at chipvi's verbosity and thread count.

        Below ``"debug"``, Lightning's and scvi-tools' info messages ("GPU available", "TPU
        available", the logger advert) are held back by logger level, and the warnings in
        :data:`LIGHTNING_NOISE` by targeted filters (other warnings still show); at
        ``"error"`` every Lightning warning is held back. Levels and filters are restored on
        exit. Also applies :attr:`num_threads` to torch and numba.
        """
        self.apply_threads()
        debug = self._verbosity == "debug"
        level = logging.DEBUG if debug else max(logging.WARNING, VERBOSITY[self._verbosity])
        saved = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
        with warnings.catch_warnings():
            if not debug:
                for pattern in LIGHTNING_NOISE:
                    warnings.filterwarnings("ignore", message=pattern)
            if self._verbosity == "error":
                warnings.filterwarnings("ignore", module=r"(lightning|pytorch_lightning)(\.|$)")
            try:
                for name in LIBRARY_LOGGERS:
                    logging.getLogger(name).setLevel(level)
                yield
            finally:
                for name, old in saved.items():
                    logging.getLogger(name).setLevel(old)


settings = ChipviSettings()
