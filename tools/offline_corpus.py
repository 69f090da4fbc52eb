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
import platform
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


def save_corpus(corpus: Corpus, path: Path) -> None:
    """Write the tokenized corpus to ``path`` (to train elsewhere, e.g. on a lent GPU, on exactly this text)."""
    # int32 halves the file (GPT-2's ids fit); load_corpus widens them back to int64.
    train = {name: ids.to(torch.int32) for name, ids in corpus.train.items()}
    torch.save({"train": train, "val_ids": corpus.val_ids.to(torch.int32), "val_topics": corpus.val_topics,
                "n_topics": corpus.n_topics, "n_files": corpus.n_files, "vocabulary": corpus.vocabulary,
                "python": platform.python_version()}, path)


def load_corpus(path: Path) -> tuple[Corpus, str]:
    """The corpus :func:`save_corpus` wrote, and the CPython version whose text it holds."""
    state = torch.load(path, weights_only=True)
    train = {name: ids.long() for name, ids in state["train"].items()}
    corpus = Corpus(train, state["val_ids"].long(), state["val_topics"], state["n_topics"], state["n_files"],
                    state["vocabulary"])
    return corpus, state["python"]


class BatchSampler:
    """Draws training windows from the corpus's sources, a whole batch at a time.

    Every window is ``n_ctx + 1`` tokens from one source, drawn with the weights ``mix``:

    - ``docs``, ``docstrings``, ``code``: a window starting at a uniformly random position.
    - ``repeats``: ``S gap S`` blocks, ``S`` a passage of ``[8, 96)`` tokens from a source drawn
      uniformly, ``gap`` ``[0, 32)`` tokens of other text.
    - ``random_repeats``: ``B B`` blocks, ``B`` ``[5, 64)`` tokens drawn uniformly from
      ``corpus.vocabulary``.

    The random numbers are drawn on the CPU from ``gen`` with vectorised calls (the block layout of
    a window is found with ``searchsorted``), so a batch costs a few tensor operations however large
    it is, a GPU is not kept waiting, and a seed gives the same batches on any device.
    """

    def __init__(self, corpus: Corpus, n_ctx: int) -> None:
        self.names = sorted(corpus.train)
        self.flat = torch.cat([corpus.train[name] for name in self.names])
        lengths = torch.tensor([len(corpus.train[name]) for name in self.names])
        self.lengths = lengths
        self.offsets = torch.cumsum(lengths, 0) - lengths
        self.vocabulary = corpus.vocabulary
        self.length = n_ctx + 1

    def __call__(self, mix: dict[str, float], batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """``[batch_size, n_ctx + 1]`` token ids."""
        names = list(mix)
        unknown = set(names) - set(self.names) - {"repeats", "random_repeats"}
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)}; valid: {self.names + ['repeats', 'random_repeats']}")
        weights = torch.tensor([mix[name] for name in names], dtype=torch.float64)
        choice = torch.multinomial(weights, batch_size, replacement=True, generator=gen)
        batch = torch.empty(batch_size, self.length, dtype=torch.long)
        for index, name in enumerate(names):
            rows = torch.nonzero(choice == index).flatten()
            if len(rows) == 0:
                continue
            if name == "repeats":
                batch[rows] = self._repeats(len(rows), gen)
            elif name == "random_repeats":
                batch[rows] = self._random_repeats(len(rows), gen)
            else:
                source = self.names.index(name)
                starts = self._starts(torch.full((len(rows),), source), self.length, gen)
                batch[rows] = self.flat[starts[:, None] + torch.arange(self.length)]
        return batch

    def _starts(self, sources: torch.Tensor, span: int, gen: torch.Generator) -> torch.Tensor:
        """Uniform start offsets into ``self.flat`` of ``span``-token passages inside each given source."""
        room = (self.lengths[sources] - span).to(torch.float64)
        return self.offsets[sources] + (torch.rand(sources.shape, generator=gen, dtype=torch.float64) * room).long()

    def _layout(self, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For blocks of ``sizes`` ``[rows, blocks]`` laid end to end: each position's block and offset in it."""
        ends = torch.cumsum(sizes, 1)
        assert bool((ends[:, -1] >= self.length).all()), "too few blocks drawn to fill a window"
        positions = torch.arange(self.length).expand(len(sizes), -1).contiguous()
        block = torch.searchsorted(ends, positions, right=True)
        offset = positions - (ends - sizes).gather(1, block)
        return block, offset

    def _repeats(self, rows: int, gen: torch.Generator) -> torch.Tensor:
        blocks = self.length // 16 + 1  # every block is at least 16 tokens long
        passage = torch.randint(8, 96, (rows, blocks), generator=gen)
        gap = torch.randint(0, 32, (rows, blocks), generator=gen)
        sources = torch.randint(0, len(self.names), (rows, blocks), generator=gen)
        passage_start = self._starts(sources, 96, gen)
        gap_start = self._starts(torch.randint(0, len(self.names), (rows, blocks), generator=gen), 32, gen)
        block, offset = self._layout(2 * passage + gap)
        p, g = passage.gather(1, block), gap.gather(1, block)
        ps, gs = passage_start.gather(1, block), gap_start.gather(1, block)
        index = torch.where(offset < p, ps + offset, torch.where(offset < p + g, gs + offset - p, ps + offset - p - g))
        return self.flat[index]

    def _random_repeats(self, rows: int, gen: torch.Generator) -> torch.Tensor:
        blocks = self.length // 10 + 1  # every block is at least 10 tokens long
        size = torch.randint(5, 64, (rows, blocks), generator=gen)
        tokens = self.vocabulary[torch.randint(0, len(self.vocabulary), (rows, blocks, 63), generator=gen)]
        block, offset = self._layout(2 * size)
        within = offset % size.gather(1, block)
        return tokens[torch.arange(rows)[:, None], block, within]
