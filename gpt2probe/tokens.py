"""Prompts to token ids, attention masks and the position ids that make padding invisible.

GPT-2 learned absolute position embeddings, so a left-padded prompt must be given
positions that skip the pads: its first real token is position 0, as in a run on its own.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from .errors import InvalidArgumentError, InvalidTypeError, PromptError, ShapeError

INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@dataclass(frozen=True)
class Tokens:
    """A left-padded batch: ids, the attention mask (1 = real token) and the prompts it came from."""

    ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    prompts: tuple[str, ...] | None = None

    @property
    def position_ids(self) -> Int[Tensor, "batch pos"]:
        return position_ids(self.attention_mask)

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        """Real tokens per prompt."""
        return self.attention_mask.sum(-1)

    @property
    def last_positions(self) -> Int[Tensor, " batch"]:
        """Index of each prompt's last real token (always ``pos - 1`` under left padding)."""
        return torch.full_like(self.lengths, self.ids.shape[1] - 1)

    def real_positions(self, index: int) -> slice:
        """The slice of padded positions that hold prompt ``index``'s real tokens."""
        n_pos = self.ids.shape[1]
        return slice(n_pos - int(self.lengths[index]), n_pos)

    def to(self, device: torch.device | str) -> Tokens:
        return Tokens(self.ids.to(device), self.attention_mask.to(device), self.prompts)


