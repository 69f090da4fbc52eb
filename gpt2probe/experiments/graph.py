"""``gpt2probe graph``: one prompt's attribution graph over transcoders, as an offline HTML page (and JSON).

    gpt2probe graph --model tiny-english --prompt "def f(x): return x" --out reports/graph.html
    gpt2probe graph --model runs/model --transcoders runs/te-saes --tokens 5,9,2,5,9 --json graph.json
    gpt2probe graph --model tiny-english --prompt "..." --prompts-file contexts.txt   # top contexts per feature

The graph is :func:`gpt2probe.attribution_graph`'s; the page (:mod:`gpt2probe.graphs.viewer`)
shows it pruned by ``--node-threshold``/``--edge-threshold`` (circuit-tracer's 0.8 and 0.98),
and ``--json`` writes the same pruned graph in circuit-tracer's / Neuronpedia's node/link format.
Transcoders come from ``--transcoders DIR`` (one SAELens-format folder per layer, as
``gpt2probe sae train --transcoder`` writes them; folders of SAEs beside them are skipped and
named) or, for a shipped model, from its shipped transcoders.
A feature's top activating contexts come from ``--harvest DIR`` (a harvest of the transcoders'
features, ``harvest --sae``, or of their encoder directions on ``blocks.L.ln2.hook_normalized``)
or are computed on the fly over
``--prompts-file``. Mistakes print one ``error:`` line and exit with status 2, before the model
is loaded where they can be seen.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from . import options
from .attention import parse_ids
from .common import (
    Parser,
    add_common_arguments,
    announce_model,
    check_out,
    examples_to_show,
    finite_float,
    load_model,
    non_negative_int,
    positive_int,
    read_prompts_file,
    run_command,
)

if TYPE_CHECKING:
    import torch

DEFAULT_OUT = "reports/graph.html"




def build_parser() -> Parser:
    parser = Parser(
        prog="gpt2probe graph",
        description="One prompt's attribution graph over per-layer transcoders (Ameisen et al. 2025), as an offline "
                    "HTML page: nodes by layer and position, click for edges and top contexts, group into supernodes.",
    )
    add_common_arguments(parser, DEFAULT_OUT)
    source = parser.add_mutually_exclusive_group(required=True)
    options.add(source, "--prompt", "whose next-token prediction is traced")
    options.add(source, "--prompt-from", "traced as one prompt")
    options.add(source, "--tokens")
    options.add(parser, "--prepend-bos")
    parser.add_argument("--transcoders", type=Path,
                        help="a directory of transcoders, one SAELens-format folder per layer (default: the shipped "
                             "model's shipped transcoders)")
    parser.add_argument("--max-logits", type=positive_int, default=10, help="at most this many logit nodes (default: 10)")
    parser.add_argument("--desired-logit-prob", type=finite_float, default=0.95,
                        help="logit nodes: the likeliest tokens until their probabilities sum to this (default: 0.95)")
    parser.add_argument("--max-feature-nodes", type=non_negative_int,
                        help="keep at most this many features, the most influential on the logits (default: all active)")
    options.add(parser, "--batch-size", "copies of the prompt per backward pass, one per target node (default: 32)",
                default=32)
    parser.add_argument("--node-threshold", type=finite_float, default=0.8,
                        help="the page and --json keep the nodes holding this share of the influence (default: 0.8)")
    parser.add_argument("--edge-threshold", type=finite_float, default=0.98,
                        help="... and the edges holding this share (default: 0.98)")
    options.add(parser, "--json", "the pruned graph in circuit-tracer / Neuronpedia's format")
    parser.add_argument("--supernodes", type=Path,
                        help="a graph JSON saved from the page (or by --json) whose supernodes the page starts with")
    contexts = parser.add_mutually_exclusive_group()
    contexts.add_argument("--harvest", type=Path,
                          help="a harvest directory of the transcoders' features (harvest --sae) or encoder directions: "
                               "top contexts per feature")
    options.add(contexts, "--prompts-file", "each feature's top activating contexts among them, computed now")
    options.add(parser, "--examples", "top contexts shown per feature, with --harvest or --prompts-file (default: 5, or "
                "as many as the harvest kept)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no model: thresholds, token ids, files and folders."""
    for name in ("node_threshold", "edge_threshold"):
        value = getattr(args, name)
        if not 0 <= value <= 1:
            raise UsageError(f"--{name.replace('_', '-')} must lie in [0, 1], got {value:g}")
    if not 0 < args.desired_logit_prob <= 1:
        raise UsageError(f"--desired-logit-prob must lie in (0, 1], got {args.desired_logit_prob:g}")
    if args.tokens is not None:
        parse_ids(args.tokens)
        if args.prepend_bos:
            raise UsageError("--prepend-bos is for a text prompt; with --tokens, put <|endoftext|>'s id first "
                             "(50256 in GPT-2's vocabulary)")
    if args.prompt == "" and not args.prepend_bos:
        raise UsageError("--prompt is empty: give text, or --prepend-bos to start from <|endoftext|>")
    if args.examples is not None and args.harvest is None and args.prompts_file is None:
        raise UsageError("--examples counts top contexts per feature, which come from --harvest DIR or "
                         "--prompts-file FILE: pass one of them, or drop --examples")
    if args.prompt_from is not None and not args.prompt_from.is_file():
        raise UsageError(f"--prompt-from {str(args.prompt_from)!r} is not a file")
    if args.transcoders is not None and not args.transcoders.is_dir():
        raise UsageError(f"--transcoders {str(args.transcoders)!r} is not a directory of transcoder folders")
    if args.transcoders is None:
        shipped_transcoders_for(args.model)  # raises unless the model ships transcoders
    if args.harvest is not None and not args.harvest.is_dir():
        raise UsageError(f"--harvest {str(args.harvest)!r} is not a harvest directory")
    if args.supernodes is not None and not args.supernodes.is_file():
        raise UsageError(f"--supernodes {str(args.supernodes)!r} is not a file")
    if args.json is not None:
        check_out(args.json, "--json")  # before the graph is computed, not after
    if args.harvest is not None and args.examples is not None:
        from ..harvest.store import MANIFEST, read_manifest

        if not (args.harvest / MANIFEST).is_file():
            raise UsageError(f"--harvest {str(args.harvest)!r} holds no finished harvest (no {MANIFEST})")
        kept = int(read_manifest(args.harvest / MANIFEST).value["options"]["top_k"])
        examples_to_show(args.examples, 5, kept, str(args.harvest))


