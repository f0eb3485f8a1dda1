"""Top-k sampling: greedy at k=1, only the top k ever drawn, frequencies follow the tempered softmax."""

import torch

from csm.models import sample_topk


def test_topk_one_is_argmax_whatever_the_temperature():
    logits = torch.randn(64, 500, generator=torch.Generator().manual_seed(0))
    for temperature in (0.1, 1.0, 5.0):
        assert torch.equal(sample_topk(logits, 1, temperature), logits.argmax(-1, keepdim=True))


def test_draws_follow_tempered_topk_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])
    topk, temperature, draws = 3, 0.7, 40_000
    ids = sample_topk(logits.expand(draws, -1), topk, temperature).squeeze(1)
    counts = torch.bincount(ids, minlength=6).float() / draws
    kept = torch.topk(logits, topk).indices
    expected = torch.zeros(6)
    expected[kept] = torch.softmax(logits[kept] / temperature, dim=0)
    assert counts[expected == 0].sum() == 0  # never outside the top k
    torch.testing.assert_close(counts, expected, atol=0.01, rtol=0)


def test_same_seed_same_draws():
    logits = torch.randn(8, 100)
    torch.manual_seed(5)
    a = sample_topk(logits, 50, 0.9)
    torch.manual_seed(5)
    b = sample_topk(logits, 50, 0.9)
    torch.manual_seed(6)
    c = sample_topk(logits, 50, 0.9)
    assert torch.equal(a, b) and not torch.equal(a, c)
