"""The offline training text for tiny-english: Python's documentation, docstrings and sources.

Three sources ship with every CPython, so the model can be rebuilt without a network:

- ``docs``: ``pydoc_data.topics.topics``, the language reference's topics. Whole topics are held
  out for validation (the same split, seed and fraction as every earlier tiny-english, so its
  held-out loss stays comparable from one model to the next).
- ``docstrings``: the module, class and function docstrings of the standard library's ``.py``
  files, read with ``ast`` (English prose about code, with doctest examples).
- ``code``: the same files' source text. Code rewards copying: an identifier defined at the top of
  a function is used again below it, which is what an induction head learns to exploit.
- ``repeats``: windows made of passages of the three sources above, each followed (after a short
  gap of other text) by itself again. Real corpora repeat text (quoted code, duplicated docstrings,
  a name defined and then used); a one-hour run on two cores sees too little of that to learn
  in-context copying, so this source makes it frequent.
- ``random_repeats``: windows of blocks of tokens drawn uniformly at random from the tokens that
  occur at least ``MIN_COUNT`` times in the three sources, each block followed at once by itself
  again. On such text only in-context copying lowers the loss on the second copy, so the gradient
  that forms a previous-token head and an induction head is not drowned by what the model can
  guess from the language: on natural repeats alone the two heads had not formed after 2 million
  tokens, nor on blocks drawn with the corpus's own token frequencies (where guessing the common
  tokens does almost as well as copying) after 200 steps.

The standard library's own tests, ``pydoc_data`` (the documentation again, held-out topics
included) and ``site-packages`` are left out. Files are read in sorted order, so the corpus
depends only on the CPython version, which the model card records.
"""

from __future__ import annotations

import ast
import pydoc_data.topics
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

EOT_ID = 50256
MIN_COUNT = 5  # a token joins the random repeats' vocabulary when it occurs this often in training text
EXCLUDED_PARTS = {"test", "tests", "idle_test", "pydoc_data", "site-packages", "__pycache__"}


@dataclass(frozen=True)
class Corpus:
    """Token streams per source (each document followed by ``<|endoftext|>``) and the held-out docs."""

    train: dict[str, torch.Tensor]
    val_ids: torch.Tensor
    val_topics: list[str]
    n_topics: int
    n_files: int
    vocabulary: torch.Tensor  # the distinct tokens random repeats draw from (MIN_COUNT occurrences or more)

    def describe(self) -> str:
        parts = ", ".join(f"{name} {len(ids):,}" for name, ids in self.train.items())
        return (f"train tokens: {parts}; held-out docs {len(self.val_ids):,} ({len(self.val_topics)} topics); "
                f"random repeats draw from {len(self.vocabulary):,} tokens")


def split_topics(tokenizer, seed: int, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Tokenize the pydoc topics and split them by document into train/validation.

    Documents are shuffled with ``seed`` and whole documents go to validation while it stays
    within ``val_fraction`` of all tokens, so validation text is never seen in training. Each
    split is the concatenation of its documents, each followed by ``<|endoftext|>``.
    """
    topics = pydoc_data.topics.topics
    names = sorted(topics)
    random.Random(seed).shuffle(names)
    docs = {name: tokenizer(topics[name]).input_ids + [EOT_ID] for name in names}
    budget = val_fraction * sum(len(ids) for ids in docs.values())
    val_names, val_len = [], 0
    for name in names:
        if val_len + len(docs[name]) <= budget:
            val_names.append(name)
            val_len += len(docs[name])

    def concat(selected):
        return torch.tensor([t for name in selected for t in docs[name]], dtype=torch.long)

    train_names = [name for name in names if name not in val_names]
    return concat(train_names), concat(val_names), sorted(val_names)


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, tests and documentation data excluded, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if not EXCLUDED_PARTS.intersection(p.relative_to(root).parts))


def docstrings(source: str) -> list[str]:
    """Every module, class and function docstring of one source file (none if it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = (ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, kinds))
    return [text for text in found if text and len(text) >= 40]


def _stream(tokenizer, documents: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for start in range(0, len(documents), 256):
        for row in tokenizer(documents[start : start + 256]).input_ids:
            ids.extend(row)
            ids.append(EOT_ID)
    return torch.tensor(ids, dtype=torch.long)


def build_corpus(tokenizer, seed: int, val_fraction: float) -> Corpus:
    """Tokenize all three sources; the docs' held-out topics form the validation set."""
    docs_train, val_ids, val_topics = split_topics(tokenizer, seed, val_fraction)
    sources, strings = [], []
    files = stdlib_files()
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        sources.append(text)
        strings.extend(docstrings(text))
    train = {
        "docs": docs_train,
        "docstrings": _stream(tokenizer, strings),
        "code": _stream(tokenizer, sources),
    }
    counts = torch.bincount(torch.cat(list(train.values())))
    counts[EOT_ID] = 0
    vocabulary = torch.nonzero(counts >= MIN_COUNT).flatten()
    return Corpus(train, val_ids, val_topics, len(pydoc_data.topics.topics), len(files), vocabulary)


def _span(corpus: Corpus, length: int, gen: torch.Generator) -> torch.Tensor:
    names = sorted(corpus.train)
    ids = corpus.train[names[int(torch.randint(0, len(names), (1,), generator=gen))]]
    start = int(torch.randint(0, len(ids) - length, (1,), generator=gen))
    return ids[start : start + length]


def repeated_window(corpus: Corpus, length: int, gen: torch.Generator) -> torch.Tensor:
    """``length`` tokens of passages each repeated once: ``S gap S`` blocks, ``|S|`` in [8, 96), gap in [0, 32)."""
    parts: list[torch.Tensor] = []
    total = 0
    while total < length:
        passage = _span(corpus, int(torch.randint(8, 96, (1,), generator=gen)), gen)
        gap = _span(corpus, int(torch.randint(0, 32, (1,), generator=gen)) + 1, gen)[1:]
        parts += [passage, gap, passage]
        total += 2 * len(passage) + len(gap)
    return torch.cat(parts)[:length]


def random_repeated_window(corpus: Corpus, length: int, gen: torch.Generator) -> torch.Tensor:
    """``length`` tokens of ``B B`` blocks, ``B`` being ``|B|`` in [5, 64) tokens drawn uniformly from the vocabulary."""
    parts: list[torch.Tensor] = []
    total = 0
    while total < length:
        size = int(torch.randint(5, 64, (1,), generator=gen))
        block = corpus.vocabulary[torch.randint(0, len(corpus.vocabulary), (size,), generator=gen)]
        parts += [block, block]
        total += 2 * size
    return torch.cat(parts)[:length]


def random_batch(
    corpus: Corpus, mix: dict[str, float], batch_size: int, n_ctx: int, gen: torch.Generator
) -> torch.Tensor:
    """``batch_size`` windows of ``n_ctx + 1`` tokens, each from a source drawn with the weights ``mix``."""
    names = list(mix)
    weights = torch.tensor([mix[name] for name in names], dtype=torch.float64)
    choice = torch.multinomial(weights, batch_size, replacement=True, generator=gen).tolist()
    rows = []
    for index in choice:
        if names[index] == "repeats":
            rows.append(repeated_window(corpus, n_ctx + 1, gen))
            continue
        if names[index] == "random_repeats":
            rows.append(random_repeated_window(corpus, n_ctx + 1, gen))
            continue
        ids = corpus.train[names[index]]
        start = int(torch.randint(0, len(ids) - n_ctx, (1,), generator=gen))
        rows.append(ids[start : start + n_ctx + 1])
    return torch.stack(rows)
