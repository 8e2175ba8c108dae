"""Text -> word and punctuation tokens: the first step of the tokenizer (model.tokenizer).

Unicode NFKC -> split into word / punctuation tokens -> lower-case each token (optional). CJK
ideographs and kana become one token per character, because those scripts do not separate
words with spaces; every other script (Latin, Cyrillic, Greek, Hangul, Arabic, ...) splits on
runs of word characters.
"""

from __future__ import annotations

import re
import unicodedata

# Han ideographs (incl. extension A and compatibility), hiragana, katakana: one token per char.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
# The same tokens for ASCII-only text, ~40% faster: in ASCII mode \s leaves out \x1c-\x1f,
# which are whitespace to str (and to the pattern above), hence the explicit range.
_ASCII_TOKEN_RE = re.compile(r"\w+|[^\w\s\x1c-\x1f]", re.ASCII)


def _clusterwise_nfkc(text: str) -> tuple[str, list[int]]:
    """NFKC per base character + its combining marks, with a map normalised index -> input index.

    Whole-string NFKC loses the link to input offsets; normalising cluster by cluster keeps it
    and gives the same result for everything but exotic sequences.
    """
    pieces: list[str] = []
    origin: list[int] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or unicodedata.combining(text[i]) == 0:
            normal = unicodedata.normalize("NFKC", text[start:i])
            pieces.append(normal)
            origin.extend([start] * len(normal))
            start = i
    origin.append(len(text))
    return "".join(pieces), origin


def normalize(text: str) -> str:
    """NFKC, computed the same way as in `split_with_offsets` so both paths agree."""
    if unicodedata.is_normalized("NFKC", text):
        return text
    return _clusterwise_nfkc(text)[0]


def split_words(text: str, lowercase: bool = True) -> list[str]:
    """Normalised word and punctuation tokens of `text`."""
    if text.isascii():  # NFKC is the identity and lower() keeps every character's class
        return _split_ascii(text.lower() if lowercase else text)
    words = _TOKEN_RE.findall(normalize(text))
    return [w.lower() for w in words] if lowercase else words


def _split_ascii(text: str) -> list[str]:
    """_ASCII_TOKEN_RE.findall(text), ~30% faster: str.split() breaks at the same whitespace
    (\x1c-\x1f included), and most pieces are one plain word that needs no regex. (The rule of
    `ascii_piece_words`, inlined: a call per piece made this 35 % slower.)"""
    words: list[str] = []
    for piece in text.split():
        if piece.isalnum():
            words.append(piece)
        else:  # punctuation, '_' or a mix: the regex splits the piece
            words += _ASCII_TOKEN_RE.findall(piece)
    return words


def ascii_piece_words(piece: str) -> list[str]:
    """The words of one whitespace-free piece of ASCII text, as `_split_ascii` splits it
    (tests/test_tokenizer.py checks that the two agree)."""
    return [piece] if piece.isalnum() else _ASCII_TOKEN_RE.findall(piece)


def split_with_offsets(text: str, lowercase: bool = True) -> list[tuple[str, int, int]]:
    """(token, start, stop) with offsets into the *input* text, before normalisation."""
    if unicodedata.is_normalized("NFKC", text):
        normal, origin = text, list(range(len(text) + 1))
    else:
        normal, origin = _clusterwise_nfkc(text)
    # after[k]: the first origin after position k that is past origin[k] (origin never
    # decreases), i.e. one past the input character that produced normalised character k.
    # One backward pass: a per-token forward scan was quadratic (minutes for 20,000 characters
    # that NFKC expands, or one base character with thousands of combining marks).
    after = [len(text)] * len(origin)
    for k in range(len(origin) - 2, -1, -1):
        after[k] = origin[k + 1] if origin[k + 1] > origin[k] else after[k + 1]
    spans = []
    for match in _TOKEN_RE.finditer(normal):
        word = match.group().lower() if lowercase else match.group()
        start, stop = origin[match.start()], after[match.end() - 1]
        spans.append((word, start, stop))
    return spans
