"""``probe.test_prompt``: how well the model predicts an answer after a prompt.

The habit TransformerLens users bring (``utils.test_prompt``): print the tokenized prompt
and answer, then at each answer token its rank, logit and probability and the top-k
alternatives. Here one forward pass over prompt + answer gives every number, and they
come back as a :class:`PromptTest` (its ``str`` is the printed text), so a notebook or a
test can use them instead of reading a printout.

Ranks are 0-based and count the tokens with a strictly higher logit (0 = the top
prediction), the same rule as the logit lens's ``target_rank``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from . import validate
from .errors import PromptError, ShapeError
from .validate import finite_result


@dataclass(frozen=True, eq=False, repr=False)
class PromptTest:
    """The answer's scores after the prompt, one row per answer token.

    Row ``i`` is read at the position before answer token ``i`` (the prompt's last token
    for ``i = 0``, then the answer's own tokens, as in teacher forcing). ``probs`` are the
    full softmax over the vocabulary.
    """

    model_name: str
    prompt: str
    answer: str
    prompt_tokens: list[str]
    answer_tokens: list[str]
    answer_ids: Int[Tensor, " answer"]
    ranks: Int[Tensor, " answer"]
    logits: Float[Tensor, " answer"]
    probs: Float[Tensor, " answer"]
    top_ids: Int[Tensor, "answer k"]
    top_tokens: list[list[str]]
    top_logits: Float[Tensor, "answer k"]
    top_probs: Float[Tensor, "answer k"]

    def __post_init__(self) -> None:
        n, k = self.top_ids.shape
        if len(self.answer_tokens) != n or any(len(row) != k for row in self.top_tokens):
            raise ShapeError(f"answer_tokens and top_tokens must be nested [answer={n}][k={k}]")
        for name in ("answer_ids", "ranks", "logits", "probs"):
            if getattr(self, name).shape != (n,):
                raise ShapeError(f"{name} has shape {tuple(getattr(self, name).shape)} but should have shape ({n},)")

    @property
    def k(self) -> int:
        return self.top_ids.shape[1]

    def __str__(self) -> str:
        lines = [f"Tokenized prompt: {self.prompt_tokens}", f"Tokenized answer: {self.answer_tokens}"]
        for i, token in enumerate(self.answer_tokens):
            lines.append(
                f"Answer token {i + 1}/{len(self.answer_tokens)} {token!r}: rank {int(self.ranks[i])}, "
                f"logit {float(self.logits[i]):.2f}, prob {float(self.probs[i]):.2%}"
            )
            for rank, alternative in enumerate(self.top_tokens[i]):
                lines.append(
                    f"  top {rank:>2}  logit {float(self.top_logits[i, rank]):6.2f}  "
                    f"prob {float(self.top_probs[i, rank]):7.2%}  {alternative!r}"
                )
        lines.append(f"Ranks of the answer tokens: {[(t, int(r)) for t, r in zip(self.answer_tokens, self.ranks)]}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        ranks = ", ".join(f"{t!r} rank {int(r)} p={float(p):.3g}" for t, r, p in zip(self.answer_tokens, self.ranks, self.probs))
        from .display.tables import short

        return f"PromptTest({self.model_name!r}, {short(self.prompt, 40)} -> {ranks})"

    def _repr_html_(self) -> str:
        from .display.tables import Tok, table

        rows = []
        for i, token in enumerate(self.answer_tokens):
            top = " ".join(f"{t!r} {float(p):.2f}" for t, p in zip(self.top_tokens[i][:5], self.top_probs[i][:5]))
            rows.append([i, Tok(token), int(self.ranks[i]), float(self.logits[i]), float(self.probs[i]), top])
        return table(
            f"test_prompt on {self.model_name}: {self.prompt!r} -> {self.answer!r}",
            ["#", "answer token", "rank", "logit", "prob", "top 5 (prob)"],
            rows,
            notes=[f"prompt tokens: {self.prompt_tokens}"],
        )


@torch.no_grad()
def prompt_test(
    probe,  # a GPT2Probe (not imported here: the probe imports this module)
    prompt: str,
    answer: str,
    *,
    k: int = 10,
    prepend_bos: bool = False,
    prepend_space_to_answer: bool = True,
    print_details: bool = True,
) -> PromptTest:
    """Score ``answer`` after ``prompt``: rank, logit and probability of each answer token, and the top ``k``.

    As in TransformerLens, ``prepend_space_to_answer`` adds a space before an answer that
    does not start with one (``"Paris"`` is scored as ``" Paris"``; the printed tokenized
    answer shows it); the prompt and the answer are tokenized separately and joined.
    ``prepend_bos`` defaults to ``False`` like everything in gpt2probe (TransformerLens
    prepends ``<|endoftext|>`` for GPT-2: pass ``prepend_bos=True`` to compare).
    Prints the result unless ``print_details=False``; returns it either way.
    """
    for what, value in (("prompt", prompt), ("answer", answer)):
        if not isinstance(value, str):
            raise PromptError(f"test_prompt takes the {what} as a string, got {type(value).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= probe.cfg.d_vocab:
        raise PromptError(f"k must be an integer in [1, {probe.cfg.d_vocab}] (the vocabulary size), got {k!r}")
    validate.boolean("print_details", print_details)
    if validate.boolean("prepend_space_to_answer", prepend_space_to_answer) and not answer.startswith(" "):
        answer = " " + answer
    answer_ids = probe.tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not answer_ids:
        raise PromptError("the answer is empty: give at least one token to score")
    prompt_ids = probe.to_tokens(prompt, prepend_bos=prepend_bos).ids[0]  # an empty prompt needs prepend_bos=True
    ids = torch.cat([prompt_ids, torch.tensor(answer_ids, dtype=torch.long)])
    n_prompt, n_answer = len(prompt_ids), len(answer_ids)
    logits = probe.forward(ids)[0, n_prompt - 1 : n_prompt - 1 + n_answer].float().cpu()  # [answer, d_vocab]
    finite_result("the logits before the answer tokens", logits)  # a NaN answer logit would rank first
    answer_t = torch.tensor(answer_ids, dtype=torch.long)
    answer_logits = logits.gather(-1, answer_t[:, None])[:, 0]
    log_probs = logits.log_softmax(-1)
    top = logits.topk(k, dim=-1)
    result = PromptTest(
        model_name=probe.cfg.model_name,
        prompt=prompt,
        answer=answer,
        prompt_tokens=probe.to_str_tokens(prompt_ids),
        answer_tokens=probe.to_str_tokens(answer_t),
        answer_ids=answer_t,
        ranks=(logits > answer_logits[:, None]).sum(-1),
        logits=answer_logits,
        probs=log_probs.gather(-1, answer_t[:, None])[:, 0].exp(),
        top_ids=top.indices,
        top_tokens=[[probe.tokenizer.decode([i]) for i in row] for row in top.indices.tolist()],
        top_logits=top.values,
        top_probs=log_probs.gather(-1, top.indices).exp(),
    )
    if print_details:
        print(result)
    return result
