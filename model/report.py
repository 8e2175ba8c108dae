"""Classification metrics, the confusion-matrix and training-curve plots, and the model card."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(true: Sequence[int], pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(C, C) counts; row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return matrix


def classification_metrics(true: Sequence[int], pred: Sequence[int],
                           labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    matrix = confusion_matrix(true, pred, len(labels))
    hits = np.diag(matrix).astype(float)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(hits), where=denom > 0)
    present = support > 0  # macro average over the classes that occur in the evaluated set
    return {
        "accuracy": float(hits.sum() / max(1, matrix.sum())),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "num_examples": int(matrix.sum()),
        "per_class": {
            label: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                    "f1": round(float(f1[i]), 4), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": matrix.tolist(),
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(metrics: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    matrix = np.asarray(metrics["confusion_matrix"])
    labels = metrics["labels"]
    size = max(5.0, 0.35 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 8 else 45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    if len(labels) <= 20:
        for (row, col), count in np.ndenumerate(matrix):
            color = "white" if count > matrix.max() / 2 else "black"
            ax.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss (left) and validation accuracy / macro-F1 (right) per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy loss")
    left.legend()
    right.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="val accuracy")
    right.plot(epochs, [h["val_macro_f1"] for h in history], marker="o", label="val macro-F1")
    right.set_xlabel("epoch")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def model_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A human-readable README.md for the artifact directory."""
    model, training = config["model"], config.get("training", {})
    rows = "\n".join(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                     f"{m['support']} |" for label, m in metrics["per_class"].items())
    coverage = config.get("embeddings", {}).get("coverage")
    return f"""# Model card: {config['name']} ({config['version']})

An LSTM text classifier made by `python -m model.train`; serve it with
`TEXTCLF_MODEL_DIR=<this directory> python -m service`.

- **Labels ({len(config['labels'])})**: {', '.join(config['labels'])}
- **Data**: {json.dumps(config.get('data', {}).get('source', {}), ensure_ascii=False)}
- **Architecture**: embedding {model['vocab_size']}×{model['embedding_dim']} →
  {'bidirectional ' if model['bidirectional'] else ''}LSTM ({model['num_layers']} layer(s),
  hidden {model['hidden_size']}) → {model['pooling']} pooling → dropout {model['dropout']} → linear
- **Embeddings**: {config.get('embeddings', {}).get('source', 'trained from scratch')}
  {f"(vocabulary coverage {coverage['ratio']:.1%}, token coverage {coverage['token_share']:.1%})"
   if coverage else ''}
- **Tokenizer**: NFKC, lowercase={config['tokenizer']['lowercase']},
  max_length={config['tokenizer']['max_length']}, vocabulary {config['tokenizer']['vocab_size']}
- **Training**: {json.dumps(training, ensure_ascii=False)}
- **Weights**: `{config['weights']['file']}` sha256 `{config['weights']['sha256']}`

## Test results ({metrics['num_examples']} documents)

accuracy **{metrics['accuracy']:.4f}**, macro-F1 **{metrics['macro_f1']:.4f}**

| label | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

![confusion matrix](confusion_matrix.png)

![training curves](training_curves.png)

## Limits

Trained on one corpus; texts far from it (other domains, languages or eras) get confident but
unreliable answers. Texts are truncated to {config['tokenizer']['max_length']} tokens.
"""
