"""What the logit lens returns: per prompt, per stream and position, statistics of the read-out.

Only statistics are kept (top-k, entropy, KL to the final distribution, target
probability and rank), never a ``[stream, pos, d_vocab]`` tensor. Results validate their
shapes on construction and save to / load from safetensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TypedDict

from jaxtyping import Float, Int
from torch import Tensor

from .. import validate
from ..errors import FileFormatError, InvalidTypeError, LayerIndexError, PositionError, PromptError, ShapeError
from ..savefile import write_safetensors
from ..versions import versions


@dataclass(frozen=True, repr=False)
class PromptLens:
    """The logit lens of one prompt.

    Positions index the prompt's own tokens (0 = its first real token); ``positions`` lists
    the ones analysed. Probabilities are in [0, 1]; entropy and KL are in nats; KL is
    ``KL(final || stream)``. ``target_rank`` is 0-based: the number of tokens with a
    strictly higher logit (0 = the top prediction). Entries without a target (e.g. the next token
    after the last position) hold ``nan`` / ``-1``.
    """

    prompt: str
    str_tokens: list[str]
    token_ids: Int[Tensor, " n_tokens"]
    positions: Int[Tensor, " pos"]
    stream_labels: list[str]
    top_ids: Int[Tensor, "stream pos k"]
    top_probs: Float[Tensor, "stream pos k"]
    top_tokens: list[list[list[str]]]
    entropy: Float[Tensor, "stream pos"]
    kl_to_final: Float[Tensor, "stream pos"]
    target_ids: Int[Tensor, " pos"] | None = None
    target_tokens: list[str] | None = None
    target_prob: Float[Tensor, "stream pos"] | None = None
    target_logprob: Float[Tensor, "stream pos"] | None = None
    target_rank: Int[Tensor, "stream pos"] | None = None

    def __post_init__(self) -> None:
        n_stream, n_pos, k = self.top_ids.shape
        if len(self.stream_labels) != n_stream:
            raise ShapeError(f"{len(self.stream_labels)} stream labels for {n_stream} streams")
        if self.positions.shape != (n_pos,):
            raise ShapeError(f"positions has shape {tuple(self.positions.shape)} but should have shape ({n_pos},)")
        if len(self.str_tokens) != self.token_ids.shape[0]:
            raise ShapeError(f"{len(self.str_tokens)} token strings for {self.token_ids.shape[0]} token ids")
        for name in ("top_probs",):
            if getattr(self, name).shape != (n_stream, n_pos, k):
                raise ShapeError(f"{name} has shape {tuple(getattr(self, name).shape)} but should have {(n_stream, n_pos, k)}")
        for name in ("entropy", "kl_to_final", "target_prob", "target_logprob", "target_rank"):
            value = getattr(self, name)
            if value is not None and value.shape != (n_stream, n_pos):
                raise ShapeError(f"{name} has shape {tuple(value.shape)} but should have shape {(n_stream, n_pos)}")
        if len(self.top_tokens) != n_stream or any(len(row) != n_pos for row in self.top_tokens):
            raise ShapeError("top_tokens must be nested [stream][pos][k]")
        given = [name for name in _TARGET if getattr(self, name) is not None]
        if given and len(given) != len(_TARGET):
            raise ShapeError(f"the target statistics {list(_TARGET)} come together, but only {given} were given")
        if self.target_tokens is not None and not given:
            raise ShapeError(f"target_tokens were given without the target statistics {list(_TARGET)}")

    @property
    def n_streams(self) -> int:
        return len(self.stream_labels)

    @property
    def position_labels(self) -> list[str]:
        """The analysed tokens, as shown on a heatmap's x axis (the token read at each position)."""
        return [self.str_tokens[int(p)] for p in self.positions]

    def top1(self, stream: int = -1, position: int = -1) -> tuple[str, float]:
        """The top prediction at one stream and analysed position, with its probability."""
        stream = validate.index_in("stream", stream, len(self.top_tokens), LayerIndexError)
        position = validate.index_in("position", position, len(self.top_tokens[stream]), PositionError)
        return self.top_tokens[stream][position][0], float(self.top_probs[stream, position, 0])

    def __repr__(self) -> str:
        from ..display.tables import short

        token, prob = self.top1()
        return (f"PromptLens({short(self.prompt, 50)}, {len(self.str_tokens)} tokens, {self.n_streams} streams x "
                f"{len(self.positions)} positions, k={self.top_ids.shape[-1]}; final top-1 {token!r} p={prob:.3g})")

    def _repr_html_(self, position: int = -1) -> str:
        """Per stream at the last analysed position: top-1 and its probability, entropy, KL to final, the target."""
        from ..display.tables import Tok, table

        pos = int(self.positions[position])
        headers = ["stream", "top-1", "p(top-1)", "entropy", "KL to final"]
        if self.target_prob is not None:
            headers += ["target p", "target rank"]
        rows = []
        for s, label in enumerate(self.stream_labels):
            row = [label, Tok(self.top_tokens[s][position][0]), float(self.top_probs[s, position, 0]),
                   float(self.entropy[s, position]), float(self.kl_to_final[s, position])]
            if self.target_prob is not None and self.target_rank is not None:  # together (__post_init__)
                row += [float(self.target_prob[s, position]), int(self.target_rank[s, position])]
            rows.append(row)
        target = ""
        if self.target_tokens is not None:
            target = f", target {self.target_tokens[position]!r}"
        return table(
            f"Logit lens of {self.prompt!r}: position {pos} (token {self.str_tokens[pos]!r}{target})",
            headers, rows,
            notes=[f"{len(self.str_tokens)} tokens, {len(self.positions)} positions analysed, k={self.top_ids.shape[-1]}; "
                   "entropy and KL in nats"],
        )


