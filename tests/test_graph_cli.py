"""``gpt2probe graph`` on a tiny model with transcoders written to a temporary folder, mistakes included."""

from __future__ import annotations

import json
import re

import pytest
import torch

import gpt2probe
from gpt2probe import Transcoder
from gpt2probe.cli import main
from gpt2probe.graphs import AttributionGraph, attribution_graph
from gpt2probe.graphs.contexts import contexts_from_texts
from gpt2probe.graphs.files import read_supernodes
from gpt2probe.sae import SAEConfig

from models import SMALL, VOCAB

D_SAE = 29


def _transcoder(layer: int, d_model: int, seed: int) -> Transcoder:
    gen = torch.Generator().manual_seed(seed + layer)
    tc = Transcoder(SAEConfig.for_transcoder(layer, d_model=d_model, d_sae=D_SAE, architecture="standard"))
    with torch.no_grad():
        tc.W_enc.copy_(torch.randn(d_model, D_SAE, generator=gen) / d_model**0.5)
        tc.b_enc.copy_(-0.8 + 0.3 * torch.randn(D_SAE, generator=gen))
        tc.W_dec.copy_(0.5 * torch.randn(D_SAE, d_model, generator=gen))
        tc.b_dec.copy_(0.1 * torch.randn(d_model, generator=gen))
    return tc


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A transcoder folder per layer for SMALL and VOCAB, plus an SAE folder beside SMALL's (skipped, named)."""
    from gpt2probe import SAE

    out = {}
    for name, spec in (("small", SMALL), ("vocab", VOCAB)):
        root = tmp_path_factory.mktemp(f"tcs-{name}")
        for layer in range(spec.n_layer):
            _transcoder(layer, spec.n_embd, seed=3).save(root / f"blocks.{layer}.hook_mlp_out-transcoder")
        out[name] = root
    SAE(SAEConfig(d_in=SMALL.n_embd, d_sae=7, hook_name="blocks.0.hook_resid_post")).save(out["small"] / "blocks.0.hook_resid_post")
    return out


