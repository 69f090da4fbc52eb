"""Attribution patching: estimate every cell of :func:`~gpt2probe.interventions.patch` from gradients.

Exact activation patching needs one forward pass per cell. Attribution patching
(Nanda 2023) estimates all cells from one forward and one backward pass: with ``a`` the
activation of a cell on the *base* run (corrupted for ``direction="denoise"``, clean for
``"noise"``) and ``a'`` the same activation on the *source* run,

    estimate(cell) = base_metric + sum over the cell's entries of (a' - a) * d metric / d a

where the gradient is taken on the base run (the total derivative: every later path
included). The result is a :class:`AttributionResult` on exactly the axes :func:`patch`
returns for the same arguments, normalised the same way, so the two compare cell by cell.

Methods:
``"atp"``
    the first-order estimate above.
``"atp*"`` (Kramár et al. 2024)
    *QK fix*: for ``head_q`` and ``head_k`` the attention scores are bilinear in the
    queries and keys, so the patched pattern of the head is computed exactly
    (``softmax`` of the base scores plus the exact score change) and only the rest of
    the model is linearised: ``(pattern' - pattern) . d metric / d pattern``. This
    removes the false negatives of a saturated softmax. Other kinds have no softmax
    between the patched activation and the linearised part; their values equal ``"atp"``.
    *GradDrop* (the paper's equation 11): for each layer ``l`` the estimate is recomputed
    with the gradient through layer ``l`` dropped (its attention and MLP read the residual
    stream through a stop-gradient), and the cell's AtP* score is

        graddrop(cell) = 1 / (L - 1) * sum over l of |estimate_l(cell) - base_metric|

    with ``L`` layers (the paper's constant; it needs ``L >= 2``). A cell whose direct and
    indirect effects cancel in the signed estimate keeps a large score, because some
    ``estimate_l`` lacks one of the two. AtP*'s ranking (:meth:`AttributionResult.ranking`,
    :attr:`AttributionResult.magnitude`) is by this score, as in the paper; ``values`` stay the
    signed QK-fixed estimate. Its sign can be wrong where the linearisation after the pattern
    is (the toy model's ``head_k`` of L1H0: exact -1.57, atp* +0.26); the magnitude is what
    AtP* is designed to rank by.
``"ig"`` (integrated gradients, as in EAP-IG, Hanna et al. 2024)
    the gradient is averaged over ``steps`` points on the straight path from the base
    activations to the source activations, ``a + alpha (a' - a)`` with midpoints
    ``alpha = (k + 1/2) / steps``. The path moves one *layer's* hook at a time (every
    position and head of that layer together, the rest of the model recomputed
    downstream); EAP-IG interpolates the input embeddings instead. By the fundamental
    theorem of calculus the sum of a layer's cells converges to the exact effect of
    patching that whole layer, for any model, as ``steps`` grows; a single cell converges
    to its exact patching effect when it does not interact with the other cells of its
    layer. Cost: ``n_layers * steps`` forward and backward passes, batched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from .. import validate
from ..errors import InvalidArgumentError, ShapeError
from ..probe import GPT2Probe, Inputs, require_probe
from ..tokens import Tokens
from .gradients import Edit, GradRun, copy_rows, grad_run
from .patching import (
    KINDS,
    KindSpec,
    Metric,
    PatchingResult,
    Token,
    _position_labels,
    _scalar,
    check_aligned,
    chosen_metric,
)
from .pruning import FalseNegativeBound, PruningCheck, bound_false_negatives

METHODS = ("atp", "atp*", "ig")
DEFAULT_IG_STEPS = 16


def ig_steps(method: str, steps: object) -> int:
    """``"ig"``'s integration points (``DEFAULT_IG_STEPS`` when ``steps`` is ``None``); 0 for the other methods.

    Raises:
        InvalidArgumentError: ``steps`` given to another method, or not a positive integer.
    """
    if method != "ig":
        if steps is not None:
            raise InvalidArgumentError(f"steps={steps} is only used by method='ig' (got method={method!r})")
        return 0
    if steps is None:
        return DEFAULT_IG_STEPS
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError(f"steps must be a positive integer, got {steps!r}")
    return steps


@dataclass(frozen=True)
class AttributionResult(PatchingResult):
    """A :class:`PatchingResult` estimated by ``method`` (with ``steps`` for ``"ig"``).

    ``graddrop`` (``"atp*"`` only) has the shape of ``values``: the AtP* score of each cell
    (GradDrop, the paper's equation 11), in the units of ``values`` without the offset
    (normalised by ``|clean - corrupted|`` when ``normalized``). ``bound`` is the
    false-negative bound when ``attribution_patch(..., pruning_check=...)`` asked for one.
    """

    method: str = "atp"
    steps: int | None = None
    graddrop: Float[Tensor, "..."] | None = None
    bound: FalseNegativeBound | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.graddrop is not None and self.graddrop.shape != self.values.shape:
            raise ShapeError(f"graddrop has shape {tuple(self.graddrop.shape)}, values {tuple(self.values.shape)}")

    @property
    def base_value(self) -> float:
        """The unpatched base run in the units of ``values`` (corrupted for denoising, clean for noising)."""
        raw = self.corrupted_metric if self.direction == "denoise" else self.clean_metric
        if not self.normalized:
            return raw
        return (raw - self.corrupted_metric) / (self.clean_metric - self.corrupted_metric)

    @property
    def magnitude(self) -> Float[Tensor, "..."]:
        """What the method ranks cells by.

        ``graddrop`` for ``"atp*"`` (the paper's AtP* score), else the estimated effect size
        ``|values - base_value|``.
        """
        if self.graddrop is not None:
            return self.graddrop
        return (self.values - self.base_value).abs()

    def ranking(self, n: int | None = None) -> list[tuple[tuple[str, ...], float]]:
        """Cells by decreasing :attr:`magnitude` (axis labels, magnitude), the first ``n`` (default all)."""
        flat = self.magnitude.flatten()
        order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))[:n]
        out = []
        for i in order:
            index = torch.unravel_index(torch.tensor(i), self.magnitude.shape)
            out.append((tuple(labels[int(j)] for labels, j in zip(self.axis_labels, index)), float(flat[i])))
        return out


@dataclass(frozen=True)
class Prepared:
    """Validated prompts and metric shared by exact and estimated patching."""

    clean: Tokens
    corrupted: Tokens
    metric: Metric
    base: Tokens
    source: Tokens


def prepare(probe: GPT2Probe, clean: Inputs, corrupted: Inputs, *, metric: Metric | None, answer, wrong,
            direction: str, prepend_bos: bool) -> Prepared:
    """Tokenise and align the two prompts and build the default metric, as :func:`patch` does."""
    require_probe(probe)
    if direction not in ("denoise", "noise"):
        raise InvalidArgumentError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    clean_t = probe.as_tokens(clean, prepend_bos=prepend_bos).to(probe.cfg.device)
    corrupted_t = probe.as_tokens(corrupted, prepend_bos=prepend_bos).to(probe.cfg.device)
    check_aligned(clean_t, corrupted_t)
    metric = chosen_metric(probe, metric, answer, wrong, clean_t.ids.shape[0])
    base, source = (corrupted_t, clean_t) if direction == "denoise" else (clean_t, corrupted_t)
    return Prepared(clean_t, corrupted_t, metric, base, source)


def reduce_cells(product: Tensor, spec: KindSpec, per_position: bool) -> Tensor:
    """Sum an elementwise ``delta * grad`` of one layer's hook over each cell (batch included).

    Cells follow :func:`patch`: one position (``[pos]``) or everything (``[]``) for residual,
    attention and MLP kinds; one head at every position (``[head]``) for head kinds.
    """
    product = product.double()
    if spec.axis == "head":
        return product.sum(dim=[d for d in range(product.ndim) if d != spec.head_axis])
    if per_position:
        return product.sum(dim=[d for d in range(product.ndim) if d != 1])
    return product.sum()


def _qk_fixed(probe: GPT2Probe, kind: str, layer: int, acts: dict[str, Tensor], grads: dict[str, Tensor],
              source: dict[str, Tensor], rows: slice) -> Tensor:
    """AtP*'s estimate for one layer's ``head_q``/``head_k`` cells: the exact patched pattern, linear after it."""
    q, k = acts[N.q(layer)][rows], acts[N.k(layer)][rows]
    scores, pattern = acts[N.attn_scores(layer)][rows], acts[N.pattern(layer)][rows]
    scaling = probe.weights.block(layer).attention_scaling
    if kind == "head_q":
        delta = torch.einsum("bqhd,bkhd->bhqk", (source[N.q(layer)] - q).float(), k.float())
    else:
        delta = torch.einsum("bqhd,bkhd->bhqk", q.float(), (source[N.k(layer)] - k).float())
    patched = torch.softmax(scores.float() + scaling * delta, dim=-1)
    return ((patched.double() - pattern.double()) * grads[N.pattern(layer)][rows].double()).sum(dim=(0, 2, 3))


def _estimator(probe: GPT2Probe, kind: str, spec: KindSpec, per_position: bool, method: str,
               source: dict[str, Tensor]) -> tuple[list[str], list[str], Callable[..., list[Tensor]]]:
    """Hooks whose gradients are needed, hooks only read, and ``fn(acts, grads, rows) -> per-layer cells``."""
    n_layers = probe.cfg.n_layers
    if method == "atp*" and kind in ("head_q", "head_k"):
        grads = [N.pattern(l) for l in range(n_layers)]
        keep = [name for l in range(n_layers) for name in (N.q(l), N.k(l), N.attn_scores(l))]

        def qk(acts, grad, rows):
            return [_qk_fixed(probe, kind, l, acts, grad, source, rows) for l in range(n_layers)]

        return grads, keep, qk
    hooks = [spec.hook(l) for l in range(n_layers)]

    def linear(acts, grad, rows):
        return [reduce_cells((source[h] - acts[h][rows]) * grad[h][rows], spec, per_position) for h in hooks]

    return hooks, [], linear


def _stop_gradient_rows(rows: slice) -> Edit:
    """A hook edit that passes the activation on unchanged but stops its gradient on ``rows``."""

    def edit(activation: Tensor, point) -> Tensor:
        out = activation.clone()
        out[rows] = activation[rows].detach()
        return out

    return edit


def graddrop_runs(probe: GPT2Probe, prep: Prepared, grad_names, keep, batch_size: int) -> Iterator[tuple[slice, GradRun]]:
    """GradDrop's gradient runs: for each layer ``l``, one run with ``l``'s residual reads stop-gradiented.

    ``batch_size`` layers share a forward and backward pass as stacked copies; yields each
    layer's ``(rows of its copy, the run)``. Node (AtP*) and edge scores both sum over these.
    """
    n_layers, n_batch = probe.cfg.n_layers, prep.base.ids.shape[0]
    for start in range(0, n_layers, batch_size):
        dropped = list(range(start, min(start + batch_size, n_layers)))
        edits: dict[str, Edit] = {}
        for c, layer in enumerate(dropped):
            for which in (1, 2):
                edits[N.ln_normalized(layer, which)] = _stop_gradient_rows(copy_rows(c, n_batch))
        run = grad_run(probe, prep.base, grad_names, prep.metric, copies=len(dropped), edits=edits, keep=keep)
        for c in range(len(dropped)):
            yield copy_rows(c, n_batch), run


def _graddrop(probe: GPT2Probe, prep: Prepared, grad_names, keep, estimate, batch_size: int) -> list[Tensor]:
    """AtP*'s GradDrop score (Kramár et al. 2024, equation 11).

    ``1 / (L - 1)`` times the sum over layers ``l`` of ``|estimate|`` with layer ``l``'s
    residual reads stop-gradiented.
    """
    total: list[Tensor] | None = None
    for rows, run in graddrop_runs(probe, prep, grad_names, keep, batch_size):
        cells = [e.abs() for e in estimate(run.acts, run.grads, rows)]
        total = cells if total is None else [t + e for t, e in zip(total, cells)]
    if total is None:  # one run per layer, and atp* needs at least 2 layers
        raise InvalidArgumentError("GradDrop needs layers to drop; this model has none")
    return [t / (probe.cfg.n_layers - 1) for t in total]


def _integrated(probe: GPT2Probe, prep: Prepared, spec: KindSpec, per_position: bool, source: dict[str, Tensor],
                base: dict[str, Tensor], steps: int, batch_size: int) -> list[Tensor]:
    """Integrated gradients along each layer's straight path from base to source activations."""
    n_layers, n_batch = probe.cfg.n_layers, prep.base.ids.shape[0]
    hooks = [spec.hook(l) for l in range(n_layers)]
    runs = [(l, (k + 0.5) / steps) for l in range(n_layers) for k in range(steps)]
    grad_sum: dict[int, Tensor] = {}
    for start in range(0, len(runs), batch_size):
        chunk = runs[start : start + batch_size]
        by_layer: dict[int, list[tuple[int, float]]] = {}
        for c, (layer, alpha) in enumerate(chunk):
            by_layer.setdefault(layer, []).append((c, alpha))

        def interpolate(items: list[tuple[int, float]], src: Tensor) -> Edit:
            def edit(activation: Tensor, point) -> Tensor:
                out = activation.clone()
                for c, alpha in items:
                    rows = copy_rows(c, n_batch)
                    out[rows] = activation[rows] + alpha * (src.to(activation) - activation[rows])
                return out

            return edit

        edits = {hooks[l]: interpolate(items, source[hooks[l]]) for l, items in by_layer.items()}
        names = [hooks[l] for l in by_layer]
        run = grad_run(probe, prep.base, names, prep.metric, copies=len(chunk), edits=edits)
        for layer, items in by_layer.items():
            grad = run.grads[hooks[layer]]
            for c, _alpha in items:
                g = grad[copy_rows(c, n_batch)].double()
                grad_sum[layer] = g if layer not in grad_sum else grad_sum[layer] + g
    out = []
    for layer in range(n_layers):
        delta = source[hooks[layer]].double() - base[hooks[layer]].double()
        out.append(reduce_cells(delta * grad_sum[layer] / steps, spec, per_position))
    return out


def attribution_patch(
    probe: GPT2Probe,
    clean: Inputs,
    corrupted: Inputs,
    *,
    kind: str = "resid_pre",
    metric: Metric | None = None,
    answer: Token | Sequence[Token] | None = None,
    wrong: Token | Sequence[Token] | None = None,
    direction: str = "denoise",
    per_position: bool = True,
    normalize: bool = True,
    method: str = "atp",
    steps: int | None = None,
    batch_size: int = 16,
    prepend_bos: bool = False,
    pruning_check: PruningCheck | None = None,
) -> AttributionResult:
    """Estimate :func:`patch`'s result for the same arguments from gradients (see the module docstring).

    Args:
        clean, corrupted: prompts or token ids, as for :func:`patch`.
        kind, metric, answer, wrong, direction, per_position, normalize, prepend_bos: as for :func:`patch`.
            ``metric`` must be differentiable (return a tensor).
        method: ``"atp"``, ``"atp*"`` or ``"ig"``.
        steps: integration points for ``"ig"`` (default 16); only valid with ``"ig"``.
        batch_size: stacked copies per forward pass for ``"atp*"``'s GradDrop and ``"ig"``
            (and patched runs per pass for ``pruning_check``).
        pruning_check: keep the top ``keep`` cells of :meth:`AttributionResult.ranking` and
            patch ``samples`` of the others exactly: ``result.bound`` then bounds how many
            pruned cells could have a larger effect (:mod:`gpt2probe.interventions.pruning`).
    """
    validate.choice("kind", kind, KINDS)
    validate.boolean("per_position", per_position)
    validate.boolean("normalize", normalize)
    validate.choice("method", method, METHODS)
    n_steps = ig_steps(method, steps)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    if pruning_check is not None and not isinstance(pruning_check, PruningCheck):
        raise InvalidArgumentError(f"pruning_check must be a PruningCheck(keep=..., samples=...), got {pruning_check!r}")
    if method == "atp*" and probe.cfg.n_layers < 2:
        raise InvalidArgumentError("method='atp*' needs at least 2 layers: GradDrop's score divides by n_layers - 1")
    prep = prepare(probe, clean, corrupted, metric=metric, answer=answer, wrong=wrong, direction=direction,
                   prepend_bos=prepend_bos)
    spec, n_layers = KINDS[kind], probe.cfg.n_layers

    source_names = [spec.hook(l) for l in range(n_layers)]
    if method == "atp*" and kind in ("head_q", "head_k"):
        source_names = [N.q(l) if kind == "head_q" else N.k(l) for l in range(n_layers)]
    with torch.no_grad():
        source_logits, cache = probe.run_with_cache(prep.source, names=source_names)
        source_metric = _scalar(prep.metric(source_logits))
    source = dict(cache)

    graddrop = None
    if method == "ig":
        with torch.no_grad():
            base_logits, base_cache = probe.run_with_cache(prep.base, names=source_names)
            base_metric = _scalar(prep.metric(base_logits))
        cells = _integrated(probe, prep, spec, per_position, source, dict(base_cache), n_steps, batch_size)
    else:
        grad_names, keep, estimate = _estimator(probe, kind, spec, per_position, method, source)
        run = grad_run(probe, prep.base, grad_names, prep.metric, keep=keep)
        base_metric = run.metrics[0]
        cells = estimate(run.acts, run.grads, slice(None))
        if method == "atp*":
            graddrop = torch.stack(_graddrop(probe, prep, grad_names, keep, estimate, batch_size)).float().cpu()

    estimates = torch.stack(cells).float().cpu()
    clean_metric, corrupted_metric = (
        (source_metric, base_metric) if direction == "denoise" else (base_metric, source_metric))
    if normalize and clean_metric == corrupted_metric:
        raise InvalidArgumentError(
            f"the clean and corrupted runs give the same metric value ({clean_metric}), so it cannot be "
            "normalised; choose prompts that differ on the metric or pass normalize=False")
    values = base_metric + estimates
    if normalize:
        gap = clean_metric - corrupted_metric
        values = (values - corrupted_metric) / gap
        if graddrop is not None:
            graddrop = graddrop / abs(gap)

    layers = tuple(f"L{l}" for l in range(n_layers))
    if spec.axis == "head":
        axes, labels = ("layer", "head"), (layers, tuple(f"H{h}" for h in range(probe.cfg.n_heads)))
    elif per_position:
        axes, labels = ("layer", "pos"), (layers, _position_labels(probe, prep.clean, prep.corrupted))
    else:
        axes, labels = ("layer",), (layers,)
    result = AttributionResult(kind=kind, direction=direction, values=values, axis_names=axes, axis_labels=labels,
                               clean_metric=clean_metric, corrupted_metric=corrupted_metric, normalized=normalize,
                               method=method, steps=n_steps if method == "ig" else None, graddrop=graddrop)
    if pruning_check is None:
        return result
    if normalize:
        def to_units(raw: float) -> float:
            return (raw - corrupted_metric) / (clean_metric - corrupted_metric)
    else:
        def to_units(raw: float) -> float:
            return raw
    bound = bound_false_negatives(probe, result.magnitude, pruning_check, kind=kind, per_position=per_position,
                                  base=prep.base, source=prep.source, metric=prep.metric, to_units=to_units,
                                  base_value=result.base_value, batch_size=batch_size)
    return dataclasses.replace(result, bound=bound)
