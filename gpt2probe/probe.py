"""The probe: one GPT-2 model, its tokenizer, and every way to look inside a forward pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import overload

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import GPT2LMHeadModel, PreTrainedTokenizerBase

from . import generation, validate
from . import names as N
from .cache import ActivationCache
from .errors import HookNameError, InvalidArgumentError, InvalidTypeError, ShapeError, UnsupportedError
from .model import decoding, modules
from .model.config import ProbeConfig
from .model.hooks import HookFn, HookRegistry, hook_pairs
from .model.weights import Weights
from .tokens import (
    Inputs,
    Tokens,
    check_text,
    check_tokens,
    decode,
    from_tensor,
    id_list,
    position_ids,
    required_special_id,
    tokenize,
)


class _StopForward(Exception):
    """Raised by :meth:`GPT2Probe.run_until`'s last hook function and caught by that method: the rest of the pass is not needed."""


def _weight(name: str) -> property:
    return property(lambda self: getattr(self.weights, name), doc=f"``{name}`` (see :class:`gpt2probe.model.weights.Weights`).")


class GPT2Probe:
    """A Hugging Face ``GPT2LMHeadModel`` with TransformerLens-style hooks, captures and weights.

    Build one with :func:`gpt2probe.load`. The model is used as it is: hooks are PyTorch
    hooks on its own modules, attached only while a call or ``with`` block needs them.
    """

    def __init__(self, model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerBase, *, model_name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        param = next(model.parameters())
        self._cfg = ProbeConfig.from_hf(model.config, model_name=model_name, device=param.device, dtype=param.dtype)
        self.weights = Weights(model)
        self.registry = HookRegistry.for_model(model)  # shared with every other probe of this model

    @property
    def cfg(self) -> ProbeConfig:
        """The model's sizes, and the device and dtype its parameters have now (after any ``model.to(...)``)."""
        param = next(self.model.parameters())
        if (param.device, param.dtype) != (self._cfg.device, self._cfg.dtype):
            self._cfg = dataclasses.replace(self._cfg, device=param.device, dtype=param.dtype)
        return self._cfg

    def __repr__(self) -> str:
        c = self.cfg
        return f"GPT2Probe({c.model_name!r}, n_layers={c.n_layers}, d_model={c.d_model}, n_heads={c.n_heads}, device={c.device})"

    W_E = _weight("W_E")
    W_pos = _weight("W_pos")
    W_U = _weight("W_U")
    b_U = _weight("b_U")
    W_Q = _weight("W_Q")
    W_K = _weight("W_K")
    W_V = _weight("W_V")
    W_O = _weight("W_O")
    b_Q = _weight("b_Q")
    b_K = _weight("b_K")
    b_V = _weight("b_V")
    b_O = _weight("b_O")
    W_in = _weight("W_in")
    b_in = _weight("b_in")
    W_out = _weight("W_out")
    b_out = _weight("b_out")

    @property
    def hook_names(self) -> list[str]:
        """Every valid hook name, in the order the forward pass reaches them (spliced SAEs' stages included)."""
        return list(self.registry.current_names)

    # -- tokens --------------------------------------------------------------------
    def to_tokens(self, text: str | Sequence[str], *, prepend_bos: bool = False) -> Tokens:
        """Token ids and attention mask; a list of prompts is left-padded with ``<|endoftext|>``."""
        return tokenize(self.tokenizer, text, n_ctx=self.cfg.n_ctx, d_vocab=self.cfg.d_vocab,
                        prepend_bos=validate.boolean("prepend_bos", prepend_bos))

    def to_str_tokens(self, text: str | Tensor | Sequence[int], *, prepend_bos: bool = False) -> list[str]:
        """The token strings of one prompt (``""`` gives ``[]``), or of given ids (checked against the vocabulary)."""
        if isinstance(text, str):
            ids = self.tokenizer(check_text(text, "the text"), add_special_tokens=False)["input_ids"]
            if validate.boolean("prepend_bos", prepend_bos):
                ids = [required_special_id(self.tokenizer, "bos", "prepend_bos=True"), *ids]
        else:
            if validate.boolean("prepend_bos", prepend_bos):
                raise InvalidArgumentError("prepend_bos=True applies to text; given token ids are decoded as they are")
            ids = self._id_list(text)
        return [decode(self.tokenizer, [i]) for i in ids]

    @overload
    def to_string(self, ids: Sequence[int]) -> str: ...
    @overload
    def to_string(self, ids: Int[Tensor, "... pos"]) -> str | list[str]: ...  # which one depends on ids.ndim
    def to_string(self, ids: Int[Tensor, "... pos"] | Sequence[int]) -> str | list[str]:
        """Decode ids back to text (a list of strings for a ``[batch, pos]`` tensor); ids outside the vocabulary are refused."""
        if isinstance(ids, Tensor) and ids.ndim == 2:
            return [decode(self.tokenizer, self._id_list(row, f"token ids of row {i}")) for i, row in enumerate(ids)]
        return decode(self.tokenizer, self._id_list(ids))

    def _id_list(self, ids: object, what: str = "token ids") -> list[int]:
        return id_list(ids, d_vocab=self.cfg.d_vocab, n_tokenizer=len(self.tokenizer), what=what)

    def to_single_token(self, token: str | int) -> int:
        """The id of a string that is exactly one token (e.g. ``" Paris"``), or an id checked against the vocabulary."""
        from .errors import PromptError

        if isinstance(token, bool) or not isinstance(token, (int, str)):
            raise PromptError(f"a token is a string or an integer id, got {type(token).__name__} {token!r}")
        if isinstance(token, int):
            if not 0 <= token < self.cfg.d_vocab:
                raise PromptError(f"token id {token} is outside the vocabulary [0, {self.cfg.d_vocab})")
            return token
        ids = self.tokenizer(check_text(token, "the token"), add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise PromptError(f"{token!r} is {len(ids)} tokens ({self.to_str_tokens(token)}), not one")
        return ids[0]

    @staticmethod
    def position_ids(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
        """Position ids that make a left-padded batch equal to separate runs."""
        return position_ids(attention_mask)

    def as_tokens(self, inputs: Inputs, *, prepend_bos: bool = False) -> Tokens:
        """Accept a prompt, a list of prompts, token ids, or :class:`Tokens`.

        ``prepend_bos=True`` applies to text: token ids are run exactly as given, so it is
        refused with them rather than ignored (put the ``<|endoftext|>`` id first yourself).
        """
        validate.boolean("prepend_bos", prepend_bos)
        if isinstance(inputs, Tokens | Tensor):
            if prepend_bos:
                raise InvalidArgumentError(
                    "prepend_bos=True applies to text, but the input is token ids, which run exactly as given: "
                    f"put the <|endoftext|> id ({self.tokenizer.bos_token_id}) first yourself, or pass text"
                )
            if isinstance(inputs, Tokens):
                return check_tokens(inputs, n_ctx=self.cfg.n_ctx, d_vocab=self.cfg.d_vocab)
            return from_tensor(inputs, n_ctx=self.cfg.n_ctx, d_vocab=self.cfg.d_vocab)
        return self.to_tokens(inputs, prepend_bos=prepend_bos)

    # -- running -------------------------------------------------------------------
    def _run(self, tokens: Tokens, *, grad: bool, unembed: bool = True) -> Tensor:
        validate.boolean("grad", grad)
        validate.boolean("unembed", unembed)
        tokens = tokens.to(self.cfg.device)
        body = self.model if unembed else modules.body(self.model)
        with self.registry.exclusive(), nullcontext() if grad else torch.no_grad():
            out = body(
                input_ids=tokens.ids,
                attention_mask=tokens.attention_mask,
                position_ids=tokens.position_ids,
                use_cache=False,
            )
        return out.logits if unembed else out.last_hidden_state

    def forward(self, inputs: Inputs, *, prepend_bos: bool = False, grad: bool = False) -> Float[Tensor, "batch pos d_vocab"]:
        """The model's logits, with whatever hooks are active."""
        return self._run(self.as_tokens(inputs, prepend_bos=prepend_bos), grad=grad)

    __call__ = forward

    def run_with_cache(
        self,
        inputs: Inputs,
        names: N.NameSelection = None,
        *,
        names_filter: N.NameSelection = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        prepend_bos: bool = False,
        grad: bool = False,
        unembed: bool = True,
    ) -> tuple[Tensor, ActivationCache]:
        """Run once and capture the activations named by ``names``.

        Args:
            names: ``None`` (everything), a list of names, a glob such as
                ``"blocks.*.hook_resid_post"``, a regex, or a predicate on names. Only
                what is selected is computed and stored.
            names_filter: the same as ``names``, under TransformerLens's name (give one
                of the two).
            device, dtype: move each captured tensor there as it is produced (e.g. to
                ``"cpu"`` to keep GPU memory free); detached unless ``grad=True``.
            unembed: ``False`` skips ``lm_head`` and returns the final (``ln_f``-applied)
                hidden states instead of logits.

        Returns:
            ``(logits, cache)``.
        """
        if names_filter is not None:
            if names is not None:
                raise HookNameError("run_with_cache got both names= and names_filter=: they are the same option, give one")
            names = names_filter
        device, dtype = validate.device("device", device), validate.float_dtype("dtype", dtype)
        tokens = self.as_tokens(inputs, prepend_bos=prepend_bos)
        selected = N.resolve(names, self.registry.current_names)
        store: dict[str, Tensor] = {}

        def capture(tensor: Tensor, hook) -> None:
            kept = tensor if grad else tensor.detach()
            store[hook.name] = kept.to(device=device or kept.device, dtype=dtype or kept.dtype)

        with self.registry.using((name, capture) for name in selected):
            out = self._run(tokens, grad=grad, unembed=unembed)
        ordered = {name: store[name] for name in selected if name in store}
        return out, ActivationCache(ordered, n_layers=self.cfg.n_layers, model_name=self.cfg.model_name,
                                    tokens=tokens.to("cpu"), weights=self.weights)

    def run_until(
        self,
        inputs: Inputs,
        stop_at: str,
        names: N.NameSelection = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        prepend_bos: bool = False,
        grad: bool = False,
    ) -> ActivationCache:
        """Run the model until hook ``stop_at`` and stop there: nothing after it is computed.

        Every hook function on ``stop_at`` (those attached with :meth:`hooks`, and the capture)
        runs, then the pass ends; later blocks, the final norm and the unembedding never run.
        Harvests and SAE training read one or two early hooks this way at a fraction of a
        full pass's cost. Hooks are removed on return, exceptions included.

        Args:
            inputs: a prompt, a list of prompts (left-padded), token ids or :class:`Tokens`.
            stop_at: the hook name after which the pass stops.
            names: what to capture, selected as in :meth:`run_with_cache` (a list, glob,
                regex or predicate); ``None`` captures ``stop_at`` only, ``[]`` nothing (for
                hook functions that do their own work). Names the pass reaches after
                ``stop_at`` are refused, since they are never computed.
            device, dtype, grad: as in :meth:`run_with_cache`.

        Returns:
            An :class:`ActivationCache` of the captured names.

        Raises:
            HookNameError: ``stop_at`` is not a hook name, or ``names`` selects hooks after it.

        Example:
            >>> cache = probe.run_until("The cat sat", "blocks.1.hook_resid_post")  # doctest: +SKIP
            >>> cache["resid_post", 1].shape  # doctest: +SKIP
        """
        if not isinstance(stop_at, str):
            raise HookNameError(f"stop_at is a hook name such as 'blocks.0.hook_resid_post', got {type(stop_at).__name__} {stop_at!r}")
        self.registry.check(stop_at)
        device, dtype = validate.device("device", device), validate.float_dtype("dtype", dtype)
        tokens = self.as_tokens(inputs, prepend_bos=prepend_bos)
        order = {name: i for i, name in enumerate(self.registry.current_names)}
        selected = [stop_at] if names is None else N.resolve(names, list(order))
        late = [name for name in selected if order[name] > order[stop_at]]
        if late:
            raise HookNameError(
                f"{late[:3]}{' ...' if len(late) > 3 else ''} come after stop_at={stop_at!r} in the forward pass, so the "
                "pass never computes them: capture them with run_with_cache, or stop at the last of them")
        store: dict[str, Tensor] = {}

        def capture(tensor: Tensor, hook) -> None:
            kept = tensor if grad else tensor.detach()
            store[hook.name] = kept.to(device=device or kept.device, dtype=dtype or kept.dtype)

        def stop(tensor: Tensor, hook) -> None:
            raise _StopForward

        with self.registry.using([*((name, capture) for name in selected), (stop_at, stop)]):
            try:
                self._run(tokens, grad=grad, unembed=False)
            except _StopForward:
                pass
            else:  # every pass reaches every hook name: a pass that does not is a broken seam, not a result
                raise UnsupportedError(f"the forward pass ended without reaching {stop_at!r}")
        ordered = {name: store[name] for name in selected if name in store}
        return ActivationCache(ordered, n_layers=self.cfg.n_layers, model_name=self.cfg.model_name,
                               tokens=tokens.to("cpu"), weights=self.weights)

    def decode_step(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch key_pos"],
        position_ids: Int[Tensor, "batch pos"],
        kv_cache: decoding.KVCache | None = None,
        *,
        grad: bool = False,
    ) -> tuple[Float[Tensor, "batch d_vocab"], decoding.KVCache]:
        """One forward pass that extends a KV cache, with whatever hooks are active: generation's step.

        The first call (``kv_cache=None``) runs a whole (left-padded) prompt; each later call
        runs only the new tokens, attending to every earlier position through the cache the
        previous call returned. Hooks see only the positions this call runs (``pos``).

        Args:
            input_ids: the tokens to run now, ``[batch, pos]``.
            attention_mask: 1 for real tokens, 0 for padding, over every position so far
                (the cache's and these): ``[batch, key_pos]`` with ``key_pos = cached + pos``.
            position_ids: the new tokens' positions, ``[batch, pos]`` (see :meth:`position_ids`).
            kv_cache: what the previous call returned, or ``None`` to start.

        Returns:
            ``(logits, kv_cache)``: the last position's logits ``[batch, d_vocab]`` and the
            cache to pass to the next call.
        """
        validate.boolean("grad", grad)
        for what, value in (("input_ids", input_ids), ("attention_mask", attention_mask), ("position_ids", position_ids)):
            if not isinstance(value, Tensor) or value.ndim != 2 or value.is_floating_point():
                got = f"shape {tuple(value.shape)}, {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
                raise ShapeError(f"{what} must be an integer tensor [batch, pos], got {got}")
        if position_ids.shape != input_ids.shape or attention_mask.shape[0] != input_ids.shape[0]:
            raise ShapeError(f"input_ids {tuple(input_ids.shape)}, position_ids {tuple(position_ids.shape)} and "
                             f"attention_mask {tuple(attention_mask.shape)} must share the batch (and pos, for the ids)")
        cached = 0 if kv_cache is None else decoding.cached_length(kv_cache)
        if attention_mask.shape[1] != cached + input_ids.shape[1]:
            raise ShapeError(f"attention_mask covers {attention_mask.shape[1]} positions, but the cache holds {cached} "
                             f"and input_ids adds {input_ids.shape[1]}: give the mask of every position so far")
        if kv_cache is None:
            kv_cache = decoding.new_kv_cache(self.model)
        with self.registry.exclusive(), nullcontext() if grad else torch.no_grad():
            return decoding.step(self.model, input_ids, attention_mask, position_ids, kv_cache)

    def next_token(self, prompt: Inputs, k: int = 10, *, prepend_bos: bool = False) -> generation.NextTokens:
        """The ``k`` most likely next tokens after a prompt or each of a batch (with active hooks).

        The same as :func:`gpt2probe.generation.next_token` with this probe.
        """
        return generation.next_token(self, prompt, k, prepend_bos=prepend_bos)

    def generate(
        self,
        prompt_or_prompts: Inputs,
        max_new_tokens: int,
        *,
        temperature: generation.Number = 1.0,
        top_k: int | None = None,
        top_p: generation.Number | None = None,
        greedy: bool = False,
        seed: generation.Seed | None = None,
        stop_at_eos: bool = True,
        eos_token_id: int | Sequence[int] | None = None,
        hooks: generation.Hooks | None = None,
        capture: N.NameSelection = None,
        prepend_bos: bool = False,
    ) -> generation.Generation:
        """Continue each prompt by up to ``max_new_tokens`` tokens, as TransformerLens's ``model.generate``.

        The same as :func:`gpt2probe.generation.generate` with this probe (see it for every option).
        """
        return generation.generate(
            self, prompt_or_prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            greedy=greedy, seed=seed, stop_at_eos=stop_at_eos, eos_token_id=eos_token_id, hooks=hooks,
            capture=capture, prepend_bos=prepend_bos,
        )

    def test_prompt(self, prompt: str, answer: str, *, k: int = 10, prepend_bos: bool = False, **kwargs):
        """Rank, logit and probability of each answer token after ``prompt``, and the top ``k``: printed and returned.

        TransformerLens's ``utils.test_prompt``; see :func:`gpt2probe.prompt_test.prompt_test`.
        """
        from .prompt_test import prompt_test

        return prompt_test(self, prompt, answer, k=k, prepend_bos=prepend_bos, **kwargs)

    def intervene_features(self, inputs: Inputs, transcoders, interventions, *, freeze_attention: bool = False,
                           prepend_bos: bool = False) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits with transcoder features set to values, ``{(layer, position, feature): value}``.

        See :func:`gpt2probe.graphs.intervene_features`: the real model runs, each edited MLP
        output shifted by ``(value - activation) * W_dec[feature]``; ``freeze_attention=True``
        holds attention patterns and LayerNorm scales at the unedited prompt's values.
        """
        from .graphs.intervene import intervene_features

        return intervene_features(self, inputs, transcoders, interventions, freeze_attention=freeze_attention,
                                  prepend_bos=prepend_bos)

    def to_transformer_lens(self):
        """A TransformerLens ``TransformerBridge`` sharing this probe's weights (no copy).

        Needs the ``transformer-lens`` extra. See :func:`gpt2probe.interop.to_transformer_lens`:
        the bridge runs on a twin module tree over the same parameter tensors, so both keep working.
        """
        from .interop import to_transformer_lens

        return to_transformer_lens(self)

    @contextmanager
    def hooks(self, fwd_hooks: Mapping[str, HookFn] | Iterable[tuple[str, HookFn]]) -> Iterator[GPT2Probe]:
        """Attach hook functions for the duration of a ``with`` block.

        ``fwd_hooks`` maps names to ``fn(activation, hook)`` (or is a list of ``(name, fn)``
        pairs, to put several functions on one name). A function may return a tensor of
        the same shape to replace the activation. Every name is checked before anything is
        attached, and everything is removed on exit, exceptions included.
        """
        with self.registry.using(hook_pairs(fwd_hooks)):
            yield self

    def run_with_hooks(
        self,
        inputs: Inputs,
        fwd_hooks: Mapping[str, HookFn] | Iterable[tuple[str, HookFn]] = (),
        *,
        prepend_bos: bool = False,
        grad: bool = False,
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """One forward pass with ``fwd_hooks`` attached (see :meth:`hooks`); returns the logits."""
        tokens = self.as_tokens(inputs, prepend_bos=prepend_bos)
        with self.hooks(fwd_hooks):
            return self._run(tokens, grad=grad)

    # -- sparse autoencoders ---------------------------------------------------------
    @contextmanager
    def saes(self, saes: Sequence, *, use_error_term: bool = False) -> Iterator[GPT2Probe]:
        """Splice SAEs and transcoders into every forward pass of the ``with`` block.

        Inside, each SAE's stages are hook names (``"<hook>.hook_sae_acts_post"``...), so
        :meth:`hooks`, :meth:`run_with_cache`, ablation and steering reach its features.
        ``use_error_term=True`` adds back what the SAE misses, so the model's output is
        exactly what it was unless a hook edits a stage. Everything is removed on exit,
        exceptions included. See :mod:`gpt2probe.sae.splice`.

        Raises:
            SAEMismatchError: an SAE whose hook, width, dtype or device does not fit the model.

        Example:
            >>> with probe.saes([sae]):  # doctest: +SKIP
            ...     logits = probe.run_with_hooks(prompt, {f"{sae.cfg.hook_name}.hook_sae_acts_post": ablate})
        """
        from .sae.splice import spliced

        with spliced(self.registry, self.cfg, saes, use_error_term=use_error_term):
            yield self

    def run_with_saes(
        self, inputs: Inputs, saes: Sequence = (), *, use_error_term: bool = False, prepend_bos: bool = False,
        grad: bool = False,
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """The logits with ``saes`` spliced in (SAELens's ``HookedSAETransformer.run_with_saes``)."""
        tokens = self.as_tokens(inputs, prepend_bos=prepend_bos)
        with self.saes(saes, use_error_term=use_error_term):
            return self._run(tokens, grad=grad)

    def run_with_cache_with_saes(
        self, inputs: Inputs, saes: Sequence = (), names: N.NameSelection = None, *, use_error_term: bool = False,
        **cache_options,
    ) -> tuple[Tensor, ActivationCache]:
        """:meth:`run_with_cache` with ``saes`` spliced in; the cache can hold their stages (``"<hook>.hook_sae_acts_post"``...).

        ``names`` selects from the model's names and the SAEs' stage names (``None``: all of them).
        """
        with self.saes(saes, use_error_term=use_error_term):
            return self.run_with_cache(inputs, names, **cache_options)

def require_probe(value: object, what: str = "probe") -> GPT2Probe:
    """``value`` if it is a :class:`GPT2Probe`; otherwise an error saying how to make one (not an AttributeError later)."""
    if not isinstance(value, GPT2Probe):
        hint = " (a model object: wrap it with gpt2probe.load(model))" if isinstance(value, torch.nn.Module) else ""
        raise InvalidTypeError(f"{what} must be a GPT2Probe from gpt2probe.load(...), got {type(value).__name__}{hint}")
    return value
