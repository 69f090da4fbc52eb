"""Read a corpus as a stream of documents, and pack documents into fixed token windows.

Sources, in the order given (each glob's matches sorted):

- text files (any other extension): one document per file; a file longer than
  ``max_doc_chars`` is cut at line ends into several consecutive documents;
- ``.jsonl`` files: one document per line, the string in ``field``;
- ``.parquet`` files: one document per row, the string in ``column``;
- a directory written by Hugging Face ``datasets`` ``save_to_disk``: one document per row of
  ``column`` (or ``field``).

Documents are numbered 0, 1, 2... over the whole stream (empty ones are skipped and get no
number). Consecutive documents are grouped into *blocks* of about ``block_chars``
characters; a block is the unit of work: it is tokenised and packed on its own (documents
joined by ``<|endoftext|>``, cut into windows of ``seq_len`` tokens, the last window padded
with ``<|endoftext|>`` and marked shorter), so the windows are the same whichever process
packs them, and :func:`assign_blocks` gives each block to one rank, balancing their
characters. With a ``seed`` the documents inside each block are shuffled by a generator
seeded from ``(seed, b)``.

Nothing holds more than one block of text and tokens at a time.
"""

from __future__ import annotations

import glob
import heapq
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import torch

from ..configs.harvest import DEFAULT_BLOCK_CHARS
from ..windows import pack_ids, tokenize
from .errors import CorpusError, HarvestConfigError

TEXT, JSONL, PARQUET, HF_DATASET, MEMORY = "text", "jsonl", "parquet", "hf_dataset", "memory"
DEFAULT_MAX_DOC_CHARS = 1 << 20


@dataclass(frozen=True)
class Source:
    """One file or dataset of the corpus."""

    path: str
    kind: str
    key: str | None = None  # the JSONL field or the Parquet/dataset column

    def describe(self) -> dict:
        """Identity for resuming: path, kind, key, and the file's size and modification time."""
        out: dict = {"path": self.path, "kind": self.kind, "key": self.key}
        p = Path(self.path)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        out["files"] = [[str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns]
                        for f in files if f.is_file()]
        return out


@dataclass
class Corpus:
    """What to read: ``paths`` (files, globs, dataset directories) or in-memory ``texts``."""

    paths: Sequence[str | os.PathLike] = ()
    field: str | None = None
    column: str | None = None
    texts: Sequence[str] | None = None
    max_documents: int | None = None
    max_doc_chars: int = DEFAULT_MAX_DOC_CHARS
    sources: list[Source] = dc_field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.texts is not None:
            if self.paths:
                raise CorpusError("give either paths or texts, not both")
            if isinstance(self.texts, str) or not all(isinstance(t, str) for t in self.texts):
                raise CorpusError("texts must be a list of strings (one per document)")
            self.sources = [Source("<memory>", MEMORY)]
        else:
            if isinstance(self.paths, (str, os.PathLike)):
                self.paths = [self.paths]
            if not self.paths:
                raise CorpusError("no corpus given: pass text files, globs, .jsonl, .parquet or a datasets directory")
            self.sources = [s for p in self.paths for s in _expand(str(p), self.field, self.column)]
        if self.max_documents is not None and self.max_documents < 1:
            raise CorpusError(f"max_documents must be at least 1, got {self.max_documents}")
        if self.max_doc_chars < 1:
            raise CorpusError(f"max_doc_chars must be at least 1, got {self.max_doc_chars}")

    def describe(self) -> list[dict]:
        if self.texts is not None:
            import hashlib

            digest = hashlib.sha256("\x00".join(self.texts).encode("utf-8", "surrogatepass")).hexdigest()
            return [{"path": "<memory>", "kind": MEMORY, "documents": len(self.texts), "sha256": digest}]
        return [s.describe() for s in self.sources]

    def documents(self) -> Iterator[tuple[int, str]]:
        """``(document id, text)`` for every non-empty document, in order."""
        doc_id = 0
        for source in self.sources:
            for text in _read(source, self):
                if not text:
                    continue
                if self.max_documents is not None and doc_id >= self.max_documents:
                    return
                yield doc_id, text
                doc_id += 1

    def source_counts(self) -> list[dict]:
        """Per source: its first document id and number of documents (reads the whole corpus once)."""
        out, doc_id = [], 0
        for source in self.sources:
            n = 0
            for text in _read(source, self):
                if not text:
                    continue
                if self.max_documents is not None and doc_id + n >= self.max_documents:
                    break
                n += 1
            out.append({"path": source.path, "kind": source.kind, "first_doc": doc_id, "documents": n})
            doc_id += n
        return out


