"""One readable training path: SGD with momentum, weight decay, one-cycle/cosine schedule; deterministic on CPU."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmcdash.config import CheckpointMeta, ModelSpec, TrainConfig
from lmcdash.data import TensorDataset
from lmcdash.models import create_model

OnEpoch = Callable[[int, int, dict], None]  # (epoch, epochs, metrics)
OnStep = Callable[[int, int], None]  # (step in epoch, steps per epoch)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> tuple[float, float]:
    """Return (accuracy, mean cross-entropy) of ``model`` in eval mode on (x, y)."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch])
        loss += F.cross_entropy(out, y[i:i + batch], reduction="sum").item()
        correct += (out.argmax(1) == y[i:i + batch]).sum().item()
    model.train(was_training)
    return correct / len(x), loss / len(x)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose onecycle, cosine or constant")


def train_model(spec: ModelSpec, cfg: TrainConfig, data: TensorDataset,
                on_epoch: OnEpoch | None = None, on_step: OnStep | None = None) -> tuple[nn.Module, CheckpointMeta]:
    """Return (trained model in eval mode, its checkpoint metadata); the calibration split is never seen."""
    if cfg.optimizer != "sgd":
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; only 'sgd' (with momentum) is supported")
    torch.manual_seed(cfg.seed)
    model = create_model(spec)
    x, y = data.train_x, data.train_y
    if cfg.train_subset:
        x, y = x[: cfg.train_subset], y[: cfg.train_subset]
    steps_per_epoch = (len(x) + cfg.batch_size - 1) // cfg.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = _scheduler(opt, cfg, cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            if on_step:
                on_step(step + 1, steps_per_epoch)
        test_acc, test_loss = evaluate(model, data.test_x, data.test_y)
        row = {"epoch": epoch, "train_loss": round(total / len(x), 5),
               "test_acc": round(test_acc, 5), "test_loss": round(test_loss, 5)}
        history.append(row)
        if on_epoch:
            on_epoch(epoch, cfg.epochs, row)
    model.eval()
    train_acc, train_loss = evaluate(model, x, y)
    metrics = {"train_acc": train_acc, "train_loss": train_loss,
               "test_acc": history[-1]["test_acc"] if history else None,
               "test_loss": history[-1]["test_loss"] if history else None}
    meta = CheckpointMeta(model=model.model_spec, dataset=data.name, normalization=data.normalization,
                          seed=cfg.seed, train=cfg.to_dict(), metrics=metrics, history=history)
    return model, meta
