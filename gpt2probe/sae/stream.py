"""Activations of a model over a corpus, chunk by chunk, for training (the harvest's corpus and packing).

:class:`CorpusActivations` reads the corpus as blocks of documents
(:func:`gpt2probe.harvest.corpus.blocks`), packs each block into windows of ``seq_len``
tokens (:func:`~gpt2probe.harvest.corpus.pack`, documents joined by ``<|endoftext|>``,
shuffled within the block by ``seed + epoch``), runs the model's body on
``windows_per_pass`` windows at a time with hooks on only the hooks needed, stops the pass
after the last of them (nothing later is computed: no unembedding), and yields the valid
tokens' activations as rows ``[tokens, width]`` (a transcoder's input and target side by
side). It repeats the corpus epoch after epoch until the trainer stops asking, and its
position (epoch, block, window) is saved in checkpoints. Under ``torchrun`` every process
runs the model on its share of each pass's windows and the rows are gathered, so every
process yields the same chunks (:mod:`.distributed`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from transformers import GPT2LMHeadModel, PreTrainedTokenizerBase

from .. import names as N
from .. import validate
from ..cache import ActivationCache
from ..errors import InvalidArgumentError
from ..harvest.corpus import Corpus, blocks, pack
from ..model.config import ProbeConfig
from ..tokens import Inputs
from . import distributed
from .buffer import check_rows
from .config import stream_width


@runtime_checkable
class TrainingProbe(Protocol):
    """What training an SAE or transcoder on a corpus needs of a probe: :class:`gpt2probe.GPT2Probe` is one.

    A protocol rather than an import: ``probe.py`` imports :mod:`gpt2probe.sae` (for
    ``probe.saes``), so importing ``GPT2Probe`` here would close an import cycle.
    """

    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerBase

    @property
    def cfg(self) -> ProbeConfig: ...

    @property
    def hook_names(self) -> list[str]: ...

    def run_until(self, inputs: Inputs, stop_at: str, names: N.NameSelection = None) -> ActivationCache: ...


def as_corpus(texts_or_corpus: Corpus | str | Sequence[str]) -> Corpus:
    """A :class:`Corpus` from a corpus, or a list of texts (one document each)."""
    if isinstance(texts_or_corpus, Corpus):
        return texts_or_corpus
    if isinstance(texts_or_corpus, str):
        raise InvalidArgumentError("give a list of texts (one per document) or a gpt2probe.harvest.Corpus "
                                   "(for files: Corpus(paths=[...])), not one string")
    texts = list(texts_or_corpus)
    if not texts:
        raise InvalidArgumentError("no texts given (an empty list): give at least one document")  # train and evaluate
    return Corpus(texts=texts)


class CorpusActivations:
    """Rows of ``hooks``' activations (concatenated along the last axis) over ``corpus``, epoch after epoch."""

    resumable = True

    def __init__(self, probe: TrainingProbe, corpus: Corpus, hooks: Sequence[str], *, seq_len: int, windows_per_pass: int = 8,
                 seed: int = 0, block_chars: int = 1 << 16, epochs: int | None = None) -> None:
        cfg = probe.cfg
        # bool is an int: seq_len=True would read as 1 token, seed=True as seed 1.
        validate.integer("seq_len", seq_len)
        validate.integer("windows_per_pass", windows_per_pass, minimum=1)
        validate.integer("seed", seed)
        validate.integer("block_chars", block_chars, minimum=1)
        if epochs is not None:
            validate.integer("epochs", epochs, minimum=1)
        if not 1 <= seq_len <= cfg.n_ctx:
            raise InvalidArgumentError(f"seq_len must be an integer in [1, {cfg.n_ctx}] (the model's context), got {seq_len!r}")
        valid = set(probe.hook_names)
        for hook in hooks:
            if hook not in valid:
                raise InvalidArgumentError(f"{hook!r} is not a hook of {cfg.model_name}")
        eos = probe.tokenizer.eos_token_id
        # None, a tokenizer's string or list, or a bool (an int to Python: True would be token 1): not one token id
        if isinstance(eos, bool) or not isinstance(eos, int):
            raise InvalidArgumentError(f"the tokenizer has no end-of-text token id to separate documents "
                                       f"(its eos_token_id is {eos!r}; valid: one integer token id, such as "
                                       f"GPT-2's 50256 for <|endoftext|>)")
        self.probe, self.corpus, self.hooks = probe, corpus, list(hooks)
        self.seq_len, self.windows_per_pass, self.seed, self.block_chars = seq_len, windows_per_pass, seed, block_chars
        self.epochs, self.eos = epochs, int(eos)
        order = {n: i for i, n in enumerate(probe.hook_names)}
        self.last = max(self.hooks, key=order.__getitem__)
        widths = [width for width in (stream_width(h, cfg) for h in self.hooks) if width is not None]
        if len(widths) != len(self.hooks):
            raise InvalidArgumentError(f"{self.hooks} are not all [batch, pos, width] streams; train on the residual "
                                       "stream, attention and MLP outputs, LayerNorm outputs or MLP neurons")
        self.width = sum(widths)
        self.position = {"epoch": 0, "block": 0, "window": 0}

    def count_tokens(self) -> int:
        """The corpus's valid tokens in one epoch (tokenises everything once; runs no model)."""
        total = 0
        for block in blocks(self.corpus, self.block_chars):
            total += int(pack(block, self.probe.tokenizer, seq_len=self.seq_len, eos=self.eos).valid.sum())
        return total

    def _run(self, tokens: Tensor) -> list[Tensor]:
        cache = self.probe.run_until(tokens, self.last, names=self.hooks)
        return [cache[h] for h in self.hooks]

    def chunks(self) -> Iterator[Tensor]:
        pos, world = self.position, distributed.current()
        while self.epochs is None or pos["epoch"] < self.epochs:
            seed = self.seed * 1_000_003 + pos["epoch"]
            for block in blocks(self.corpus, self.block_chars):
                if block.index < pos["block"]:
                    continue
                packed = pack(block, self.probe.tokenizer, seq_len=self.seq_len, eos=self.eos, seed=seed)
                for w in range(pos["window"], packed.n_windows, self.windows_per_pass):
                    sl = slice(w, min(w + self.windows_per_pass, packed.n_windows))
                    # Under torchrun each process runs its share of the windows; all get every row, in order.
                    share = range(sl.start, sl.stop)[world.share(sl.stop - sl.start)]
                    rows = torch.empty(0, self.width)
                    if len(share):
                        mine = slice(share.start, share.stop)
                        acts = torch.cat(self._run(packed.tokens[mine]), dim=-1)
                        keep = torch.arange(self.seq_len)[None, :] < packed.valid[mine][:, None]
                        rows = acts[keep.to(acts.device)].float().cpu()
                    rows = world.gather_rows(rows)
                    if sl.stop == packed.n_windows:
                        pos.update(block=block.index + 1, window=0)
                    else:
                        pos.update(window=sl.stop)
                    yield check_rows(rows, rows.shape[-1], f"the activations of {' and '.join(self.hooks)}")
            pos.update(epoch=pos["epoch"] + 1, block=0, window=0)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = {k: int(state[k]) for k in ("epoch", "block", "window")}
