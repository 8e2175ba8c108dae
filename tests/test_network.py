import math

import pytest
import torch

from model.network import POOLINGS, LSTMClassifier, ModelConfig


def make(pooling="max", bidirectional=True, layers=1, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=20, num_classes=3, embedding_dim=5, hidden_size=4,
                         num_layers=layers, bidirectional=bidirectional, dropout=0.1,
                         pooling=pooling)
    return LSTMClassifier(config).eval()


def test_shapes():
    model = make()
    ids = torch.randint(2, 20, (4, 7))
    lengths = torch.tensor([7, 3, 1, 5])
    assert model(ids, lengths).shape == (4, 3)
    assert model.features(ids, lengths).shape == (4, 8)  # hidden 4 x 2 directions


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("inference", [True, False])
def test_an_empty_batch_gives_empty_answers(pooling, inference):
    """tokenizer.pad([]) is (0, 1) ids and (0,) lengths; packing refuses empty batches and
    the unpacked path took a min() over no lengths."""
    model = make(pooling, layers=2)
    ids, lengths = torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    with torch.inference_mode(inference):
        assert model(ids, lengths).shape == (0, 3)
        states, h_n = model.encode(ids, lengths)
    assert states.shape == (0, 1, 8) and h_n.shape == (4, 0, 4)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_padding_never_changes_the_result(pooling, bidirectional, layers):
    model = make(pooling, bidirectional, layers)
    short = torch.tensor([[5, 6, 7]])
    batch = torch.tensor([[5, 6, 7, 0, 0, 0], [3, 4, 5, 6, 7, 8], [9, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        alone = model(short, torch.tensor([3]))
        together = model(batch, torch.tensor([3, 6, 1]))
    torch.testing.assert_close(together[0:1], alone, atol=1e-6, rtol=0)


def test_exact_answer_from_fixed_weights():
    """All LSTM weights 0, candidate bias 1: every gate is sigmoid(0)=0.5, g=tanh(1); the
    state recurrence can be computed by hand."""
    config = ModelConfig(vocab_size=4, num_classes=2, embedding_dim=1, hidden_size=1,
                         bidirectional=False, dropout=0.0, pooling="last")
    model = LSTMClassifier(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.lstm.bias_ih_l0.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]))  # gate order i, f, g, o
        model.classifier.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        model.classifier.bias.copy_(torch.tensor([0.5, 0.25]))
        logits = model(torch.tensor([[2, 3]]), torch.tensor([2]))
    g = math.tanh(1.0)
    c1 = 0.5 * g
    c2 = 0.5 * c1 + 0.5 * g
    h2 = 0.5 * math.tanh(c2)
    expected = torch.tensor([[2.0 * h2 + 0.5, -1.0 * h2 + 0.25]])
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)


def test_mean_pooling_divides_by_true_length():
    model = make("mean", bidirectional=False)
    ids, lengths = torch.tensor([[5, 6, 0, 0]]), torch.tensor([2])
    with torch.no_grad():
        states, _ = model.encode(ids, lengths)
        pooled = model.features(ids, lengths)
    torch.testing.assert_close(pooled, states[:, :2].mean(dim=1))


def test_padding_row_of_embedding_is_zero_and_gets_no_gradient():
    model = make()
    model.train()
    ids = torch.tensor([[3, 0, 0]])
    model(ids, torch.tensor([3])).sum().backward()
    assert torch.count_nonzero(model.embedding.weight[0]) == 0
    assert torch.count_nonzero(model.embedding.weight.grad[0]) == 0


def test_config_validation():
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(vocab_size=5, num_classes=2, pooling="median")
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(vocab_size=5, num_classes=2, dropout=1.5)
    config = ModelConfig(vocab_size=5, num_classes=2)
    assert ModelConfig.from_dict(config.to_dict() | {"unknown": 1}) == config
