"""Training guard: stop at the first non-finite objective or gradient, saying where it arose."""

from __future__ import annotations

import pyro
import torch
from lightning.pytorch.callbacks import Callback

from .._errors import ChipviTrainingError


class NonFiniteGuard(Callback):
    """Raise :class:`~chipvi.ChipviTrainingError` before an optimiser step with NaN/inf in it.

    Checked before every step (so the parameters are never overwritten by the bad step): the
    minibatch's objective and every parameter's gradient. The message names the epoch and
    step, the term of the objective that is not finite (the chain likelihood ``y`` or a
    replicate-consistency factor) and, when the technical network's mean or dispersion is
    not finite, the libraries where it is not.

    Parameters
    ----------
    library_names
        Library names in column order (for the message).
    """

    def __init__(self, library_names: list[str]) -> None:
        self.library_names = list(library_names)
        self._batch = None
        self._validation = None

    # Pyro's argument validation would raise a bare ValueError from inside a distribution
    # (e.g. a NaN factor) before this guard can say where it came from: the guard replaces it
    # while training runs.
    def on_fit_start(self, trainer, pl_module) -> None:
        self._validation = pyro.validation_enabled(False)
        self._validation.__enter__()

    def _restore(self) -> None:
        if self._validation is not None:
            self._validation.__exit__(None, None, None)
            self._validation = None

    def on_fit_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch = batch

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        outputs = getattr(pl_module, "training_step_outputs", None)
        loss = outputs[-1]["loss"] if outputs else None
        bad_loss = loss is not None and not bool(torch.isfinite(loss.detach()).all())
        bad_grads = [
            name
            for name, p in pl_module.module.named_parameters()
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        if not bad_loss and not bad_grads:
            return
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        what = (
            f"the objective is {float(loss.detach()):g}"
            if bad_loss
            else f"the gradient of {', '.join(bad_grads[:5])} is not finite"
        )
        diagnosis = self._diagnose(pl_module)
        raise ChipviTrainingError(
            f"Training stopped at {where}: {what}. {diagnosis + ' ' if diagnosis else ''}The "
            "model keeps the parameters of the last finite step. Check the input layers for "
            "extreme values, or train with a smaller lr (e.g. model.train(lr=5e-3))."
        )

    @torch.no_grad()
    def _diagnose(self, pl_module) -> str:
        """Which term and which libraries are not finite on the failing minibatch."""
        if self._batch is None:
            return ""
        module = pl_module.module
        args, kwargs = module._get_fn_args_from_batch(self._batch)
        parts = []
        log_mu, log_r = module.technical_parameters(*args[:4])
        for what, value in (("technical mean", log_mu), ("technical dispersion", log_r)):
            bad = ~torch.isfinite(value).all(0)
            if bad.any():
                names = [self.library_names[j] for j in torch.nonzero(bad).flatten().tolist()]
                parts.append(f"The {what} is not finite for library(ies) {names}.")
        try:
            trace = pyro.poutine.trace(module.model).get_trace(*args, **kwargs)
            terms = [
                name
                for name, site in trace.nodes.items()
                if site["type"] == "sample"
                and not bool(torch.isfinite(site["fn"].log_prob(site["value"]).sum()))
            ]
        except Exception as err:  # noqa: BLE001 - the diagnosis must not hide the real error
            terms, parts = [], parts + [f"(Tracing the model failed: {err}.)"]
        if terms:
            parts.insert(0, f"Non-finite term(s) of the objective: {', '.join(terms)}.")
        return " ".join(parts)
