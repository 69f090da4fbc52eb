"""Attribution graph time and peak memory on a GPT-2-small-shaped model with random transcoders.

Random weights (GPT-2 small's shape: 12 layers, d_model 768, 12 heads, vocabulary 50,257) and
12 random ReLU transcoders of ``--d-sae`` features whose encoder biases are set so that about
``--l0`` features are active per position; a random prompt of ``--pos`` tokens.

Issue 22's target: 64 tokens, 24,576 features per transcoder, under 10 minutes on 2 CPU cores.

Run: ``python -m benchmarks.bench_graph [--pos 64] [--d-sae 24576] [--l0 30] [--max-feature-nodes N] [--batch-size 32]
[--n-layers 12]``.

``--n-layers`` is the random model's number of layers; it was ``--layers``, which in gpt2probe's
tools lists layer indices (``tools/train_tiny_english_saes.py --layers 0 2``), and that spelling
still works here, with a warning.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` and ``gpt2probe`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import gpt2probe  # noqa: E402
from gpt2probe.experiments.options import add_old_spelling, take_old_spellings  # noqa: E402


class RandomTranscoder:
    """A ReLU transcoder with random weights (fits gpt2probe.graphs.TranscoderLike)."""

    def __init__(self, layer: int, d_model: int, d_sae: int, l0: int, gen: torch.Generator) -> None:
        self.cfg = SimpleNamespace(layer=layer)
        self.W_enc = torch.randn(d_model, d_sae, generator=gen) / d_model**0.5
        self.W_dec = torch.randn(d_sae, d_model, generator=gen) * 0.05
        self.b_dec = torch.zeros(d_model)
        self.W_skip = None
        # LayerNorm-normalised inputs have norm ~sqrt(d_model): pre-activations are ~N(0, 1) before the bias
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - l0 / d_sae))
        self.b_enc = torch.full((d_sae,), -float(z))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)


N_LAYERS = 12  # GPT-2 small's


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (``--layers``, the old spelling of ``--n-layers``, taken with a warning)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pos", type=int, default=64)
    parser.add_argument("--d-sae", type=int, default=24576)
    parser.add_argument("--l0", type=int, default=30)
    parser.add_argument("--max-feature-nodes", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-layers", type=int, default=None, help=f"layers of the random model (default {N_LAYERS})")
    add_old_spelling(parser, "--layers", "--n-layers", "it counted the random model's layers, which is --n-layers "
                     "(--layers lists layer indices in gpt2probe's tools)", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-edge-gib", type=float, default=4.0)
    args = take_old_spellings(parser, parser.parse_args(argv))
    if args.n_layers is None:
        args.n_layers = N_LAYERS
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=args.n_layers, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)
    model = GPT2LMHeadModel(config).eval()
    probe = gpt2probe.load(model)
    gen = torch.Generator().manual_seed(0)
    tcs = [RandomTranscoder(layer, 768, args.d_sae, args.l0, gen) for layer in range(args.n_layers)]
    ids = torch.randint(0, 50257, (args.pos,), generator=gen)
    start = time.perf_counter()
    graph = gpt2probe.attribution_graph(probe, ids, transcoders=tcs, max_feature_nodes=args.max_feature_nodes,
                                        batch_size=args.batch_size, max_edge_bytes=int(args.max_edge_gib * 2**30))
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    result = {"seconds": round(seconds, 1), "peak_rss_gib": round(peak_gib, 2), "active_features": graph.n_active_features,
              "feature_nodes": graph.n_features, "edges": int((graph.adjacency != 0).sum())}
    print(result)
    return result


if __name__ == "__main__":
    main()
