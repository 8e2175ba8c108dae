import numpy as np
import pytest
import torch

from model.tokenizer import PAD_ID, Vocabulary
from model.vectors import embedding_matrix, load_glove_package, load_text_vectors, load_vectors


def test_glove_text_file_and_coverage(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("the 0.1 0.2 0.3\ncat 1.0 1.0 1.0\nunused 9 9 9\n", encoding="utf-8")
    vectors = load_text_vectors(path)
    assert vectors.dim == 3 and vectors.words == ["the", "cat", "unused"]
    vocab = Vocabulary.build(["the cat the dog the"])  # the:3, cat:1, dog:1
    weight, coverage = embedding_matrix(vocab, vectors)
    assert weight.shape == (len(vocab), 3)
    torch.testing.assert_close(weight[vocab.lookup("cat")], torch.tensor([1.0, 1.0, 1.0]))
    assert torch.count_nonzero(weight[PAD_ID]) == 0
    assert (coverage.found, coverage.total) == (2, 3)
    assert coverage.token_share == pytest.approx(4 / 5)


def test_word2vec_header_is_skipped(tmp_path):
    path = tmp_path / "w2v.txt"
    path.write_text("2 2\nfoo 1 2\nbar 3 4\n", encoding="utf-8")
    assert load_vectors(str(path)).words == ["foo", "bar"]


def test_ragged_file_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a 1 2\nb 1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt line 2"):
        load_text_vectors(path)


def test_glove_50d_package():
    vectors = load_glove_package()
    assert vectors.dim == 50
    assert len(vectors.words) == 400_000
    assert vectors.words[:3] == ["the", ",", "."]
    assert np.isfinite(vectors.matrix[:1000]).all()
