"""A harvest as one self-contained, offline HTML dashboard.

For every harvested hook: a unit selector with search; for the chosen unit its statistics,
its max-activating contexts with each token shaded by the unit's activation there, its
histogram, and its direct effect on the logits. Attention patterns get a per-head table.

The direct effect is :func:`gpt2probe.lens.logit_effects.logit_effects` of the unit's output
direction: the direction centred, times the final LayerNorm's weight, times ``W_U``, centred over
the vocabulary (what Neuronpedia shows; ``ln_f``'s division by the stream's norm is left out, it
depends on the whole residual stream): for an MLP neuron the row of ``W_out`` it writes, for a
residual dimension the unit vector, for a user direction the direction itself. Heads summarised by ``hook_z`` norms have
no single direction and show none; the page says why (:func:`no_logits_reason`), and how to get them when no model
was given.

Every token string goes through :func:`gpt2probe.display.escape.display_token` once, here;
the page inserts only those escaped strings and numbers. The data rides in
``<script type="application/json">`` blocks (``<`` written as ``\\u003c``, so no string can
close the block). No request leaves the page (the same Content-Security-Policy as the other
reports); the file is written atomically.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..display.escape import display_token, escape_text
from ..errors import InvalidArgumentError, ModelMismatchError
from ..lens.logit_effects import FORMULA, top_logit_effects
from ..names import is_residual_stream, layer_of
from .data_page import write_page_head

LOGIT_NOTE = f"Direct effect on the logits of the unit's output direction d (for an MLP neuron, its row of W_out): {FORMULA}."
NO_MODEL = ("none: no model was given. To show them, run gpt2probe harvest-report without --no-logits (it loads the "
            "harvested model, or the one --model names), or pass probe= (the harvested model) to write_dashboard")


def writes_directions(harvest, hook: str) -> bool:
    """Whether ``hook``'s units each write one direction into the residual stream (so have logit effects)."""
    kind = harvest.kind(hook)
    return kind in ("neuron", "direction") or (kind == "dim" and is_residual_stream(hook))


def output_directions(harvest, hook: str, probe) -> torch.Tensor | None:
    """``[unit, d_model]`` directions each unit writes into the residual stream, or ``None`` if it has none."""
    if not writes_directions(harvest, hook):
        return None
    kind = harvest.kind(hook)
    if kind == "neuron":
        return probe.W_out[layer_of(hook)].float()
    if kind == "direction":
        return harvest.directions(hook).float()
    return torch.eye(probe.cfg.d_model)  # a residual stream's dimensions


def no_logits_reason(harvest, hook: str, probe) -> str:
    """What the page says in place of ``hook``'s logit effects when it has none: no model, or no output direction."""
    if probe is None:
        return NO_MODEL
    kind = harvest.kind(hook)
    if kind == "feature":
        return ("none here: SAE and transcoder features show their logit effects in the feature browser "
                "(gpt2probe sae report DIR)")
    if kind == "head_norm":
        return f"none: a unit of {hook} is a head's output norm, a size rather than a direction in the residual stream"
    return f"none: {hook} is not in the residual stream, so its units write no direction into it"


def _r(x: float | torch.Tensor, digits: int = 4) -> float | None:
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


