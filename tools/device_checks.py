"""One prepared run of GPU checks and benchmarks: CUDA captures, reduced precision, nccl under torchrun, speed.

Written for a single, short loan of a GPU machine (no network, no plotly, no TransformerLens):
every phase runs in its own subprocess with its own time limit, so one failing or hanging
phase (or a sticky CUDA error) cannot stop the others, and every check inside a phase is
recorded on its own (pass, numbers, or the exception) as soon as it finishes.

Phases:

1. ``capture``: on the shipped ``tiny-english`` and on a GPT-2-small-shaped random model
   (perturbed LayerNorms and biases, a float16-overflowing entry at position 0 like GPT-2
   small's), every hook captured on the device against a CPU float32 reference; the
   ``device=``/``dtype=`` capture options; logits against the model's own; the logit lens;
   hooks left behind; float16/bfloat16 models (capture dtypes, lens up-casting, top-1 vs
   float32); invalid combinations raise GPT2ProbeError.
2. ``harvest``: ``gpt2probe harvest`` in one process on the device, the same under
   ``torchrun --nproc_per_node 1`` with an nccl group (gloo on CPU) that the harvest joins,
   compared value by value; the same on the CPU, compared to float32 rounding; and the
   harvest's throughput on GPT-2 small's shapes (for docs/harvesting.md's projection).
3. ``bench``: ``benchmarks/bench_capture.py`` and ``bench_logit_lens.py`` with ``--device``,
   the cases that need no TransformerLens, Markdown reports copied to ``--out``.

Results: ``OUT/device_checks.json`` (everything), ``OUT/device_checks.log`` (this output),
``OUT/bench-*.md``. On the GPU machine::

    PYTHONUNBUFFERED=1 PYTHONPATH=$PWD timeout 175 python3 tools/device_checks.py --out $OUT

Here, to check that it runs (tiny sizes, CPU, with plotly/transformer_lens/sae_lens made
unimportable as they are there)::

    PYTHONPATH=$PWD python tools/device_checks.py --device cpu --out /tmp/dc
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ABSENT_THERE = ("plotly", "transformer_lens", "sae_lens")  # not installed on the GPU machine
# Seconds per phase on the GPU (the whole run must stay well under 150 s); --device cpu scales them up.
GUARDS = {"capture": 40, "harvest": 50, "bench": 60}
LOG_LINES: list[str] = []


def say(*parts: object) -> None:
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)


def r(x: float | None, digits: int = 2) -> float | None:
    """A float rounded to ``digits`` significant digits, for printing and the JSON (same figures on every machine)."""
    if x is None:
        return None
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")) or x == 0:
        return x
    return float(f"{x:.{digits}g}")


# -- inside a phase: one JSON file per phase, rewritten after every check ------------------------------------


class Recorder:
    """Checks of one phase: each is run in ``with rec.check(name) as out:``, recorded even when it raises."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {}
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str), encoding="utf-8")
        tmp.replace(self.path)

    @contextmanager
    def check(self, name: str):
        out: dict = {}
        start = time.perf_counter()
        try:
            yield out
            out.setdefault("ok", True)
        except Exception as error:  # recorded, and the phase goes on with its next check
            out["ok"] = False
            out["error"] = f"{type(error).__name__}: {str(error)[:400]}"
            out["where"] = traceback.format_exc(limit=-3)[-800:]
        out["seconds"] = round(time.perf_counter() - start, 2)
        self.data[name] = out
        self.write()
        flag = "ok  " if out["ok"] else "FAIL"
        brief = {k: v for k, v in out.items() if k not in ("ok", "where", "seconds", "per_hook")}
        say(f"  [{flag}] {name} ({out['seconds']}s): {json.dumps(brief, default=str)[:220]}")


def block_absent_modules() -> None:
    """Make the packages missing on the GPU machine unimportable here too (for --device cpu rehearsals)."""
    import importlib.abc

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in ABSENT_THERE:
                raise ImportError(f"{fullname} is blocked: not installed on the GPU machine")
            return None

    sys.meta_path.insert(0, Blocker())


def loaded_absent_modules() -> list[str]:
    return sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ABSENT_THERE})


# -- phase 1: captures -----------------------------------------------------------------------------------------


def rel_err(got, want) -> tuple[float, float]:
    """(max |got - want|, that divided by max(max |want|, 1)), in float64, finite entries of ``want`` only."""
    import torch

    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    keep = torch.isfinite(want) & (want > torch.finfo(torch.float32).min / 2)  # masked scores: each dtype's minimum
    if not keep.any():
        return 0.0, 0.0
    diff = (got[keep] - want[keep]).abs()
    if not torch.isfinite(diff).all():
        return float("inf"), float("inf")
    worst = diff.max().item()
    return worst, worst / max(want[keep].abs().max().item(), 1.0)


