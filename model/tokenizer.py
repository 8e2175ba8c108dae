"""Integer vocabulary: build from a corpus, encode, pad, save/load JSON.

Texts are split into words by model.words (NFKC, word / punctuation tokens, lower case).
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from model.words import ascii_piece_words, split_with_offsets, split_words

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = "textclf-vocab"
# Vocabulary._encode_ascii's cache: at most this many pieces of at most this many characters
# (a few MB at most, whatever clients send)
PIECE_CACHE_SIZE, PIECE_CACHE_CHARS = 1 << 15, 40
VOCAB_VERSION = 1


@dataclass(frozen=True)
class Token:
    """One token of an input text; start/stop are character offsets into the original input."""

    text: str
    id: int
    start: int
    stop: int

    @property
    def unk(self) -> bool:
        return self.id == UNK_ID


def pad(encoded: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids padded with <pad> to the longest, (B, T), and lengths (B,); an empty text is one
    <pad> (length 1, so packed sequences stay valid). No texts: (0, 1) and (0,)."""
    sizes = [len(seq) or 1 for seq in encoded]
    width = max(sizes, default=1)
    if not sizes:
        return torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    # padded rows in one Python list, converted to int64 by one struct call into a buffer the
    # tensor shares: no per-row tensors; per id ~8 ns, against ~20 for array("q", list) and
    # ~160 for torch.tensor(list)
    flat: list[int] = []
    padding = [PAD_ID] * width
    for seq in encoded:
        flat += seq
        flat += padding[: width - len(seq)]
    return _int64_tensor(flat).view(len(sizes), width), _int64_tensor(sizes)


def _int64_tensor(values: list[int]) -> torch.Tensor:
    buffer = bytearray(8 * len(values))
    struct.pack_into(f"={len(values)}q", buffer, 0, *values)
    return torch.frombuffer(buffer, dtype=torch.long)


class Vocabulary:
    """Word <-> id map. Ids are in descending corpus frequency, ties broken alphabetically."""

    def __init__(self, words: Sequence[str], lowercase: bool = True,
                 counts: Sequence[int] | None = None) -> None:
        if list(words[:2]) != [PAD, UNK]:
            raise ValueError(f"vocabulary must start with {PAD!r}, {UNK!r}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary has duplicate words")
        self.itos: list[str] = list(words)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        self.lowercase = lowercase
        self.counts: list[int] = list(counts) if counts is not None else [0] * len(words)
        self._piece_ids: dict[str, list[int]] = {}  # see _encode_ascii

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Vocabulary) and self.itos == other.itos
                and self.lowercase == other.lowercase and self.counts == other.counts)

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None,
              lowercase: bool = True) -> Vocabulary:
        """Count words over `texts`; keep those seen `min_freq` times, at most `max_size` ids."""
        counter: Counter[str] = Counter()
        for text in texts:
            counter.update(split_words(text, lowercase))
        ranked = sorted((item for item in counter.items() if item[1] >= min_freq),
                        key=lambda item: (-item[1], item[0]))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - 2)]
        return cls([PAD, UNK] + [w for w, _ in ranked], lowercase, [0, 0] + [c for _, c in ranked])

    def lookup(self, word: str) -> int:
        return self.stoi.get(word, UNK_ID)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Ids of the words of `text` (unknown words -> 1), truncated to `max_length`."""
        if text.isascii():
            ids = self._encode_ascii(text.lower() if self.lowercase else text)
        else:
            stoi = self.stoi
            ids = [stoi.get(w, UNK_ID) for w in split_words(text, self.lowercase)]
        return ids[:max_length] if max_length is not None else ids

    def _encode_ascii(self, text: str) -> list[int]:
        """What split_words + lookup give, through a cache of the ids of each whitespace-free
        piece ("film," -> [id of film, id of ,]): one dict lookup per piece instead of a split
        and a lookup per word, ~35 % less time per text. Pieces recur (words do), so the cache
        stays small. Bounded whatever the input: pieces longer than PIECE_CACHE_CHARS are not
        kept, and the cache is emptied when it holds PIECE_CACHE_SIZE."""
        cache, ids = self._piece_ids, []
        for piece in text.split():
            known = cache.get(piece)
            if known is None:
                known = [self.stoi.get(w, UNK_ID) for w in ascii_piece_words(piece)]
                if len(piece) <= PIECE_CACHE_CHARS:
                    if len(cache) >= PIECE_CACHE_SIZE:
                        cache.clear()
                    cache[piece] = known
            ids += known
        return ids

    def encode_batch(self, texts: Sequence[str],
                     max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids (B, T) and lengths (B,). An empty text gets length 1 (one <pad>) so that
        packed LSTM sequences stay valid; its result is that of the all-zero embedding."""
        return pad([self.encode(t, max_length) for t in texts])

    def tokenize(self, text: str) -> list[Token]:
        """Tokens with ids and character offsets into `text`."""
        return [Token(w, self.lookup(w), a, b) for w, a, b in split_with_offsets(text, self.lowercase)]

    def one_hot(self, ids: Sequence[int]) -> torch.Tensor:
        """(T, V) 0/1 matrix; row t has a single 1 at column ids[t]. one_hot(ids) @ W == W[ids]."""
        return torch.nn.functional.one_hot(torch.as_tensor(list(ids), dtype=torch.long),
                                           len(self)).float()

    def sparse(self, ids: Sequence[int]) -> torch.Tensor:
        """The same matrix stored sparsely: only the T (row, column=id) positions of the 1s."""
        rows = torch.arange(len(ids))
        index = torch.stack([rows, torch.as_tensor(list(ids), dtype=torch.long)])
        return torch.sparse_coo_tensor(index, torch.ones(len(ids)), (len(ids), len(self)),
                                       check_invariants=True)

    def to_json(self) -> dict:
        return {"format": VOCAB_FORMAT, "version": VOCAB_VERSION, "lowercase": self.lowercase,
                "normalization": "NFKC", "words": self.itos, "counts": self.counts}

    @classmethod
    def from_json(cls, data: dict) -> Vocabulary:
        if data.get("format") != VOCAB_FORMAT or data.get("version") != VOCAB_VERSION:
            raise ValueError(f"not a {VOCAB_FORMAT} v{VOCAB_VERSION} file "
                             f"(format={data.get('format')!r}, version={data.get('version')!r})")
        return cls(data["words"], bool(data["lowercase"]), data.get("counts"))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
