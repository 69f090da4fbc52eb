"""Training an SAE or transcoder on activations: options, the loop, checkpoints and resuming.

What a run does (the settings and their defaults: :class:`~gpt2probe.configs.sae.SAETrainConfig`,
resolved for a coder and its data by :func:`resolve`):

- **Normalisation.** Inputs (and a transcoder's targets) are scaled so that their mean norm
  is ``sqrt(width)`` (SAELens's ``expected_average_only_in``), so one learning rate and one
  sparsity coefficient fit every model; the scale is folded into the returned weights,
  which therefore read and write raw activations (``normalize_activations="none"``).
- **Initialisation.** ``W_dec`` rows random unit vectors, ``W_enc = W_dec.T`` (SAE),
  ``b_enc = 0``, ``b_dec`` the geometric median (float32 Weiszfeld) or mean of a sample of the targets.
- **Optimisation.** Adam; linear warm-up, constant, linear decay to zero over the last
  fifth; decoder rows kept at unit norm (the gradient's radial part removed, rows
  renormalised after every step).
- **Dead features.** A feature that has not fired for ``dead_after_tokens`` tokens is dead;
  the aux-k loss (Gao et al. 2024) trains the dead features to predict the residual error,
  weighed as in their reference code (an error normalised by the residual's variance).
- **Checkpoints.** Everything that decides the next step (weights, Adam's moments, the data
  position and shuffle buffer, generators, counters) is saved, so a resumed run is
  bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload, runtime_checkable

import torch
from torch import Tensor

from .. import validate
from ..atomic import atomic_path
from ..configs.base import build, upgrade
from ..configs.sae import TRAINING_METADATA, FitKeywords, SAETrainConfig, TrainKeywords
from ..configs.sae import TrainOptions as TrainOptions
from ..errors import InvalidArgumentError, ShapeError
from ..names import nearest
from . import distributed, losses
from .buffer import ActivationError, Batches, IteratorSource, StreamBatches, TensorBatches, check_rows
from .config import SAEConfig

if TYPE_CHECKING:
    from ..harvest.corpus import Corpus
    from .stream import TrainingProbe

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # typing_extensions: a dependency of torch, declared for Python 3.10 in pyproject.toml
    from typing_extensions import Unpack

CHECKPOINT = "checkpoint.pt"
T = TypeVar("T")
Coder = TypeVar("Coder", bound=torch.nn.Module)  # the SAE or Transcoder class trained, and what training returns
Coder_co = TypeVar("Coder_co", bound=torch.nn.Module, covariant=True)
P = ParamSpec("P")


def _resolved(value: T | None, name: str) -> T:
    """A setting that :func:`resolve` fills in (``None`` means "chosen from the data" until then)."""
    if value is None:
        raise InvalidArgumentError(f"{name} is not set: resolve the options first (gpt2probe.sae.training.resolve)")
    return value


def _trained_k(cfg: SAEConfig) -> int | float:
    """The ``k`` a top-k or batch top-k coder trains with (batch top-k's may be ``None`` at inference, not here)."""
    if cfg.k is None:
        raise InvalidArgumentError(f"training architecture {cfg.architecture!r} needs k, the active features per "
                                   "token (k=...)")
    return cfg.k


def resolve(options: SAETrainConfig, cfg: SAEConfig, n_tokens: int | None) -> SAETrainConfig:
    """``options`` with every ``None`` replaced by its default for ``cfg`` and ``n_tokens`` rows of data (``None``: unknown)."""
    opts = options.with_train_batch_size(n_tokens)
    batch_size = _resolved(opts.train_batch_size_tokens, "train_batch_size_tokens")  # chosen above if it was None
    steps = opts.steps
    if steps is None:
        if n_tokens is None:
            raise InvalidArgumentError("the amount of data is unknown (an iterator): say how many steps to train "
                                       "(steps=...)")
        steps = max(math.ceil(n_tokens / batch_size), opts.min_steps)
    if n_tokens is not None and n_tokens < batch_size:
        raise ActivationError(f"{n_tokens} activations are fewer than one batch ({batch_size}); pass more "
                              "data or a smaller train_batch_size_tokens")
    if opts.buffer_tokens < 2 * batch_size and n_tokens is None:
        raise InvalidArgumentError(f"buffer_tokens ({opts.buffer_tokens}) must hold two batches "
                                   f"({2 * batch_size})")
    return dataclasses.replace(
        opts, steps=steps,
        lr=opts.lr if opts.lr is not None else 2e-4 / math.sqrt(cfg.d_sae / 16384),
        warmup_steps=opts.warmup_steps if opts.warmup_steps is not None else min(1000, steps // 20),
        decay_steps=opts.decay_steps if opts.decay_steps is not None else steps // 5,
        l1_warmup_steps=opts.l1_warmup_steps if opts.l1_warmup_steps is not None else steps // 20,
        aux_k=min(opts.aux_k if opts.aux_k is not None else max(1, cfg.d_in // 2), cfg.d_sae),
        dead_after_tokens=opts.dead_after_tokens if opts.dead_after_tokens is not None
        else min(10_000_000, max(batch_size, steps * batch_size // 10)),
    )


def geometric_median(points: Tensor, iterations: int = 100, tolerance: float = 1e-5) -> Tensor:
    """The point minimising the summed distances to ``points`` ``[n, width]`` (Weiszfeld's iteration, float32).

    Starts at the mean and stops when a step moves less than ``tolerance`` times the points'
    mean distance to it, or after ``iterations`` steps: ``b_dec`` is only a starting point, so
    float32 and a loose stop suffice (float64 and 200 iterations cost more than a hundred
    training steps of a small SAE). Distances are floored at a millionth of that mean
    distance, so a point on the median does not divide by zero.
    """
    x = points.float()
    median = x.mean(0)
    spread = float((x - median).norm(dim=-1).mean())
    if spread == 0:
        return median.to(points.dtype)
    for _ in range(iterations):
        weights = 1.0 / (x - median).norm(dim=-1).clamp_min(1e-6 * spread)
        new = (weights @ x) / weights.sum()
        done = float((new - median).norm()) <= tolerance * spread
        median = new
        if done:
            break
    return median.to(points.dtype)


class Trainer:
    """One run: a working copy of the coder in normalised units, Adam, counters, and the data."""

    def __init__(self, coder_cls: type, cfg: SAEConfig, opts: SAETrainConfig, batches: Batches,
                 fingerprint: dict, callback: Callable[[int, dict], None] | None = None,
                 world: distributed.World | None = None) -> None:
        self.cls, self.cfg, self.opts, self.batches = coder_cls, cfg, opts, batches
        self.world = world or distributed.World()
        self.callback = callback
        self.fingerprint = fingerprint
        # Settings resolve() filled in, read once as the numbers they are.
        self.steps = _resolved(opts.steps, "steps")
        self.dead_after_tokens = _resolved(opts.dead_after_tokens, "dead_after_tokens")
        self.aux_k = _resolved(opts.aux_k, "aux_k")
        gen = torch.Generator().manual_seed(opts.seed)
        work_cfg = cfg.replace(dtype=torch.float32, device=torch.device("cpu"), normalize_activations="none")
        self.coder = coder_cls(work_cfg, generator=gen)
        self.params: list[torch.nn.Parameter] = [self.coder.W_enc, self.coder.b_enc, self.coder.W_dec, self.coder.b_dec]
        if self.coder.W_skip is not None:
            self.params.append(self.coder.W_skip)
        self.log_threshold: torch.nn.Parameter | None = None  # JumpReLU's trained parameter
        if cfg.thresholded:
            self.coder.threshold.requires_grad_(False)
            if cfg.architecture == "jumprelu":
                self.log_threshold = torch.nn.Parameter(
                    torch.full((cfg.d_sae,), math.log(opts.jumprelu_init_threshold)))
                self.params.append(self.log_threshold)
                with torch.no_grad():
                    self.coder.threshold.copy_(self.log_threshold.exp())
        self.optimizer = torch.optim.Adam(self.params, lr=_resolved(opts.lr, "lr"), betas=(0.9, 0.999))
        self.step = 0
        self.since_fired = torch.zeros(cfg.d_sae, dtype=torch.int64)
        self.estimate = losses.ThresholdEstimate(opts.threshold_decay)
        self.scale_in = self.scale_out = 1.0

    # -- initialisation -------------------------------------------------------------------
    def initialise(self) -> None:
        sample = self.batches.sample(self.opts.init_sample)
        x, y = self._split(sample)
        self.scale_in = _scale(x, "the inputs")
        self.scale_out = _scale(y, "the targets") if self.cfg.is_transcoder else self.scale_in
        y = y * self.scale_out
        with torch.no_grad():
            if self.opts.b_dec_init == "geometric_median":
                self.coder.b_dec.copy_(geometric_median(y))
            elif self.opts.b_dec_init == "mean":
                self.coder.b_dec.copy_(y.mean(0))

    def _split(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        if not self.cfg.is_transcoder:
            return rows, rows
        return rows[:, :self.cfg.d_in], rows[:, self.cfg.d_in:]

    # -- one step --------------------------------------------------------------------------
    def _forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        c, o, coder = self.cfg, self.opts, self.coder
        x_in = x - coder.b_dec if c.apply_b_dec_to_input else x
        terms: dict[str, Tensor] = {}
        pre = x_in @ coder.W_enc + coder.b_enc
        if c.architecture in ("topk", "batchtopk"):
            # Sparse: decode only the kept (token, feature) pairs, k per token on average,
            # instead of a dense [batch, d_sae] @ [d_sae, d_out] product (d_sae / k times the work).
            if c.architecture == "topk":
                values, features = torch.topk(pre, c.topk_k, dim=-1, sorted=False)
                values = values.relu()
                rows = torch.arange(pre.shape[0]).repeat_interleave(c.topk_k)
                values, features = values.flatten(), features.flatten()
            else:
                values, rows, features = losses.batch_topk_sparse(pre, _trained_k(c))
            recons = losses.sparse_decode(values, rows, features, coder.W_dec, pre.shape[0]) + coder.b_dec
            active = values > 0
            fired = torch.zeros(c.d_sae, dtype=torch.bool)
            fired[features[active]] = True
            l0 = active.sum().double() / pre.shape[0]
            min_positive = values[active].min() if bool(active.any()) else None
        else:
            if c.architecture == "standard":
                acts = pre.relu()
            else:
                if self.log_threshold is None:  # made in __init__ for jumprelu, the only architecture left here
                    raise InvalidArgumentError(f"architecture {c.architecture!r} has no trained threshold")
                threshold = self.log_threshold.exp()
                acts = losses.jumprelu(pre, threshold, o.jumprelu_bandwidth)
                terms["l0_loss"] = o.l0_coefficient * losses.step_l0(pre, threshold, o.jumprelu_bandwidth)
            recons = acts @ coder.W_dec + coder.b_dec
            with torch.no_grad():
                fired = (acts > 0).any(0)
                l0 = (acts > 0).sum(-1).double().mean()
            min_positive = None
            if c.architecture == "standard":
                ramp = min(1.0, (self.step + 1) / o.l1_warmup_steps) if o.l1_warmup_steps else 1.0
                terms["l1_loss"] = ramp * o.l1_coefficient * (acts * coder.W_dec.norm(dim=-1)).sum(-1).mean()
        if coder.W_skip is not None:
            recons = recons + x @ coder.W_skip
        terms["mse"] = losses.mse(recons, y)
        dead = self.since_fired >= self.dead_after_tokens
        if o.aux_coefficient > 0 and bool(dead.any()):
            dead_features = dead.nonzero().squeeze(-1)
            pre_dead = pre.index_select(1, dead_features)
            target_variance = (y - y.mean(0)).pow(2).sum(-1).mean()
            terms["aux_loss"] = o.aux_coefficient * losses.aux_k_loss(
                pre_dead, dead_features, (y - recons).detach(), coder.W_dec, self.aux_k, target_variance)
        first, *rest = terms.values()  # "mse" is always there
        loss = sum(rest, first)
        with torch.no_grad():
            # Sums over this process's rows, added up over processes in train_step.
            sums = torch.cat([torch.stack([loss.detach().double() * y.shape[0], terms["mse"].detach().double() * y.shape[0],
                                           l0 * y.shape[0], (recons - y).double().pow(2).sum(),
                                           y.double().pow(2).sum(), torch.tensor(float(y.shape[0]), dtype=torch.float64)]),
                              y.double().sum(0)])
            stats = {"sums": sums, "fired": fired,
                     "min_positive": None if min_positive is None else min_positive.detach()}
        return loss, stats

    def train_step(self) -> dict[str, float]:
        rows = self.batches.next()
        world, n = self.world, rows.shape[0]
        # Data parallel: this process's share of the batch (batch top-k ranks the whole batch: all of it).
        mine = rows if self.cfg.architecture == "batchtopk" else rows[world.share(n)]
        x, y = self._split(mine)
        x, y = x * self.scale_in, y * self.scale_out
        for group in self.optimizer.param_groups:
            group["lr"] = self.opts.learning_rate(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss, stats = self._forward(x, y)
        sharded = world.size > 1 and mine.shape[0] != n
        (loss * (mine.shape[0] / n) if sharded else loss).backward()
        if world.size > 1:
            self._sum_gradients(sharded)
            fired = world.max_(stats["fired"].to(torch.uint8)).bool()
            sums = world.sum_(stats["sums"]) if sharded else stats["sums"]
        else:
            fired, sums = stats["fired"], stats["sums"]
        W_dec = self.coder.W_dec
        with torch.no_grad():
            if W_dec.grad is not None:  # keep the rows on the unit sphere: drop the radial part of the gradient
                W_dec.grad -= (W_dec.grad * W_dec).sum(-1, keepdim=True) * W_dec
        self.optimizer.step()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=-1, keepdim=True)
            if self.log_threshold is not None:
                self.coder.threshold.copy_(self.log_threshold.exp())
        if self.cfg.architecture == "batchtopk" and stats["min_positive"] is not None:
            self.estimate.update(float(stats["min_positive"]))
        self.since_fired += n
        self.since_fired[fired] = 0
        self.step += 1
        dead = float((self.since_fired >= self.dead_after_tokens).double().mean())
        loss_sum, mse_sum, l0_sum, sse, sum_sq, count = sums[:6].tolist()
        sst = sum_sq - float(sums[6:].pow(2).sum()) / count
        return {"loss": loss_sum / count, "mse": mse_sum / count, "l0": l0_sum / count,
                "explained_variance": 1 - sse / sst if sst > 0 else float("nan"), "dead_fraction": dead}

    def _sum_gradients(self, sharded: bool) -> None:
        """Add up the processes' gradients (one flat all-reduce), or check they agree when each saw the whole batch."""
        if not sharded:  # batch top-k: every process computed the same whole-batch gradient
            return
        grads: list[Tensor] = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = self.world.sum_(torch.cat([g.flatten() for g in grads]))
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True, default=str),
            "step": self.step,
            "coder": {k: v.detach().clone() for k, v in self.coder.state_dict().items()},
            "log_threshold": None if self.log_threshold is None else self.log_threshold.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches.state_dict(),
            "since_fired": self.since_fired.clone(),
            "estimate": [self.estimate.value, self.estimate.n],
            "scales": [self.scale_in, self.scale_out],
        }

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        saved = _current_names(json.loads(state["fingerprint"]))  # a checkpoint from before a rename still resumes
        if json.dumps(saved, sort_keys=True) != json.dumps(self.fingerprint, sort_keys=True, default=str):
            now = json.loads(json.dumps(self.fingerprint, default=str))
            diffs = []
            for group in sorted(now):
                if saved.get(group) != now[group]:
                    keys = set(saved.get(group, {})) | set(now[group])
                    changed = sorted(k for k in keys if saved.get(group, {}).get(k) != now[group].get(k))
                    diffs.append(f"{group} ({', '.join(changed)})")
            raise InvalidArgumentError(f"cannot resume from {str(path)!r}: it was started with a different "
                                       f"{', '.join(diffs)}; resume with exactly the same data, config and options, "
                                       "or use another checkpoint_dir")
        with torch.no_grad():
            self.coder.load_state_dict(state["coder"])
            if self.log_threshold is not None:
                self.log_threshold.copy_(state["log_threshold"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["batches"])
        self.step = int(state["step"])
        self.since_fired = state["since_fired"].clone()
        self.estimate.value, self.estimate.n = float(state["estimate"][0]), int(state["estimate"][1])
        self.scale_in, self.scale_out = (float(s) for s in state["scales"])

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        o = self.opts
        path = Path(o.checkpoint_dir) / CHECKPOINT if o.checkpoint_dir is not None else None
        if path is not None and o.resume and path.is_file():
            try:
                state = torch.load(path, weights_only=True)
            except Exception as error:  # a damaged file: name it
                raise InvalidArgumentError(f"cannot read the checkpoint {str(path)!r}: {error}") from None
            self.load_state_dict(state, path)
        elif path is not None and path.exists() and not o.resume:
            raise InvalidArgumentError(f"{str(path)!r} already holds a checkpoint; pass resume=True to continue it, "
                                       "or choose another checkpoint_dir")
        else:
            self.initialise()
        bar = None
        if o.progress and self.world.main:
            from tqdm import tqdm

            bar = tqdm(total=self.steps, initial=self.step, unit="step", file=sys.stderr, dynamic_ncols=True,
                       desc=f"{self.cfg.architecture} {self.cfg.hook_name}")
        try:
            while self.step < self.steps:
                metrics = self.train_step()
                if (path is not None and self.world.main
                        and (self.step == self.steps or (o.checkpoint_every and self.step % o.checkpoint_every == 0))):
                    self.save(path)
                if bar is not None:
                    bar.update(1)
                    if self.step % 10 == 0 or self.step == self.steps:
                        bar.set_postfix(loss=f"{metrics['loss']:.4g}", l0=f"{metrics['l0']:.1f}",
                                        ev=f"{metrics['explained_variance']:.3f}",
                                        dead=f"{metrics['dead_fraction']:.3f}", refresh=False)
                if self.callback is not None:
                    self.callback(self.step, metrics)
        finally:
            if bar is not None:
                bar.close()

    def result(self):
        """The trained coder for raw activations: the normalisation folded into the weights.

        Its ``cfg.metadata`` records the resolved training settings (:data:`TRAINING_METADATA`),
        which ``save`` writes into ``cfg.json`` and ``from_dict(SAETrainConfig, ...)`` reads back.
        """
        record = {**self.cfg.metadata, TRAINING_METADATA: self.opts.fingerprint()}
        cfg = self.cfg.replace(normalize_activations="none", metadata=record)
        out = self.cls(cfg)
        s_in, s_out = self.scale_in, self.scale_out
        w = self.coder
        with torch.no_grad():
            out.W_enc.copy_((w.W_enc * s_in).to(out.W_enc))
            out.b_enc.copy_(w.b_enc.to(out.b_enc))
            out.W_dec.copy_((w.W_dec / s_out).to(out.W_dec))
            out.b_dec.copy_((w.b_dec / s_out).to(out.b_dec))
            if out.W_skip is not None:
                out.W_skip.copy_((w.W_skip * (s_in / s_out)).to(out.W_skip))
            if out.threshold is not None:
                if cfg.architecture == "batchtopk":
                    out.threshold.fill_(self.estimate.threshold)
                else:
                    out.threshold.copy_(w.threshold.to(out.threshold))
        return out


def _current_names(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A saved checkpoint's fingerprint with its options under their current names (``batch_size`` was renamed)."""
    options = fingerprint.get("options")
    if not isinstance(options, dict):
        return fingerprint
    return {**fingerprint, "options": upgrade(SAETrainConfig, options, warn=False)}


def _scale(rows: Tensor, what: str) -> float:
    norm = float(rows.double().norm(dim=-1).mean())
    if not norm > 0:
        raise ActivationError(f"{what} are all zero: there is nothing to reconstruct")
    return math.sqrt(rows.shape[-1]) / norm


def _digest(rows: Tensor) -> str:
    return hashlib.sha256(rows.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _contradictions(cfg: SAEConfig, *, d_sae: int | None, architecture: str | None, k: int | float | None,
                    hook_name: str | None, layer: int | None, skip: bool) -> list[str]:
    """The settings given beside ``cfg`` that say otherwise than it (``None``, and ``skip=False``, say nothing)."""
    given = {"d_sae": d_sae, "architecture": architecture, "k": k, "hook_name": hook_name}
    out = [f"{name}={value!r} (cfg.{name} is {getattr(cfg, name)!r})" for name, value in given.items()
           if value is not None and value != getattr(cfg, name)]
    if layer is not None and layer != cfg.layer:
        out.append(f"layer={layer!r} (cfg reads {cfg.hook_name!r})")
    if skip and not cfg.skip:
        out.append("skip=True (cfg.skip is False)")
    return out


def build_config(coder_cls: type, width_in: int, width_out: int | None, *, cfg: SAEConfig | None, d_sae: int | None,
                 architecture: str | None, k: int | float | None, hook_name: str | None, layer: int | None, skip: bool,
                 model_name: str | None) -> SAEConfig:
    """The config of the coder to train, from ``cfg`` or the pieces, checked against the data's widths.

    ``architecture=None`` means ``"topk"`` without ``cfg``. With ``cfg``, a piece that says
    otherwise (``d_sae=32`` beside a config of 8 features) is refused: it used to be ignored,
    so the coder trained was not the one asked for.
    """
    transcoder = coder_cls.__name__ == "Transcoder"
    if cfg is not None:
        conflicts = _contradictions(cfg, d_sae=d_sae, architecture=architecture, k=k, hook_name=hook_name, layer=layer,
                                    skip=skip)
        if conflicts:
            raise InvalidArgumentError(f"cfg is given, and so are settings that contradict it: {'; '.join(conflicts)}. "
                                       "Put every setting in cfg (cfg.replace(...)), or give the pieces without cfg")
    if cfg is None:
        architecture = architecture or "topk"
        if d_sae is None:
            raise InvalidArgumentError("say how many features to learn (d_sae=...)")
        if architecture in ("topk", "batchtopk") and k is None:
            raise InvalidArgumentError(f"architecture {architecture!r} needs k, the active features per token (k=...)")
        settings = {"d_sae": d_sae, "architecture": architecture, "k": k, "model_name": model_name}
        if transcoder:
            if layer is None:
                raise InvalidArgumentError("say which block's MLP the transcoder replaces (layer=...)")
            cfg = SAEConfig.for_transcoder(layer, d_model=width_in, skip=skip, d_out=width_out, **settings)
        else:
            if hook_name is None:
                raise InvalidArgumentError("say which hook the activations come from (hook_name=..., e.g. "
                                           "'blocks.2.hook_resid_post'); it is saved with the SAE")
            cfg = SAEConfig(d_in=width_in, hook_name=hook_name, **settings)
    if cfg.is_transcoder != transcoder:
        raise InvalidArgumentError(
            f"{coder_cls.__name__} cannot train this config: "
            + (f"it writes to {cfg.hook_name_out!r}, elsewhere than it reads; train a Transcoder" if cfg.is_transcoder
               else "it has no hook_name_out (where a transcoder writes); train an SAE"))
    if cfg.architecture in ("topk", "batchtopk"):
        _trained_k(cfg)  # a batch top-k config may lack k (it is only a record at inference); training needs it
    if cfg.rescale_acts_by_decoder_norm:
        raise InvalidArgumentError("training with rescale_acts_by_decoder_norm is not supported (decoder rows are "
                                   "kept at unit norm, which makes it a no-op)")
    if cfg.d_in != width_in or (width_out is not None and cfg.d_out != width_out):
        raise ActivationError(f"the config reads {cfg.d_in} and writes {cfg.d_out} wide, but the data is "
                              f"{width_in}{'' if width_out is None else f' -> {width_out}'} wide")
    return cfg


def run(coder_cls: type[Coder], cfg: SAEConfig, batches: Batches, n_tokens: int | None, data_id: dict,
        options: SAETrainConfig, callback: Callable[[int, dict], None] | None) -> Coder:
    """Resolve the options, train, and return the coder (see :func:`fit`)."""
    opts = resolve(options, cfg, n_tokens)
    if opts.resume and not getattr(getattr(batches, "source", None), "resumable", True):
        raise InvalidArgumentError("a run on an iterator of activations cannot be resumed; pass a tensor or "
                                   "train on a model and corpus")
    cfg_id = {f.name: str(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in ("metadata",)}
    fingerprint = {"config": cfg_id, "options": opts.fingerprint(), "data": data_id}
    with distributed.joined() as world:  # under torchrun: data parallel (see gpt2probe.sae.distributed)
        if _resolved(opts.train_batch_size_tokens, "train_batch_size_tokens") < world.size:
            raise InvalidArgumentError(f"train_batch_size_tokens ({opts.train_batch_size_tokens}) must be at least the "
                                       "number of processes "
                                       f"({world.size})")
        trainer = Trainer(coder_cls, cfg, opts, batches, fingerprint, callback, world)
        trainer.run()
        return trainer.result()


def fit(coder_cls: type[Coder], activations: Tensor | Iterator, targets: Tensor | None = None, *,
        cfg: SAEConfig | None = None, d_sae: int | None = None, architecture: str | None = None,
        k: int | float | None = None, hook_name: str | None = None, layer: int | None = None, skip: bool = False,
        model_name: str | None = None, callback: Callable[[int, dict], None] | None = None,
        **options: Unpack[FitKeywords]) -> Coder:
    """Train ``coder_cls`` on activations: see :meth:`gpt2probe.SAE.fit` and :meth:`gpt2probe.Transcoder.fit`.

    ``options`` are :class:`~gpt2probe.configs.sae.SAETrainConfig`'s fields (``steps``, ``lr``, ``aux_k``...).
    The coder is ``cfg``, or built from ``d_sae``, ``architecture`` (default ``"topk"``), ``k``,
    ``hook_name`` / ``layer`` and ``skip``; a piece given beside ``cfg`` must agree with it.
    """
    opts = build(SAETrainConfig, options)  # a misspelt option is refused by name, the valid ones listed
    validate.function("callback", callback)  # not mid-run, after the first step
    transcoder = coder_cls.__name__ == "Transcoder"
    gen = torch.Generator().manual_seed(opts.seed + 1)
    if isinstance(activations, Tensor):
        if transcoder and targets is None:
            raise InvalidArgumentError("a transcoder learns to predict targets from inputs: fit(inputs, targets)")
        if not transcoder and targets is not None:
            raise InvalidArgumentError("an SAE reconstructs its input: fit(activations) takes no targets")
        width_in = activations.shape[-1] if activations.ndim else 0
        x = check_rows(activations, width_in, "the activations" if not transcoder else "the inputs").float().cpu()
        rows = x
        width_out = None
        if targets is not None:  # a transcoder's (checked above)
            width_out = targets.shape[-1] if isinstance(targets, Tensor) and targets.ndim else 0
            y = check_rows(targets, width_out, "the targets").float().cpu()
            if y.shape[0] != x.shape[0]:
                raise ActivationError(f"{x.shape[0]} inputs but {y.shape[0]} targets: they must pair up")
            rows = torch.cat([x, y], dim=-1)
        cfg = build_config(coder_cls, width_in, width_out, cfg=cfg, d_sae=d_sae, architecture=architecture, k=k,
                           hook_name=hook_name, layer=layer, skip=skip, model_name=model_name)
        opts = opts.with_train_batch_size(rows.shape[0])
        batches: Batches = TensorBatches(rows, opts.train_batch_size_tokens, gen)
        data_id = {"rows": rows.shape[0], "width": rows.shape[1], "sha256": _digest(rows)}
        return run(coder_cls, cfg, batches, rows.shape[0], data_id, opts, callback)
    if targets is not None:
        raise InvalidArgumentError("with an iterator, a transcoder's iterator yields (inputs, targets) pairs; "
                                   "targets must be None")
    iterator = iter(activations)
    try:
        first = next(iterator)
    except StopIteration:
        raise ActivationError("the iterator of activations is empty") from None
    if transcoder:
        if not (isinstance(first, (tuple, list)) and len(first) == 2):
            raise ActivationError("a transcoder's iterator must yield (inputs, targets) pairs of tensors")
        width_in, width_out = _width(first[0], "the inputs (chunk 0)"), _width(first[1], "the targets (chunk 0)")

        def pairs() -> Iterator[Tensor]:
            for number, pair in enumerate(_chain(first, iterator)):
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                    raise ActivationError(f"chunk {number} of the iterator is not an (inputs, targets) pair")
                xi = check_rows(pair[0], width_in, f"the inputs (chunk {number})")
                yi = check_rows(pair[1], width_out, f"the targets (chunk {number})")
                if xi.shape[0] != yi.shape[0]:
                    raise ActivationError(f"chunk {number}: {xi.shape[0]} inputs but {yi.shape[0]} targets")
                yield torch.cat([xi.float().cpu(), yi.float().cpu()], dim=-1)

        source = IteratorSource(pairs(), width_in + width_out)
    else:
        width_in, width_out = _width(first, "the activations (chunk 0)"), None
        source = IteratorSource((c.float().cpu() for c in _chain(first, iterator)), width_in)
    cfg = build_config(coder_cls, width_in, width_out, cfg=cfg, d_sae=d_sae, architecture=architecture, k=k,
                       hook_name=hook_name, layer=layer, skip=skip, model_name=model_name)
    opts = opts.with_train_batch_size(None)
    batches = StreamBatches(source, opts.train_batch_size_tokens, max(opts.buffer_tokens, 2 * opts.train_batch_size_tokens), gen)
    return run(coder_cls, cfg, batches, None, {"iterator": True}, opts, callback)


def _width(chunk: object, what: str) -> int:
    """The last-axis width of an iterator's first chunk, which sets the coder's width (a 0-d tensor has none)."""
    if not isinstance(chunk, Tensor):
        raise ActivationError(f"{what} must be a tensor, got {type(chunk).__name__}")
    if chunk.ndim == 0:
        raise ShapeError(f"{what} is a 0-d tensor; chunks are [..., width] activations")
    return chunk.shape[-1]


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def train(coder_cls: type[Coder], probe: TrainingProbe, texts_or_corpus: Corpus | Sequence[str], *, hook: str | None = None,
          layer: int | None = None, d_sae: int | None = None, architecture: str | None = None, k: int | float | None = None,
          seed: int = 0, skip: bool = False, seq_len: int | None = None, windows_per_pass: int = 8,
          cfg: SAEConfig | None = None, callback: Callable[[int, dict], None] | None = None,
          **options: Unpack[TrainKeywords]) -> Coder:
    """Train on ``probe``'s activations over a corpus: see :meth:`gpt2probe.SAE.train`.

    ``options`` are :class:`~gpt2probe.configs.sae.SAETrainConfig`'s fields besides ``seed``.
    The coder is ``cfg``, or built from ``hook`` / ``layer``, ``d_sae``, ``architecture`` (default
    ``"topk"``), ``k`` and ``skip``; a piece given beside ``cfg`` must agree with it.
    """
    from .. import names as N
    from ..harvest.runner import weights_digest
    from .config import check_fits, stream_width
    from .stream import CorpusActivations, as_corpus

    transcoder = coder_cls.__name__ == "Transcoder"
    validate.function("callback", callback)
    pcfg = probe.cfg
    if transcoder:
        if cfg is not None:
            hooks = [cfg.hook_name, cfg.write_hook]
        elif layer is not None:
            hooks = [N.ln_normalized(layer, 2), N.mlp_out(layer)]
        else:
            raise InvalidArgumentError("say which block's MLP the transcoder replaces (layer=...)")
        if hook is not None:
            raise InvalidArgumentError("a transcoder reads blocks.L.ln2.hook_normalized and writes blocks.L.hook_mlp_out: "
                                       "give layer=L, not hook")
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < pcfg.n_layers):
            raise InvalidArgumentError(f"layer must be in [0, {pcfg.n_layers}) for {pcfg.model_name}, got {layer!r}")
    elif cfg is not None:
        hooks = [cfg.hook_name]
    elif hook is not None:
        hooks = [hook]
    else:
        raise InvalidArgumentError("say which hook to train on (hook=..., e.g. 'blocks.2.hook_resid_post')")
    if hooks[0] not in probe.hook_names:
        near = ", ".join(repr(name) for name in nearest(hooks[0], list(probe.hook_names)))
        raise InvalidArgumentError(f"{hooks[0]!r} is not a hook of {pcfg.model_name} ({pcfg.n_layers} layers, "
                                   f"blocks 0..{pcfg.n_layers - 1}); nearest valid names: {near}")
    widths = [width for width in (stream_width(h, pcfg) for h in hooks) if width is not None]
    if len(widths) != len(hooks):
        raise InvalidArgumentError(f"{hooks[0]!r} is not a [batch, pos, width] stream; train on the residual stream, "
                                   "attention and MLP outputs, LayerNorm outputs or MLP neurons")
    cfg = build_config(coder_cls, widths[0], widths[1] if transcoder else None, cfg=cfg, d_sae=d_sae,
                       architecture=architecture, k=k, hook_name=None if transcoder else hook, layer=layer, skip=skip,
                       model_name=pcfg.model_name)
    check_fits(cfg, pcfg)
    opts = build(SAETrainConfig, {"seed": seed, **options})
    corpus = as_corpus(texts_or_corpus)
    # None is the default; seq_len=0 is refused by CorpusActivations (``seq_len or ...`` used to take it as the default)
    source = CorpusActivations(probe, corpus, hooks, seq_len=min(pcfg.n_ctx, 128) if seq_len is None else seq_len,
                               windows_per_pass=windows_per_pass, seed=seed)
    n_tokens = source.count_tokens()  # also: a corpus with no text fails here, before any model runs
    if n_tokens == 0:
        raise ActivationError("the corpus holds no text (every document is empty)")
    gen = torch.Generator().manual_seed(seed + 1)
    opts = opts.with_train_batch_size(n_tokens)
    if n_tokens <= opts.buffer_tokens and n_tokens >= opts.train_batch_size_tokens:
        # One pass fits in the buffer: run the model over the corpus once and keep the rows,
        # instead of running it again every epoch (a default run repeats small data 15 times
        # or more). Memory stays within the buffer's bound.
        source.epochs = 1
        batches: Batches = TensorBatches(torch.cat(list(source.chunks())), opts.train_batch_size_tokens, gen)
    else:
        batches = StreamBatches(source, opts.train_batch_size_tokens, max(opts.buffer_tokens, 2 * opts.train_batch_size_tokens), gen)
    data_id = {"model": weights_digest(probe.model), "corpus": corpus.describe(), "hooks": hooks,
               "seq_len": source.seq_len, "windows_per_pass": windows_per_pass}
    return run(coder_cls, cfg, batches, n_tokens, data_id, opts, callback)


@runtime_checkable  # the shape checks (beartype) test the overloads' return types with isinstance
class ModeSwitch(Protocol[Coder_co]):
    """``nn.Module.train``'s signature bound to a coder: ``sae.train(False)`` returns the SAE."""

    def __call__(self, mode: bool = True) -> Coder_co: ...


class TrainMethod(Generic[P]):
    """``SAE.train(probe, texts, ...)`` on the class (training); ``sae.train(mode)`` on an instance (PyTorch's).

    ``nn.Module.train`` switches training mode and ``eval()`` calls it, so an instance keeps
    PyTorch's meaning while the class gets the issue's ``gpt2probe.SAE.train(probe, ...)``.
    The overloads of ``__get__`` give type checkers both signatures: on the class, that of
    ``trainer`` (:func:`train`) without its first parameter, returning the class's coder; on
    an instance, ``nn.Module.train``'s, returning the coder. Made by :func:`train_method`.
    """

    def __init__(self, trainer: Callable[Concatenate[type[Any], P], Any], mode_switch: Callable[..., Any]) -> None:
        self.trainer = trainer
        self.mode_switch = mode_switch

    @overload
    def __get__(self, obj: None, cls: type[Coder]) -> Callable[P, Coder]: ...

    @overload
    def __get__(self, obj: Coder, cls: type[Coder] | None = None) -> ModeSwitch[Coder]: ...

    def __get__(self, obj: torch.nn.Module | None, cls: type | None = None) -> Callable[..., Any]:
        if obj is None:
            return types.MethodType(self.trainer, cls)
        return self.mode_switch.__get__(obj, cls)


def train_method(trainer: Callable[Concatenate[type[Any], P], Any]
                 ) -> Callable[[Callable[..., Any]], TrainMethod[P]]:
    """Decorates a coder class's ``train(self, mode=True)`` so that ``Coder.train(...)`` is ``trainer(Coder, ...)``.

    A decorator rather than ``train = TrainMethod(...)``: type checkers take an undecorated
    assignment's type from ``nn.Module.train``'s declaration and would never see the trainer's
    signature, whereas a decorated ``def`` declares its own.
    """
    def wrap(mode_switch: Callable[..., Any]) -> TrainMethod[P]:
        return TrainMethod(trainer, mode_switch)

    return wrap
