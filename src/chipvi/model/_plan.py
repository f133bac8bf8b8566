"""scvi-tools' Pyro training plan, keeping each step's objective as a number, not a graph."""

from __future__ import annotations

from scvi.train import LowLevelPyroTrainingPlan

from .._utils import release_freed_memory


class ChipviTrainingPlan(LowLevelPyroTrainingPlan):
    """:class:`~scvi.train.LowLevelPyroTrainingPlan` whose per-step record holds the detached
    objective, and which hands freed memory back to the system after each step.

    scvi-tools 1.4 appends every step's loss to ``training_step_outputs`` and averages them at
    the epoch's end. The appended tensor still carries its autograd graph, so each step's graph
    lived until the epoch ended: peak memory grew with the steps of an epoch, that is with the
    genome (from a 3 M-bin x 4 store, about 1.4 MiB per step). Lightning receives the loss with
    its graph as before; only the record is detached. The steps' minibatches differ in length,
    so their freed arrays fragment the C heap; :func:`~chipvi._utils.release_freed_memory`
    after each step keeps the resident memory of a long epoch flat.
    """

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.training_step_outputs[-1] = {"loss": out["loss"].detach()}
        return out

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        release_freed_memory()
