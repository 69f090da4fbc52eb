"""``gpt2probe sae train``, ``evaluate`` and ``report``: sparse autoencoders and transcoders from the command line.

    gpt2probe sae train --model tiny-english --corpus 'docs/*.txt' --hook blocks.2.hook_resid_post \\
        --d-sae 512 --k 8 --out runs/sae-l2
    gpt2probe sae train --model tiny-english --corpus docs.jsonl --field text --transcoder --layer 2 ...
    gpt2probe sae evaluate --model tiny-english --sae runs/sae-l2 --corpus 'held-out/*.txt'
    torchrun --nproc_per_node 2 -m gpt2probe sae train ...   # data parallel (gpt2probe.sae.distributed)
    gpt2probe harvest --model tiny-english --corpus 'docs/*.txt' --sae runs/sae-l2 --out runs/features
    gpt2probe sae report runs/features --out features.html      # the offline feature browser

Mistakes print one ``error:`` line and exit with status 2, before the model is loaded where they can be seen.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ..configs.base import add_arguments, from_args, to_dict
from ..configs.sae import ARCHITECTURES, SAETrainConfig
from . import options
from .common import (
    Parser,
    UsageError,
    check_device,
    check_out,
    check_out_dir,
    check_text_model,
    examples_to_show,
    positive_int,
    run_command,
    select_hooks,
)
from .harvest import load_model


def _corpus_args(p: argparse.ArgumentParser) -> None:
    options.add(p, "--model", "(tiny-english)", required=True)
    options.add(p, "--corpus", "text files or globs, .jsonl, .parquet, datasets dirs", required=True)
    options.add(p, "--field")
    options.add(p, "--column")
    options.add(p, "--max-documents")
    options.add(p, "--seq-len", "documents packed end to end (default: the model's context, at most 128)")
    options.add(p, "--device")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="gpt2probe sae", description="Train and evaluate sparse autoencoders and transcoders.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="train an SAE on a hook, or a transcoder on a layer's MLP")
    _corpus_args(t)
    what = t.add_mutually_exclusive_group(required=True)
    what.add_argument("--hook", help="the hook an SAE reads and reconstructs, e.g. blocks.2.hook_resid_post")
    options.add(what, "--layer", "with --transcoder: the block whose MLP it replaces")
    t.add_argument("--transcoder", action="store_true", help="train a transcoder (needs --layer)")
    options.add(t, "--out", "a directory for the trained coder (cfg.json + weights)", required=True)
    t.add_argument("--d-sae", type=positive_int, required=True, help="number of features")
    t.add_argument("--architecture", default="topk", choices=list(ARCHITECTURES), help="the coder's activation "
                   "(default: topk)")
    t.add_argument("--k", type=positive_int, help="active features per token (topk, batchtopk)")
    # the training settings: one flag per SAETrainConfig field, help and defaults from its fields
    add_arguments(SAETrainConfig, t, shared=options.SHARED, add_shared=options.add)
    options.add(t, "--checkpoint-every", "(in OUT/checkpoint)")
    options.add(t, "--resume", "from OUT/checkpoint")
    options.add(t, "--no-progress")
    options.add_deprecated(t, "sae train")
    e = sub.add_parser("evaluate", help="reconstruction, sparsity and spliced language-model loss on a corpus")
    _corpus_args(e)
    options.add(e, "--sae", "one, to evaluate", required=True)
    options.add(e, "--batch-size", "windows per forward pass (default: 8)", default=8)
    options.add(e, "--json", "the figures")
    r = sub.add_parser("report", help="an offline HTML feature browser of a harvest made with --sae")
    r.add_argument("dir", type=Path, help="the harvest's output directory (gpt2probe harvest --sae ...)")
    options.add(r, "--out", "an HTML file (default: DIR/features.html)")
    options.add(r, "--sae", "the harvested ones (default: the folders the harvest recorded)", nargs="+")
    options.add(r, "--model", "for tokens and logit effects (default: the one the harvest used)")
    options.add(r, "--hooks", "only these feature hooks, or globs (default: all)")
    options.add(r, "--examples", "top contexts shown per feature (default: 10, or as many as the harvest kept)")
    options.add(r, "--no-logits", "(nor SAE weights)")
    options.add(r, "--device", "for the logit effects")
    return p


def _corpus(args: argparse.Namespace):
    from ..harvest import Corpus

    return Corpus(paths=args.corpus, field=args.field, column=args.column, max_documents=args.max_documents)


def _train(args: argparse.Namespace) -> None:
    from .. import SAE, Transcoder
    from ..distributed import rank_from_env

    if args.transcoder and args.layer is None:
        raise UsageError("--transcoder needs --layer L (it reads blocks.L.ln2.hook_normalized, writes blocks.L.hook_mlp_out)")
    if not args.transcoder and args.layer is not None:
        raise UsageError("--layer is for --transcoder; an SAE takes --hook")
    if args.architecture in ("topk", "batchtopk") and args.k is None:
        raise UsageError(f"--architecture {args.architecture} needs --k")
    if args.architecture not in ("topk", "batchtopk") and args.k is not None:
        raise UsageError(f"--k is for topk and batchtopk, not {args.architecture}")
    if args.transcoder and args.architecture == "topk":  # refused by save(): say so before training, not after
        from ..sae.saelens_format import NO_TOPK_TRANSCODER

        raise UsageError(f"a top-k transcoder (--architecture topk, the default) could not be written to --out: "
                         f"{NO_TOPK_TRANSCODER}; pass --architecture batchtopk (saved as a JumpReLU transcoder with its "
                         "thresholds), jumprelu or standard")
    check_out_dir(args.out)  # before training, not when the trained coder is written
    if not args.resume and (args.out / "cfg.json").is_file():
        raise UsageError(f"--out {str(args.out)!r} already holds a trained coder (cfg.json); choose another --out, "
                         "or remove it first")
    check_text_model(args, "sae train", reads="a text corpus")
    checkpoints = dict(checkpoint_dir=args.out / "checkpoint", checkpoint_every=args.checkpoint_every,
                       resume=args.resume) if args.checkpoint_every or args.resume else {}
    config = from_args(SAETrainConfig, args, progress=not args.no_progress, **checkpoints)  # checked before any work
    check_device(args.device)
    corpus = _corpus(args)
    probe = load_model(args.model, args.device)
    check_text_model(args, "sae train", probe, reads="a text corpus")
    settings = dict(d_sae=args.d_sae, architecture=args.architecture, k=args.k, seq_len=args.seq_len,
                    **to_dict(config))
    if args.transcoder:
        coder = Transcoder.train(probe, corpus, layer=args.layer, **settings)
    else:
        coder = SAE.train(probe, corpus, hook=args.hook, **settings)
    if rank_from_env() != 0:  # under torchrun every process holds the same coder: rank 0 writes it
        return
    coder.save(args.out)
    print(f"Trained {coder!r}; written to {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from .coders import load_coder

    check_device(args.device)
    if args.json is not None:
        check_out(args.json, "--json")  # before the evaluation, not after it
    check_text_model(args, "sae evaluate", reads="a text corpus")
    coder = load_coder(args.sae)
    corpus = _corpus(args)
    probe = load_model(args.model, args.device)
    check_text_model(args, "sae evaluate", probe, reads="a text corpus")
    result = coder.to(probe.cfg.device).evaluate(probe, corpus, seq_len=args.seq_len, batch_size=args.batch_size)
    print(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")


def _report(args: argparse.Namespace) -> Path:
    from ..harvest import Harvest
    from ..report.feature_browser import write_feature_browser
    from .coders import load_coder

    check_device(args.device)
    out = args.out or args.dir / "features.html"
    check_out(out)
    h = Harvest.load(args.dir)
    features = [hook for hook in h.hooks if h.kind(hook) == "feature"]
    if not features:  # say so first: --sae or --no-logits would not help
        raise UsageError(f"{str(args.dir)!r} holds no SAE or transcoder features (harvested: {', '.join(h.hooks)}); "
                         "harvest with --sae DIR first (gpt2probe harvest --sae ...), or see these units with "
                         "gpt2probe harvest-report")
    hooks = select_hooks(args.hooks, features, "harvested feature hooks")
    examples = examples_to_show(args.examples, 10, int(h.manifest["options"]["top_k"]), str(args.dir))
    probe, saes = None, []
    if not args.no_logits:
        recorded = [path for path in h.manifest.get("sae_sources", {}).values() if path]
        folders = args.sae if args.sae else [Path(path) for path in recorded]
        if not folders:
            raise UsageError(f"{str(args.dir)!r} records no SAE folders: pass --sae DIR (the harvested ones), "
                             "or --no-logits")
        if not args.sae:  # folders the harvest recorded, not typed now: say where they came from if one is gone
            for hook, path in h.manifest.get("sae_sources", {}).items():
                if path and not Path(path).is_dir():
                    raise UsageError(f"the harvest in {str(args.dir)!r} recorded {path!r} as the folder of {hook!r}'s "
                                     "coder, and it is gone (moved or deleted?): pass --sae DIR with the harvested "
                                     "coders, or --no-logits")
        saes = [load_coder(path) for path in folders]
        probe = load_model(args.model or h.manifest["model"].get("source") or h.manifest["model"]["name"], args.device)
    path = write_feature_browser(h, out, saes=saes, probe=probe, hooks=hooks, examples=examples)
    print(f"Feature browser written to {path}")
    return path


def run(args: argparse.Namespace) -> None:
    {"train": _train, "evaluate": _evaluate, "report": _report}[args.action](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gpt2probe sae ...``; 0 on success, 2 with one ``error:`` line on a mistake."""
    return run_command(build_parser(), run, argv, check=None,
                       interrupted="interrupted (gpt2probe sae train --checkpoint-every N --resume continues a run)")