def _kind_of(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file() \
                or (path / "dataset_dict.json").is_file():
            return HF_DATASET
        raise CorpusError(f"{str(path)!r} is a directory but not a dataset saved with datasets' save_to_disk; "
                          f"to read its text files pass a glob such as '{path}/**/*.txt'")
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return JSONL
    if name.endswith(".parquet"):
        return PARQUET
    return TEXT


def _expand(pattern: str, field_name: str | None, column: str | None) -> list[Source]:
    if any(c in pattern for c in "*?["):
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise CorpusError(f"the glob {pattern!r} matches no file")
    else:
        path = Path(pattern).expanduser()
        if not path.exists():
            raise CorpusError(f"no such file or directory: {pattern!r}")
        matches = [str(path)]
    sources = []
    for match in matches:
        path = Path(match)
        if not os.access(path, os.R_OK):
            raise CorpusError(f"cannot read {match!r} (permission denied)")
        kind = _kind_of(path)
        key = None
        if kind == JSONL:
            if field_name is None:
                raise CorpusError(f"{match!r} is JSONL: say which field holds the text (--field / field=...)")
            key = field_name
        elif kind in (PARQUET, HF_DATASET):
            key = column or field_name
            if key is None:
                raise CorpusError(f"{match!r} is a table: say which column holds the text (--column / column=...)")
            _check_column(path, kind, key)
        sources.append(Source(str(path.resolve()), kind, key))
    return sources


def _check_column(path: Path, kind: str, column: str) -> None:
    if kind == PARQUET:
        import pyarrow.parquet as pq

        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception as error:  # pyarrow raises several types for a broken file
            raise CorpusError(f"cannot read {str(path)!r} as Parquet: {error}") from None
    else:
        names = _load_dataset(path).column_names
    if column not in names:
        raise CorpusError(f"{str(path)!r} has no column {column!r}; its columns: {', '.join(names)}")


def _load_dataset(path: Path):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        splits = [str(split) for split in ds]
        raise CorpusError(f"{str(path)!r} holds several splits ({', '.join(splits)}); pass one split's directory, "
                          f"e.g. {str(path / splits[0])!r}")
    return ds


def _column(source: Source) -> str:
    """The JSONL field or the Parquet/dataset column a source reads (set whenever such a source is built)."""
    if source.key is None:
        raise CorpusError(f"{source.path!r} ({source.kind}) names no field or column to read the text from")
    return source.key


def _read(source: Source, corpus: Corpus) -> Iterator[str]:
    if source.kind == MEMORY:
        if corpus.texts is None:  # a corpus has a memory source exactly when it was given texts
            raise CorpusError("the corpus has an in-memory source but no texts (build it with Corpus(texts=[...]))")
        yield from corpus.texts
    elif source.kind == TEXT:
        yield from _read_text(Path(source.path), corpus.max_doc_chars)
    elif source.kind == JSONL:
        yield from _read_jsonl(Path(source.path), _column(source))
    elif source.kind == PARQUET:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(source.path).iter_batches(columns=[source.key], batch_size=1024):
            yield from _strings(batch.column(0).to_pylist(), source)
    else:
        column = _column(source)
        # Plain Python batches ({column: [values]}) whatever format the dataset was saved with.
        ds = _load_dataset(Path(source.path)).select_columns([column]).with_format(None)
        for batch in ds.iter(batch_size=1024):
            if not isinstance(batch, Mapping):  # datasets types a batch as a dict or a list
                raise CorpusError(f"{source.path!r}: datasets returned a {type(batch).__name__} batch, not columns")
            yield from _strings(batch[column], source)


def _strings(values: list, source: Source) -> Iterator[str]:
    for value in values:
        if value is None:
            continue
        if not isinstance(value, str):
            raise CorpusError(f"{source.path!r}: column {source.key!r} holds {type(value).__name__}, not text")
        yield value


def _read_text(path: Path, max_chars: int) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            piece: list[str] = []
            size = 0
            for line in f:
                if size + len(line) > max_chars and piece:
                    yield "".join(piece)
                    piece, size = [], 0
                while len(line) > max_chars:  # one enormous line
                    yield line[:max_chars]
                    line = line[max_chars:]
                piece.append(line)
                size += len(line)
            if piece:
                yield "".join(piece)
    except UnicodeDecodeError as error:
        raise CorpusError(f"{str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start})") from None


def _read_jsonl(path: Path, key: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise CorpusError(f"{str(path)!r} line {number}: not JSON ({error.msg})") from None
                if not isinstance(record, dict) or key not in record:
                    keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                    raise CorpusError(f"{str(path)!r} line {number}: no field {key!r} (found: {keys})")
                value = record[key]
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise CorpusError(f"{str(path)!r} line {number}: field {key!r} is {type(value).__name__}, not text")
                yield value
    except UnicodeDecodeError as error:
        raise CorpusError(f"{str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start})") from None


# -- blocks and packing ------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """A run of documents that is tokenised and packed on its own (so windows do not depend on the rank count)."""

    index: int
    docs: list[tuple[int, str]]

    @property
    def chars(self) -> int:
        return sum(len(t) for _, t in self.docs)


def blocks(corpus: Corpus, block_chars: int = DEFAULT_BLOCK_CHARS) -> Iterator[Block]:
    """Consecutive documents grouped into blocks of at least ``block_chars`` characters (the last may be short)."""
    docs: list[tuple[int, str]] = []
    size, index = 0, 0
    for doc_id, text in corpus.documents():
        docs.append((doc_id, text))
        size += len(text)
        if size >= block_chars:
            yield Block(index, docs)
            docs, size, index = [], 0, index + 1
    if docs:
        yield Block(index, docs)


def block_sizes(corpus: Corpus, block_chars: int = DEFAULT_BLOCK_CHARS) -> list[int]:
    """The character count of every block, holding no text (a first pass: validates and sizes the corpus)."""
    sizes, size = [], 0
    for _, text in corpus.documents():
        size += len(text)
        if size >= block_chars:
            sizes.append(size)
            size = 0
    if size:
        sizes.append(size)
    return sizes


def assign_blocks(sizes: Sequence[int], world: int) -> list[int]:
    """The rank of every block: the largest blocks first, each to the rank with the fewest characters so far.

    Blocks differ in size (one long document makes a long block), so dealing them out in turn
    can leave one rank with far more text than another (43% more tokens of Python's
    documentation with 2 ranks) while the other waits. Longest-first greedy assignment keeps
    every rank within one block of the mean. Deterministic: ties go to the lower block and
    the lower rank, so every rank computes the same assignment from the same sizes.
    """
    if world < 1:
        raise HarvestConfigError(f"the number of processes must be at least 1, got {world}")
    heap = [(0, r) for r in range(world)]  # (characters so far, rank): already a heap
    owner = [0] * len(sizes)
    for b in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, r = heapq.heappop(heap)
        owner[b] = r
        heapq.heappush(heap, (load + sizes[b], r))
    return owner


@dataclass(frozen=True)
class Packed:
    """One block's windows.

    ``tokens``, ``doc`` (document id) and ``pos`` (position in the document) are
    ``[window, seq_len]``; ``valid[w]`` is the number of real tokens of window ``w`` (the rest is padding).
    """

    block: int
    tokens: torch.Tensor
    doc: torch.Tensor
    pos: torch.Tensor
    valid: torch.Tensor

    @property
    def n_windows(self) -> int:
        return self.tokens.shape[0]


def pack(block: Block, tokenizer, *, seq_len: int, eos: int, seed: int | None = None) -> Packed:
    """Tokenise a block's documents and pack them, ``<|endoftext|>`` after each.

    The separator belongs to the document before it, at position ``len(document)``.
    """
    docs = list(block.docs)
    if seed is not None:
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + block.index)
        docs = [docs[i] for i in torch.randperm(len(docs), generator=gen).tolist()]
    windows = pack_ids(tokenize(tokenizer, [t for _, t in docs]), seq_len, eos, pad_last=True)
    # windows.doc indexes this block's (shuffled) documents, -1 for padding: the appended -1 keeps it -1
    doc_ids = torch.tensor([doc_id for doc_id, _ in docs] + [-1], dtype=torch.int64)
    return Packed(block.index, windows.tokens, doc_ids[windows.doc], windows.pos, windows.valid)