def run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _embedded(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', html, re.S).group(1))


def test_graph_command_writes_the_page_and_json(small_dir, small_probe, folders, tmp_path, capsys):
    out, js = tmp_path / "g.html", tmp_path / "g.json"
    ids = "1,5,9,2,5,9,2"
    code, stdout, err = run(capsys, ["graph", "--model", str(small_dir), "--transcoders", str(folders["small"]),
                                     "--tokens", ids, "--out", str(out), "--json", str(js), "--batch-size", "5",
                                     "--node-threshold", "0.9", "--edge-threshold", "0.99", "--device", "cpu"])
    assert code == 0, err
    assert "skipped 1 SAE folder(s)" in stdout and "blocks.0.hook_resid_post" in stdout
    assert "replacement score" in stdout and str(out) in stdout
    document = _embedded(out.read_text())
    assert document["metadata"]["gpt2probe"]["tokens"] == [int(i) for i in ids.split(",")]
    # the JSON is the same pruned graph, and it loads with the identity intact
    saved = json.loads(js.read_text())
    assert [n["node_id"] for n in saved["nodes"]] == [n["node_id"] for n in document["nodes"]]
    loaded = AttributionGraph.load(js)
    tcs = [Transcoder.load(folders["small"] / f"blocks.{layer}.hook_mlp_out-transcoder") for layer in range(SMALL.n_layer)]
    full = attribution_graph(small_probe, torch.tensor([int(i) for i in ids.split(",")]), transcoders=tcs, batch_size=5)
    assert loaded.n_active_features == full.n_active_features
    rows = list(range(loaded.n_features)) + list(range(loaded.logit_slice.start, loaded.n_nodes))
    lhs = loaded.adjacency.sum(1) + loaded.constant + loaded.unselected_input
    assert float((lhs[rows] - loaded.node_values[rows]).abs().max()) < 1e-4


def test_contexts_from_a_prompt_set_and_supernodes_from_a_file(vocab_dir, vocab_probe, folders, tmp_path, capsys):
    texts = ["The cat sat on the mat.", "A dog ran to the park and the dog sat.", "The mat was red."]
    prompts = tmp_path / "texts.txt"
    prompts.write_text("\n".join(texts) + "\n", encoding="utf-8")
    first = tmp_path / "first.json"
    code, _, err = run(capsys, ["graph", "--model", str(vocab_dir), "--transcoders", str(folders["vocab"]),
                                "--prompt", "The cat sat on the", "--out", str(tmp_path / "a.html"), "--json", str(first),
                                "--node-threshold", "1", "--edge-threshold", "1"])
    assert code == 0, err
    ids = [n["node_id"] for n in json.loads(first.read_text())["nodes"] if n["feature_type"] == "cross layer transcoder"]
    document = json.loads(first.read_text())
    document["qParams"]["supernodes"] = [["my group", *ids[:2]]]
    first.write_text(json.dumps(document), encoding="utf-8")
    out = tmp_path / "b.html"
    code, _, err = run(capsys, ["graph", "--model", str(vocab_dir), "--transcoders", str(folders["vocab"]),
                                "--prompt", "The cat sat on the", "--out", str(out), "--prompts-file", str(prompts),
                                "--supernodes", str(first), "--examples", "3", "--node-threshold", "1", "--edge-threshold", "1"])
    assert code == 0, err
    page = _embedded(out.read_text())
    assert page["qParams"]["supernodes"] == [["my group", *ids[:2]]]
    contexts = page["gpt2probe_contexts"]
    features = {(int(n["layer"]), n["feature"]) for n in page["nodes"] if n["feature_type"] == "cross layer transcoder"}
    assert set(contexts) == {f"{layer}_{f}" for layer, f in features}
    # independently: the feature's activation on each text at each position, by the transcoder on a captured MLP input
    tcs = [Transcoder.load(folders["vocab"] / f"blocks.{layer}.hook_mlp_out-transcoder") for layer in range(VOCAB.n_layer)]
    layer, feature = sorted(features)[0]
    values = []
    for text in texts:
        _, cache = vocab_probe.run_with_cache(text, names=[f"blocks.{layer}.ln2.hook_normalized"])
        acts = tcs[layer].encode(cache[f"blocks.{layer}.ln2.hook_normalized"][0])[:, feature].detach()
        values += [float(a) for a in acts if a > 0]
    expected = sorted(values, reverse=True)[:3]
    got = [c["value"] for c in contexts[f"{layer}_{feature}"]]
    assert got == pytest.approx(expected, abs=1e-5)
    for c in contexts[f"{layer}_{feature}"]:
        assert c["acts"][c["center"]] == pytest.approx(c["value"], abs=1e-6)
    assert contexts == contexts_from_texts(vocab_probe, tcs, texts, sorted(features), k=3)



def test_contexts_refuse_features_outside_the_transcoders(vocab_probe):
    """A feature index of -1 used to show the last feature's contexts under the key "1_-1"."""
    tcs = [_transcoder(layer, VOCAB.n_embd, seed=3) for layer in range(VOCAB.n_layer)]
    texts = ["The cat sat on the mat."]
    assert set(contexts_from_texts(vocab_probe, tcs, texts, [(1, D_SAE - 1), (0, 0)], k=2)) == {"0_0", f"1_{D_SAE - 1}"}
    for features, error, match in [
        ([(1, -1)], gpt2probe.InvalidArgumentError, rf"transcoder 1's feature -1 is outside 0..{D_SAE - 1}"),
        ([(1, D_SAE)], gpt2probe.InvalidArgumentError, rf"transcoder 1's feature {D_SAE} is outside 0..{D_SAE - 1}"),
        ([(-1, 0)], gpt2probe.LayerIndexError, rf"layer of feature pair \(-1, 0\), -1 is outside 0..{VOCAB.n_layer - 1}"),
    ]:
        with pytest.raises(error, match=match):
            contexts_from_texts(vocab_probe, tcs, texts, features)
    with pytest.raises(gpt2probe.InvalidArgumentError, match=r"k \(contexts per feature\) must be >= 1, got 0"):
        contexts_from_texts(vocab_probe, tcs, texts, [(0, 0)], k=0)
    with pytest.raises(gpt2probe.InvalidArgumentError, match=r"window \(tokens either side\) must be >= 0, got -1"):
        contexts_from_texts(vocab_probe, tcs, texts, [(0, 0)], window=-1)

def test_contexts_from_a_harvest_of_features_are_those_of_the_encoder_directions(vocab_probe, tmp_path):
    """Two independent routes: the transcoders' features harvested (their activations), and their encoder
    directions harvested (projections, plus b_enc): for these ReLU transcoders the activation is the
    pre-activation wherever it is positive, so the active contexts must agree."""
    from harvest_helpers import topic_texts

    from gpt2probe.graphs.contexts import contexts_from_harvest
    from gpt2probe.harvest import Corpus, harvest

    tcs = [_transcoder(layer, VOCAB.n_embd, seed=3) for layer in range(VOCAB.n_layer)]
    corpus = Corpus(texts=topic_texts(3, 600))
    settings = dict(seq_len=16, top_k=4, window=3, progress=False)
    by_features = harvest(vocab_probe, corpus, saes=tcs, out=tmp_path / "features", **settings)
    hooks = [f"blocks.{layer}.ln2.hook_normalized" for layer in range(VOCAB.n_layer)]
    by_directions = harvest(vocab_probe, corpus, hooks=hooks, out=tmp_path / "directions", **settings,
                            directions={h: tc.W_enc.detach().T.contiguous() for h, tc in zip(hooks, tcs)})
    features = [(layer, f) for layer in range(VOCAB.n_layer) for f in range(D_SAE)]
    got, notes = contexts_from_harvest(vocab_probe, tcs, by_features.directory, features, k=4)
    ref, _ = contexts_from_harvest(vocab_probe, tcs, by_directions.directory, features, k=4)
    assert "activations" in notes[0] and set(got) == set(ref)
    n_contexts = 0
    for key in ref:
        active = [c for c in ref[key] if c["value"] > 0]
        assert [(c["tokens"], c["center"]) for c in got[key]] == [(c["tokens"], c["center"]) for c in active], key
        for mine, theirs in zip(got[key], active):
            assert mine["value"] == pytest.approx(theirs["value"], abs=1e-5)
            relu = [a if a != a else max(a, 0.0) for a in theirs["acts"]]  # NaN: outside the window
            assert mine["acts"] == pytest.approx(relu, abs=1e-5, nan_ok=True)
        n_contexts += len(active)
    assert n_contexts > 20  # the comparison is not empty
    other = [_transcoder(layer, VOCAB.n_embd, seed=4) for layer in range(VOCAB.n_layer)]
    with pytest.raises(gpt2probe.InvalidArgumentError, match="features of another coder"):
        contexts_from_harvest(vocab_probe, other, by_features.directory, [(0, 0)], k=2)


def test_supernodes_file_is_read_and_checked(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"qParams": {"supernodes": [["a", "1_2_3"]]}}), encoding="utf-8")
    assert read_supernodes(path) == [["a", "1_2_3"]]
    from gpt2probe.errors import FileFormatError

    for bad in ('{"qParams": {"supernodes": [["only a name"]]}}', '{"qParams": {}}', '{"qParams": {"supernodes": [[1, 2]]}}', "{"):
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(FileFormatError):
            read_supernodes(path)


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(args):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("gpt2probe.experiments.graph.load_model", refuse)