# Units zero on most tokens (SAE and transcoder features): their histogram shows the active tokens only, as the
# feature browser's does. The harvest bins them from a tiny positive edge (harvest.runner.feature_edges), so the
# zeros fall in the underflow bin, left out here; MLP neurons (GELU, rarely exactly 0) keep every bin.
SPARSE_KINDS = frozenset({"feature"})


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
            effects = top_logit_effects(dirs, probe)
    units = []
    sparse = kind in SPARSE_KINDS
    for u in range(harvest.n_units(hook)):
        hist = harvest.histogram(hook, u)
        # A sparse unit's underflow bin holds its zeros (most tokens): drawn, it would flatten every other bar.
        counts = hist.counts[1:] if sparse else hist.counts
        exs = []
        for ex in harvest.top_examples(hook, u)[:examples]:
            exs.append({"value": _r(ex.value), "doc": ex.doc, "pos": ex.pos,
                        **context_row(decode, ex.tokens, ex.acts, ex.center)})
        unit = {"label": harvest.unit_label(hook, u), "mean": _r(stats["mean"][u]), "std": _r(stats["std"][u]),
                "min": _r(stats["min"][u]), "max": _r(stats["max"][u]), "freq": _r(stats["frequency"][u]),
                "hist": counts.tolist(), "lo": _r(hist.edges[0], 6 if sparse else 4), "hi": _r(hist.edges[-1]),
                "examples": exs}
        if sparse:  # how many tokens the bars hold, of how many
            unit["drawn"], unit["tokens"] = int(counts.sum()), int(stats["count"][u])
        if effects is not None:
            up_v, up_i, down_v, down_i = effects
            unit["up"] = [[display_token(decode(int(i))), _r(v, 3)] for v, i in zip(up_v[u], up_i[u])]
            unit["down"] = [[display_token(decode(int(i))), _r(v, 3)] for v, i in zip(down_v[u], down_i[u])]
        units.append(unit)
    data = {"name": hook, "kind": kind, "units": units, "logits": effects is not None}
    if effects is None:
        data["no_logits"] = escape_text(no_logits_reason(harvest, hook, probe))  # inserted as HTML by the page
    return data


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


REPLACEMENT = "\ufffd"  # what a tokenizer decodes an incomplete UTF-8 sequence to
MAX_CHAR_TOKENS = 4  # a UTF-8 character has at most 4 bytes, so it spans at most 4 byte-level tokens


class TokenDecoder:
    """Token ids to text with one tokenizer: single tokens (cached) and runs of tokens.

    Byte-level BPE (GPT-2's) splits a character such as ``é`` or an emoji over several tokens;
    each piece alone decodes to ``"\ufffd"``. :meth:`pieces` groups such tokens back into the
    character they spell.
    """

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._one = functools.cache(self.many_uncached)

    def many_uncached(self, *ids: int) -> str:
        return self._tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)

    def __call__(self, token: int) -> str:
        return self._one(int(token))

    def pieces(self, tokens: Sequence[int]) -> list[tuple[int, int, str]]:
        """``(start, stop, text)`` runs covering ``tokens``, whole characters where the tokens allow.

        One token each, except that a token decoding to ``"\ufffd"`` is joined with the next ones (up to :data:`MAX_CHAR_TOKENS`) when together they decode to
        whole characters. A piece whose character starts or ends outside ``tokens`` stays ``"\ufffd"``.
        """
        ids = [int(t) for t in tokens]
        out, i = [], 0
        while i < len(ids):
            text, stop = self(ids[i]), i + 1
            if REPLACEMENT in text:
                for j in range(i + 2, min(len(ids), i + MAX_CHAR_TOKENS) + 1):
                    joined = self._one(*ids[i:j])
                    if REPLACEMENT not in joined:
                        text, stop = joined, j
                        break
            out.append((i, stop, text))
            i = stop
        return out


def context_row(decode: TokenDecoder, tokens: Sequence[int], acts: Sequence[float], center: int) -> dict:
    """A context as the page shows it: escaped texts (split characters joined), one activation per piece.

    A piece of several tokens shows the activation of largest size among them (``sizes`` says
    how many tokens each piece holds; ``parts`` lists every token's activation of such pieces),
    and ``center`` is the piece holding the example's own token.
    """
    row: dict = {"tokens": [], "acts": [], "sizes": [], "parts": {}, "center": center}
    for index, (start, stop, text) in enumerate(decode.pieces(tokens)):
        values = [_r(a, 3) for a in acts[start:stop]]
        finite = [v for v in values if v is not None]
        row["tokens"].append(display_token(text))
        row["acts"].append(max(finite, key=abs) if finite else None)
        row["sizes"].append(stop - start)
        if stop - start > 1:
            row["parts"][str(index)] = values
        if start <= center < stop:
            row["center"] = index
    return row


