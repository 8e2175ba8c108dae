"""The training loop: epochs of bucketed mini-batches, validation macro-F1, early stopping."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from model.batches import bucketed_batches, collate, predict_logits
from model.report import classification_metrics

log = logging.getLogger("textclf.train")


@dataclass
class FitOptions:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 4          # epochs without a better validation macro-F1 before stopping
    clip_norm: float = 5.0     # LSTMs can have exploding gradients on long texts
    seed: int = 0
    max_batches: int | None = None  # per epoch; --dry-run uses a handful
    progress: bool = True


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_macro_f1: float = -1.0
    seconds: float = 0.0


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, encoded: Sequence[Sequence[int]],
                 targets: torch.Tensor, opts: FitOptions, generator: torch.Generator,
                 device: torch.device, epoch: int) -> float:
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    batches = bucketed_batches([len(e) for e in encoded], opts.batch_size, generator)
    batches = batches[: opts.max_batches] if opts.max_batches else batches
    total, seen = 0.0, 0
    bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not opts.progress)
    for rows in bar:
        ids, lengths = collate(encoded, rows, device)
        loss = loss_fn(model(ids, lengths), targets[rows].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), opts.clip_norm)
        optimizer.step()
        total += loss.item() * len(rows)
        seen += len(rows)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / max(1, seen)


def _validate(model: nn.Module, encoded: Sequence[Sequence[int]], targets: torch.Tensor,
              labels: Sequence[str], device: torch.device) -> dict[str, float]:
    logits = predict_logits(model, encoded, device)
    loss = nn.functional.cross_entropy(logits, targets).item()
    metrics = classification_metrics(targets.tolist(), logits.argmax(1).tolist(), labels)
    return {"val_loss": loss, "val_accuracy": metrics["accuracy"],
            "val_macro_f1": metrics["macro_f1"]}


def fit(model: nn.Module, train: tuple[Sequence[Sequence[int]], torch.Tensor],
        val: tuple[Sequence[Sequence[int]], torch.Tensor], labels: Sequence[str],
        opts: FitOptions, device: torch.device) -> FitResult:
    """Train in place; on return `model` holds the weights of the best validation epoch."""
    generator = torch.Generator().manual_seed(opts.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    # Halve the learning rate when validation macro-F1 stalls for an epoch.
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                           patience=1)
    result, best_state, start = FitResult(), copy.deepcopy(model.state_dict()), time.perf_counter()
    epochs = tqdm(range(1, opts.epochs + 1), desc="training", unit="epoch",
                  disable=not opts.progress)
    for epoch in epochs:
        tick = time.perf_counter()
        train_loss = _train_epoch(model, optimizer, *train, opts, generator, device, epoch)
        row = {"epoch": epoch, "train_loss": train_loss, **_validate(model, *val, labels, device),
               "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - tick}
        result.history.append(row)
        scheduler.step(row["val_macro_f1"])
        improved = row["val_macro_f1"] > result.best_val_macro_f1
        if improved:
            result.best_epoch, result.best_val_macro_f1 = epoch, row["val_macro_f1"]
            best_state = copy.deepcopy(model.state_dict())
        message = (f"epoch {epoch:3d}  loss {train_loss:.4f}  val_loss {row['val_loss']:.4f}  "
                   f"val_acc {row['val_accuracy']:.4f}  val_macro_f1 {row['val_macro_f1']:.4f}  "
                   f"{row['seconds']:.1f}s{'  *' if improved else ''}")
        tqdm.write(message) if opts.progress else log.info(message)
        if epoch - result.best_epoch >= opts.patience:
            tqdm.write(f"early stop: no better validation macro-F1 for {opts.patience} epochs")
            break
    model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result
