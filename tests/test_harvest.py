"""Corpus harvesting on the shipped tiny-english model, checked against activations captured directly."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from harvest_helpers import assert_same_harvest, topic_texts, write_text_corpus

import gpt2probe
from gpt2probe.errors import HookNameError, InvalidTypeError
from gpt2probe.harvest import Corpus, CorpusError, HarvestConfigError, OutputDirError, ResumeMismatchError, harvest
from gpt2probe.harvest.corpus import assign_blocks, blocks, pack
from gpt2probe.harvest.summaries import AttentionSummary, UnitSummary, merge_summaries
from gpt2probe.harvest.topk import TopK, batch_candidates

SEQ = 32
HOOKS = ["blocks.0.mlp.hook_post", "blocks.1.attn.hook_z", "blocks.2.hook_resid_post", "blocks.0.attn.hook_pattern"]


@pytest.fixture(scope="module")
def tiny():
    from gpt2probe.shipped import shipped_model

    return gpt2probe.load(shipped_model("tiny-english"), device="cpu")


@pytest.fixture(scope="module")
def texts():
    return topic_texts(8, 1200)


@pytest.fixture(scope="module")
def directions(tiny):
    gen = torch.Generator().manual_seed(5)
    return {"blocks.2.hook_resid_post": torch.randn(3, tiny.cfg.d_model, generator=gen)}


def _run(tiny, texts, out, **kwargs):
    kwargs = {"hooks": HOOKS, "seq_len": SEQ, "top_k": 5, "window": 3, "batch_size": 3, "progress": False,
              "block_chars": 2500, **kwargs}
    return harvest(tiny, Corpus(texts=texts), out=out, **kwargs)


def _reference_windows(tiny, texts):
    """Independent packing: every document's tokens then <|endoftext|>, in order, cut into SEQ-token windows."""
    ids, doc, pos = [], [], []
    for d, text in enumerate(texts):
        t = tiny.tokenizer(text, add_special_tokens=False)["input_ids"] + [tiny.tokenizer.eos_token_id]
        ids += t
        doc += [d] * len(t)
        pos += list(range(len(t)))
    return torch.tensor(ids), torch.tensor(doc), torch.tensor(pos)