def position_ids(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """0, 1, 2... over each row's real tokens; pads get 0 (they are masked out anyway)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0) * attention_mask.long()


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: str | Sequence[str],
    *,
    n_ctx: int,
    d_vocab: int,
    prepend_bos: bool = False,
) -> Tokens:
    """Tokenize one prompt or a batch (left-padded), refusing empty and over-long prompts."""
    if not isinstance(texts, str | Sequence) or isinstance(texts, bytes):
        # a dict or a set would run its keys as prompts, in an order the caller did not choose
        raise InvalidTypeError(
            f"prompts must be a string or a list of strings (or token ids as a tensor, or Tokens), "
            f"got {type(texts).__name__}"
        )
    batch = [texts] if isinstance(texts, str) else list(texts)
    if not batch:
        raise PromptError("no prompts given: pass a string or a non-empty list of strings")
    for i, text in enumerate(batch):
        if not isinstance(text, str):
            raise PromptError(f"prompt {i} is {type(text).__name__}, not a string")
        check_text(text, "the prompt" if len(batch) == 1 else f"prompt {i}")
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in batch]
    if prepend_bos:
        bos = required_special_id(tokenizer, "bos", "prepend_bos=True")
        encoded = [[bos, *ids] for ids in encoded]
    for i, ids in enumerate(encoded):
        where = "the prompt" if len(batch) == 1 else f"prompt {i}"
        if not ids:
            raise PromptError(f"{where} is empty: it has no tokens to run (pass prepend_bos=True to start from <|endoftext|>)")
        if len(ids) > n_ctx:
            raise PromptError(
                f"{where} has {len(ids)} tokens but the model's context holds at most n_ctx={n_ctx}; shorten it"
            )
        if max(ids) >= d_vocab:
            raise PromptError(
                f"{where} has token id {max(ids)} but the model's vocabulary has only {d_vocab} tokens: "
                "this model needs its own tokenizer (pass token ids or load(..., tokenizer=...))"
            )
    return pad_left(encoded, pad_id=required_special_id(tokenizer, "pad", "padding a batch"), prompts=tuple(batch))


def special_id(tokenizer: PreTrainedTokenizerBase, which: str) -> int | None:
    """The id of the tokenizer's ``which`` special token (``"bos"``, ``"eos"``, ``"pad"``), or None if it has none.

    transformers types these ids as ``int | list[int] | str | ...`` (one ``__getattr__`` serves
    them all); a special token is one id, so anything else is refused.
    """
    value = getattr(tokenizer, f"{which}_token_id")
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise InvalidArgumentError(
        f"the tokenizer's {which}_token_id must be one integer, got {value!r}: set tokenizer.{which}_token"
    )


def decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """The text of one sequence of ids (transformers' ``decode`` is typed for batches too, ``str | list[str]``)."""
    text = tokenizer.decode(list(ids))
    if not isinstance(text, str):  # a flat list of ids decodes to one string in every tokenizer
        raise InvalidTypeError(f"the tokenizer decoded one sequence of ids to {type(text).__name__}, not a string")
    return text


def required_special_id(tokenizer: PreTrainedTokenizerBase, which: str, needed_for: str) -> int:
    """:func:`special_id`, where a missing token is an error (naming ``needed_for``) rather than a None among ids."""
    value = special_id(tokenizer, which)
    if value is None:
        raise InvalidArgumentError(
            f"{needed_for} needs the tokenizer's {which} token, but it has none: set tokenizer.{which}_token "
            "(GPT-2 uses <|endoftext|>)"
        )
    return value


def check_text(text: str, where: str) -> str:
    """Refuse text that is not Unicode (lone surrogates such as ``"\\ud800"``) before the tokenizer sees it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PromptError(
            f"{where} contains a lone surrogate {text[error.start]!r} at character {error.start}, which is not "
            "valid text (decoded with errors='surrogateescape', or half of a UTF-16 pair?)"
        ) from None
    return text


def check_tokens(tokens: Tokens, *, n_ctx: int, d_vocab: int) -> Tokens:
    """Check a :class:`Tokens` built by hand: matching shapes, a 0/1 left-padding mask, no empty row, ids in range."""
    ids, mask = tokens.ids, tokens.attention_mask
    for what, tensor in (("token ids", ids), ("the attention mask", mask)):
        if not isinstance(tensor, Tensor):
            raise InvalidTypeError(f"Tokens needs {what} as a torch.Tensor, got {type(tensor).__name__}")
        if tensor.device.type == "meta":
            raise PromptError(f"{what} are on the meta device (shapes only, no values): pass real tensors")
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise ShapeError(f"Tokens needs ids and attention_mask of one shape [batch, pos]; got {tuple(ids.shape)} "
                         f"and {tuple(mask.shape)}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise PromptError(f"the batch is empty (shape {tuple(ids.shape)}): there is nothing to run")
    if ids.dtype not in INTEGER_DTYPES or mask.dtype not in INTEGER_DTYPES:
        raise PromptError(f"token ids and attention mask must be integer tensors, got {ids.dtype} and {mask.dtype}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise PromptError("the attention mask must hold only 0 (pad) and 1 (real token)")
    empty = (mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise PromptError(f"prompt(s) {empty} have an all-zero attention mask: no real token to run")
    if mask.shape[1] > 1 and bool((mask.diff(dim=-1) < 0).any()):
        raise PromptError("the attention mask is not left padding (a pad after a real token)")
    if ids.shape[1] > n_ctx:
        raise PromptError(f"{ids.shape[1]} positions exceed the model's context of n_ctx={n_ctx}")
    real = ids[mask.bool()]
    if int(real.min()) < 0 or int(real.max()) >= d_vocab:
        raise PromptError(f"token ids must lie in [0, {d_vocab}); got values from {int(real.min())} to {int(real.max())}")
    if int(ids.min()) < 0 or int(ids.max()) >= d_vocab:  # pads are embedded too, then masked out
        pads = ids[~mask.bool()]
        raise PromptError(f"pad positions hold ids from {int(pads.min())} to {int(pads.max())}, outside the vocabulary "
                          f"[0, {d_vocab}): the model still embeds pads (then masks them out), so pad with an id in range")
    if tokens.prompts is not None and len(tokens.prompts) != ids.shape[0]:
        raise ShapeError(f"Tokens has {len(tokens.prompts)} prompts for {ids.shape[0]} rows of ids")
    return tokens


def id_list(ids: object, *, d_vocab: int, n_tokenizer: int, what: str = "token ids") -> list[int]:
    """Token ids given as a tensor or a list of ints, as a list, each checked against the vocabulary.

    Decoding an id outside the vocabulary gives ``""`` (or an ``OverflowError`` for a negative one),
    which would read as a real, empty token. ``d_vocab`` is the model's vocabulary and
    ``n_tokenizer`` the tokenizer's: an id must be valid for both.
    """
    if isinstance(ids, Tensor):
        if ids.device.type == "meta":
            raise PromptError(f"{what} are on the meta device (a shape without values): pass a real tensor")
        if ids.dtype not in INTEGER_DTYPES:
            raise PromptError(f"{what} must be an integer tensor, got {ids.dtype}")
        items = ids.flatten().tolist()
    elif isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise InvalidTypeError(f"{what} must be a list of integers or an integer tensor, got {type(ids).__name__}")
    else:
        items = list(ids)
    limit = min(d_vocab, n_tokenizer)
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise InvalidTypeError(f"{what}[{i}] is {type(item).__name__} {item!r}, not an integer token id")
        if not 0 <= int(item) < limit:
            sizes = (f"the model's vocabulary has {d_vocab} tokens" if limit == d_vocab
                     else f"the tokenizer has {n_tokenizer} tokens (the model {d_vocab})")
            raise PromptError(f"{what}[{i}] = {item} is outside the vocabulary [0, {limit}): {sizes}")
    return [int(item) for item in items]


def per_prompt(value: object, n_prompts: int, what: str) -> list:
    """One value for every prompt (a string, an int or None), or a list with exactly one per prompt."""
    if value is None or isinstance(value, str | int):
        items = [value] * n_prompts
    elif isinstance(value, Sequence | Tensor):
        items = list(value)
    else:
        raise InvalidTypeError(f"{what} must be one token (a string or an id) or a list with one per prompt, "
                               f"got {type(value).__name__} {value!r}")
    if len(items) != n_prompts:
        raise InvalidArgumentError(f"{len(items)} {what} for {n_prompts} prompts: give one, or one per prompt")
    return items


def pad_left(sequences: Sequence[Sequence[int]], *, pad_id: int, prompts: tuple[str, ...] | None = None) -> Tokens:
    """Left-pad token id lists with ``pad_id`` into one batch, with its mask and position ids."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return Tokens(ids, mask, prompts)


def from_tensor(ids: Tensor, *, n_ctx: int, d_vocab: int) -> Tokens:
    """Wrap given token ids (``[pos]`` or ``[batch, pos]``, no padding) after checking them."""
    if ids.device.type == "meta":
        raise PromptError("the token ids are on the meta device (a shape without values): pass a real tensor")
    if ids.dtype not in INTEGER_DTYPES:
        raise PromptError(f"token ids must be an integer tensor, got {ids.dtype}")
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2:
        raise PromptError(f"token ids must have shape [pos] or [batch, pos], got {tuple(ids.shape)}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise PromptError(f"the token ids are empty (shape {tuple(ids.shape)}): there is nothing to run")
    if ids.shape[1] > n_ctx:
        raise PromptError(f"{ids.shape[1]} tokens exceed the model's context of n_ctx={n_ctx}")
    if int(ids.min()) < 0 or int(ids.max()) >= d_vocab:
        raise PromptError(f"token ids must lie in [0, {d_vocab}); got values from {int(ids.min())} to {int(ids.max())}")
    return Tokens(ids.long(), torch.ones_like(ids, dtype=torch.long))


Inputs = str | Sequence[str] | Tensor | Tokens
"""What every probe entry point accepts: a prompt, a list of prompts, token ids ``[pos]`` or ``[batch, pos]``, or :class:`Tokens`."""
