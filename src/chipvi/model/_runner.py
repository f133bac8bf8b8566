"""scvi-tools' training runner, with a failed or interrupted fit reported as what it is.

scvi-tools 1.4's ``TrainRunner`` prints ``Exception raised during training. <class
'NameError'> ...`` to stdout for *any* exception out of Lightning's fit (it passes the class
``NameError`` where it meant the exception's type), then re-raises it: a Ctrl-C or one of
chipvi's own errors (:class:`chipvi.ChipviTrainingError`) reads as a ``NameError``. Lightning
turns Ctrl-C into ``SystemExit(1)`` after its cleanup and leaves SIGINT ignored, so a second
Ctrl-C (a notebook's interrupt) would no longer reach Python. This runner drops the misleading
line, re-raises Ctrl-C as the ``KeyboardInterrupt`` it was, and restores the SIGINT handler.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from scvi.train import TrainRunner as _ScviTrainRunner

_FAILURE_LINE = "Exception raised during training."


@contextmanager
def _without_failure_line() -> Iterator[None]:
    """Hide scvi-tools' failure line; every other ``print`` of its runner module goes through.

    ``print`` is looked up in the runner module's globals before the builtins, so a module
    attribute shadows it for that module only, while training runs.
    """
    module = sys.modules[_ScviTrainRunner.__module__]

    def _print(*args, **kwargs):
        if args and args[0] == _FAILURE_LINE:
            return
        print(*args, **kwargs)

    module.print = _print
    try:
        yield
    finally:
        module.__dict__.pop("print", None)


class TrainRunner(_ScviTrainRunner):
    """scvi-tools' ``TrainRunner``; see the module docstring for what it changes."""

    def _run_training_core(self):
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGINT) if main else None
        try:
            with _without_failure_line():
                return super()._run_training_core()
        except SystemExit as e:
            # Lightning's sys.exit(1) inside its KeyboardInterrupt handler: the Ctrl-C itself.
            if isinstance(e.__context__, KeyboardInterrupt):
                raise e.__context__ from None
            raise
        finally:
            if handler is not None and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
                signal.signal(signal.SIGINT, handler)
