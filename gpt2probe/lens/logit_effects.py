"""Logit effects: the direct effect of a residual-stream direction on the logits, as Neuronpedia shows it.

Neuronpedia's feature dashboards (SAEDashboard, and sae_vis before it) multiply a feature's
output direction by the ``W_U`` of a TransformerLens model loaded with ``from_pretrained``'s
defaults (``fold_ln=True``, ``center_unembed=True``). That ``W_U`` is not the Hugging Face
one: ``fold_layer_norm`` multiplies it by the final LayerNorm's weight (``W_U * ln_f.weight[:, None]``)
and centres each column over ``d_model``; ``center_unembed`` then centres each row over the
vocabulary. On a direction ``d`` the product is

    effect = ((d - mean(d)) * ln_f.weight) @ W_U,  minus its mean over the vocabulary.

Centring ``d`` and scaling by the weight is exactly what ``ln_f`` does to whatever ``d`` adds to
the stream, except for the division by the stream's norm: that factor depends on the whole
residual stream (no single direction has it), is positive and is the same for every token, so
it changes the sizes but not the order of the effects. The final centring over the vocabulary
subtracts one number from the whole row (the order is unchanged again; softmax ignores it).
``ln_f``'s bias adds the same logits whatever the direction, and is not an effect of it.

(Sources: ``transformer_lens/HookedTransformer.py``, ``fold_layer_norm`` and ``center_unembed``;
SAEDashboard's ``sae_vis_runner.py`` multiplies ``feature_resid_dir`` by ``model.W_U``. Its
Neuronpedia runner loaded the model with ``HookedTransformer.from_pretrained`` from 2024, when
the GPT-2 small dashboards were made, until December 2025; since then it uses
``from_pretrained_no_processing`` (no folding by default), so dashboards made since may show
the plain ``d @ W_U``.)

Every place that shows a unit's or feature's logit effects (the harvest dashboard, the feature
browser) calls :func:`logit_effects` or :func:`top_logit_effects`, so they cannot drift apart.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import ShapeError
from ..validate import finite_result

FORMULA = ("((d - mean(d)) * gamma) @ W_U, minus its mean over the vocabulary, with gamma the final LayerNorm's "
           "weight: d through TransformerLens's folded W_U, as Neuronpedia shows it (the final LayerNorm's division "
           "by the stream's norm is left out: it depends on the whole stream)")
"""What :func:`logit_effects` computes on a direction ``d``, in one line for the reports' notes."""


def _check(directions: Tensor, d_model: int) -> None:
    if directions.ndim not in (1, 2) or directions.shape[-1] != d_model:
        raise ShapeError(f"logit effects need directions of shape [d_model] or [unit, d_model] with d_model={d_model}, "
                         f"got shape {tuple(directions.shape)}")


def logit_effects(directions: Float[Tensor, "*unit d_model"], probe) -> Float[Tensor, "*unit d_vocab"]:
    """The direct effect of each direction on the logits, through ``ln_f``'s weight and ``W_U``.

    Args:
        directions: ``[d_model]`` or ``[unit, d_model]``: what a unit or feature writes into the
            residual stream (an SAE decoder row, a neuron's row of ``W_out``).
        probe: the model whose final LayerNorm and unembedding read the directions.

    Returns:
        ``[d_vocab]`` or ``[unit, d_vocab]`` float32 logit effects (see the module docstring for
        the formula and what it leaves out); for many units use :func:`top_logit_effects`,
        which never holds ``[unit, d_vocab]``.

    Raises:
        ShapeError: ``directions`` is not ``[d_model]`` or ``[unit, d_model]``.
        NonFiniteError: the weights or the directions hold NaN or inf.

    Example:
        >>> effect = logit_effects(sae.W_dec[feature].detach(), probe)  # doctest: +SKIP
        >>> probe.to_str_tokens(effect.topk(10).indices)  # doctest: +SKIP
    """
    return _effects(directions, *_unembedding(probe))


def _unembedding(probe) -> tuple[Float[Tensor, " d_model"], Float[Tensor, "d_model d_vocab"]]:
    """``ln_f``'s weight and ``W_U`` in float32: a copy of ``[d_model, d_vocab]`` on a float16 or bfloat16 model."""
    return probe.weights.ln_final.weight.float(), probe.W_U.float()


def _effects(directions: Tensor, gamma: Float[Tensor, " d_model"], w_u: Float[Tensor, "d_model d_vocab"]
             ) -> Float[Tensor, "*unit d_vocab"]:
    # directions unannotated: _check refuses a wrong shape with a ShapeError naming d_model.
    _check(directions, w_u.shape[0])
    d = directions.detach().to(w_u.device, torch.float32)
    # Centre first: ln_f removes the mean of its input, so a direction's mean component has no effect.
    logits = ((d - d.mean(-1, keepdim=True)) * gamma) @ w_u
    return finite_result("the logit effects (directions through ln_f's weight and W_U)",
                         logits - logits.mean(-1, keepdim=True),
                         "the model's weights or the directions hold NaN or inf")


def top_logit_effects(directions: Float[Tensor, "unit d_model"], probe, k: int = 8, chunk: int = 512
                      ) -> tuple[Float[Tensor, "unit k"], Int[Tensor, "unit k"], Float[Tensor, "unit k"],
                                 Int[Tensor, "unit k"]]:
    """The ``k`` most promoted and most suppressed tokens of each direction's :func:`logit_effects`.

    Computed ``chunk`` directions at a time, so no ``[unit, d_vocab]`` tensor is ever held.

    Args:
        directions: ``[unit, d_model]`` output directions.
        probe: the model whose final LayerNorm and unembedding read them.
        k: how many tokens each way.
        chunk: how many directions per matrix product.

    Returns:
        ``(up_values, up_ids, down_values, down_ids)``, each ``[unit, k]`` on the CPU; ``up`` in
        decreasing, ``down`` in increasing order of effect.

    Raises:
        ShapeError: ``directions`` is not ``[unit, d_model]``.
        NonFiniteError: the weights or the directions hold NaN or inf.
    """
    if directions.ndim != 2:
        raise ShapeError(f"top_logit_effects needs directions of shape [unit, d_model], got {tuple(directions.shape)}")
    unembedding = _unembedding(probe)  # once per call, not per chunk
    up_v, up_i, down_v, down_i = [], [], [], []
    for start in range(0, directions.shape[0], chunk):
        logits = _effects(directions[start:start + chunk], *unembedding)
        v, i = logits.topk(k, dim=-1)
        up_v.append(v.cpu())
        up_i.append(i.cpu())
        v, i = logits.topk(k, dim=-1, largest=False)
        down_v.append(v.cpu())
        down_i.append(i.cpu())
    return torch.cat(up_v), torch.cat(up_i), torch.cat(down_v), torch.cat(down_i)