@pytest.mark.parametrize("extra,contains", [
    (["--node-threshold", "1.5"], "--node-threshold"),
    (["--desired-logit-prob", "0"], "--desired-logit-prob"),
    (["--tokens", "1,x"], "--tokens"),
    (["--transcoders", "/nonexistent/tcs"], "--transcoders"),
    (["--harvest", "/nonexistent/h"], "--harvest"),
    (["--supernodes", "/nonexistent/s.json"], "--supernodes"),
    (["--max-feature-nodes", "-1"], "--max-feature-nodes"),
])
def test_mistakes_fail_before_loading(small_dir, folders, tmp_path, capsys, no_loading, extra, contains):
    argv = ["graph", "--model", str(small_dir), "--out", str(tmp_path / "g.html")]
    if "--tokens" not in extra:
        argv += ["--tokens", "1,2,3"]
    if "--transcoders" not in extra:
        argv += ["--transcoders", str(folders["small"])]
    code, _, err = run(capsys, argv + extra)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and contains in lines[0], err
    assert not (tmp_path / "g.html").exists()


def test_without_transcoders(small_dir, tmp_path, capsys, no_loading, monkeypatch):
    code, _, err = run(capsys, ["graph", "--model", str(small_dir), "--tokens", "1,2", "--out", str(tmp_path / "g.html")])
    assert code == 2 and "has no shipped transcoders" in err and "--transcoders DIR" in err
    from gpt2probe.shipped import shipped_model

    if (shipped_model("tiny-english") / "transcoders").is_dir():
        return  # the shipped model has its transcoders: nothing to refuse
    code, _, err = run(capsys, ["graph", "--model", "tiny-english", "--tokens", "1,2", "--out", str(tmp_path / "g.html")])
    assert code == 2 and "'tiny-english' ships no transcoders" in err and "--transcoders DIR" in err


def test_a_folder_without_transcoders_is_refused(small_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, ["graph", "--model", str(small_dir), "--transcoders", str(tmp_path / "empty"),
                                "--tokens", "1,2", "--out", str(tmp_path / "g.html")])
    assert code == 2 and "holds no transcoder folder" in err