def shipped_transcoders_for(model: str | None) -> str:
    """The shipped model whose shipped transcoders stand in for a missing ``--transcoders``, or a :class:`UsageError`."""
    from ..shipped import NOTES

    name = model if model is not None else "tiny-english"  # the default model falls back to tiny-english offline
    if name not in NOTES or Path(name).exists():
        raise UsageError(f"--model {name!r} has no shipped transcoders: pass --transcoders DIR (one transcoder folder "
                         "per layer, as `gpt2probe sae train --transcoder` writes them)")
    from ..shipped import shipped_model

    if not (Path(shipped_model(name)) / "transcoders").is_dir():
        raise UsageError(f"{name!r} ships no transcoders (in {str(Path(shipped_model(name)))!r}): pass --transcoders DIR "
                         "(make them with tools/train_tiny_english_saes.py or gpt2probe sae train --transcoder)")
    return name


def load_transcoder_dir(directory: Path, device: str | torch.device | None) -> list:
    """Every transcoder folder directly under ``directory`` (SAE folders beside them are skipped and named)."""
    from ..sae import Transcoder
    from ..sae.saelens_format import CFG_FILE, config_from_saelens, read_sae_cfg_json

    found, skipped = [], []
    folders = [directory] if (directory / CFG_FILE).is_file() else sorted(p for p in directory.iterdir() if p.is_dir())
    for folder in folders:
        if not (folder / CFG_FILE).is_file():
            continue
        cfg = config_from_saelens(read_sae_cfg_json(folder / CFG_FILE), folder / CFG_FILE)
        if cfg.is_transcoder:
            found.append(Transcoder.load(folder, device=device))
        else:
            skipped.append(folder.name)
    if not found:
        raise UsageError(f"--transcoders {str(directory)!r} holds no transcoder folder (cfg.json with hook_name_out)"
                         + (f"; skipped SAEs: {', '.join(skipped)}" if skipped else ""))
    if skipped:
        print(f"Note: skipped {len(skipped)} SAE folder(s) in {directory}: {', '.join(skipped)}")
    return found