@dataclass(frozen=True, repr=False)
class LensResult:
    """The logit lens of one or more prompts (one :class:`PromptLens` each)."""

    model_name: str
    items: list[PromptLens]
    k: int
    include_mid: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> PromptLens:
        return self.items[validate.index_in("prompt index", index, len(self.items), PromptError)]

    def __iter__(self):
        return iter(self.items)

    @property
    def prompts(self) -> list[str]:
        return [item.prompt for item in self.items]

    def __repr__(self) -> str:
        from ..display.tables import short

        shown = ", ".join(short(p, 30) for p in self.prompts[:3]) + (", ..." if len(self) > 3 else "")
        return f"LensResult({self.model_name!r}, {len(self)} prompts [{shown}], k={self.k}, include_mid={self.include_mid})"

    def _repr_html_(self) -> str:
        """One row per prompt: tokens, the final top-1 at its last analysed position, the target there."""
        from ..display.tables import Tok, table

        rows = []
        for i, item in enumerate(self.items):
            token, prob = item.top1()
            row = [i, item.prompt, len(item.str_tokens), item.n_streams, Tok(token), prob]
            if item.target_prob is not None and item.target_rank is not None:  # together (PromptLens.__post_init__)
                row += [float(item.target_prob[-1, -1]), int(item.target_rank[-1, -1])]
            rows.append(row)
        headers = ["#", "prompt", "tokens", "streams", "final top-1", "p"]
        if any(item.target_prob is not None for item in self.items):
            headers += ["final target p", "target rank"]
        return table(f"Logit lens on {self.model_name} (k={self.k})", headers, rows,
                     notes=["lens[i] shows prompt i stream by stream"])

    # -- persistence ---------------------------------------------------------------
    _TENSORS = ("token_ids", "positions", "top_ids", "top_probs", "entropy", "kl_to_final",
                "target_ids", "target_prob", "target_logprob", "target_rank")
    _LISTS = ("prompt", "str_tokens", "stream_labels", "top_tokens", "target_tokens")

    def save(self, path: str | Path) -> None:
        """Write to safetensors: tensors per prompt, strings and versions in the metadata."""
        if not isinstance(path, str | PurePath):
            raise InvalidTypeError(f"path must be a file path (a str or a Path), got {type(path).__name__}")
        tensors: dict[str, Tensor] = {}
        texts = []
        for i, item in enumerate(self.items):
            for name in self._TENSORS:
                value = getattr(item, name)
                if value is not None:
                    tensors[f"{i}.{name}"] = value.detach().cpu().contiguous()
            texts.append({name: getattr(item, name) for name in self._LISTS})
        metadata = {
            "format": _FORMAT,
            "model_name": self.model_name,
            "k": str(self.k),
            "include_mid": json.dumps(self.include_mid),
            "items": json.dumps(texts),
            "extra": json.dumps({**self.metadata, "versions": json.dumps(versions())}),
        }
        write_safetensors(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | Path) -> LensResult:
        """Read a result written by :meth:`save`, checking its metadata against its tensors.

        A file that disagrees with itself (prompt count, tensors per prompt, k, dtypes,
        shapes, positions outside the prompt) is a :class:`~gpt2probe.errors.FileFormatError`.
        """
        from .. import savefile

        where = str(path)
        metadata, tensors = savefile.read(path, fmt=_FORMAT, what="result", writer="LensResult.save")
        model_name = savefile.entry(metadata, "model_name", where, str, parse=False)
        k = savefile.entry(metadata, "k", where, int)
        include_mid = savefile.entry(metadata, "include_mid", where, bool)
        texts = savefile.entry(metadata, "items", where, list)
        extra = savefile.entry(metadata, "extra", where, dict)
        savefile.require(k >= 1, where, f"k is {k}")
        expected = {f"{i}.{name}" for i in range(len(texts)) for name in cls._TENSORS}
        stray = sorted(set(tensors) - expected)
        savefile.require(not stray, where, f"holds tensors that belong to no prompt of the {len(texts)} listed: {stray[:5]}")
        items = []
        for i, text in enumerate(texts):
            savefile.require(isinstance(text, dict) and set(text) == set(cls._LISTS), where,
                             f"prompt {i}'s entry must have the keys {list(cls._LISTS)}")
            values = _check_item({name: tensors.get(f"{i}.{name}") for name in cls._TENSORS}, k, i, where)
            try:
                items.append(PromptLens(**text, **values))
            except (ShapeError, TypeError, ValueError, IndexError) as error:
                raise FileFormatError(f"{where!r}: prompt {i} does not hold together: {error}") from None
        return cls(model_name=model_name, items=items, k=k, include_mid=include_mid, metadata=extra)


