import pytest
import torch
import torch.nn.functional as F

from pipelines.vision.model import CosineHead, Neck, multitask_loss


def _logits(b, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(b, c, generator=g, requires_grad=True) for n, c in sizes.items()}


def test_masked_rows_do_not_contribute():
    heads = ["article", "clothing"]
    logits = _logits(6, {"article": 4, "clothing": 3})
    # rows 0-2: fashion (article label, no clothing label); rows 3-5: clothing
    y = torch.tensor([[0, -1], [3, -1], [1, -1], [-1, 2], [-1, 0], [-1, 1]])
    loss, stats = multitask_loss(logits, y, heads)
    expected = F.cross_entropy(logits["article"][:3], y[:3, 0]) + F.cross_entropy(logits["clothing"][3:], y[3:, 1])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["article"]["n"] == 3 and stats["clothing"]["n"] == 3
    loss.backward()
    # no gradient flows into a head's logits on rows where that head is masked
    assert torch.all(logits["article"].grad[3:] == 0) and torch.any(logits["article"].grad[:3] != 0)
    assert torch.all(logits["clothing"].grad[:3] == 0)


def test_head_without_labels_in_batch_contributes_zero():
    logits = _logits(4, {"a": 3, "b": 5})
    y = torch.tensor([[0, -1], [1, -1], [2, -1], [1, -1]])
    loss, stats = multitask_loss(logits, y, ["a", "b"])
    assert stats["b"] == {"n": 0, "loss": 0.0, "correct": 0}
    assert loss.item() == pytest.approx(F.cross_entropy(logits["a"], y[:, 0]).item(), rel=1e-6)
    loss.backward()
    assert logits["b"].grad is None or torch.all(logits["b"].grad == 0)


def test_head_weights_and_label_smoothing():
    logits = _logits(3, {"a": 3, "b": 3}, seed=1)
    y = torch.tensor([[0, 1], [1, 2], [2, 0]])
    loss, _ = multitask_loss(logits, y, ["a", "b"], weights=[1.0, 0.5], label_smoothing=0.1)
    exp = F.cross_entropy(logits["a"], y[:, 0], label_smoothing=0.1) + 0.5 * F.cross_entropy(logits["b"], y[:, 1], label_smoothing=0.1)
    assert loss.item() == pytest.approx(exp.item(), rel=1e-6)


def test_neck_outputs_unit_norm_and_cosine_head_is_bounded():
    neck = Neck(12, 5)
    e = neck(torch.randn(7, 12))
    assert e.shape == (7, 5)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(7))
    head = CosineHead(5, 4, scale=10.0)
    assert head(e).abs().max() <= 10.0 + 1e-5
