"""The RNN-T loss against brute-force enumeration, a naive reference and gradcheck."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from harken.models.rnnt_loss import chunked_rnnt_loss, forward_backward, lattice_scores, rnnt_loss


def brute_force(log_probs: torch.Tensor, targets: list[int], blank: int = 0) -> float:
    """-log P(y | x) summing every alignment: T blanks and U tokens in any order whose last
    symbol is a blank (the path leaves the lattice from (T - 1, U))."""
    frames = log_probs.size(0)
    labels = len(targets)
    total = []
    for emit_positions in itertools.combinations(range(frames + labels - 1), labels):
        t = u = 0
        score = 0.0
        for step in range(frames + labels):
            if step in emit_positions:
                score += float(log_probs[t, u, targets[u]])
                u += 1
            else:
                score += float(log_probs[t, u, blank])
                t += 1
        total.append(score)
    return -math.log(sum(math.exp(s) for s in total))


def naive_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
               target_lengths: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Cell-by-cell forward recursion, differentiated by autograd (the reference)."""
    losses = []
    log_probs = logits.log_softmax(-1)
    for b in range(logits.size(0)):
        frames, labels = int(logit_lengths[b]), int(target_lengths[b])
        alpha = [[None] * (labels + 1) for _ in range(frames)]
        for t in range(frames):
            for u in range(labels + 1):
                terms = []
                if t == 0 and u == 0:
                    terms.append(log_probs.new_zeros(()))
                if t > 0:
                    terms.append(alpha[t - 1][u] + log_probs[b, t - 1, u, blank])
                if u > 0:
                    terms.append(alpha[t][u - 1] + log_probs[b, t, u - 1, targets[b, u - 1]])
                alpha[t][u] = torch.logsumexp(torch.stack(terms), 0)
        losses.append(-(alpha[frames - 1][labels] + log_probs[b, frames - 1, labels, blank]))
    return torch.stack(losses)


@pytest.mark.parametrize("frames,targets", [(1, []), (1, [2]), (3, [1, 2]), (4, [3, 1, 3]),
                                            (2, [1, 1, 2, 2])])
def test_loss_equals_sum_over_all_alignments(frames: int, targets: list[int]) -> None:
    torch.manual_seed(frames * 10 + len(targets))
    logits = torch.randn(1, frames, len(targets) + 1, 4, dtype=torch.float64)
    expected = brute_force(logits[0].log_softmax(-1), targets)
    loss = rnnt_loss(logits, torch.tensor([targets], dtype=torch.long).reshape(1, -1),
                     torch.tensor([frames]), torch.tensor([len(targets)]))
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_alpha_and_beta_agree() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 6)
    targets = torch.randint(1, 6, (2, 3))
    lengths, target_lengths = torch.tensor([5, 3]), torch.tensor([3, 2])
    blank, emit = lattice_scores(logits.log_softmax(-1), targets)
    alpha, beta, log_likelihood = forward_backward(blank, emit, lengths, target_lengths)
    for b in range(2):
        end_t, end_u = int(lengths[b]) - 1, int(target_lengths[b])
        forward_total = alpha[b, end_t, end_u] + blank[b, end_t, end_u]
        assert forward_total.item() == pytest.approx(log_likelihood[b].item(), abs=1e-5)


def test_batch_with_different_lengths_equals_each_alone() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 7, 5, 8, requires_grad=True)
    targets = torch.randint(1, 8, (3, 4))
    lengths, target_lengths = torch.tensor([7, 2, 5]), torch.tensor([4, 0, 2])
    batched = rnnt_loss(logits, targets, lengths, target_lengths)
    batched.sum().backward()
    for b in range(3):
        t, u = int(lengths[b]), int(target_lengths[b])
        alone = logits[b: b + 1, :t, : u + 1].detach().double().requires_grad_()
        loss = rnnt_loss(alone, targets[b: b + 1, :u], lengths[b: b + 1], target_lengths[b: b + 1])
        reference = naive_loss(alone, targets[b: b + 1, :u], lengths[b: b + 1],
                               target_lengths[b: b + 1])
        assert batched[b].item() == pytest.approx(reference.item(), rel=1e-5)
        assert loss.item() == pytest.approx(reference.item(), rel=1e-10)
        (grad,) = torch.autograd.grad(reference.sum(), alone)
        assert torch.allclose(logits.grad[b, :t, : u + 1].double(), grad[0], atol=1e-5)
        # Padding outside an utterance's lattice gets no gradient.
        assert logits.grad[b, t:].abs().max().item() == 0 if t < 7 else True
        assert logits.grad[b, :, u + 1:].abs().sum().item() == 0


def test_gradcheck_against_finite_differences() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 4], [2, 0]])
    lengths, target_lengths = torch.tensor([4, 3]), torch.tensor([2, 1])
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, targets, lengths, target_lengths), (logits,))
    # and the analytic gradient equals autograd through the naive recursion
    analytic, = torch.autograd.grad(rnnt_loss(logits, targets, lengths, target_lengths).sum(),
                                    logits)
    naive, = torch.autograd.grad(naive_loss(logits, targets, lengths, target_lengths).sum(),
                                 logits)
    assert torch.allclose(analytic, naive, atol=1e-10)


def test_chunked_loss_equals_whole_batch() -> None:
    torch.manual_seed(3)
    joint_layer = torch.nn.Linear(6, 7).double()

    def joint(enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return joint_layer(torch.tanh(enc + pred))

    enc = torch.randn(5, 9, 6, dtype=torch.float64, requires_grad=True)
    pred = torch.randn(5, 4, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 7, (5, 3))
    lengths, target_lengths = torch.tensor([9, 4, 6, 1, 8]), torch.tensor([3, 1, 0, 2, 3])
    whole = chunked_rnnt_loss(joint, enc, pred, targets, lengths, target_lengths)
    grads = torch.autograd.grad(whole.sum(), (enc, pred, joint_layer.weight))
    chunked = chunked_rnnt_loss(joint, enc, pred, targets, lengths, target_lengths, chunk_size=2)
    chunk_grads = torch.autograd.grad(chunked.sum(), (enc, pred, joint_layer.weight))
    assert torch.allclose(whole.float(), chunked, atol=1e-5)
    for a, b in zip(grads, chunk_grads):
        assert torch.allclose(a, b, atol=1e-10)


def test_float32_long_lattice_is_finite_and_matches_float64() -> None:
    torch.manual_seed(4)
    logits = torch.randn(2, 200, 41, 30) * 5
    targets = torch.randint(1, 30, (2, 40))
    lengths, target_lengths = torch.tensor([200, 150]), torch.tensor([40, 33])
    single = rnnt_loss(logits, targets, lengths, target_lengths)
    double = rnnt_loss(logits.double(), targets, lengths, target_lengths)
    assert torch.isfinite(single).all()
    assert torch.allclose(single.double(), double, rtol=1e-5)


def test_errors_name_the_bad_input() -> None:
    logits = torch.randn(1, 3, 3, 4)
    with pytest.raises(ValueError, match=r"targets of shape \(1, 2\)"):
        rnnt_loss(logits, torch.zeros(1, 3, dtype=torch.long), torch.tensor([3]),
                  torch.tensor([2]))
    with pytest.raises(ValueError, match=r"logit_lengths must lie in \[0, 3\]"):
        rnnt_loss(logits, torch.zeros(1, 2, dtype=torch.long), torch.tensor([4]),
                  torch.tensor([2]))
    with pytest.raises(ValueError, match="at least one frame"):
        rnnt_loss(logits, torch.zeros(1, 2, dtype=torch.long), torch.tensor([0]),
                  torch.tensor([2]))
