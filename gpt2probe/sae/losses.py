"""Training-time nonlinearities and losses of each architecture (what inference in :mod:`.activations` is trained by).

- ``"topk"``: each token's ``k`` largest pre-activations, ReLU'd (Gao et al. 2024); gradients
  flow through the kept values.
- ``"batchtopk"``: the ``k * batch`` largest ReLU'd pre-activations of the whole batch
  (Bussmann et al. 2024); at inference a threshold replaces it (:class:`ThresholdEstimate`).
- ``"standard"``: ReLU, and an L1 penalty on the activations weighted by the decoder rows'
  norms (SAELens's ``StandardTrainingSAE``).
- ``"jumprelu"``: ``pre * (pre > threshold)``, with straight-through estimators of the
  threshold's gradient through a rectangle kernel of width ``bandwidth``, and an L0 penalty
  (SAELens's ``JumpReLUTrainingSAE``, Rajamanoharan et al. 2024).
- aux-k (Gao et al. 2024): the ``k_aux`` largest pre-activations among dead features
  reconstruct what the SAE missed, so dead features get gradient and come back.

The reconstruction loss is the squared error summed over the output's dimensions and
averaged over tokens, as SAELens's ``mse_loss`` (``.sum(-1).mean()``).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def _rectangle(z: Tensor) -> Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLU(torch.autograd.Function):
    """``pre * (pre > threshold)``; d/dthreshold by the straight-through estimator ``-(threshold/bw) K((pre-threshold)/bw)``."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, *grad_outputs: Tensor):
        (grad,) = grad_outputs
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = (pre > threshold).to(pre.dtype) * grad
        grad_threshold = (-(threshold / bw) * _rectangle((pre - threshold) / bw) * grad).reshape(-1, pre.shape[-1]).sum(0)
        return grad_pre, grad_threshold, None


class _Step(torch.autograd.Function):
    """``1[pre > threshold]``; d/dthreshold by the straight-through estimator ``-(1/bw) K((pre-threshold)/bw)``."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, *grad_outputs: Tensor):
        (grad,) = grad_outputs
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_threshold = (-(1.0 / bw) * _rectangle((pre - threshold) / bw) * grad).reshape(-1, pre.shape[-1]).sum(0)
        return torch.zeros_like(pre), grad_threshold, None


def jumprelu(pre: Float[Tensor, "batch d_sae"], threshold: Float[Tensor, " d_sae"],
             bandwidth: float) -> Float[Tensor, "batch d_sae"]:
    """JumpReLU with straight-through gradients for ``threshold``."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step_l0(pre: Float[Tensor, "batch d_sae"], threshold: Float[Tensor, " d_sae"], bandwidth: float) -> Tensor:
    """The mean number of features above threshold per token, differentiable in ``threshold`` (JumpReLU's sparsity loss)."""
    return _Step.apply(pre, threshold, bandwidth).sum(-1).mean()


def batch_topk(pre: Float[Tensor, "batch d_sae"], k: int | float) -> Float[Tensor, "batch d_sae"]:
    """Keep the ``round(k * batch)`` largest ReLU'd pre-activations of the whole batch."""
    acts = pre.relu()
    flat = acts.flatten()
    n = min(flat.shape[0], max(1, round(k * pre.shape[0])))
    values, indices = torch.topk(flat, n, sorted=False)
    return torch.zeros_like(flat).scatter(0, indices, values).view_as(acts)


def batch_topk_sparse(pre: Float[Tensor, "batch d_sae"], k: int | float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`batch_topk` as ``(values, rows, features)`` of the kept entries (values ReLU'd, differentiable)."""
    flat = pre.flatten()
    n = min(flat.shape[0], max(1, round(k * pre.shape[0])))
    values, indices = torch.topk(flat, n, sorted=False)
    indices, order = torch.sort(indices)  # by token, as sparse_decode needs
    return values.index_select(0, order).relu(), indices // pre.shape[-1], indices % pre.shape[-1]


def sparse_decode(values: Float[Tensor, " n"], rows: Tensor, features: Tensor, W_dec: Float[Tensor, "d_sae d_out"],
                  n_rows: int) -> Float[Tensor, "batch d_out"]:
    """``out[r] = sum of values[i] * W_dec[features[i]] over the i with rows[i] == r``; ``rows`` ascending.

    The decoder's product restricted to the kept (token, feature) pairs, as one
    ``embedding_bag`` (no ``[n, d_out]`` temporary: about twice as fast, forward and backward,
    as gathering the rows and adding them with ``index_add``).
    """
    counts = torch.bincount(rows, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts
    return torch.nn.functional.embedding_bag(features, W_dec, offsets, mode="sum", per_sample_weights=values)


def mse(recons: Float[Tensor, "batch d_out"], target: Float[Tensor, "batch d_out"]) -> Tensor:
    """Squared error summed over dimensions, mean over tokens."""
    return (recons - target).pow(2).sum(-1).mean()


def aux_k_loss(pre_dead: Float[Tensor, "batch n_dead"], dead_features: Tensor, residual: Float[Tensor, "batch d_out"],
               W_dec: Float[Tensor, "d_sae d_out"], k_aux: int, target_variance: Tensor) -> Tensor:
    """Gao et al.'s auxiliary loss: dead features' top ``k_aux`` activations reconstruct ``residual`` (no bias).

    ``pre_dead`` holds the pre-activations of the dead features ``dead_features`` (indices into
    ``W_dec``'s rows). Weighed as in Gao et al.'s reference code: the squared error is divided by
    the residual's own variance in the batch (a normalised MSE, so the loss does not vanish as the
    SAE gets good and the residual small) and multiplied by ``target_variance``, the targets'
    summed variance, which puts it in the units of :func:`mse` (Gao et al. divide the
    reconstruction loss by that variance instead; the ratio of the two terms is theirs). Without
    the normalisation the aux loss shrinks with the residual and a coefficient of 1/32 revives
    almost nothing. Scaled by ``min(n_dead / k_aux, 1)`` as SAELens does, so that a few dead
    features do not get the weight of many. Zero when no feature is dead.
    """
    n_dead = dead_features.shape[0]
    if n_dead == 0:
        return pre_dead.new_zeros(())
    k = min(k_aux, n_dead)
    values, which = torch.topk(pre_dead, k, dim=-1, sorted=False)
    rows = torch.arange(pre_dead.shape[0]).repeat_interleave(k)
    features = dead_features[which.flatten()]
    recons = sparse_decode(values.relu().flatten(), rows, features, W_dec, pre_dead.shape[0])
    residual_variance = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return min(n_dead / k_aux, 1.0) * mse(recons, residual) * (target_variance / residual_variance)


class ThresholdEstimate:
    """Batch top-k's inference threshold: the mean over training batches of the smallest kept activation.

    Bussmann et al. estimate one threshold for all features as the average minimum positive
    activation; a bias-corrected exponential moving average (decay ``decay``, like Adam's
    moments) gives recent batches more weight while the encoder still moves, and is
    unbiased from the first step, so short runs get a usable threshold too.
    """

    def __init__(self, decay: float = 0.99) -> None:
        self.decay, self.value, self.n = decay, 0.0, 0

    def update(self, min_positive: float) -> None:
        """Fold in one batch's smallest kept (positive) activation."""
        self.value = self.decay * self.value + (1 - self.decay) * min_positive
        self.n += 1

    @property
    def threshold(self) -> float:
        return self.value / (1 - self.decay ** self.n) if self.n else 0.0
