import torch

from model import tokenizer
from model.tokenizer import PAD, PAD_ID, UNK, UNK_ID, Vocabulary, pad
from model.words import split_words


def test_ids_are_in_frequency_order_ties_alphabetical():
    vocab = Vocabulary.build(["b a c b", "c b d"])
    assert vocab.itos[:2] == [PAD, UNK]
    assert vocab.itos[2:] == ["b", "c", "a", "d"]  # b:3, c:2, then a and d (1 each) alphabetically
    assert vocab.counts[2:] == [3, 2, 1, 1]


def test_min_freq_and_max_size():
    corpus = ["x x x y y z"]
    assert Vocabulary.build(corpus, min_freq=2).itos[2:] == ["x", "y"]
    assert Vocabulary.build(corpus, max_size=3).itos == [PAD, UNK, "x"]


def test_unknown_words_and_truncation():
    vocab = Vocabulary.build(["the cat sat"])
    assert vocab.encode("the dog sat") == [vocab.lookup("the"), UNK_ID, vocab.lookup("sat")]
    assert vocab.encode("the cat sat", max_length=2) == vocab.encode("the cat")


def test_batch_encoding_pads_with_zero_and_keeps_lengths():
    vocab = Vocabulary.build(["a b c"])
    ids, lengths = vocab.encode_batch(["a b c", "b", ""])
    assert ids.shape == (3, 3)
    assert lengths.tolist() == [3, 1, 1]  # an empty text still has one (pad) step
    assert ids[1].tolist() == [vocab.lookup("b"), PAD_ID, PAD_ID]
    assert ids[2].tolist() == [PAD_ID] * 3


def test_pad_gives_int64_tensors_that_own_their_rows():
    rows = [[5, 6], [7]]
    ids, lengths = pad(rows)
    assert ids.dtype == lengths.dtype == torch.long
    assert ids.tolist() == [[5, 6], [7, PAD_ID]] and lengths.tolist() == [2, 1]
    rows[0][0] = 99  # the tensors do not alias the input lists
    assert ids[0, 0] == 5
    empty_ids, empty_lengths = pad([])
    assert empty_ids.shape == (0, 1) and empty_lengths.shape == (0,)


def test_one_hot_and_sparse_views_select_embedding_rows():
    vocab = Vocabulary.build(["a b c d"])
    ids = vocab.encode("d a a")
    one_hot = vocab.one_hot(ids)
    assert one_hot.shape == (3, len(vocab))
    assert one_hot.sum(dim=1).tolist() == [1.0, 1.0, 1.0]
    assert torch.equal(vocab.sparse(ids).to_dense(), one_hot)
    weight = torch.randn(len(vocab), 4)
    assert torch.allclose(one_hot @ weight, weight[ids])  # a lookup is a one-hot product


def test_tokens_carry_ids_unk_flags_and_offsets():
    vocab = Vocabulary.build(["hello world"])
    tokens = vocab.tokenize("Hello, stranger")
    assert [(t.text, t.unk, t.start, t.stop) for t in tokens] == [
        ("hello", False, 0, 5), (",", True, 5, 6), ("stranger", True, 7, 15)]


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build(["Ωmega alpha 세계 alpha"], lowercase=False)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab
    assert loaded.encode("alpha Ωmega") == vocab.encode("alpha Ωmega")


def test_deterministic():
    corpus = ["z y x", "y x", "x"] * 3
    assert Vocabulary.build(corpus).itos == Vocabulary.build(list(reversed(corpus))).itos


ASCII_TEXTS = ["The cat, the DOG; and the_cat's mat!", "a\x1cb\tc\n(d)...e", "cat cat, cat. cat",
               "  spaced   out  ", "x" * 40 + "!?", "snake_case and CamelCase 42nd"]


def test_ascii_texts_encode_as_their_words_whatever_the_piece_cache_holds():
    """encode's ASCII path looks pieces up in a cache; it must give split_words + lookup, the
    same again on the next call, and not share a list the caller could change."""
    for lowercase in (True, False):
        vocab = Vocabulary.build(ASCII_TEXTS + ["the cat sat"], lowercase=lowercase)
        for _ in range(2):
            for text in ASCII_TEXTS:
                want = [vocab.lookup(w) for w in split_words(text, lowercase)]
                got = vocab.encode(text)
                assert got == want
                got.append(-1)  # the caller's list, not the cache's
        assert vocab.encode("cat cat") == [vocab.lookup("cat")] * 2


def test_the_piece_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(tokenizer, "PIECE_CACHE_SIZE", 4)
    vocab = Vocabulary.build(["w1 w2 w3"])
    for i in range(50):
        assert vocab.encode(f"w{i % 5}, w{i}") == [vocab.lookup(f"w{i % 5}"), vocab.lookup(","),
                                                   vocab.lookup(f"w{i}")]
        assert len(vocab._piece_ids) <= 4
    long_piece = "w1" * 100  # longer than PIECE_CACHE_CHARS: looked up, not kept
    assert vocab.encode(long_piece) == [UNK_ID] and long_piece not in vocab._piece_ids
