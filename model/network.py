"""The LSTM text classifier: embedding -> LSTM (packed) -> pooling over time -> dropout -> linear.

Inference on the CPU skips the packing when there is little padding (model.unpacked):
same results up to float rounding, about 1.5x faster.

Shapes: B batch, T time steps (tokens), E embedding dim, H hidden size, D directions (1 or 2),
C classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.unpacked import encode_unpacked, pooled_unpacked

POOLINGS = ("max", "mean", "last")
# Inference takes the unpacked LSTM (one oneDNN kernel per direction, ~1.5x faster per step than
# the packed CPU loop) when at least this share of the padded (B, T) grid is real tokens.
UNPACKED_MIN_FILL = 0.7


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int            # rows of the embedding table, <pad>=0 and <unk>=1 included
    num_classes: int           # C, size of the output layer
    embedding_dim: int = 100   # E
    hidden_size: int = 128     # H, per direction
    num_layers: int = 1        # stacked LSTM layers
    bidirectional: bool = True  # D = 2 when true
    dropout: float = 0.3       # between LSTM layers and before the output layer
    pooling: str = "max"       # how per-token states become one text vector: max | mean | last

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        for name in ("vocab_size", "num_classes", "embedding_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def feature_size(self) -> int:
        """Size of the pooled text vector: H * D."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class LSTMClassifier(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(
            config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
            bidirectional=config.bidirectional, batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.feature_size, config.num_classes)

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor,
               embedded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token LSTM outputs (B, T, H*D) zero past each length, and the final hidden states
        h_n (layers*D, B, H). `embedded` (B, T, E) overrides the embedding lookup (attributions)."""
        x = self.embedding(ids) if embedded is None else embedded  # (B, T, E)
        return self._states(x, lengths)

    def _states(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] == 0:  # no texts: nothing to pad past, and packing refuses empty batches
            states, (h_n, _) = self.lstm(x)
            return states, h_n
        if self._unpacked_is_faster(x, lengths):
            return encode_unpacked(self.lstm, x, lengths)
        # Packing makes the LSTM stop at each text's length, so padding never reaches the state.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return states, h_n

    def _unpacked_is_faster(self, x: torch.Tensor, lengths: torch.Tensor) -> bool:
        """Inference on the CPU with oneDNN, with little padding: see model.unpacked."""
        if self.training or torch.is_grad_enabled() or x.device.type != "cpu" or 0 in x.shape[:2]:
            return False
        if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
            return False  # the plain unpacked CPU kernel is no faster than the packed one
        return int(lengths.sum()) >= UNPACKED_MIN_FILL * x.shape[0] * x.shape[1]

    def pool(self, states: torch.Tensor, h_n: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, H*D) -> (B, H*D) by max / mean over the valid steps, or the last hidden state."""
        mode = self.config.pooling
        if mode == "last":
            if self.config.bidirectional:  # forward's state after the last token, backward's after the first
                return torch.cat([h_n[-2], h_n[-1]], dim=1)
            return h_n[-1]
        steps = torch.arange(states.shape[1], device=states.device)
        valid = (steps[None, :] < lengths.to(states.device)[:, None]).unsqueeze(-1)  # (B, T, 1)
        if mode == "max":
            return states.masked_fill(~valid, float("-inf")).amax(dim=1)
        return states.sum(dim=1) / lengths.to(states.device, states.dtype)[:, None]

    def features(self, ids: torch.Tensor, lengths: torch.Tensor,
                 embedded: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled text vectors (B, H*D): what /embed returns for whole texts."""
        x = self.embedding(ids) if embedded is None else embedded  # (B, T, E)
        if self.config.pooling != "last" and self._unpacked_is_faster(x, lengths):
            return pooled_unpacked(self.lstm, x, lengths, self.config.pooling == "max")
        states, h_n = self._states(x, lengths)
        return self.pool(states, h_n, lengths)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor,
                embedded: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) long, lengths (B,) long >= 1 -> logits (B, C)."""
        return self.classifier(self.dropout(self.features(ids, lengths, embedded)))