def _transcoders(args: argparse.Namespace, probe) -> list:
    if args.transcoders is not None:
        return load_transcoder_dir(args.transcoders, probe.cfg.device)
    import gpt2probe

    name = shipped_transcoders_for(probe.cfg.model_name if args.model is None else args.model)
    loaded = gpt2probe.load_transcoders(name)
    listed = list(loaded.values()) if isinstance(loaded, dict) else list(loaded)
    return [tc.to(probe.cfg.device) for tc in listed]


def _prompt(args: argparse.Namespace, probe):
    if args.tokens is not None:
        import torch

        return torch.tensor(parse_ids(args.tokens)), False
    if args.prompt_from is not None:
        try:
            return args.prompt_from.read_text(encoding="utf-8"), args.prepend_bos
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--prompt-from {str(args.prompt_from)!r} cannot be read as UTF-8 text: {error}") from None
    return args.prompt, args.prepend_bos


def run(args: argparse.Namespace) -> Path:
    from ..graphs import attribution_graph
    from ..graphs.contexts import contexts_from_harvest, contexts_from_texts
    from ..graphs.files import read_supernodes
    from ..graphs.viewer import write_graph_html

    check_args(args)
    texts = read_prompts_file(args.prompts_file) if args.prompts_file is not None else None
    supernodes = read_supernodes(args.supernodes) if args.supernodes is not None else []
    probe, fell_back = load_model(args)
    cfg = probe.cfg
    notes = announce_model(probe, fell_back, "Its features are those of transcoders trained on that model.",
                           f"{cfg.n_layers} layers, d_model {cfg.d_model}")
    transcoders = _transcoders(args, probe)
    prompt, prepend_bos = _prompt(args, probe)
    graph = attribution_graph(probe, prompt, transcoders=transcoders, max_logits=args.max_logits,
                              desired_logit_prob=args.desired_logit_prob, max_feature_nodes=args.max_feature_nodes,
                              batch_size=args.batch_size, prepend_bos=prepend_bos)
    pruned = graph.prune(args.node_threshold, args.edge_threshold)
    shown = [tuple(graph.features[i, [0, 2]].tolist()) for i in pruned.node_mask[:graph.n_features].nonzero()[:, 0]]
    contexts = {}
    if args.harvest is not None:
        contexts, harvest_notes = contexts_from_harvest(probe, transcoders, args.harvest, sorted(set(shown)),
                                                        k=args.examples or 5)
        notes += harvest_notes
    elif texts is not None:
        contexts = contexts_from_texts(probe, transcoders, texts, sorted(set(shown)), k=args.examples or 5)
    path = write_graph_html(graph, args.out, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold,
                            contexts=contexts, supernodes=supernodes, notes=notes,
                            title=f"Attribution graph: {cfg.model_name}")
    print(f"{graph!r}")
    print(f"replacement score {graph.replacement_score():.3f}, completeness {graph.completeness_score():.3f}; "
          f"the page shows {int(pruned.node_mask.sum())} nodes")
    if args.json is not None:
        graph.save(args.json, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold,
                   supernodes=supernodes)
        print(f"Graph JSON written to {args.json}")
    print(f"Page written to {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``gpt2probe graph``: every mistake is one ``error:`` line and exit status 2."""
    return run_command(build_parser(), run, argv)
