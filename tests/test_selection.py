"""Model selection keeps models that animate: a static early checkpoint with the lower val/loss must
lose to a later one whose renders follow the object (thesis 4.1: the validation loss rises at the
animation point). Through the real Trainer.validate, on the toy dataset."""
import math

import pytest
import torch
from torch import nn

from fmo_fakes import TINY_MODEL
from fmolab.data.synthetic import write_synthetic_dataset
from fmolab.train.state import Monitor


class Replay(nn.Module):
    """Renders the ground truth it is given: averaged over time (static) or rolled in time (moving)."""

    def __init__(self):
        super().__init__()
        self.mode, self.frames = "static", None

    def forward(self, inputs, times, contrast=None):
        f = self.frames
        r = f.mean(1, keepdim=True).expand_as(f) if self.mode == "static" else f.roll(f.shape[1] // 2, 1)
        return {"renders": r.clone(), "latent": inputs[:, :1]}


@pytest.fixture(scope="module")
def toy(session_home):
    return write_synthetic_dataset(session_home / "toy-select", num_sequences=8, width=64, height=48,
                                   num_frames=8, num_objects=4, seed=3)


def _trainer(cfg, model):
    from fmolab.data import build_dataset
    from fmolab.losses import LossSet
    from fmolab.train.callbacks import BenchmarkScores
    from fmolab.train.loop import Trainer

    trainer = Trainer(cfg, model, None, None, LossSet(cfg.loss.train), build_dataset(cfg, "val"),
                      torch.device("cpu"), 0, 1, [BenchmarkScores()])
    def replaying(indices):  # the stub sees the ground truth of the batch it renders
        from fmolab.data import to_device

        batch = to_device(trainer.val_ds.batch(indices))
        model.frames = batch["frames"]
        return batch, trainer.forward(batch)

    trainer.predict = replaying
    return trainer


@pytest.mark.parametrize("metric,mode", [("val/loss", "min"), ("val/tiou", "max")])
def test_animated_checkpoint_beats_static_one_with_lower_loss(toy, work, make_config, metric, mode):
    cfg = make_config({**TINY_MODEL, "runtime.work_dir": work, "data.train": toy, "data.format": "double_blur",
                       "data.val_fraction": 0.5, "train.val_samples": 4, "train.batch_size": 2,
                       "loss.train": "[AlphaDice, 'RGBL1:mode=gt']",
                       "train.monitor.metric": metric, "train.monitor.mode": mode})
    model = Replay()
    trainer = _trainer(cfg, model)
    trainer.state.step = 100
    static = trainer.validate()
    model.mode, trainer.state.step = "moving", 900
    moving = trainer.validate()
    # the situation of the demo: the static model has the lower val/loss, the moving one animates
    assert static["val/loss"] < moving["val/loss"]
    assert static["val/animation_ratio"] < 0.05 and moving["val/animation_ratio"] > 0.9
    assert trainer.state.best_step == 900 and trainer.state.best_animated
    assert trainer.state.animation_step == 900
    model.mode, trainer.state.step = "static", 1000  # a later static model never takes it back
    trainer.validate()
    assert trainer.state.best_step == 900


def test_without_the_guard_the_lower_loss_wins(toy, work, make_config):
    cfg = make_config({**TINY_MODEL, "runtime.work_dir": work, "data.train": toy, "data.format": "double_blur",
                       "data.val_fraction": 0.5, "train.val_samples": 4, "train.batch_size": 2,
                       "loss.train": "[AlphaDice, 'RGBL1:mode=gt']", "train.monitor.metric": "val/loss",
                       "train.monitor.mode": "min", "train.monitor.animated_first": False})
    model = Replay()
    trainer = _trainer(cfg, model)
    trainer.state.step = 100
    trainer.validate()
    model.mode, trainer.state.step = "moving", 900
    trainer.validate()
    assert trainer.state.best_step == 100 and not trainer.state.best_animated


def test_monitor_best_of_history_ranks_animated_first():
    history = [(100, 0.82, 0.01), (500, 0.80, 0.2), (850, 0.899, 0.62), (900, 0.95, 0.7)]
    assert Monitor("val/loss", "min").best_of(history) == (850, 0.899, True)
    assert Monitor("val/loss", "min", animated_first=False).best_of(history) == (500, 0.80, False)
    assert Monitor("val/tiou", "max").best_of([(1, math.nan, 0.9), (2, 0.3, 0.1)]) == (2, 0.3, False)
    assert Monitor().best_of([]) is None