def test_summaries_match_direct_capture(tiny, texts, directions, tmp_path):
    # One block (huge block_chars) so that the reference packing is the plain concatenation.
    h = _run(tiny, texts, tmp_path / "h", block_chars=10**9, directions=directions)
    ids, doc, pos = _reference_windows(tiny, texts)
    n = ids.shape[0]
    n_win = -(-n // SEQ)
    padded = torch.cat([ids, torch.full((n_win * SEQ - n,), tiny.tokenizer.eos_token_id)]).view(n_win, SEQ)
    _, cache = tiny.run_with_cache(padded, names=HOOKS)
    valid = (torch.arange(n_win * SEQ) < n).view(n_win, SEQ)
    units = {
        "blocks.0.mlp.hook_post": cache["blocks.0.mlp.hook_post"],
        "blocks.1.attn.hook_z": cache["blocks.1.attn.hook_z"].norm(dim=-1),
        "blocks.2.hook_resid_post": cache["blocks.2.hook_resid_post"] @ directions["blocks.2.hook_resid_post"].T,
    }
    assert h.manifest["totals"]["tokens"] == n
    for hook, acts in units.items():
        x = acts[valid].double()  # [token, unit], in corpus order
        s = h.stats(hook)
        assert torch.equal(s["count"], torch.full((x.shape[1],), n))
        torch.testing.assert_close(s["mean"], x.mean(0), atol=1e-6, rtol=0)
        torch.testing.assert_close(s["var"], x.var(0, unbiased=False), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(s["min"].double(), x.min(0).values, atol=1e-6, rtol=0)
        torch.testing.assert_close(s["max"].double(), x.max(0).values, atol=1e-6, rtol=0)
        assert torch.equal(s["active"], (x > 0).sum(0))
        # Top-k: the reference orders every token by (value desc, doc asc, pos asc).
        top = h.top_values(hook)
        for unit in range(0, x.shape[1], 7):  # a spread of units: the reference sort is slow in Python
            order = sorted(range(n), key=lambda i: (-float(x[i, unit]), int(doc[i]), int(pos[i])))[:5]
            torch.testing.assert_close(top[unit].double(), x[order, unit], atol=1e-6, rtol=0)
            examples = h.top_examples(hook, unit)
            assert [(e.doc, e.pos) for e in examples] == [(int(doc[i]), int(pos[i])) for i in order]
            best = examples[0]
            i = order[0]
            w, p = divmod(i, SEQ)
            lo, hi = max(0, p - 3), min(SEQ, p + 4, n - w * SEQ)
            assert best.tokens == padded[w, lo:hi].tolist()
            torch.testing.assert_close(torch.tensor(best.acts), acts[w, lo:hi, unit].float(), atol=1e-6, rtol=0)
            assert best.tokens[best.center] == int(ids[i])
        with pytest.raises(InvalidTypeError, match="must be an integer, got bool True"):  # an int to Python, not unit 1
            h.top_examples(hook, True)
        # Histogram: counts of each unit's values in the stored bins.
        for unit in (0, x.shape[1] - 1):
            hist = h.histogram(hook, unit)
            edges = hist.edges
            assert int(hist.counts.sum()) == n
            inner = ((x[:, unit] >= edges[0]) & (x[:, unit] < edges[-1])).sum()
            assert int(hist.counts[1:-1].sum()) == int(inner)
    pattern = cache["blocks.0.attn.hook_pattern"].double()  # [window, head, q, k]
    keep = valid.double()
    first = (pattern[..., 0] * keep[:, None]).sum((0, 2)) / keep.sum()
    prev_w = keep[:, 1:]
    prev = (pattern.diagonal(offset=-1, dim1=-2, dim2=-1) * prev_w[:, None]).sum((0, 2)) / prev_w.sum()
    torch.testing.assert_close(h.attention("blocks.0.attn.hook_pattern")["first"], first, atol=1e-6, rtol=0)
    torch.testing.assert_close(h.attention("blocks.0.attn.hook_pattern")["prev"], prev, atol=1e-6, rtol=0)


def test_packing_joins_documents_with_eos_and_pads_the_last_window(tiny, texts):
    block = next(blocks(Corpus(texts=texts), 10**9))
    packed = pack(block, tiny.tokenizer, seq_len=SEQ, eos=tiny.tokenizer.eos_token_id)
    ids, doc, pos = _reference_windows(tiny, texts)
    n = ids.shape[0]
    flat_valid = (torch.arange(packed.n_windows * SEQ) < n)
    assert torch.equal(packed.tokens.reshape(-1)[flat_valid], ids)
    assert torch.equal(packed.doc.reshape(-1)[flat_valid], doc)
    assert torch.equal(packed.pos.reshape(-1)[flat_valid], pos)
    assert int(packed.valid.sum()) == n
    shuffled = pack(block, tiny.tokenizer, seq_len=SEQ, eos=tiny.tokenizer.eos_token_id, seed=3)
    again = pack(block, tiny.tokenizer, seq_len=SEQ, eos=tiny.tokenizer.eos_token_id, seed=3)
    assert torch.equal(shuffled.tokens, again.tokens)
    assert not torch.equal(shuffled.doc, packed.doc)


def test_blocks_are_shared_between_ranks_by_their_size():
    # Python's documentation in blocks of 16k characters (a few long documents make long blocks):
    # dealt out in turn, rank 1 got 113k tokens and rank 0 79k.
    sizes = [16850, 16507, 17608, 63590, 16412, 20509, 17159, 27995, 24969, 17508, 17301, 74049, 24736, 20496,
             38568, 38961, 16654, 16831, 16548, 17016, 16901, 20639, 16505, 21382, 16400, 16470, 16456, 1529]
    for world in (1, 2, 3, 8):
        owner = assign_blocks(sizes, world)
        assert owner == assign_blocks(sizes, world)  # every rank computes the same answer
        load = [sum(s for s, r in zip(sizes, owner) if r == rank) for rank in range(world)]
        assert sorted(set(owner)) == list(range(world)) and sum(load) == sum(sizes)
        assert max(load) - min(load) <= max(sizes)  # within one block of each other
    assert max(load) - min(load) <= 17_000  # 8 ranks: within the smallest full block
    load2 = [sum(s for s, r in zip(sizes, assign_blocks(sizes, 2)) if r == rank) for rank in (0, 1)]
    assert abs(load2[0] - load2[1]) < 0.05 * sum(sizes)
    assert assign_blocks([], 3) == [] and assign_blocks([1, 1, 1, 1], 3) == [0, 1, 2, 0]


def test_topk_and_summaries_merge_in_any_order():
    gen = torch.Generator().manual_seed(0)
    # Integer values: many ties, so the exact tie-breaking path runs.
    acts = torch.randint(0, 4, (6, 7, 5), generator=gen).float()
    tokens = torch.randint(0, 50, (6, 7), generator=gen)
    # Document order opposite to the order in the batch (as with a shuffle): torch.topk's own tie order is wrong here.
    doc = (41 - torch.arange(6 * 7)).view(6, 7) // 9
    pos = (41 - torch.arange(6 * 7)).view(6, 7) % 9
    valid = torch.tensor([7, 7, 7, 7, 7, 4])
    lo, hi = torch.zeros(5), torch.full((5,), 3.0)

    def summary(rows):
        s = UnitSummary.empty(lo, hi, n_bins=6, threshold=1.0, window=2, k=4)
        for r in rows:
            r = [r] if isinstance(r, int) else r
            s.update(acts[r], tokens[r], doc[r], pos[r], valid[r])
        return s

    whole = summary([[0, 1, 2, 3, 4, 5]])
    parts = [summary([0, 3]), summary([5, 1]), summary([2, 4])]
    a = parts[0].merge(parts[1]).merge(parts[2])
    b = parts[2].merge(parts[0].merge(parts[1]))
    for s in (a, b):
        assert torch.equal(s.top.values, whole.top.values) and torch.equal(s.top.doc, whole.top.doc)
        assert torch.equal(s.top.pos, whole.top.pos) and torch.equal(s.top.ctx_tokens, whole.top.ctx_tokens)
        assert torch.equal(s.hist, whole.hist) and torch.equal(s.active, whole.active)
        # Different batches: each batch's sums of deviations are float32 (the same batches in any order: float64).
        torch.testing.assert_close(s.mean, whole.mean, atol=1e-7, rtol=0)
        torch.testing.assert_close(s.m2, whole.m2, atol=0, rtol=1e-6)
        torch.testing.assert_close(s.mean, acts[torch.arange(7) < valid[:, None]].double().mean(0), atol=1e-7, rtol=0)
    keep = (torch.arange(7) < valid[:, None])
    x, d, p = acts[keep], doc[keep], pos[keep]
    for unit in range(5):
        ref = sorted(range(x.shape[0]), key=lambda i: (-float(x[i, unit]), int(d[i]), int(p[i])))[:4]
        assert whole.top.doc[unit].tolist() == d[ref].tolist()
        assert whole.top.pos[unit].tolist() == p[ref].tolist()
    cand = batch_candidates(acts, tokens, doc, pos, valid, 50, 1)  # more slots than tokens: empty slots last
    assert isinstance(cand, TopK) and int((cand.doc >= 0).sum(1).max()) == int(valid.sum())


def _random_batches(n_batches=4, n_batch=3, n_pos=10, n_units=70, seed=11):
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(n_batches, n_batch, n_pos, n_units, generator=gen) * torch.linspace(0.1, 5, n_units) + 0.5
    tokens = torch.randint(0, 99, (n_batches, n_batch, n_pos), generator=gen)
    ids = torch.arange(n_batches * n_batch * n_pos).view(n_batches, n_batch, n_pos)
    valid = torch.full((n_batches, n_batch), n_pos)
    valid[1, 1] = 3
    return acts, tokens, ids // 13, ids % 13, valid


def _summary(n_units):
    return UnitSummary.empty(torch.full((n_units,), -4.0), torch.full((n_units,), 6.0), n_bins=9, threshold=0.5,
                             window=2, k=4)


def test_only_summaries_of_the_same_kind_merge():
    units, heads = _summary(3), AttentionSummary.empty(3)
    assert isinstance(merge_summaries(units, _summary(3)), UnitSummary)
    assert isinstance(merge_summaries(heads, AttentionSummary.empty(3)), AttentionSummary)
    for a, b in ((units, heads), (heads, units)):
        with pytest.raises(InvalidTypeError, match="only summaries of the same hook"):
            merge_summaries(a, b)


def test_summaries_are_the_same_whatever_slice_of_units_is_summarised_at_once(monkeypatch):
    """On the CPU the units are summarised a cache-sized slice at a time; slices must not change any figure."""
    from gpt2probe.harvest import summaries

    acts, tokens, doc, pos, valid = _random_batches()
    results = {}
    for elements in (1 << 30, 16 * 30, 23 * 30):  # one slice; slices of 16 units; of 23 (the last one short)
        monkeypatch.setattr(summaries, "CHUNK_ELEMENTS", elements)
        s = _summary(acts.shape[-1])
        for i in range(acts.shape[0]):
            s.update(acts[i], tokens[i], doc[i], pos[i], valid[i])
        results[elements] = s.state()
    keep = (torch.arange(acts.shape[2]) < valid[..., None]).reshape(-1)
    x = acts.reshape(-1, acts.shape[-1])[keep].double()
    edges = _summary(acts.shape[-1]).edges()
    for state in results.values():
        assert torch.equal(state["hist"], results[1 << 30]["hist"])
        assert torch.equal(state["top_doc"], results[1 << 30]["top_doc"])
        assert torch.equal(state["active"], (x > 0.5).sum(0))
        assert torch.equal(state["min"].double(), x.min(0).values) and torch.equal(state["max"].double(), x.max(0).values)
        torch.testing.assert_close(state["mean"], x.mean(0), atol=1e-6, rtol=0)
        torch.testing.assert_close(state["m2"] / x.shape[0], x.var(0, unbiased=False), atol=0, rtol=1e-5)
        inner = torch.stack([((x[:, u] >= edges[u, b]) & (x[:, u] < edges[u, b + 1])).sum() for u in range(x.shape[1])
                             for b in range(9)]).view(x.shape[1], 9)
        assert torch.equal(state["hist"][:, 1:-1], inner)
        assert torch.equal(state["hist"][:, 0], (x < edges[:, 0]).sum(0))
        assert torch.equal(state["hist"][:, -1], (x >= edges[:, -1]).sum(0))


def test_a_nan_or_infinite_activation_is_refused_and_leaves_the_summary_as_it_was(monkeypatch):
    from gpt2probe.harvest import summaries
    from gpt2probe.harvest.summaries import NonFiniteActivationError

    monkeypatch.setattr(summaries, "CHUNK_ELEMENTS", 16 * 30)  # several slices: the bad value is in a later one
    acts, tokens, doc, pos, valid = _random_batches()
    s = _summary(acts.shape[-1])
    s.update(acts[0], tokens[0], doc[0], pos[0], valid[0])
    before = {k: v.clone() for k, v in s.state().items()}
    for bad in (torch.nan, torch.inf, -torch.inf):
        broken = acts[1].clone()
        broken[2, 4, 50] = bad
        with pytest.raises(NonFiniteActivationError):
            s.update(broken, tokens[1], doc[1], pos[1], valid[1])
        after = s.state()
        for k, v in before.items():
            assert torch.equal(after[k].nan_to_num(-7.0), v.nan_to_num(-7.0)), k


@pytest.mark.parametrize("read_every_batch", [True, False], ids=["read-every-batch", "candidates-held-to-the-end"])
def test_threshold_filtered_topk_equals_merging_every_batch_in_full(read_every_batch):
    """The update looks only at values that reach a unit's k-th value; the result must be the full merge's.

    Candidates wait until the top-k is read (or until there are many): held to the end, every
    batch after the first filters with the first batch's k-th values.
    """
    gen = torch.Generator().manual_seed(3)
    n_batches, n_batch, n_pos, n_units, k, window = 9, 3, 11, 6, 5, 2
    acts = (torch.randn(n_batches, n_batch, n_pos, n_units, generator=gen) * 4).round() / 4  # ties
    acts[..., 0] = 0.0  # a dead unit: every value ties
    tokens = torch.randint(0, 99, (n_batches, n_batch, n_pos), generator=gen)
    ids = torch.randperm(n_batches * n_batch * n_pos, generator=gen).view(n_batches, n_batch, n_pos)
    doc, pos = ids // 7, ids % 7  # documents in shuffled order
    valid = torch.full((n_batches, n_batch), n_pos)
    valid[2, 0], valid[5, 2], valid[7, 1] = 4, 9, 0  # padding mid-batch, at the end, a whole empty window
    summary = UnitSummary.empty(torch.full((n_units,), -2.0), torch.full((n_units,), 2.0), n_bins=5, threshold=0.0,
                                window=window, k=k)
    reference = TopK.empty(n_units, k, window)
    for i in range(n_batches):
        summary.update(acts[i], tokens[i], doc[i], pos[i], valid[i])
        reference = reference.merge(batch_candidates(acts[i], tokens[i], doc[i], pos[i], valid[i], k, window))
        if not read_every_batch and i < n_batches - 1:
            continue
        for field in ("values", "doc", "pos", "ctx_tokens"):
            assert torch.equal(getattr(summary.top, field), getattr(reference, field)), (i, field)
        assert torch.equal(summary.top.ctx_acts.nan_to_num(-7.0), reference.ctx_acts.nan_to_num(-7.0)), i


def test_interrupted_and_resumed_run_is_identical(tiny, texts, tmp_path):
    from gpt2probe.harvest.runner import Options, run_harvest

    whole = _run(tiny, texts, tmp_path / "whole", save_raw=["blocks.0.mlp.hook_post"])
    corpus = Corpus(texts=texts)
    options = Options(top_k=5, window=3, seq_len=SEQ, batch_size=3, block_chars=2500,
                      save_raw=("blocks.0.mlp.hook_post",))
    out = tmp_path / "cut"
    stopped = run_harvest(tiny, corpus, HOOKS, out, options=options, checkpoint_windows=3, progress=False,
                          stop_after_windows=9)
    assert stopped is None and (out / "checkpoint").is_dir() and not (out / "harvest.json").exists()
    with pytest.raises(OutputDirError, match="--resume"):
        _run(tiny, texts, out, save_raw=["blocks.0.mlp.hook_post"])
    resumed = _run(tiny, texts, out, save_raw=["blocks.0.mlp.hook_post"], resume=True)
    assert_same_harvest(whole, resumed, exact=True)
    assert not (out / "checkpoint").exists()
    # Raw shards: every valid token exactly once, equal to the uninterrupted run's rows.
    datasets = pytest.importorskip("datasets")
    rows = {}
    for root in (tmp_path / "whole", out):
        manifest = json.loads((root / "raw" / "manifest.json").read_text())
        files = [str(root / "raw" / f) for f in manifest["hooks"]["blocks.0.mlp.hook_post"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = datasets.Dataset.from_parquet(files, cache_dir=str(tmp_path / "hf-cache"))
        rows[root.name] = ds.with_format("torch")[:]
    a, b = rows["whole"], rows["cut"]
    assert len(a["doc"]) == len(b["doc"]) == whole.manifest["totals"]["tokens"]
    assert torch.equal(a["doc"], b["doc"]) and torch.equal(a["pos"], b["pos"])
    assert torch.equal(a["activation"], b["activation"])
    assert a["activation"].shape[1] == tiny.cfg.d_mlp
    # The raw values are the activations: their mean is the summary's mean.
    torch.testing.assert_close(a["activation"].double().mean(0), whole.stats("blocks.0.mlp.hook_post")["mean"],
                               atol=1e-6, rtol=0)


def test_resume_of_a_finished_run_returns_it_and_a_changed_one_is_refused(tiny, texts, tmp_path):
    out = tmp_path / "h"
    first = _run(tiny, texts, out, hooks=["blocks.0.mlp.hook_post"])
    again = _run(tiny, texts, out, hooks=["blocks.0.mlp.hook_post"], resume=True)
    assert_same_harvest(first, again, exact=True)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(ResumeMismatchError, match="hooks"):
        _run(tiny, texts, out, hooks=["blocks.1.mlp.hook_post"], resume=True)
    with pytest.raises(ResumeMismatchError, match="corpus"):
        _run(tiny, texts[:-1], out, hooks=["blocks.0.mlp.hook_post"], resume=True)
    with pytest.raises(ResumeMismatchError, match="options"):
        _run(tiny, texts, out, hooks=["blocks.0.mlp.hook_post"], top_k=6, resume=True)
    with pytest.raises(OutputDirError, match="finished"):
        _run(tiny, texts, out, hooks=["blocks.0.mlp.hook_post"])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_bad_input_fails_before_any_work(tiny, texts, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match="no such file"):
        harvest(tiny, tmp_path / "missing.txt", hooks="blocks.0.mlp.hook_post", out=out)
    with pytest.raises(CorpusError, match="matches no file"):
        harvest(tiny, str(tmp_path / "*.txt"), hooks="blocks.0.mlp.hook_post", out=out)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="no text"):
        harvest(tiny, tmp_path / "empty.txt", hooks="blocks.0.mlp.hook_post", out=out, progress=False)
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n{"body": "x"}\n')
    with pytest.raises(CorpusError, match="line 2: no field 'text'"):
        harvest(tiny, Corpus(["a.jsonl"] and [tmp_path / "a.jsonl"], field="text"), hooks="blocks.0.mlp.hook_post",
                out=out, progress=False)
    with pytest.raises(CorpusError, match="say which field"):
        Corpus([tmp_path / "a.jsonl"])
    with pytest.raises(HookNameError, match="blocks.0.mlp.hook_post"):
        harvest(tiny, Corpus(texts=texts), hooks="blocks.0.mlp.hook_pots", out=out)
    with pytest.raises(HarvestConfigError, match="context"):
        harvest(tiny, Corpus(texts=texts), hooks="blocks.0.mlp.hook_post", out=out, seq_len=10_000)
    with pytest.raises(HarvestConfigError, match="pattern"):
        harvest(tiny, Corpus(texts=texts), hooks="blocks.0.attn.hook_attn_scores", out=out)
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="not empty"):
        harvest(tiny, Corpus(texts=texts), hooks="blocks.0.mlp.hook_post", out=out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_every_corpus_format_reads_the_same_documents(texts, tmp_path):
    pytest.importorskip("pyarrow")
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_text_corpus(tmp_path / "txt", texts)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    pq.write_table(pa.table({"body": texts}), tmp_path / "c.parquet")
    datasets.Dataset.from_dict({"body": texts}).save_to_disk(str(tmp_path / "ds"))
    # A dataset saved with a format (here pandas: batches are DataFrames) reads as plain Python strings.
    datasets.Dataset.from_dict({"body": texts}).with_format("pandas").save_to_disk(str(tmp_path / "ds_pandas"))
    expected = list(enumerate(texts))
    assert list(Corpus([str(tmp_path / "txt" / "*.txt")]).documents()) == expected
    assert list(Corpus([tmp_path / "c.jsonl"], field="text").documents()) == expected
    assert list(Corpus([tmp_path / "c.parquet"], column="body").documents()) == expected
    assert list(Corpus([tmp_path / "ds"], column="body").documents()) == expected
    assert list(Corpus([tmp_path / "ds_pandas"], column="body").documents()) == expected
    with pytest.raises(CorpusError, match="no column 'text'"):
        Corpus([tmp_path / "c.parquet"], column="text")
    # A long text file is cut at line ends into several documents, never losing a character.
    long = "".join(f"line {i}\n" for i in range(400))
    (tmp_path / "long.txt").write_text(long)
    pieces = [t for _, t in Corpus([tmp_path / "long.txt"], max_doc_chars=500).documents()]
    assert "".join(pieces) == long and all(len(p) <= 500 for p in pieces) and len(pieces) > 1


# -- the progress bar: a total known from the start, a count that only grows ------------------------
class RecordingBar:
    """Stands in for tqdm: records every (count, total, postfix) the bar would show."""

    shown: list = []

    def __init__(self, *args, total=None, initial=0, **kwargs):
        self.total, self.n, self.last_print_n, self.postfix = total, initial, initial, ""
        RecordingBar.shown.append((self.n, self.total, ""))

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def update(self, step):
        self.n += step
        RecordingBar.shown.append((self.n, self.total, self.postfix))

    def refresh(self):
        RecordingBar.shown.append((self.n, self.total, self.postfix))

    close = refresh


def test_progress_total_never_changes_and_the_count_only_grows(tiny, texts, tmp_path, monkeypatch):
    import tqdm

    from gpt2probe.harvest.corpus import block_sizes

    monkeypatch.setattr(tqdm, "tqdm", RecordingBar)
    RecordingBar.shown = []
    done = _run(tiny, texts, tmp_path / "h", progress=True, block_chars=1200)
    shown = RecordingBar.shown
    corpus_chars = sum(block_sizes(Corpus(texts=texts), 1200))
    assert corpus_chars == sum(len(t) for t in texts) and len(block_sizes(Corpus(texts=texts), 1200)) > 3
    assert {total for _, total, _ in shown} == {corpus_chars}  # the same total from the first line to the last
    counts = [n for n, _, _ in shown]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == corpus_chars
    assert len(set(counts)) > 5  # it moves within blocks, not only at their ends
    assert shown[-1][2] == f"{done.manifest['totals']['tokens']:,} tokens"  # the exact count beside it


def test_progress_of_a_resumed_run_starts_where_it_stopped(tiny, texts, tmp_path, monkeypatch):
    import tqdm

    from gpt2probe.harvest.runner import Options, run_harvest

    monkeypatch.setattr(tqdm, "tqdm", RecordingBar)
    options = Options(top_k=5, window=3, seq_len=SEQ, batch_size=3, block_chars=1200)
    out, corpus = tmp_path / "cut", Corpus(texts=texts)
    assert run_harvest(tiny, corpus, HOOKS, out, options=options, checkpoint_windows=2, progress=False,
                       stop_after_windows=8) is None
    RecordingBar.shown = []
    _run(tiny, texts, out, progress=True, block_chars=1200, resume=True)
    counts = [n for n, _, _ in RecordingBar.shown]
    total = sum(len(t) for t in texts)
    assert counts == sorted(counts) and counts[-1] == total and {t for _, t, _ in RecordingBar.shown} == {total}