def token_decoder(harvest, hooks: Sequence[str], probe=None) -> TokenDecoder:
    """A cached decoder for the contexts of ``hooks``.

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
    return TokenDecoder(tokenizer)


# The hook the page opens on: features and MLP neurons first (their contexts are the dashboard's point), attention last.
OPENING_KINDS = ("feature", "neuron", "direction", "dim", "head_norm", "attention")


def opening_hook(harvest, hooks: Sequence[str]) -> int:
    """Index in ``hooks`` of the hook the page opens on: the first of the most interesting kind (:data:`OPENING_KINDS`)."""
    rank = {kind: i for i, kind in enumerate(OPENING_KINDS)}
    return min(range(len(hooks)), key=lambda i: (rank.get(harvest.kind(hooks[i]), len(rank)), i))


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
    # The formula note belongs where logit effects are shown: a model, and some chosen hook whose units write a direction
    # (not for attention patterns, head norms or features alone, which show none here).
    shows_logits = probe is not None and any(writes_directions(harvest, hook) for hook in chosen)
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as out:
        write_page_head(out, title=f"Harvest: {m['model']['name']}", heading=f"Harvest of {m['model']['name']}",
                        header=header, style=STYLE, note=LOGIT_NOTE if shows_logits else None)
        out.write('<nav><label>Hook <select id="hook"></select></label> '
                  '<label>Unit <input id="search" type="search" placeholder="number or label, e.g. 12 or L0N12"></label> '
                  '<label>Sort <select id="sort"><option value="max">by max</option><option value="index">by index</option>'
                  '<option value="freq">by frequency</option></select></label> '
                  '<span class="meta">the address (#hook=…&amp;unit=…&amp;sort=…) keeps what is shown</span></nav>\n'
                  '<main><ol id="units"></ol><section id="unit"></section></main>\n')
        out.write(_json_block({"hooks": [{"name": h, "kind": harvest.kind(h)} for h in chosen],
                               "opening": opening_hook(harvest, chosen)}, "hooks"))
        for i, hook in enumerate(chosen):
            out.write(_json_block(_hook_data(harvest, hook, probe, decode, examples), f"hook-{i}"))
        out.write(f"<script>{SCRIPT}</script>\n</body>\n</html>\n")
    return target


STYLE = """
#search { width: 17em; }  /* the whole placeholder shows */
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
.ctx span { border-radius: 2px; padding: 0 1px; } .ctx span.dark { color: #fff; }
.ctx span.center { outline: 2px solid #111; outline-offset: 1px; font-weight: 700; }
.peak { font-family: monospace; font-size: 1.1em; background: #f3f3f3; padding: 0 .25em; border: 1px solid #bbb; border-radius: 2px; }
.meta { color: #666; font-size: .85em; margin-right: .5rem; }
table { border-collapse: collapse; } td, th { padding: .1rem .6rem; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-family: monospace; } td.tok { font-family: monospace; }
.cols { display: flex; gap: 2rem; flex-wrap: wrap; }
"""

SCRIPT = r"""
const meta = JSON.parse(document.getElementById('hooks').textContent), hooks = meta.hooks;
const cache = {};
const hookSel = document.getElementById('hook'), search = document.getElementById('search');
const sortSel = document.getElementById('sort'), list = document.getElementById('units'), panel = document.getElementById('unit');
hooks.forEach((h, i) => { const o = document.createElement('option'); o.value = i; o.textContent = h.name; hookSel.appendChild(o); });
function data(i) { if (!(i in cache)) cache[i] = JSON.parse(document.getElementById('hook-' + i).textContent); return cache[i]; }
function fmt(x) { return x === null ? 'n/a' : (Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 0.001) ? x.toExponential(3) : x.toFixed(4)); }
function short(x) { return x === null ? 'n/a' : (Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 0.01) ? x.toExponential(1) : String(+x.toFixed(2))); }
function strength(a, max) { return a === null || !(max > 0) ? 0 : Math.max(-1, Math.min(1, a / max)); }
// Blue positive, red negative, as in every gpt2probe figure (report/style.py); the lighter ends of RdBu keep text legible.
function shade(t) { return t === 0 ? 'transparent' : t > 0 ? `rgba(67,147,195,${t.toFixed(3)})` : `rgba(214,96,77,${(-t).toFixed(3)})`; }
// The histogram with its axes: x the activation (bin edges lo..hi), y the number of tokens in each bin.
// A sparse unit (u.drawn set: an SAE or transcoder feature) has no underflow bin: its bars are the active tokens.
function histogram(u) {
  const sparse = u.drawn !== undefined;
  if (sparse && u.drawn === 0) return '<p class="meta">no active token</p>';
  const W = 460, H = 150, left = 44, right = 8, top = 6, bottom = 34, w = W - left - right, h = H - top - bottom;
  const n = u.hist.length, peak = Math.max(1, ...u.hist), bw = w / n;
  let s = '';
  u.hist.forEach((c, i) => { const bh = c / peak * h;
    s += `<rect x="${(left + i * bw).toFixed(2)}" y="${(top + h - bh).toFixed(2)}" width="${Math.max(bw - 0.5, 0.5).toFixed(2)}" height="${bh.toFixed(2)}" fill="${(i === 0 && !sparse) || i === n - 1 ? '#999' : '#4a72c4'}"><title>${c} tokens</title></rect>`; });
  s += `<line class="axis" x1="${left}" y1="${top + h}" x2="${left + w}" y2="${top + h}" stroke="#333"/>` +
       `<line class="axis" x1="${left}" y1="${top}" x2="${left}" y2="${top + h}" stroke="#333"/>`;
  const xt = [[left + (sparse ? 0 : bw), u.lo], [left + w - bw, u.hi]];  // the inner bins run from lo to hi
  xt.forEach(([x, v], j) => { s += `<line x1="${x}" y1="${top + h}" x2="${x}" y2="${top + h + 4}" stroke="#333"/>` +
    `<text class="xtick" x="${x}" y="${top + h + 14}" font-size="10" text-anchor="${j ? 'end' : 'start'}">${fmt(v)}</text>`; });
  [[0, top + h], [peak, top]].forEach(([v, y]) => { s += `<line x1="${left - 4}" y1="${y}" x2="${left}" y2="${y}" stroke="#333"/>` +
    `<text class="ytick" x="${left - 6}" y="${y + 3}" font-size="10" text-anchor="end">${v.toLocaleString('en')}</text>`; });
  s += `<text class="xlabel" x="${left + w / 2}" y="${H - 4}" font-size="11" text-anchor="middle">activation</text>` +
       `<text class="ylabel" transform="translate(11 ${top + h / 2}) rotate(-90)" font-size="11" text-anchor="middle">tokens</text>`;
  const note = sparse ? `activations > 0: ${u.drawn.toLocaleString('en')} of ${u.tokens.toLocaleString('en')} tokens ` +
    `(bins from ${fmt(u.lo)}; the zeros are not drawn); grey: at or above ${fmt(u.hi)}`
    : `grey: below ${fmt(u.lo)} / at or above ${fmt(u.hi)}`;
  return `<svg width="${W}" height="${H}" role="img" aria-label="histogram of the unit's activations">${s}</svg>` +
    `<div class="meta hist-note">${note}</div>`;
}
function tokens(rows) { return '<table>' + rows.map(r => `<tr><td class="tok">${r[0]}</td><td class="num">${fmt(r[1])}</td></tr>`).join('') + '</table>'; }
function spanTitle(e, i) {
  const parts = e.parts[String(i)];
  return parts ? `${e.sizes[i]} tokens spell this character: ${parts.map(fmt).join(', ')}` : fmt(e.acts[i]);
}
// The address keeps what is shown: #hook=NAME&unit=K&sort=max (and &q=SEARCH)
let currentUnit = null;
function writeHash() {
  const p = new URLSearchParams();
  p.set('hook', hooks[hookSel.value].name);
  if (currentUnit !== null) p.set('unit', currentUnit);
  p.set('sort', sortSel.value);
  if (search.value.trim()) p.set('q', search.value.trim());
  const hash = '#' + p.toString();
  if (location.hash !== hash) history.replaceState(null, '', hash);
}
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const i = hooks.findIndex(h => h.name === p.get('hook'));
  hookSel.value = i >= 0 ? i : meta.opening;
  sortSel.value = ['index', 'max', 'freq'].includes(p.get('sort')) ? p.get('sort') : 'max';
  search.value = p.get('q') || '';
  const u = p.get('unit');
  return u !== null && /^\d+$/.test(u) ? Number(u) : null;
}
function showUnit(d, k) {
  const u = d.units[k];
  currentUnit = k;
  [...list.children].forEach(li => li.classList.toggle('sel', Number(li.dataset.k) === k));
  let s = `<h2>${u.label}</h2><p>mean ${fmt(u.mean)} · std ${fmt(u.std)} · min ${fmt(u.min)} · max ${fmt(u.max)} · active ${(100 * u.freq).toFixed(2)}% of tokens</p>`;
  s += '<h3>Max-activating contexts</h3><p class="meta">each token shaded by the activation there (blue positive, red negative); the boxed token is the peak</p>';
  u.examples.forEach(e => {
    s += `<div class="ctx"><span class="meta">${fmt(e.value)} at <b class="peak">${e.tokens[e.center]}</b> · doc ${e.doc} · pos ${e.pos}</span>`;
    e.tokens.forEach((t, i) => { const a = strength(e.acts[i], u.max);
      const cls = (i === e.center ? 'center' : '') + (Math.abs(a) > 0.55 ? ' dark' : '');
      s += `<span class="${cls.trim()}" style="background:${shade(a)}" title="${spanTitle(e, i)}">${t}</span>`; });
    s += '</div>';
  });
  s += `<div class="cols"><div><h3>Histogram${u.drawn !== undefined ? ' of activations > 0' : ''}</h3>` + histogram(u) + '</div>';
  if (u.up) s += '<div><h3>Promoted tokens</h3>' + tokens(u.up) + '</div><div><h3>Suppressed tokens</h3>' + tokens(u.down) + '</div>';
  else s += '<div><h3>Logit effect</h3><p class="meta">' + d.no_logits + '</p></div>';
  panel.innerHTML = s + '</div>';
  writeHash();
}
function render(unit = null) {
  const d = data(hookSel.value);
  list.innerHTML = ''; panel.innerHTML = ''; currentUnit = null;
  if (d.kind === 'attention') {
    panel.innerHTML = '<h2>Mean attention per head</h2><table><tr><th>head</th><th>to first token</th><th>to previous token</th></tr>' +
      d.heads.map(h => `<tr><td>${h.label}</td><td class="num">${fmt(h.first)}</td><td class="num">${fmt(h.prev)}</td></tr>`).join('') + '</table>';
    writeHash();
    return;
  }
  const q = search.value.trim().toLowerCase();
  let idx = d.units.map((u, k) => k).filter(k => !q || String(k) === q || d.units[k].label.toLowerCase().includes(q));
  if (sortSel.value !== 'index') idx.sort((a, b) => (d.units[b][sortSel.value] ?? -Infinity) - (d.units[a][sortSel.value] ?? -Infinity));
  if (/^\d+$/.test(q) && Number(q) < d.units.length) idx = [Number(q), ...idx.filter(k => k !== Number(q))];  // the unit typed first
  idx.slice(0, 2000).forEach(k => { const li = document.createElement('li'); li.dataset.k = k;
    li.textContent = `${d.units[k].label}  ${short(d.units[k].max)}`; li.onclick = () => showUnit(d, k); list.appendChild(li); });
  if (unit !== null && unit < d.units.length) showUnit(d, unit);
  else if (idx.length) showUnit(d, idx[0]);
  else writeHash();
}
hookSel.onchange = () => render(); search.oninput = () => render(); sortSel.onchange = () => render(currentUnit);
window.addEventListener('hashchange', () => render(readHash()));
render(readHash());
"""
