"""A harvest as one self-contained, offline HTML dashboard.

For every harvested hook: a unit selector with search; for the chosen unit its statistics,
its max-activating contexts with each token shaded by the unit's activation there, its
histogram, and its direct effect on the logits. Attention patterns get a per-head table.

The direct effect is the unit's output direction multiplied by ``W_U``, *without* the final
LayerNorm (its scale depends on the whole residual stream, so no single direction captures
it): for an MLP neuron the row of ``W_out`` it writes, for a residual dimension the unit
vector, for a user direction the direction itself. Heads summarised by ``hook_z`` norms have
no single direction and show none.

Every token string goes through :func:`gpt2probe.display.escape.display_token` once, here;
the page inserts only those escaped strings and numbers. The data rides in
``<script type="application/json">`` blocks (``<`` written as ``\\u003c``, so no string can
close the block). No request leaves the page (the same Content-Security-Policy as the other
reports); the file is written atomically.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..display.escape import display_token, escape_text
from ..errors import InvalidArgumentError, ModelMismatchError
from ..names import is_residual_stream, layer_of
from ..validate import finite_result
from .html import CONTENT_SECURITY_POLICY

LOGIT_NOTE = ("Direct effect on the logits: the unit's output direction times W_U, without the final LayerNorm "
              "(for an MLP neuron, its row of W_out).")


def output_directions(harvest, hook: str, probe) -> torch.Tensor | None:
    """``[unit, d_model]`` directions each unit writes into the residual stream, or ``None`` if it has none."""
    kind = harvest.kind(hook)
    if kind == "neuron":
        return probe.W_out[layer_of(hook)].float()
    if kind == "direction":
        return harvest.directions(hook).float()
    if kind == "dim" and is_residual_stream(hook):
        return torch.eye(probe.cfg.d_model)
    return None


def logit_effects(directions: torch.Tensor, probe, k: int = 8, chunk: int = 512) -> tuple[torch.Tensor, ...]:
    """Top-``k`` promoted and suppressed tokens of each direction through ``W_U`` (chunked: no [unit, d_vocab])."""
    w_u = probe.W_U.float()
    up_v, up_i, down_v, down_i = [], [], [], []
    for start in range(0, directions.shape[0], chunk):
        logits = finite_result("the logit effects (directions through W_U)",
                               directions[start:start + chunk].to(w_u.device) @ w_u,
                               "the model's weights or the harvested directions hold NaN or inf")
        v, i = logits.topk(k, dim=-1)
        up_v.append(v.cpu()), up_i.append(i.cpu())
        v, i = logits.topk(k, dim=-1, largest=False)
        down_v.append(v.cpu()), down_i.append(i.cpu())
    return torch.cat(up_v), torch.cat(up_i), torch.cat(down_v), torch.cat(down_i)


def _r(x: float | torch.Tensor, digits: int = 4) -> float | None:
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def _hook_data(harvest, hook: str, probe, decode, examples: int) -> dict:
    kind = harvest.kind(hook)
    if kind == "attention":
        att = harvest.attention(hook)
        return {"name": hook, "kind": kind, "heads": [
            {"label": harvest.unit_label(hook, h), "first": _r(att["first"][h]), "prev": _r(att["prev"][h])}
            for h in range(harvest.n_units(hook))]}
    stats = harvest.stats(hook)
    effects = None
    if probe is not None:
        dirs = output_directions(harvest, hook, probe)
        if dirs is not None:
            effects = logit_effects(dirs, probe)
    units = []
    for u in range(harvest.n_units(hook)):
        hist = harvest.histogram(hook, u)
        exs = []
        for ex in harvest.top_examples(hook, u)[:examples]:
            exs.append({"value": _r(ex.value), "doc": ex.doc, "pos": ex.pos, "center": ex.center,
                        "tokens": [display_token(decode(t)) for t in ex.tokens], "acts": [_r(a, 3) for a in ex.acts]})
        unit = {"label": harvest.unit_label(hook, u), "mean": _r(stats["mean"][u]), "std": _r(stats["std"][u]),
                "min": _r(stats["min"][u]), "max": _r(stats["max"][u]), "freq": _r(stats["frequency"][u]),
                "hist": hist.counts.tolist(), "lo": _r(hist.edges[0]), "hi": _r(hist.edges[-1]), "examples": exs}
        if effects is not None:
            up_v, up_i, down_v, down_i = effects
            unit["up"] = [[display_token(decode(int(i))), _r(v, 3)] for v, i in zip(up_v[u], up_i[u])]
            unit["down"] = [[display_token(decode(int(i))), _r(v, 3)] for v, i in zip(down_v[u], down_i[u])]
        units.append(unit)
    return {"name": hook, "kind": kind, "units": units, "logits": effects is not None}


def _json_block(data: object, ident: str) -> str:
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{ident}">{text}</script>\n'


def check_model(harvest, probe) -> None:
    """Refuse a probe whose model has other sizes than the harvested one (its W_out, W_U would be another model's)."""
    m = harvest.manifest["model"]
    c = probe.cfg
    differ = [f"{key} {m[key]} vs {getattr(c, key)}" for key in ("n_layers", "d_model", "n_heads", "d_mlp")
              if m[key] != getattr(c, key)]
    if differ:
        raise ModelMismatchError(f"the harvest was made with {m['name']!r} but the model given is {c.model_name!r} "
                                 f"with other sizes ({', '.join(differ)}): pass the harvested model, or --no-logits")


def check_token_ids(harvest, hooks: Sequence[str], d_vocab: int) -> None:
    """Refuse example contexts holding ids the tokenizer cannot decode (another model's vocabulary)."""
    for hook in hooks:
        if harvest.kind(hook) == "attention":
            continue
        ids = harvest._units(hook).top.ctx_tokens
        top = int(ids.max()) if ids.numel() else -1
        if top >= d_vocab:
            raise ModelMismatchError(
                f"the examples of {hook!r} hold token id {top}, outside the vocabulary of {d_vocab} tokens used to "
                "show them: pass the harvested model (--model) so that its tokenizer decodes them")


def token_decoder(harvest, hooks: Sequence[str], probe=None) -> Callable[[int], str]:
    """A cached one-token decoder for the contexts of ``hooks``.

    The probe's tokenizer (the probe checked to be the harvested model), or GPT-2's own when no
    probe is given; ids the tokenizer cannot decode are refused first.
    """
    if probe is None:
        from ..tokenizer import gpt2_tokenizer

        tokenizer = gpt2_tokenizer()
    else:
        check_model(harvest, probe)
        tokenizer = probe.tokenizer
    check_token_ids(harvest, hooks, len(tokenizer) if probe is None else min(len(tokenizer), probe.cfg.d_vocab))

    @functools.cache
    def decode(token: int) -> str:
        return tokenizer.decode([token])

    return decode


def write_dashboard(harvest, path: str | os.PathLike, *, probe=None, hooks: Sequence[str] | None = None,
                    examples: int = 8) -> Path:
    """Write the dashboard of ``harvest`` to ``path``; with ``probe`` (the harvested model) it adds logit effects."""
    chosen = list(hooks) if hooks else harvest.hooks
    for hook in chosen:
        harvest.kind(hook)  # an unknown hook raises HookNameError naming the harvested ones
    if examples < 1:
        raise InvalidArgumentError(f"examples must be at least 1, got {examples}")
    decode = token_decoder(harvest, chosen, probe)

    m = harvest.manifest
    header = {
        "Model": m["model"]["name"],
        "Tokens": f"{m['totals']['tokens']:,}",
        "Documents": f"{m['totals']['documents']:,}",
        "Windows": f"{m['totals']['windows']:,} of {m['options']['seq_len']} tokens",
        "Processes": m["world_size"],
        "Top-k / context": f"{m['options']['top_k']} / ±{m['options']['window']} tokens",
        "Active means": f"> {m['options']['threshold']}",
    }
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                  f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
                  f"<title>Harvest: {html.escape(m['model']['name'])}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n")
        out.write(f"<header><h1>Harvest of {html.escape(m['model']['name'])}</h1><dl>")
        out.write("".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in header.items()))
        out.write("</dl>")
        if probe is not None:
            out.write(f'<p class="note">{escape_text(LOGIT_NOTE)}</p>')
        out.write("</header>\n")
        out.write('<nav><label>Hook <select id="hook"></select></label> '
                  '<label>Unit <input id="search" type="search" placeholder="number or label, e.g. 12 or L0N12"></label> '
                  '<select id="sort"><option value="index">by index</option><option value="max">by max</option>'
                  '<option value="freq">by frequency</option></select></nav>\n'
                  '<main><ol id="units"></ol><section id="unit"></section></main>\n')
        out.write(_json_block([{"name": h, "kind": harvest.kind(h)} for h in chosen], "hooks"))
        for i, hook in enumerate(chosen):
            out.write(_json_block(_hook_data(harvest, hook, probe, decode, examples), f"hook-{i}"))
        out.write(f"<script>{SCRIPT}</script>\n</body>\n</html>\n")
    return target


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem auto; max-width: 1400px; padding: 0 1rem; color: #222; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
header dt { font-weight: 600; } header dd { margin: 0; }
.note { border-left: 4px solid #d9a400; background: #fff8e1; padding: .4rem .8rem; }
nav { position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid #ddd; }
main { display: grid; grid-template-columns: 14rem 1fr; gap: 1rem; }
#units { list-style: none; padding: 0; margin: 0; max-height: 80vh; overflow-y: auto; border-right: 1px solid #ddd; }
#units li { cursor: pointer; padding: .1rem .4rem; font-family: monospace; }
#units li.sel { background: #dbe7ff; }
.ctx { font-family: monospace; white-space: pre-wrap; margin: .2rem 0; line-height: 1.6; }
.ctx span { border-radius: 2px; } .ctx span.center { outline: 2px solid #c00; }
.meta { color: #666; font-size: .85em; margin-right: .5rem; }
table { border-collapse: collapse; } td, th { padding: .1rem .6rem; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-family: monospace; } td.tok { font-family: monospace; }
.cols { display: flex; gap: 2rem; flex-wrap: wrap; }
"""

SCRIPT = r"""
const hooks = JSON.parse(document.getElementById('hooks').textContent);
const cache = {};
const hookSel = document.getElementById('hook'), search = document.getElementById('search');
const sortSel = document.getElementById('sort'), list = document.getElementById('units'), panel = document.getElementById('unit');
hooks.forEach((h, i) => { const o = document.createElement('option'); o.value = i; o.textContent = h.name; hookSel.appendChild(o); });
function data(i) { if (!(i in cache)) cache[i] = JSON.parse(document.getElementById('hook-' + i).textContent); return cache[i]; }
function fmt(x) { return x === null ? 'n/a' : (Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 0.001) ? x.toExponential(3) : x.toFixed(4)); }
function shade(a, max) {
  if (a === null || !(max > 0)) return 'transparent';
  const t = Math.max(-1, Math.min(1, a / max));
  return t >= 0 ? `rgba(220,60,40,${t.toFixed(3)})` : `rgba(40,90,220,${(-t).toFixed(3)})`;
}
function histogram(u) {
  const w = 420, h = 120, n = u.hist.length, top = Math.max(1, ...u.hist), bw = w / n;
  let bars = '';
  u.hist.forEach((c, i) => { const bh = c / top * (h - 14);
    bars += `<rect x="${(i * bw).toFixed(2)}" y="${(h - 14 - bh).toFixed(2)}" width="${Math.max(bw - 0.5, 0.5).toFixed(2)}" height="${bh.toFixed(2)}" fill="${i === 0 || i === n - 1 ? '#999' : '#4a72c4'}"><title>${c}</title></rect>`; });
  return `<svg width="${w}" height="${h}" role="img" aria-label="histogram">${bars}` +
    `<text x="0" y="${h - 2}" font-size="10">${fmt(u.lo)}</text><text x="${w}" y="${h - 2}" font-size="10" text-anchor="end">${fmt(u.hi)}</text></svg>` +
    `<div class="meta">grey: below ${fmt(u.lo)} / at or above ${fmt(u.hi)}</div>`;
}
function tokens(rows) { return '<table>' + rows.map(r => `<tr><td class="tok">${r[0]}</td><td class="num">${fmt(r[1])}</td></tr>`).join('') + '</table>'; }
function showUnit(d, k) {
  const u = d.units[k];
  [...list.children].forEach(li => li.classList.toggle('sel', Number(li.dataset.k) === k));
  let s = `<h2>${u.label}</h2><p>mean ${fmt(u.mean)} · std ${fmt(u.std)} · min ${fmt(u.min)} · max ${fmt(u.max)} · active ${(100 * u.freq).toFixed(2)}% of tokens</p>`;
  s += '<h3>Max-activating contexts</h3>';
  u.examples.forEach(e => {
    s += `<div class="ctx"><span class="meta">${fmt(e.value)} · doc ${e.doc} · pos ${e.pos}</span>`;
    e.tokens.forEach((t, i) => { s += `<span class="${i === e.center ? 'center' : ''}" style="background:${shade(e.acts[i], u.max)}" title="${fmt(e.acts[i])}">${t}</span>`; });
    s += '</div>';
  });
  s += '<div class="cols"><div><h3>Histogram</h3>' + histogram(u) + '</div>';
  if (u.up) s += '<div><h3>Promoted tokens</h3>' + tokens(u.up) + '</div><div><h3>Suppressed tokens</h3>' + tokens(u.down) + '</div>';
  else s += '<div><h3>Logit effect</h3><p class="meta">none: this unit has no single output direction, or no model was given</p></div>';
  panel.innerHTML = s + '</div>';
}
function render() {
  const d = data(hookSel.value);
  list.innerHTML = ''; panel.innerHTML = '';
  if (d.kind === 'attention') {
    panel.innerHTML = '<h2>Mean attention per head</h2><table><tr><th>head</th><th>to first token</th><th>to previous token</th></tr>' +
      d.heads.map(h => `<tr><td>${h.label}</td><td class="num">${fmt(h.first)}</td><td class="num">${fmt(h.prev)}</td></tr>`).join('') + '</table>';
    return;
  }
  const q = search.value.trim().toLowerCase();
  let idx = d.units.map((u, k) => k).filter(k => !q || String(k) === q || d.units[k].label.toLowerCase().includes(q));
  if (sortSel.value !== 'index') idx.sort((a, b) => (d.units[b][sortSel.value] ?? -Infinity) - (d.units[a][sortSel.value] ?? -Infinity));
  idx.slice(0, 2000).forEach(k => { const li = document.createElement('li'); li.dataset.k = k;
    li.textContent = `${d.units[k].label}  ${fmt(d.units[k].max)}`; li.onclick = () => showUnit(d, k); list.appendChild(li); });
  if (idx.length) showUnit(d, idx[0]);
}
hookSel.onchange = render; search.oninput = render; sortSel.onchange = render;
render();
"""
