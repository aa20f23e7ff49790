"""The RNN Transducer loss (Graves 2012) in PyTorch: log-space forward-backward over the (T, U)
lattice, one vectorised step per anti-diagonal, with an analytic gradient.

    loss = rnnt_loss(logits, targets, logit_lengths, target_lengths)   # (B,) -log P(y | x)
    # logits (B, T, U + 1, V) joint network outputs (unnormalised), targets (B, U) int64

Lattice node (t, u) means "t frames read, u tokens emitted"; from it a path emits blank (to
(t + 1, u)) or the next token y[u] (to (t, u + 1)). A path ends with a blank from
(T - 1, U). alpha[t, u] sums the paths reaching (t, u), beta[t, u] those from (t, u) to the end:

    alpha[t, u] = logaddexp(alpha[t - 1, u] + blank[t - 1, u], alpha[t, u - 1] + emit[t, u - 1])
    beta[t, u]  = logaddexp(beta[t + 1, u] + blank[t, u],     beta[t, u + 1] + emit[t, u])

Nodes with the same t + u depend only on the previous anti-diagonal, so each of the T + U - 1
steps updates a whole diagonal of every utterance at once. Sums are accumulated in float32
(float64 inputs stay float64).

Memory ("function merging", Li et al. 2019): the gradient with respect to the logits,
softmax * occupancy - transition posteriors, is computed in the forward pass and kept instead
of the logits and their log-softmax, so the (B, T, U + 1, V) joint output can be freed once the
loss is computed. `chunked_rnnt_loss` also bounds the peak: it runs the joint network and the
loss on a few utterances at a time (each chunk cut to its own longest T and U) and recomputes
them in the backward pass.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _check(logits: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor,
           blank: int) -> None:
    if logits.dim() != 4:
        raise ValueError(f"expected logits of shape (batch, time, targets + 1, vocab), got "
                         f"{tuple(logits.shape)}")
    batch, frames, labels, vocab = logits.shape
    if targets.dim() != 2 or targets.size(0) != batch or targets.size(1) != labels - 1:
        raise ValueError(f"expected targets of shape ({batch}, {labels - 1}) for logits "
                         f"{tuple(logits.shape)}, got {tuple(targets.shape)}")
    for name, lengths, most in (("logit_lengths", logit_lengths, frames),
                                ("target_lengths", target_lengths, labels - 1)):
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise ValueError(f"expected integer {name} of shape ({batch},), got "
                             f"{lengths.dtype} {tuple(lengths.shape)}")
        if batch and (int(lengths.min()) < 0 or int(lengths.max()) > most):
            raise ValueError(f"{name} must lie in [0, {most}], got {lengths.tolist()}")
    if batch and int(logit_lengths.min()) < 1:
        raise ValueError(f"every utterance needs at least one frame, got logit_lengths "
                         f"{logit_lengths.tolist()}")
    if not 0 <= blank < vocab:
        raise ValueError(f"blank index {blank} is outside the vocabulary (size {vocab})")


def _skew(x: Tensor, frames: int) -> Tensor:
    """(B, T, W) lattice values -> (B, T + W - 1, W) by anti-diagonal: out[b, n, u] =
    x[b, n - u, u], -inf where n - u is outside [0, T)."""
    width = x.size(2)
    n = torch.arange(frames + width - 1, device=x.device)[:, None]
    u = torch.arange(width, device=x.device)[None, :]
    t = n - u
    valid = (t >= 0) & (t < frames)
    index = t.clamp(0, frames - 1)[None].expand(x.size(0), -1, -1)
    out = x.gather(1, index)
    return out.masked_fill(~valid[None], float("-inf"))


def _unskew(x: Tensor, frames: int) -> Tensor:
    """Inverse of `_skew`: (B, T + W - 1, W) -> (B, T, W)."""
    width = x.size(2)
    t = torch.arange(frames, device=x.device)[:, None]
    u = torch.arange(width, device=x.device)[None, :]
    index = (t + u)[None].expand(x.size(0), -1, -1)
    return x.gather(1, index)


def lattice_scores(log_probs: Tensor, targets: Tensor, blank: int = 0) -> tuple[Tensor, Tensor]:
    """log_probs (B, T, U + 1, V) -> blank (B, T, U + 1) and emit (B, T, U) log-probabilities
    (emit[b, t, u] = log_probs[b, t, u, targets[b, u]])."""
    blank_lp = log_probs[..., blank]
    index = targets[:, None, :, None].expand(-1, log_probs.size(1), -1, 1)
    emit_lp = log_probs[:, :, :-1].gather(3, index).squeeze(3)
    return blank_lp, emit_lp


@torch.no_grad()
def forward_backward(blank_lp: Tensor, emit_lp: Tensor, logit_lengths: Tensor,
                     target_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """alpha and beta (B, T, U + 1) and log P(y | x) (B,) of the lattice scores.

    Outside an utterance's own lattice (t >= T_b or u > U_b) alpha and beta are meaningless
    (beta is -inf there).
    """
    batch, frames, width = blank_lp.shape
    blank_d = _skew(blank_lp, frames)  # (B, N, U + 1), N = T + U
    emit_d = _skew(torch.nn.functional.pad(emit_lp, (0, 1), value=float("-inf")), frames)
    diagonals = frames + width - 1
    neg_inf = torch.full((batch, 1), float("-inf"), dtype=blank_lp.dtype, device=blank_lp.device)

    alpha = blank_lp.new_full((batch, diagonals, width), float("-inf"))
    alpha[:, 0, 0] = 0.0
    for n in range(1, diagonals):
        previous = alpha[:, n - 1]
        stay = previous + blank_d[:, n - 1]  # from (t - 1, u)
        move = torch.cat([neg_inf, (previous + emit_d[:, n - 1])[:, :-1]], dim=1)  # (t, u - 1)
        alpha[:, n] = torch.logaddexp(stay, move)

    # beta on the same diagonals, initialised at each utterance's own last node.
    u_index = torch.arange(width, device=blank_lp.device)
    n_index = torch.arange(diagonals, device=blank_lp.device)
    t_of = n_index[:, None] - u_index[None, :]  # (N, U + 1)
    inside = ((t_of[None] >= 0) & (t_of[None] < logit_lengths[:, None, None])
              & (u_index[None, None] <= target_lengths[:, None, None]))  # (B, N, U + 1)
    last_n = logit_lengths - 1 + target_lengths
    rows = torch.arange(batch, device=blank_lp.device)
    final_blank = blank_lp[rows, logit_lengths - 1, target_lengths]
    beta = blank_lp.new_full((batch, diagonals, width), float("-inf"))
    is_last = (n_index[None, :, None] == last_n[:, None, None]) & (
        u_index[None, None, :] == target_lengths[:, None, None])  # (B, N, U + 1)
    for n in range(diagonals - 1, -1, -1):
        if n + 1 < diagonals:
            following = beta[:, n + 1]
            stay = following + blank_d[:, n]  # to (t + 1, u)
            move = torch.cat([following[:, 1:], neg_inf], dim=1) + emit_d[:, n]  # (t, u + 1)
            value = torch.logaddexp(stay, move)
        else:
            value = beta[:, n]
        value = value.masked_fill(~inside[:, n], float("-inf"))
        value = torch.where(is_last[:, n], final_blank[:, None].expand(-1, width), value)
        beta[:, n] = value
    log_likelihood = beta[:, 0, 0]
    return _unskew(alpha, frames), _unskew(beta, frames), log_likelihood


def _logits_gradient(log_probs: Tensor, targets: Tensor, alpha: Tensor, beta: Tensor,
                     log_likelihood: Tensor, blank_lp: Tensor, emit_lp: Tensor,
                     logit_lengths: Tensor, target_lengths: Tensor, blank: int) -> Tensor:
    """d(-log P) / d logits, (B, T, U + 1, V), written over `log_probs` (which it consumes).

    grad[t, u, k] = P(k | t, u) * gamma(t, u) - [k = blank] * post_blank(t, u)
                    - [k = y[u]] * post_emit(t, u),
    gamma(t, u) = exp(alpha + beta - log P) (the occupancy of node (t, u)), the posteriors
    exp(alpha(t, u) + score + beta(next) - log P) of its two transitions.
    """
    batch, frames, width, _ = log_probs.shape
    norm = log_likelihood[:, None, None]
    beta_next_t = torch.cat([beta[:, 1:], beta.new_full((batch, 1, width), float("-inf"))], 1)
    # The final blank leads out of the lattice, where beta is 0.
    t_index = torch.arange(frames, device=beta.device)[None, :, None]
    u_index = torch.arange(width, device=beta.device)[None, None, :]
    final = (t_index == (logit_lengths - 1)[:, None, None]) & (
        u_index == target_lengths[:, None, None])
    beta_next_t = torch.where(final, torch.zeros_like(beta_next_t), beta_next_t)
    post_blank = torch.exp(alpha + blank_lp + beta_next_t - norm)
    post_emit = torch.exp(alpha[:, :, :-1] + emit_lp + beta[:, :, 1:] - norm)
    occupancy = torch.exp(alpha + beta - norm)
    occupancy = torch.nan_to_num(occupancy, nan=0.0)
    grad = log_probs.exp_().mul_(occupancy[..., None])
    grad[..., blank] -= torch.nan_to_num(post_blank, nan=0.0)
    index = targets[:, None, :, None].expand(-1, frames, -1, 1)
    grad[:, :, :-1].scatter_add_(3, index, -torch.nan_to_num(post_emit, nan=0.0)[..., None])
    return grad


class _RNNTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor,  # type: ignore[override]
                logit_lengths: Tensor, target_lengths: Tensor, blank: int) -> Tensor:
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        log_probs = torch.log_softmax(logits.to(dtype), dim=-1)
        blank_lp, emit_lp = lattice_scores(log_probs, targets, blank)
        alpha, beta, log_likelihood = forward_backward(blank_lp, emit_lp, logit_lengths,
                                                       target_lengths)
        if ctx.needs_input_grad[0]:
            grad = _logits_gradient(log_probs, targets, alpha, beta, log_likelihood, blank_lp,
                                    emit_lp, logit_lengths, target_lengths, blank)
            ctx.save_for_backward(grad)
            ctx.logits_dtype = logits.dtype
        return -log_likelihood

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        scaled = grad * grad_output.to(grad.dtype)[:, None, None, None]
        return scaled.to(ctx.logits_dtype), None, None, None, None


def rnnt_loss(logits: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor,
              blank: int = 0, reduction: str = "none") -> Tensor:
    """The RNN-T loss -log P(targets | x) of each utterance.

    logits (B, T, U + 1, V): joint network outputs (log-softmax is applied here, in float32);
    targets (B, U) int64 token ids padded with anything; logit_lengths (B,) frames,
    target_lengths (B,) tokens of each utterance. `reduction`: "none" (B,), "sum" or "mean".
    Any T >= 1 fits any U (a frame may emit several tokens), so every target is reachable;
    -inf logits can still give an infinite loss.
    """
    _check(logits, targets, logit_lengths, target_lengths, blank)
    targets = targets.long()
    loss = _RNNTLoss.apply(logits, targets, logit_lengths.long(), target_lengths.long(), blank)
    if reduction == "none":
        return loss  # type: ignore[no-any-return]
    if reduction == "sum":
        return loss.sum()  # type: ignore[no-any-return]
    if reduction == "mean":
        return loss.mean()  # type: ignore[no-any-return]
    raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


def chunked_rnnt_loss(joint: Callable[[Tensor, Tensor], Tensor], encoder_out: Tensor,
                      predictor_out: Tensor, targets: Tensor, logit_lengths: Tensor,
                      target_lengths: Tensor, blank: int = 0, chunk_size: int = 0) -> Tensor:
    """Per-utterance RNN-T loss (B,) without holding the whole (B, T, U + 1, V) joint output.

    `joint(encoder_out (b, T, 1, D), predictor_out (b, 1, U + 1, D)) -> logits (b, T, U + 1, V)`.
    With `chunk_size` > 0 the utterances run `chunk_size` at a time, each chunk cut to its own
    longest T and U, and the joint output of a chunk is recomputed in the backward pass
    (activation checkpointing): the peak memory is one chunk's joint output and gradient.
    """
    batch = encoder_out.size(0)
    if chunk_size <= 0 or chunk_size >= batch:
        logits = joint(encoder_out[:, :, None], predictor_out[:, None])
        return rnnt_loss(logits, targets, logit_lengths, target_lengths, blank)
    from torch.utils.checkpoint import checkpoint

    def piece(enc: Tensor, pred: Tensor, tgt: Tensor, t_len: Tensor, u_len: Tensor) -> Tensor:
        return rnnt_loss(joint(enc[:, :, None], pred[:, None]), tgt, t_len, u_len, blank)

    order = torch.argsort(logit_lengths * (targets.size(1) + 1) + target_lengths)
    losses = encoder_out.new_zeros(batch, dtype=torch.float32)
    for start in range(0, batch, chunk_size):
        rows = order[start: start + chunk_size]
        t_len, u_len = logit_lengths[rows], target_lengths[rows]
        frames, labels = int(t_len.max()), int(u_len.max())
        loss = checkpoint(piece, encoder_out[rows, :frames], predictor_out[rows, : labels + 1],
                          targets[rows, :labels], t_len, u_len, use_reentrant=False)
        losses = losses.index_put((rows,), loss.float())
    return losses


__all__ = ["chunked_rnnt_loss", "forward_backward", "rnnt_loss"]
