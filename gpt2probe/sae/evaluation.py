"""How good an SAE or transcoder is on some text: reconstruction, sparsity, and the model's loss with it spliced in.

For every packed window of the text (the harvest's packing: documents joined by
``<|endoftext|>``) the model runs three times:

- clean;
- spliced: the hook the coder writes (``cfg.write_hook``) replaced by its output (an SAE's
  reconstruction of that hook; a transcoder's prediction of ``hook_mlp_out`` from
  ``ln2.hook_normalized`` in the same pass);
- zero-ablated: that hook replaced by zeros.

The splice is a hook of this module's own (:func:`splice`) on the probe's hook registry.
Names follow SAELens's evals where they exist (SAELens: ``ce_loss_with_sae`` =
``ce_loss_spliced``, ``ce_loss_without_sae`` = ``ce_loss_clean``, ``ce_loss_with_ablation`` =
``ce_loss_zero``, ``ce_loss_score`` = ``ce_loss_recovered``, ``kl_div_with_sae`` = ``kl``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..errors import InvalidArgumentError
from ..validate import finite_number, integer
from .config import check_fits, check_placed

METRICS = ("l0", "explained_variance", "mse", "ce_loss_clean", "ce_loss_spliced", "ce_loss_zero",
           "ce_loss_recovered", "kl", "dead_fraction", "dense_fraction")


@dataclass(frozen=True)
class Evaluation:
    """One coder's figures on one text.

    Attributes:
        l0: mean number of active features per token.
        explained_variance: ``1 - sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`` over all tokens
            (pooled, as SAELens's ``explained_variance``; ``y`` the activation written).
        mse: mean squared error per token and dimension.
        ce_loss_clean, ce_loss_spliced, ce_loss_zero: next-token cross-entropy (nats per token)
            of the clean, spliced and zero-ablated model.
        ce_loss_recovered: ``(zero - spliced) / (zero - clean)``: 1 is as good as the model, 0 as
            bad as deleting the hook (SAELens's ``ce_loss_score``).
        kl: mean ``KL(clean || spliced)`` of the next-token distributions (nats).
        dead_fraction: features never active on the text.
        dense_fraction: features active on more than ``dense_threshold`` of the tokens.
        n_tokens: tokens the reconstruction figures average over (predictions: one fewer per window).
    """

    hook_name: str
    l0: float
    explained_variance: float
    mse: float
    ce_loss_clean: float
    ce_loss_spliced: float
    ce_loss_zero: float
    ce_loss_recovered: float
    kl: float
    dead_fraction: float
    dense_fraction: float
    dense_threshold: float
    n_tokens: int
    n_predictions: int

    def to_dict(self) -> dict:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        out = [(name, f"{getattr(self, name):.4f}") for name in METRICS]
        out.insert(METRICS.index("ce_loss_spliced") + 1,
                   ("ce_loss_spliced - clean", f"{self.ce_loss_spliced - self.ce_loss_clean:+.4f}"))
        return [*out, ("tokens", str(self.n_tokens))]

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join([f"evaluation of {self.hook_name}", *(f"  {k:<{width}}  {v:>10}" for k, v in rows)])

    def _repr_html_(self) -> str:
        from ..display.tables import table

        return table(f"evaluation of {self.hook_name}", ["metric", "value"], [list(r) for r in self.rows()])


@contextmanager
def splice(probe, coder, mode: str):
    """Hooks that replace ``coder.cfg.write_hook`` by the coder's output (``"spliced"``) or zeros (``"zero"``).

    Yields a dict that receives, per pass, ``"x"`` (the coder's input), ``"y"`` (the hook's
    own value) and ``"recons"``. Hooks are removed on exit, exceptions included.
    """
    c = coder.cfg
    seen: dict[str, Tensor] = {}

    def read(tensor: Tensor, hook) -> None:
        seen["x"] = tensor

    def write(tensor: Tensor, hook) -> Tensor | None:
        seen["y"] = tensor
        x = tensor if not c.is_transcoder else seen["x"]
        with torch.no_grad():
            seen["recons"] = coder(x)
        if mode == "spliced":
            return seen["recons"]
        if mode == "zero":
            return torch.zeros_like(tensor)
        return None

    pairs = [(c.hook_name, read)] if c.is_transcoder else []
    with probe.hooks([*pairs, (c.write_hook, write)]):
        yield seen


def _token_losses(logits: Tensor, tokens: Tensor) -> Tensor:
    """``-log p(next token)`` at every position but the last, ``[batch, pos - 1]``, in float64."""
    logp = logits[:, :-1].double().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None].to(logits.device)).squeeze(-1)


@torch.no_grad()
def evaluate(coder, probe, texts, *, seq_len: int | None = None, batch_size: int = 8, dense_threshold: float = 0.1,
             max_tokens: int | None = None) -> Evaluation:
    """Evaluate ``coder`` on ``texts`` (a list of documents or a :class:`gpt2probe.harvest.Corpus`).

    Args:
        coder: an :class:`~gpt2probe.SAE` or :class:`~gpt2probe.Transcoder` that fits ``probe``.
        probe: the model it was trained on.
        texts: documents, packed into windows of ``seq_len`` tokens (default: the context, at most 128).
        batch_size: windows per forward pass.
        dense_threshold: a feature active on more than this fraction of tokens counts as dense.
        max_tokens: stop after about this many tokens.

    Returns:
        An :class:`Evaluation`; ``print(result)`` shows a table.

    Example:
        >>> print(sae.evaluate(probe, held_out_texts))  # doctest: +SKIP
    """
    from ..harvest.corpus import blocks, pack
    from .stream import as_corpus

    check_fits(coder.cfg, probe.cfg)
    check_placed(coder, coder.cfg, probe.cfg)
    if not 0 < finite_number("dense_threshold", dense_threshold) < 1:
        raise InvalidArgumentError(f"dense_threshold must be in (0, 1), got {dense_threshold!r}")
    integer("batch_size", batch_size, minimum=1)
    # None means the default; 0 is refused like any other seq_len below 2 (``seq_len or ...`` took it as the default)
    seq_len = integer("seq_len", min(probe.cfg.n_ctx, 128) if seq_len is None else seq_len, minimum=2,
                      maximum=probe.cfg.n_ctx)
    if max_tokens is not None:  # a limit of 0 or less used to evaluate one batch of windows anyway
        integer("max_tokens", max_tokens, minimum=1)
    corpus = as_corpus(texts)
    eos = probe.tokenizer.eos_token_id
    c = coder.cfg
    d_sae, d_out = c.d_sae, c.d_out
    sums = {"ce_clean": 0.0, "ce_spliced": 0.0, "ce_zero": 0.0, "kl": 0.0, "sse": 0.0, "l0": 0.0, "sq": 0.0}
    y_sum = torch.zeros(d_out, dtype=torch.float64)
    fires = torch.zeros(d_sae, dtype=torch.int64)
    n_tok = n_pred = 0
    for block in blocks(corpus):
        packed = pack(block, probe.tokenizer, seq_len=seq_len, eos=int(eos))
        for w in range(0, packed.n_windows, batch_size):
            tokens, valid = packed.tokens[w:w + batch_size], packed.valid[w:w + batch_size]
            with splice(probe, coder, "clean") as seen:
                clean = probe.run_with_hooks(tokens)
            with splice(probe, coder, "spliced"):
                spliced = probe.run_with_hooks(tokens)
            with splice(probe, coder, "zero"):
                zero = probe.run_with_hooks(tokens)
            keep = torch.arange(seq_len)[None, :] < valid[:, None]
            pred = keep[:, 1:]  # position p predicts p + 1: both real tokens
            for name, logits in (("ce_clean", clean), ("ce_spliced", spliced), ("ce_zero", zero)):
                sums[name] += float(_token_losses(logits, tokens)[pred.to(logits.device)].sum())
            logp, logq = clean[:, :-1].double().log_softmax(-1), spliced[:, :-1].double().log_softmax(-1)
            kl = (logp.exp() * (logp - logq)).sum(-1)
            sums["kl"] += float(kl[pred.to(kl.device)].sum())
            mask = keep.to(seen["y"].device)
            y, recons = seen["y"][mask].double().cpu(), seen["recons"][mask].double().cpu()
            x = seen["x"][mask] if c.is_transcoder else seen["y"][mask]
            acts = coder.encode(x)
            fires += (acts > 0).sum(0).cpu()
            sums["l0"] += float((acts > 0).sum())
            sums["sse"] += float((y - recons).pow(2).sum())
            sums["sq"] += float(y.pow(2).sum())
            y_sum += y.sum(0)
            n_tok += int(mask.sum())
            n_pred += int(pred.sum())
            if max_tokens is not None and n_tok >= max_tokens:
                break
        if max_tokens is not None and n_tok >= max_tokens:
            break
    if n_pred == 0:
        raise InvalidArgumentError("the text is too short to evaluate: no window has two tokens")
    sst = sums["sq"] - float(y_sum.pow(2).sum()) / n_tok
    ce = {k: sums[k] / n_pred for k in ("ce_clean", "ce_spliced", "ce_zero")}
    denominator = ce["ce_zero"] - ce["ce_clean"]
    return Evaluation(
        hook_name=c.write_hook,
        l0=sums["l0"] / n_tok,
        explained_variance=1 - sums["sse"] / sst if sst > 0 else float("nan"),
        mse=sums["sse"] / (n_tok * d_out),
        ce_loss_clean=ce["ce_clean"], ce_loss_spliced=ce["ce_spliced"], ce_loss_zero=ce["ce_zero"],
        ce_loss_recovered=(ce["ce_zero"] - ce["ce_spliced"]) / denominator if denominator != 0 else float("nan"),
        kl=sums["kl"] / n_pred,
        dead_fraction=float((fires == 0).double().mean()),
        dense_fraction=float((fires > dense_threshold * n_tok).double().mean()),
        dense_threshold=dense_threshold, n_tokens=n_tok, n_predictions=n_pred,
    )