def compare_caches(got, want) -> dict:
    """Every hook of ``want`` against ``got``: the worst absolute and relative errors and where."""
    per_hook = {}
    for name in want:
        per_hook[name] = rel_err(got[name], want[name])
    worst_abs = max(per_hook.items(), key=lambda kv: kv[1][0])
    worst_rel = max(per_hook.items(), key=lambda kv: kv[1][1])
    missing = [n for n in want if n not in got]
    return {"hooks": len(per_hook), "missing": missing, "max_abs": r(worst_abs[1][0]), "max_abs_hook": worst_abs[0],
            "max_rel": r(worst_rel[1][1]), "max_rel_hook": worst_rel[0],
            "per_hook": {n: [r(a), r(b)] for n, (a, b) in per_hook.items()}}


def gpt2_small_dir(root: Path, quick: bool) -> tuple[Path, dict]:
    """A GPT-2-small-shaped random checkpoint (tests/models.py's perturbed init, std 0.05), saved once."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    sys.path.insert(0, str(REPO / "tests"))
    from models import randomize_  # the tests' fixture init: LayerNorms ~ 1 +- 0.2, biases ~ 0.1

    sizes = (dict(n_layer=2, n_embd=48, n_head=3, n_positions=64, vocab_size=50257) if quick
             else dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257))
    config = GPT2Config(**sizes)
    for key, value in sizes.items():
        assert getattr(config, key) == value, key
    torch.manual_seed(5)
    model = randomize_(GPT2LMHeadModel(config), seed=5, std=0.05).eval()
    with torch.no_grad():
        model.transformer.wpe.weight[0, 7] += 3000.0  # GPT-2 small's huge first-position entry: overflows float16 squares
    path = root / "gpt2-small-random-perturbed"
    model.save_pretrained(path)
    from gpt2probe.tokenizer import gpt2_tokenizer

    gpt2_tokenizer().save_pretrained(path)
    return path, sizes


def hook_count(probe) -> int:
    from gpt2probe.model.hooks import count_torch_hooks

    return count_torch_hooks(probe.model)


def phase_capture(rec: Recorder, device: str, quick: bool, work: Path) -> None:
    import torch

    import gpt2probe
    from gpt2probe import GPT2ProbeError
    from gpt2probe.shipped import shipped_model

    with rec.check("environment") as out:
        out.update(torch=torch.__version__, cuda=torch.version.cuda, device=device,
                   gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                   allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   allow_tf32_cudnn=torch.backends.cudnn.allow_tf32,
                   float32_matmul_precision=torch.get_float32_matmul_precision())
    with rec.check("build gpt2-small-shaped model") as out:
        small_dir, sizes = gpt2_small_dir(work, quick)
        out.update(sizes)
    models = {"tiny-english": shipped_model("tiny-english"), "gpt2s-random": small_dir}
    prompts = ["The function returns a list of the items in the dictionary, sorted by key.",
               "Raise an exception if the file is not found."]
    for label, path in models.items():
        cpu = gpt2probe.load(path, device="cpu", dtype=torch.float32)
        tokens = cpu.to_tokens(prompts)  # two prompts, left-padded: padding and position ids on the device too
        ids = tokens.ids
        want_logits, want = cpu.run_with_cache(tokens)
        gpu = gpt2probe.load(path, device=device, dtype=torch.float32)
        gpu_model_logits_before = None

        with rec.check(f"{label}: CPU reference vs plain HF eager (hidden_states, attentions, logits)") as out:
            # independent of our hooks: if this transformers release broke them, CPU and device would agree and be wrong
            from transformers import GPT2LMHeadModel

            hf = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()
            with torch.no_grad():
                o = hf(ids, attention_mask=tokens.attention_mask, position_ids=cpu.position_ids(tokens.attention_mask),
                       output_hidden_states=True, output_attentions=True)
            n = cpu.cfg.n_layers
            final, _ = cpu.run_with_cache(tokens, names=[], unembed=False)  # ln_f applied, as HF's last hidden state
            errs: dict[str, float] = {}
            for row in range(ids.shape[0]):
                real = tokens.real_positions(row)
                for layer in range(n):
                    e = rel_err(want[f"blocks.{layer}.hook_resid_pre"][row, real], o.hidden_states[layer][row, real])[1]
                    errs["resid_pre"] = max(errs.get("resid_pre", 0.0), e)
                    got_p = want[f"blocks.{layer}.attn.hook_pattern"][row][:, real][:, :, real]
                    e = rel_err(got_p, o.attentions[layer][row][:, real][:, :, real])[0]
                    errs["pattern"] = max(errs.get("pattern", 0.0), e)
                e = rel_err(final[row, real], o.hidden_states[-1][row, real])[1]
                errs["final_stream_after_ln_f"] = max(errs.get("final_stream_after_ln_f", 0.0), e)
                errs["logits"] = max(errs.get("logits", 0.0), rel_err(want_logits[row, real], o.logits[row, real])[1])
            out.update({k: r(v) for k, v in errs.items()}, n_attentions=len(o.attentions))
            out["ok"] = len(o.attentions) == n and errs["resid_pre"] < 1e-4 and errs["pattern"] < 1e-4 and errs["logits"] < 1e-4
            del hf, o

        with rec.check(f"{label}: fp32 capture on {device} vs CPU fp32") as out:
            hooks_before = hook_count(gpu)
            with torch.no_grad():
                gpu_model_logits_before = gpu.model(ids.to(device), attention_mask=tokens.attention_mask.to(device),
                                                    position_ids=gpu.position_ids(tokens.attention_mask).to(device)).logits
            logits, got = gpu.run_with_cache(tokens)
            devices = sorted({str(t.device) for t in got.values()})
            dtypes = sorted({str(t.dtype) for t in got.values()})
            cmp = compare_caches(got, want)
            lerr = rel_err(logits, want_logits)
            out.update(capture_devices=devices, capture_dtypes=dtypes, logits_device=str(logits.device),
                       logits_max_abs=r(lerr[0]), logits_max_rel=r(lerr[1]), **cmp,
                       hooks_attached_before=hooks_before, hooks_attached_after=hook_count(gpu))
            out["ok"] = (not cmp["missing"] and cmp["max_rel"] < 1e-3 and lerr[1] < 1e-3
                         and devices == [str(torch.device(device)) if device == "cpu" else f"{device}:0"]
                         and hook_count(gpu) == hooks_before == 0)
            rec.data.setdefault("_per_hook", {})[f"{label} fp32 {device}"] = out["per_hook"]

        with rec.check(f"{label}: names=[] logits equal the model's own forward (no hooks: same computation)") as out:
            logits_none, cache_none = gpu.run_with_cache(tokens, names=[])
            err = rel_err(logits_none, gpu_model_logits_before)
            out.update(bitwise_equal=bool(torch.equal(logits_none, gpu_model_logits_before)), max_abs=r(err[0]),
                       cached=len(cache_none))
            out["ok"] = err[1] < 1e-5

        with rec.check(f"{label}: capture options device='cpu' and dtype=float16/float64") as out:
            _, on_cpu = gpu.run_with_cache(tokens, names="blocks.*.hook_resid_post", device="cpu")
            _, same = gpu.run_with_cache(tokens, names="blocks.*.hook_resid_post")
            _, half = gpu.run_with_cache(tokens, names="blocks.*.hook_resid_post", dtype=torch.float16)
            _, dbl = gpu.run_with_cache(tokens, names="blocks.*.hook_resid_post", device="cpu", dtype=torch.float64)
            names = list(same)
            out.update(device_cpu_gives={str(on_cpu[n].device) for n in names}.pop(),
                       device_cpu_bitwise_equal=all(torch.equal(on_cpu[n], same[n].cpu()) for n in names),
                       dtype_fp16_gives={str(half[n].dtype) for n in names}.pop(),
                       dtype_fp16_equals_cast=all(torch.equal(half[n], same[n].half()) for n in names),
                       fp16_cast_overflows_to_inf=any(bool(torch.isinf(half[n]).any()) for n in names),
                       fp64_cpu=all(dbl[n].dtype == torch.float64 and dbl[n].device.type == "cpu" for n in names))
            out["ok"] = (out["device_cpu_gives"] == "cpu" and out["device_cpu_bitwise_equal"]
                         and out["dtype_fp16_equals_cast"] and out["fp64_cpu"])

        with rec.check(f"{label}: logit lens on {device} vs CPU fp32") as out:
            a = gpt2probe.logit_lens(cpu, prompts, k=5, targets="next")
            b = gpt2probe.logit_lens(gpu, prompts, k=5, targets="next")
            fields = {}
            top1 = []
            for pa, pb in zip(a.items, b.items):
                for field in ("top_probs", "entropy", "kl_to_final", "target_logprob"):
                    fields[field] = max(fields.get(field, 0.0), rel_err(getattr(pb, field), getattr(pa, field))[0])
                top1.append((pa.top_ids[..., 0] == pb.top_ids[..., 0].cpu()).float().mean().item())
            final_top1 = []
            for row, pb in enumerate(b.items):  # the lens's last stream is the model's own prediction
                real = tokens.real_positions(row)
                final_top1.append(bool(torch.equal(pb.top_ids[-1, :, 0].cpu(), want_logits[row, real].argmax(-1))))
            out.update(max_abs={k: r(v) for k, v in fields.items()}, top1_agreement=r(min(top1), 4),
                       last_stream_top1_equals_model_argmax=all(final_top1),
                       result_dtypes=sorted({str(b.items[0].top_probs.dtype), str(b.items[0].entropy.dtype)}),
                       hooks_attached_after=hook_count(gpu))
            out["ok"] = max(fields.values()) < 1e-3 and min(top1) >= 0.99 and all(final_top1) and hook_count(gpu) == 0

        with rec.check(f"{label}: hooks do not leak on {device} (an exception inside a hook included)") as out:
            def boom(x, hook):
                raise KeyError("raised inside a user hook")

            raised = None
            try:
                gpu.run_with_hooks(tokens, {"blocks.0.hook_resid_post": boom})
            except Exception as error:  # noqa: BLE001 (we record what came out)
                raised = type(error).__name__
            with torch.no_grad():
                after = gpu.model(ids.to(device), attention_mask=tokens.attention_mask.to(device),
                                  position_ids=gpu.position_ids(tokens.attention_mask).to(device)).logits
            out.update(exception_from_hook=raised, hooks_attached_after=hook_count(gpu),
                       model_output_bitwise_unchanged=bool(torch.equal(after, gpu_model_logits_before)))
            out["ok"] = out["model_output_bitwise_unchanged"] and hook_count(gpu) == 0 and raised is not None

        for dtype in (torch.float16, torch.bfloat16):
            name = str(dtype).replace("torch.", "")
            with rec.check(f"{label}: {name} model on {device} vs CPU fp32") as out:
                low = gpt2probe.load(path, device=device, dtype=dtype)
                logits, got = low.run_with_cache(tokens)
                cmp = compare_caches(got, want)
                nonfinite = sorted(n for n, t in got.items() if not torch.isfinite(t[t > torch.finfo(t.dtype).min]).all())
                final_ok = []
                for row in range(ids.shape[0]):
                    real = tokens.real_positions(row)
                    final_ok.append((logits[row, real].argmax(-1).cpu() == want_logits[row, real].argmax(-1)).float().mean().item())
                lerr = rel_err(logits, want_logits)
                _, up = low.run_with_cache(tokens, names="blocks.*.hook_resid_post", dtype=torch.float32)
                lens_a = gpt2probe.logit_lens(cpu, prompts, k=5)
                lens_b = gpt2probe.logit_lens(low, prompts, k=5)
                lens_top1 = min((pa.top_ids[..., 0] == pb.top_ids[..., 0].cpu()).float().mean().item()
                                for pa, pb in zip(lens_a.items, lens_b.items))
                lens_prob = max(rel_err(pb.top_probs, pa.top_probs)[0] for pa, pb in zip(lens_a.items, lens_b.items))
                out.update(model_dtype=str(low.cfg.dtype), logits_dtype=str(logits.dtype),
                           capture_dtypes=sorted({str(t.dtype) for t in got.values()}),
                           capture_dtype_float32_option_gives=sorted({str(t.dtype) for t in up.values()}),
                           hooks_with_nonfinite=nonfinite[:5], max_rel=cmp["max_rel"], max_rel_hook=cmp["max_rel_hook"],
                           logits_max_rel=r(lerr[1]), final_top1_agreement_with_fp32=r(min(final_ok), 4),
                           lens_result_dtype=str(lens_b.items[0].top_probs.dtype),
                           lens_top1_agreement_with_fp32=r(lens_top1, 4), lens_top_probs_max_abs=r(lens_prob),
                           hooks_attached_after=hook_count(low))
                rec.data.setdefault("_per_hook", {})[f"{label} {name} {device}"] = cmp["per_hook"]
                tol = 2e-2 if dtype == torch.float16 else 8e-2  # tests/test_reduced_precision.py's tolerances
                out["ok"] = (not nonfinite and cmp["max_rel"] <= tol and out["capture_dtypes"] == [str(dtype)]
                             and hook_count(low) == 0)
                del low
        del gpu, cpu
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

    with rec.check("token ids on the CPU given to a probe on the device") as out:
        probe = gpt2probe.load(models["tiny-english"], device=device)
        ids = probe.to_tokens("Hello world").ids.cpu()
        logits, _ = probe.run_with_cache(ids, names=[])
        out.update(works=True, logits_device=str(logits.device))

    with rec.check("invalid combinations raise GPT2ProbeError") as out:  # last: 'cuda:99' may leave an error behind
        probe = gpt2probe.load(models["tiny-english"], device=device)
        attempts = {
            "load(device='cuda:99')": lambda: gpt2probe.load(models["tiny-english"], device="cuda:99"),
            "load(dtype='int8')": lambda: gpt2probe.load(models["tiny-english"], device=device, dtype="int8"),
            "load(dtype=torch.int64)": lambda: gpt2probe.load(models["tiny-english"], device=device, dtype=torch.int64),
            "run_with_cache(dtype=torch.int32)": lambda: probe.run_with_cache("a b", dtype=torch.int32),
            "run_with_cache(dtype='float16')": lambda: probe.run_with_cache("a b", dtype="float16"),
            "run_with_cache(device='gpu')": lambda: probe.run_with_cache("a b", device="gpu"),
            "run_with_cache(device='cuda:99')": lambda: probe.run_with_cache("a b", device="cuda:99"),
            "run_with_cache(device=3.5)": lambda: probe.run_with_cache("a b", device=3.5),
        }
        results = {}
        for what, call in attempts.items():
            try:
                call()
                results[what] = "no error"
            except GPT2ProbeError as error:
                results[what] = f"GPT2ProbeError/{type(error).__name__}"
            except Exception as error:  # noqa: BLE001
                results[what] = f"NOT ours: {type(error).__name__}: {str(error)[:120]}"
        out.update(not_ours={k: v for k, v in results.items() if not v.startswith("GPT2ProbeError")},
                   results=results, hooks_attached_after=hook_count(probe))
        # 'cuda:99' on a CPU-only machine is also refused by load (no CUDA); on one GPU it must be our error too
        out["ok"] = all(v.startswith("GPT2ProbeError") for v in results.values()) and hook_count(probe) == 0

    rec.data["absent_modules_imported"] = loaded_absent_modules()
    rec.write()


# -- phase 2: harvest, one process and under torchrun --------------------------------------------------------


HARVEST_HOOKS = ["blocks.*.mlp.hook_post", "blocks.1.attn.hook_pattern"]


def harvest_args(corpus: list[str], out: Path, device: str | None, documents: int) -> list[str]:
    args = ["harvest", "--model", "tiny-english", "--corpus", *corpus, "--field", "text", "--hooks", *HARVEST_HOOKS,
            "--out", str(out), "--seq-len", "64", "--examples", "6", "--window", "3", "--batch-size", "8",
            "--block-chars", "4000", "--max-documents", str(documents), "--no-progress"]
    return args + (["--device", device] if device else [])


def compare_harvests(a, b) -> dict:
    """Value by value: top-k values/docs/positions/contexts, counts, min/max, histograms exact? means/vars to what?"""
    import torch

    out = {"same_hooks": a.hooks == b.hooks, "same_totals": a.manifest["totals"] == b.manifest["totals"]}
    exact, worst = {}, {}
    for hook in a.hooks:
        if a.kind(hook) == "attention":
            for key, value in a.attention(hook).items():
                worst[f"attention.{key}"] = max(worst.get(f"attention.{key}", 0.0), rel_err(b.attention(hook)[key], value)[0])
            continue
        ta, tb = a._units(hook).top, b._units(hook).top
        for field in ("values", "doc", "pos", "ctx_tokens"):
            exact.setdefault(f"top.{field}", []).append(bool(torch.equal(getattr(ta, field), getattr(tb, field))))
        worst["top.values"] = max(worst.get("top.values", 0.0), rel_err(tb.values, ta.values)[0])
        same_docpos = ((ta.doc == tb.doc) & (ta.pos == tb.pos)).float().mean().item()
        worst["top.doc_pos_agreement(min)"] = min(worst.get("top.doc_pos_agreement(min)", 1.0), same_docpos)
        sa, sb = a.stats(hook), b.stats(hook)
        for key in ("count", "active", "min", "max"):
            exact.setdefault(f"stats.{key}", []).append(bool(torch.equal(sa[key], sb[key])))
        for key in ("mean", "var", "min", "max"):
            worst[f"stats.{key}"] = max(worst.get(f"stats.{key}", 0.0), rel_err(sb[key], sa[key])[0])
        exact.setdefault("hist", []).append(bool(torch.equal(a._units(hook).hist, b._units(hook).hist)))
    out["exact"] = {k: all(v) for k, v in exact.items()}
    out["max_abs"] = {k: r(v, 3) for k, v in worst.items()}
    return out


def torchrun_worker(spec_path: str) -> int:
    """Run under torchrun: join an nccl (CUDA) or gloo (CPU) group ourselves, then the harvest command joins it.

    With one GPU, ``--nproc_per_node 1`` is the only choice (nccl refuses two ranks on one GPU), and
    the harvest creates a group only for ``WORLD_SIZE > 1``; so the group is made here and the
    command's barriers and final ``gather_object`` run through nccl with a world of one.
    """
    import torch
    import torch.distributed as dist

    spec = json.loads(Path(spec_path).read_text())
    cuda = spec["device"].startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    info = {"backend": dist.get_backend(), "rank": dist.get_rank(), "world": dist.get_world_size()}
    if cuda:  # one nccl collective of our own, so a broken nccl shows here and not only inside the harvest
        t = torch.ones(3, device=f"cuda:{os.environ['LOCAL_RANK']}")
        dist.all_reduce(t)
        info["all_reduce_ok"] = t.tolist() == [1.0, 1.0, 1.0]
    from gpt2probe.cli import main

    code = main(spec["args"])
    info["exit_code"] = code
    info["group_still_ours"] = dist.is_initialized()
    dist.destroy_process_group()
    info["absent_modules_imported"] = loaded_absent_modules()
    Path(spec["info"]).write_text(json.dumps(info))
    return code


def phase_harvest(rec: Recorder, device: str, quick: bool, work: Path) -> None:
    import torch

    from gpt2probe.cli import main
    from gpt2probe.harvest import Harvest
    from gpt2probe.harvest.pydocs import write_python_docs

    corpus = [str(p) for p in write_python_docs(work / "corpus", max_files=20 if quick else 60)]
    runs: dict[str, Harvest] = {}
    documents = 8 if quick else 24  # Python's documentation topics, ~1.7k tokens each
    with rec.check(f"harvest one process on {device}") as out:
        code = main(harvest_args(corpus, work / "single", device, documents))
        runs["single"] = Harvest.load(work / "single")
        m = runs["single"].manifest
        out.update(exit_code=code, totals=m["totals"], world_size=m["world_size"],
                   tokens_per_second=m["timing"]["tokens_per_second"])
        out["ok"] = code == 0

    backend = "nccl" if device.startswith("cuda") else "gloo"
    with rec.check(f"harvest under torchrun --nproc_per_node 1 with {backend}") as out:
        spec = {"args": harvest_args(corpus, work / "torchrun", None, documents), "device": device,
                "info": str(work / "worker.json")}
        (work / "worker-spec.json").write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               str(Path(__file__).resolve()), "--torchrun-worker", str(work / "worker-spec.json")]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=25 * (1 if device != "cpu" else 4),
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        out["returncode"] = done.returncode
        if done.returncode != 0:
            out["stderr_tail"] = done.stderr[-1500:]
            raise RuntimeError(f"torchrun exited {done.returncode}")
        out["worker"] = json.loads((work / "worker.json").read_text())
        runs["torchrun"] = Harvest.load(work / "torchrun")
        cmp = compare_harvests(runs["single"], runs["torchrun"])
        out.update(cmp)
        out["ok"] = (out["worker"]["backend"] == backend and out["worker"]["exit_code"] == 0 and cmp["same_totals"]
                     and all(cmp["exact"].values()) and max(v for k, v in cmp["max_abs"].items() if "agreement" not in k) <= 1e-5)

    if device != "cpu":
        with rec.check(f"harvest on cpu vs {device} (float32 rounding, not bitwise)") as out:
            code = main(harvest_args(corpus, work / "cpu", "cpu", documents))
            runs["cpu"] = Harvest.load(work / "cpu")
            cmp = compare_harvests(runs["cpu"], runs["single"])
            out.update(cmp, tokens_per_second_cpu=runs["cpu"].manifest["timing"]["tokens_per_second"])
            out["ok"] = code == 0 and cmp["same_totals"] and cmp["exact"]["stats.count"]

    with rec.check("harvest throughput, GPT-2 small shapes, 12 x mlp.hook_post (for docs/harvesting.md)") as out:
        sys.path.insert(0, str(REPO))
        from benchmarks.common import GPT2_SMALL, TINY, model_dir

        spec = TINY if quick else GPT2_SMALL
        directory = model_dir(spec)
        big = [str(p) for p in write_python_docs(work / "corpus-big", max_files=30 if quick else 150)]
        for dtype in (["float32"] if quick else ["float32", "bfloat16"]):
            target = work / f"speed-{dtype}"
            args = ["harvest", "--model", str(directory), "--corpus", *big, "--field", "text", "--hooks",
                    "blocks.*.mlp.hook_post", "--out", str(target), "--seq-len", "16" if quick else "1024",
                    "--batch-size", "4" if quick else "32", "--no-progress", "--dtype", dtype,
                    *(["--max-documents", "20"] if quick else []), *([] if device == "cpu" else ["--device", device])]
            start = time.perf_counter()
            code = main(args)
            wall = time.perf_counter() - start
            m = Harvest.load(target).manifest
            out[dtype] = {"exit_code": code, "tokens": m["totals"]["tokens"], "loop_tokens_per_second": m["timing"]["tokens_per_second"],
                          "loop_seconds": m["timing"]["loop_seconds_per_rank"], "wall_seconds": round(wall, 1),
                          "hours_for_1e8_tokens_at_loop_rate": r(1e8 / max(m["timing"]["tokens_per_second"], 1e-9) / 3600)}
            if device.startswith("cuda"):
                out[dtype]["max_memory_allocated_MiB"] = round(torch.cuda.max_memory_allocated() / 2**20)
                torch.cuda.reset_peak_memory_stats()
            shutil.rmtree(target, ignore_errors=True)
        out["model"] = spec.describe()
    rec.data["absent_modules_imported"] = loaded_absent_modules()
    rec.write()


# -- phase 3: benchmarks -------------------------------------------------------------------------------------


def phase_bench(rec: Recorder, device: str, quick: bool, work: Path, out_dir: Path, deadline: float) -> None:
    sizes = (["--quick", "--lengths", "8,16", "--repeats", "2"] if quick else None)
    runs = [
        ("bench-capture", "bench_capture", ["--cases", "plain_sdpa,plain_eager,ours_none,ours_resid,ours_resid_one_pattern,"
                                            "ours_resid_pattern", "--no-memory"], ["--lengths", "128,1024", "--repeats", "15,10"]),
        ("bench-lens", "bench_logit_lens", ["--cases", "plain,projection,ours,tuned", "--no-memory"],
         ["--lengths", "128,1024", "--repeats", "10,7"]),
        ("bench-lens-memory", "bench_logit_lens", ["--cases", "ours", "--memory-runs", "1"],
         ["--lengths", "1024", "--repeats", "2"]),
        ("bench-capture-memory", "bench_capture", ["--cases", "plain_sdpa,ours_resid", "--memory-runs", "1"],
         ["--lengths", "1024", "--repeats", "2"]),
    ]
    env = dict(os.environ)  # GPT2PROBE_BENCH_CACHE: set by the orchestrator, shared with the harvest phase
    for name, script, options, full in runs:
        left = deadline - time.monotonic()
        with rec.check(name) as out:
            if left < 8:
                raise TimeoutError(f"skipped: {left:.0f}s left in this phase")
            target = out_dir / f"{name}-{device.split(':')[0]}.md"
            cmd = [sys.executable, "-m", f"benchmarks.{script}", "--device", device, *options, *(sizes or full),
                   "--note", "tools/device_checks.py (one short loan of the machine)", "--out", str(target)]
            done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=left - 2)
            out["returncode"] = done.returncode
            if done.returncode != 0:
                out["stderr_tail"] = done.stderr[-1500:]
                raise RuntimeError(f"{script} exited {done.returncode}")
            report = target.read_text(encoding="utf-8")
            out["file"] = target.name
            out["tables"] = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| tokens")]


# -- the orchestrator ----------------------------------------------------------------------------------------


def run_phase(name: str, args, parts: Path, log) -> dict:
    """``name`` in a subprocess with its time guard; its output streamed here; its recorded checks returned."""
    guard = GUARDS[name] * (args.guard_scale)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--device", args.device, "--out", str(args.out),
           "--parts", str(parts), "--guard-scale", str(args.guard_scale)]
    cmd += ["--quick"] if args.quick else []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GPT2PROBE_BENCH_CACHE": str(parts / "bench-cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if args.block_absent:  # a sitecustomize that blocks them in this phase and every process it starts
        (parts / "site").mkdir(exist_ok=True)
        (parts / "site" / "sitecustomize.py").write_text(
            f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
            "from device_checks import block_absent_modules\nblock_absent_modules()\n")
        env["PYTHONPATH"] = os.pathsep.join([str(parts / "site"), env["PYTHONPATH"]])
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True, env=env)

    def pump():
        for line in proc.stdout:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            say(line[:400])
            log.write(line + "\n")
            log.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    status = "done"
    try:
        proc.wait(timeout=guard)
    except subprocess.TimeoutExpired:
        status = "TIMED OUT"
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    reader.join(timeout=5)
    part = parts / f"{name}.json"
    data = json.loads(part.read_text()) if part.is_file() else {}
    result = {"status": status, "returncode": proc.returncode, "seconds": round(time.monotonic() - start, 1),
              "guard_seconds": guard, "checks": data}
    return result


def summary(results: dict) -> list[str]:
    lines = ["", "=== SUMMARY ==="]
    for name, phase in results["phases"].items():
        checks = {k: v for k, v in phase["checks"].items() if isinstance(v, dict) and "ok" in v}
        failed = [k for k, v in checks.items() if not v["ok"]]
        lines.append(f"{name}: {phase['status']} rc={phase['returncode']} in {phase['seconds']}s; "
                     f"{len(checks) - len(failed)}/{len(checks)} checks ok")
        for k in failed:
            v = checks[k]
            shown = v.get("not_ours") or {a: b for a, b in v.items() if a not in ("per_hook", "where", "results")}
            lines.append(f"  FAIL {k}: {v.get('error') or json.dumps(shown, default=str)[:300]}")
        absent = phase["checks"].get("absent_modules_imported")
        if absent:
            lines.append(f"  imported modules that are absent on the GPU machine: {absent}")
    cap = results["phases"].get("capture", {}).get("checks", {})
    for k, v in cap.items():
        if isinstance(v, dict) and ("max_rel" in v or "top1_agreement" in v):
            fig = {a: v.get(a) for a in ("max_rel", "logits_max_rel", "top1_agreement", "final_top1_agreement_with_fp32",
                                         "lens_top1_agreement_with_fp32") if v.get(a) is not None}
            lines.append(f"  {k}: {fig}")
    lines.append(f"total {results['seconds']}s; files in {results['out']}: {', '.join(sorted(os.listdir(results['out'])))}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=os.environ.get("OUT"), help="folder for the results (default $OUT)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a rehearsal: implies --quick and --block-absent)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (numbers meaningless): checks that every phase runs")
    p.add_argument("--block-absent", action="store_true", help="make plotly/transformer_lens/sae_lens unimportable")
    p.add_argument("--phases", default="capture,harvest,bench", help="comma-separated subset of capture,harvest,bench")
    p.add_argument("--guard-scale", type=float, default=None, help="multiply every phase's time guard (default 1; cpu 8)")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--parts", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--torchrun-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.torchrun_worker:
        return torchrun_worker(args.torchrun_worker)
    if args.device == "cpu":
        args.quick = args.block_absent = True
    if args.guard_scale is None:
        args.guard_scale = 8.0 if args.device == "cpu" else 1.0
    if args.out is None:
        p.error("give --out or set $OUT")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase:
        return phase_main(args)

    start = time.monotonic()
    parts = Path(tempfile.mkdtemp(prefix="device-checks-"))
    results: dict = {"argv": sys.argv, "device": args.device, "quick": args.quick, "out": str(args.out), "phases": {}}
    with open(args.out / "device_checks.log", "w", encoding="utf-8") as log:
        for name in [n.strip() for n in args.phases.split(",") if n.strip()]:
            header = f"=== phase {name} (guard {GUARDS[name] * args.guard_scale:.0f}s) at +{time.monotonic() - start:.0f}s ==="
            say(header)
            log.write(header + "\n")
            results["phases"][name] = run_phase(name, args, parts, log)
            results["seconds"] = round(time.monotonic() - start, 1)
            (args.out / "device_checks.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        results["seconds"] = round(time.monotonic() - start, 1)
        (args.out / "device_checks.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        lines = summary(results)
        for line in lines:
            say(line)
            log.write(line + "\n")
    shutil.rmtree(parts, ignore_errors=True)
    bad = [n for n, ph in results["phases"].items() if ph["status"] != "done" or ph["returncode"] != 0
           or any(isinstance(v, dict) and v.get("ok") is False for v in ph["checks"].values())]
    return 1 if bad else 0


def phase_main(args) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bars
    work = Path(tempfile.mkdtemp(prefix=f"device-{args.phase}-"))
    rec = Recorder(args.parts / f"{args.phase}.json")
    try:
        if args.phase == "capture":
            phase_capture(rec, args.device, args.quick, work)
        elif args.phase == "harvest":
            phase_harvest(rec, args.device, args.quick, work)
        elif args.phase == "bench":
            deadline = time.monotonic() + GUARDS["bench"] * args.guard_scale - 3
            phase_bench(rec, args.device, args.quick, work, args.out, deadline)
    except Exception as error:  # a phase's own set-up failed: recorded, the next phase still runs
        rec.data["phase_error"] = {"ok": False, "error": f"{type(error).__name__}: {str(error)[:400]}",
                                   "where": traceback.format_exc(limit=-4)[-1200:]}
        rec.write()
        say(f"  [FAIL] phase {args.phase}: {rec.data['phase_error']['error']}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
