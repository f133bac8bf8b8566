"""Training that fails or is interrupted says what happened (not scvi-tools' "NameError")."""

from __future__ import annotations

import signal

import pytest
from lightning.pytorch import Callback

from _chipvi_synthetic import make_chip_adata
from chipvi.model import ChIPVI


class _RaiseAfter(Callback):
    """Raise ``error`` at the end of epoch ``epoch``."""

    def __init__(self, epoch: int, error: BaseException):
        self.epoch, self.error = epoch, error

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise self.error


@pytest.fixture
def model():
    adata = make_chip_adata(n_bins=300, seed=5)[0]
    ChIPVI.setup_anndata(adata)
    return ChIPVI(adata)


def _train(model, error):
    model.train(
        max_epochs=5, batch_size=300, enable_progress_bar=False, callbacks=[_RaiseAfter(1, error)]
    )


def test_error_in_training_is_raised_without_scvi_nameerror_line(model, capfd):
    with pytest.raises(RuntimeError, match="boom"):
        _train(model, RuntimeError("boom"))
    out, err = capfd.readouterr()
    assert "Exception raised during training" not in out + err
    assert "NameError" not in out + err
    assert len(model.history["elbo_train"]) == 1  # epoch 0, done before the error, is kept


def test_ctrl_c_in_training_raises_keyboard_interrupt_and_restores_sigint(model, capfd):
    before = signal.getsignal(signal.SIGINT)
    handler = signal.default_int_handler  # Ctrl-C as in a terminal, even in a background job
    signal.signal(signal.SIGINT, handler)
    try:
        with pytest.raises(KeyboardInterrupt):  # not SystemExit(1)
            _train(model, KeyboardInterrupt())
        # Lightning ignores SIGINT after an interrupt; the handler from before is back.
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, before)
    out, err = capfd.readouterr()
    assert "Exception raised during training" not in out + err
    # The model is usable after the interruption: it trains to the end next time.
    model.train(max_epochs=2, batch_size=300, enable_progress_bar=False)
    assert len(model.history["elbo_train"]) == 2
