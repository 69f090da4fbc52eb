"""The induction tutorial's graph: an in-context copying prompt traced through a model's transcoders.

Parameterised so it runs on whatever tiny-english ships (issue 22's tutorial waits for the
retrained model and its transcoders): ``--repeat-length`` random common tokens followed by
the same tokens again (so the next token is predictable only by copying), its attribution graph,
the scores, and the strongest paths into the top logit, with the features on them at the
repeated token (the induction head's query) and the token before its earlier copy.

    python tools/graph_induction.py --model tiny-english --out reports/induction-graph.html [--repeat-length 12]

``--repeat-length`` was ``--block``, which elsewhere means a transformer block; that spelling
still works, with a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import gpt2probe  # noqa: E402
from gpt2probe.experiments.graph import load_transcoder_dir  # noqa: E402
from gpt2probe.experiments.options import add_old_spelling, take_old_spellings  # noqa: E402
from gpt2probe.graphs.viewer import write_graph_html  # noqa: E402


def copying_prompt(probe, repeat_length: int, seed: int, vocab: int) -> torch.Tensor:
    """``<|endoftext|>`` + ``repeat_length`` random tokens among the ``vocab`` lowest ids (BPE merges: common) + the same again."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(256, 256 + vocab, (repeat_length,), generator=gen)
    bos = probe.tokenizer.bos_token_id
    return torch.cat([torch.tensor([bos]), ids, ids[:-1]])


def strongest_paths(graph, n_paths: int = 5, depth: int = 4) -> list[list[int]]:
    """Greedy paths from the top logit back to the sources, following the largest |edge| at each step."""
    paths = []
    start = graph.logit_slice.start
    order = torch.argsort(graph.adjacency[start].abs(), descending=True)[:n_paths].tolist()
    for first in order:
        path = [start, first]
        while len(path) < depth + 1 and path[-1] < graph.n_features:
            row = graph.adjacency[path[-1]].abs()
            if float(row.max()) == 0:
                break
            path.append(int(row.argmax()))
        paths.append(path)
    return paths


REPEAT_LENGTH = 12


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (``--block``, the old spelling of ``--repeat-length``, taken with a warning)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-english")
    parser.add_argument("--transcoders", type=Path, help="transcoder folders (default: the shipped ones)")
    parser.add_argument("--out", type=Path, required=True, help="the graph page")
    parser.add_argument("--repeat-length", type=int, default=None,
                        help=f"random tokens shown, then repeated (default {REPEAT_LENGTH})")
    add_old_spelling(parser, "--block", "--repeat-length", "it was the number of random tokens repeated, which is "
                     "--repeat-length (a block is a transformer block in gpt2probe)", type=int)
    parser.add_argument("--vocab", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-feature-nodes", type=int, default=None)
    args = take_old_spellings(parser, parser.parse_args(argv))
    if args.repeat_length is None:
        args.repeat_length = REPEAT_LENGTH
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    probe = gpt2probe.load(args.model, device="cpu")
    if args.transcoders is not None:
        transcoders = load_transcoder_dir(args.transcoders, probe.cfg.device)
    else:
        transcoders = gpt2probe.load_transcoders(args.model)  # the shipped ones
    ids = copying_prompt(probe, args.repeat_length, args.seed, args.vocab)
    graph = gpt2probe.attribution_graph(probe, ids, transcoders=transcoders, max_feature_nodes=args.max_feature_nodes)
    print(repr(graph))
    print(f"top logit {graph.logit_str_tokens[0]!r} (p={float(graph.logit_probabilities[0]):.3f}); "
          f"expected next token {probe.to_str_tokens([int(ids[args.repeat_length])])[0]!r}")
    print(f"replacement score {graph.replacement_score():.3f}, completeness {graph.completeness_score():.3f}")
    for path in strongest_paths(graph):
        print("  <- ".join(graph.describe(node) for node in path))
    last, earlier = len(ids) - 1, args.repeat_length  # the repeated token, and the token after its earlier copy
    for label, pos in (("at the repeated token", last), ("after its earlier copy", earlier)):
        at = [i for i in range(graph.n_features) if int(graph.features[i, 1]) == pos]
        influence = graph.node_influence()
        top = sorted(at, key=lambda i: -float(influence[i]))[:5]
        print(f"most influential features {label} (@{pos}): " + ", ".join(graph.describe(i) for i in top))
    # The graph freezes attention, so heads are not nodes: which heads carry the hops is read off
    # the frozen patterns, at the two hops an induction circuit makes.
    from gpt2probe import names as N

    patterns = [N.pattern(layer) for layer in range(probe.cfg.n_layers)]
    _, cache = probe.run_with_cache(ids[None], names=patterns)
    for label, query, key in (("repeated token -> token after its earlier copy", last, earlier),
                              ("token after the earlier copy -> the earlier copy", earlier, earlier - 1)):
        weights = torch.stack([cache[name][0, :, query, key] for name in patterns])  # [layer, head]
        top = torch.argsort(weights.flatten(), descending=True)[:3].tolist()
        heads = ", ".join(f"L{i // weights.shape[1]}H{i % weights.shape[1]} {float(weights.flatten()[i]):.2f}" for i in top)
        print(f"attention {label} (@{query} -> @{key}): {heads}")
    write_graph_html(graph, args.out, title=f"Induction graph: {args.model}")
    print(f"Page written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
