"""Train an SAE on every layer's ``hook_resid_post`` and a transcoder on every layer of a tiny-english model.

Training text: Python's documentation topics (``pydoc_data.topics``) minus the topics the
model's own training held out (``training.json``'s ``val_topics``); evaluation: those
held-out topics. Writes, per coder, a directory ``OUT/<hook>`` (SAELens's format through
``coder.save`` where the ``sae`` branch provides it, else ``cfg.json`` + ``sae_weights.safetensors``
written here) and ``OUT/metrics.json`` with every evaluation and the training time.

    python tools/train_tiny_english_saes.py --model gpt2probe/assets/tiny-english --out runs/te-saes

The targets for ``blocks.2.hook_resid_post`` (top-k, k = 8, 512 features): explained
variance >= 0.95, spliced CE <= 0.05 nats above clean, dead <= 5%, under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydoc_data.topics  # noqa: E402

import torch  # noqa: E402

import gpt2probe  # noqa: E402
from gpt2probe import SAE, Transcoder  # noqa: E402


def split_topics(model_dir: Path) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts) as the model's own training split the topics."""
    info = model_dir / "training.json"
    held_out = json.loads(info.read_text(encoding="utf-8")).get("val_topics", []) if info.is_file() else []
    topics = pydoc_data.topics.topics
    if not held_out:
        names = sorted(topics)
        held_out = names[::20]
        print(f"note: {info} names no held-out topics; holding out every 20th topic ({len(held_out)})", file=sys.stderr)
    return ([topics[n] for n in sorted(topics) if n not in held_out], [topics[n] for n in sorted(held_out) if n in topics])


def save(coder, directory: Path) -> None:
    """SAELens's on-disk layout: ``coder.save`` when available, else written here."""
    if hasattr(coder, "save"):
        coder.save(directory)
        return
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    c = coder.cfg
    tensors = {"W_enc": coder.W_enc, "b_enc": coder.b_enc, "W_dec": coder.W_dec, "b_dec": coder.b_dec}
    if coder.threshold is not None:
        tensors["threshold"] = coder.threshold
    if coder.W_skip is not None:
        tensors["W_skip"] = coder.W_skip
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(directory / "sae_weights.safetensors"))
    cfg = {"architecture": "jumprelu" if c.architecture == "batchtopk" else c.architecture, "d_in": c.d_in,
           "d_sae": c.d_sae, "d_out": c.d_out, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input":
           c.apply_b_dec_to_input, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"hook_name": c.hook_name, "hook_name_out": c.hook_name_out, "model_name": c.model_name,
                        "trained_architecture": c.architecture}}
    if c.architecture == "topk":
        cfg["k"] = c.k
    (directory / "cfg.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="the tiny-english directory (config.json, weights)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--d-sae", type=int, default=512)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--architecture", default="topk")
    p.add_argument("--steps", type=int, default=None, help="default: gpt2probe's (from the data size)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--layers", type=int, nargs="*", help="default: every layer")
    p.add_argument("--no-transcoders", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    probe = gpt2probe.load(args.model, device="cpu")
    train_texts, test_texts = split_topics(args.model)
    layers = args.layers if args.layers is not None else list(range(probe.cfg.n_layers))
    settings = dict(d_sae=args.d_sae, architecture=args.architecture, k=args.k, seed=args.seed,
                    batch_size=args.batch_size, **({"steps": args.steps} if args.steps else {}))
    metrics: dict = {"model": str(args.model), "settings": settings, "train_documents": len(train_texts),
                     "eval_documents": len(test_texts), "threads": args.threads, "coders": {}}
    jobs = [("sae", layer) for layer in layers] + ([] if args.no_transcoders else [("transcoder", la) for la in layers])
    for kind, layer in jobs:
        started = time.perf_counter()
        if kind == "sae":
            coder = SAE.train(probe, train_texts, hook=f"blocks.{layer}.hook_resid_post", **settings)
        else:
            coder = Transcoder.train(probe, train_texts, layer=layer, **settings)
        seconds = time.perf_counter() - started
        result = coder.evaluate(probe, test_texts)
        print(result, f"\n  training seconds: {seconds:.1f}", flush=True)
        name = coder.cfg.hook_name if kind == "sae" else f"{coder.cfg.hook_name_out}-transcoder"
        save(coder, args.out / name)
        metrics["coders"][name] = {**result.to_dict(), "kind": kind, "train_seconds": round(seconds, 1)}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    return metrics


if __name__ == "__main__":
    main()
