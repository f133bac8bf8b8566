"""Lightning callback that writes a run's facts and checkpoints, passed via ``model.train(callbacks=...)``.

Resuming gives the same parameters as an uninterrupted run because everything that decides the
next epoch is either in the checkpoint or re-derived from the seed:

* Lightning's checkpoint holds the training plan's ``state_dict`` (the module's parameters),
  the loop counters (epoch, global step: KL warm-up depends on them), callback states and the
  state of optimisers Lightning drives (ChIPVI trains with one torch Adam through
  ``LowLevelPyroTrainingPlan``, so its moments are there). With scvi-tools' default
  ``PyroTrainingPlan`` the real optimiser is Pyro's (``plan.optim``, one torch Adam per
  parameter, outside Lightning's view: Lightning only sees a dummy one);
  :meth:`RunCallback.on_save_checkpoint` adds its ``get_state()`` and
  :meth:`on_load_checkpoint` hands it back with ``set_state`` (consumed on the first step).
* Random state is not checkpointed; instead every epoch starts from a seed derived from
  ``(seed, epoch)``, so minibatch order and Monte-Carlo draws of epoch *e* are the same whether
  or not the process restarted before it. Lightning creates the first epoch's data iterator of
  each ``fit`` before ``on_train_epoch_start`` (later epochs after it), so the first epoch of a
  fit re-creates that iterator after reseeding, exactly as Lightning does for later epochs.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from .._errors import ChipviInputError
from .._utils import atomic_path
from ..io import RunDir

PYRO_OPTIM_KEY = "chipvi_pyro_optim_state"
# Test hook: "N" sends SIGKILL to this process after epoch N's checkpoint ("N:INT" sends SIGINT,
# i.e. Ctrl-C), to exercise --resume.
KILL_ENV = "CHIPVI_TEST_KILL_AFTER_EPOCH"


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch: a fixed function of the run seed and the epoch number."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**31 - 1)


def _set_rng(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - libraries draw from the legacy global state
    torch.manual_seed(seed)


def _scalar(value) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.detach().float().cpu().item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value


class RunCallback(Callback):
    """Per-epoch facts, TensorBoard/W&B sinks, checkpoints and reseeding for one run.

    Parameters
    ----------
    run
        The run directory.
    checkpoint_interval_s
        Minimum seconds between checkpoints (the first and the last epoch always save one).
    seed
        The run seed; epoch ``e`` starts from :func:`epoch_seed` ``(seed, e)``.
    sinks
        Objects with ``log(metrics: dict, step: int)`` and ``close()`` (TensorBoard, W&B).
    """

    def __init__(
        self, run: RunDir, seed: int, sinks: list | None = None, checkpoint_interval_s: float = 0.0
    ):
        super().__init__()
        self.run = run
        self.seed = seed
        self.sinks = sinks or []
        self.checkpoint_interval_s = checkpoint_interval_s
        self._last_save = None
        self._t0 = 0.0
        self.last_epoch: int | None = None
        kill = os.environ.get(KILL_ENV)
        epoch, _, sig = (kill or "").partition(":")
        self._kill_after = int(epoch) if epoch else None
        self._kill_signal = signal.SIGINT if sig == "INT" else signal.SIGKILL

    def on_train_start(self, trainer, pl_module) -> None:
        self._first_epoch_of_fit = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _set_rng(epoch_seed(self.seed, trainer.current_epoch))
        if getattr(self, "_first_epoch_of_fit", False):
            self._first_epoch_of_fit = False
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                iter(fetcher)  # what Lightning itself does at the start of every later epoch
        self._t0 = time.perf_counter()

    def _epoch_metrics(self, trainer, pl_module) -> dict[str, dict[str, float]]:
        """{split: {term: value}} for the epoch that just ended."""
        by_split: dict[str, dict[str, float]] = {"train": {}}
        outputs = getattr(pl_module, "training_step_outputs", None) or []
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for out in outputs:
            for key, value in out.items() if isinstance(out, dict) else []:
                v = _scalar(value)
                if v is None:
                    continue
                name = "elbo" if key == "loss" else key
                sums[name] = sums.get(name, 0.0) + v
                counts[name] = counts.get(name, 0) + 1
        by_split["train"].update({k: sums[k] / counts[k] for k in sums})
        for key, value in trainer.callback_metrics.items():
            v = _scalar(value)
            if v is None or key == "elbo_train":  # elbo_train is still last epoch's here
                continue
            for split in ("train", "validation"):
                if key.endswith("_" + split):
                    by_split.setdefault(split, {})[key[: -len(split) - 1]] = v
                    break
        return {s: m for s, m in by_split.items() if m}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Runs before the training plan's own on_train_epoch_end (Lightning calls non-monitoring
        # callbacks first), so per-step outputs are still there to average.
        epoch = trainer.current_epoch
        elapsed = time.perf_counter() - self._t0
        n_obs = getattr(pl_module, "n_obs_training", None)
        throughput = (n_obs / elapsed) if n_obs and elapsed > 0 else None
        metrics = self._epoch_metrics(trainer, pl_module)
        rows = []
        for split, terms in metrics.items():
            row = {"epoch": epoch, "split": split, **terms}
            row["epoch_time_s"] = round(elapsed, 6)
            row["bins_per_s"] = round(throughput, 3) if throughput else ""
            rows.append(row)
        self.run.append_scalars(rows)
        flat = {f"{k}_{s}": v for s, terms in metrics.items() for k, v in terms.items()}
        finite = all(math.isfinite(v) for v in flat.values())
        self.run.event(
            "epoch_end",
            epoch=epoch,
            losses=flat,
            epoch_time_s=elapsed,
            bins_per_s=throughput,
            finite=finite,
        )
        for sink in self.sinks:
            sink.log(flat, epoch)
        kill = self._kill_after is not None and epoch >= self._kill_after
        now = time.monotonic()
        last_epoch = epoch + 1 >= (trainer.max_epochs or 0)
        if (
            kill
            or last_epoch
            or self._last_save is None
            or now - self._last_save >= self.checkpoint_interval_s
        ):
            self._save_checkpoint(trainer)
            self._last_save = now
        self.last_epoch = epoch
        if kill:
            self._kill_after = None
            os.kill(os.getpid(), self._kill_signal)

    def _save_checkpoint(self, trainer) -> None:
        path = self.run.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        # A kill mid-write leaves the previous checkpoint intact.
        with atomic_path(path, overwrite=True) as tmp:
            trainer.save_checkpoint(str(tmp), weights_only=False)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        optim = getattr(pl_module, "optim", None)
        if optim is not None and hasattr(optim, "get_state"):
            checkpoint[PYRO_OPTIM_KEY] = optim.get_state()
        checkpoint["chipvi_seed"] = self.seed
        checkpoint["chipvi_last_epoch"] = trainer.current_epoch  # saved at this epoch's end

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if checkpoint.get("chipvi_seed", self.seed) != self.seed:
            raise ChipviInputError(
                f"The checkpoint was written with seed {checkpoint['chipvi_seed']}, the run config "
                f"says {self.seed}; resume with the run's own config.yaml."
            )
        state = checkpoint.get(PYRO_OPTIM_KEY)
        optim = getattr(pl_module, "optim", None)
        if state is not None and optim is not None and hasattr(optim, "set_state"):
            optim.set_state(state)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        kind = "interrupted" if isinstance(exception, KeyboardInterrupt) else "error"
        self.run.event(
            kind, epoch=trainer.current_epoch, error=f"{type(exception).__name__}: {exception}"
        )

    def on_train_end(self, trainer, pl_module) -> None:
        for sink in self.sinks:
            sink.close()


class TensorBoardSink:
    """Epoch metrics to TensorBoard event files under ``<run>/tensorboard``."""

    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ChipviInputError(
                "train.loggers includes 'tensorboard' but TensorBoard is not installed; "
                "`pip install 'chipvi[tensorboard]'` or remove it from train.loggers."
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: dict, step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Epoch metrics to Weights & Biases in offline mode (``wandb sync`` uploads later)."""

    def __init__(self, log_dir: Path, name: str, config: dict):
        try:
            import wandb
        except ImportError:
            raise ChipviInputError(
                "train.loggers includes 'wandb' but Weights & Biases is not installed; "
                "`pip install 'chipvi[wandb]'` or remove it from train.loggers."
            ) from None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            mode="offline", dir=str(log_dir), name=name, config=config, reinit=True
        )

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def check_loggers_available(names: list[str]) -> None:
    """Fail before training when an optional logger's package is missing."""
    import importlib.util

    needs = {"tensorboard": "tensorboard", "wandb": "wandb"}
    for name in names:
        module = needs.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise ChipviInputError(
                f"train.loggers includes {name!r} but the package is not installed; "
                f"`pip install 'chipvi[{name}]'` or remove it from train.loggers."
            )