_FORMAT = "gpt2probe.LensResult"
_REQUIRED = ("token_ids", "positions", "top_ids", "top_probs", "entropy", "kl_to_final")
_TARGET = ("target_ids", "target_prob", "target_logprob", "target_rank")
_INTEGER = ("token_ids", "positions", "top_ids", "target_ids", "target_rank")


class _ItemTensors(TypedDict):
    """The tensors of one saved prompt, as :class:`PromptLens` takes them: the required ones present."""

    token_ids: Tensor
    positions: Tensor
    top_ids: Tensor
    top_probs: Tensor
    entropy: Tensor
    kl_to_final: Tensor
    target_ids: Tensor | None
    target_prob: Tensor | None
    target_logprob: Tensor | None
    target_rank: Tensor | None


def _check_item(values: dict[str, Tensor | None], k: int, i: int, where: str) -> _ItemTensors:
    """The tensors of prompt ``i`` in a saved result: present, of the right kind, consistent with ``k``."""
    from ..savefile import require

    missing = [name for name in _REQUIRED if values[name] is None]
    require(not missing, where, f"prompt {i} lacks the tensors {missing}")
    targets = [values[name] is not None for name in _TARGET]
    require(all(targets) or not any(targets), where, f"prompt {i} has only some of the target tensors {list(_TARGET)}")
    for name, value in values.items():
        if value is None:
            continue
        integer = name in _INTEGER
        require(value.is_floating_point() != integer and not value.is_complex(), where,
                f"prompt {i}'s {name} has dtype {value.dtype}; expected {'an integer' if integer else 'a floating-point'} dtype")

    def present(name: str) -> Tensor:
        value = values[name]
        if value is None:  # refused above with every missing name; here for the type checker
            raise FileFormatError(f"{where!r}: prompt {i} lacks the tensor {name!r}")
        return value

    top_ids, token_ids, positions = present("top_ids"), present("token_ids"), present("positions")
    require(top_ids.ndim == 3 and top_ids.shape[-1] == k, where,
            f"prompt {i}'s top_ids has shape {tuple(top_ids.shape)}, expected [stream, pos, k={k}]")
    require(token_ids.ndim == 1 and positions.ndim == 1, where, f"prompt {i}'s token_ids and positions must be 1-D")
    n_tokens = token_ids.shape[0]
    require(bool(((positions >= 0) & (positions < n_tokens)).all()), where,
            f"prompt {i}'s positions lie outside its {n_tokens} tokens")
    target_ids = values["target_ids"]
    if target_ids is not None:
        require(tuple(target_ids.shape) == tuple(positions.shape), where,
                f"prompt {i}'s target_ids has shape {tuple(target_ids.shape)}, positions {tuple(positions.shape)}")
    return _ItemTensors(token_ids=token_ids, positions=positions, top_ids=top_ids, top_probs=present("top_probs"),
                        entropy=present("entropy"), kl_to_final=present("kl_to_final"), target_ids=target_ids,
                        target_prob=values["target_prob"], target_logprob=values["target_logprob"],
                        target_rank=values["target_rank"])
