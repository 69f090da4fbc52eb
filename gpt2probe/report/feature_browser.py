"""An offline HTML browser of SAE and transcoder features, in the spirit of Neuronpedia's feature pages.

It reads a harvest that summarised features (``gpt2probe harvest --sae DIR``, or
``gpt2probe.harvest(..., saes=[sae])``) and, for every feature: its density (the fraction
of the corpus's tokens where it is active), its top activating contexts with each token
shaded by the feature's activation there, the histogram of its positive activations, and
its logit effects: :func:`gpt2probe.lens.logit_effects.logit_effects` of the direction the
feature writes (its decoder row, centred, times the final LayerNorm's weight, times ``W_U``,
centred over the vocabulary, as Neuronpedia shows them; for an SAE on ``mlp.hook_post`` the row
is first mapped through the layer's ``W_out``). A search box finds features by number and
by token text (in their top contexts and their promoted and suppressed tokens).

Numbers come from the harvest (exact over the whole corpus) and from the coder's weights;
the coder given must be the one harvested (its digest is checked). As in
:mod:`gpt2probe.report.harvest_dashboard`, every token string goes through
:func:`gpt2probe.display.escape.display_token` once, here; the data rides in
``<script type="application/json">`` blocks; no request leaves the page.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .. import validate
from ..atomic import atomic_path
from ..display.escape import display_token, escape_text
from ..errors import InvalidArgumentError, InvalidTypeError, ModelMismatchError
from ..harvest.units import FEATURE_SUFFIX, coder_digest
from ..lens.logit_effects import FORMULA, top_logit_effects
from ..names import is_mlp, is_residual_stream, layer_of
from .data_page import write_page_head
from .harvest_dashboard import context_row, token_decoder

LOGIT_NOTE = f"Logit effects of the direction d the feature writes (its decoder row): {FORMULA}."
NO_MODEL = ("none: no model was given. To show them, run gpt2probe sae report without --no-logits (it loads the "
            "harvested model and the SAE folders the harvest recorded, or those --model and --sae name), or pass "
            "probe= (the harvested model) and saes= (the harvested coders) to write_feature_browser")
NO_CODER = ("none: no SAE or transcoder was given for these features. To show them, add its folder to gpt2probe sae "
            "report's --sae, or the coder to write_feature_browser's saes=")


def feature_hooks(harvest) -> list[str]:
    """The harvested names that hold SAE or transcoder features, in forward order."""
    return [h for h in harvest.hooks if harvest.kind(h) == "feature"]


def decoder_directions(coder, probe) -> torch.Tensor | None:
    """``[feature, d_model]``: what each feature writes into the residual stream, or ``None`` if no single direction.

    An SAE on the residual stream or on an attention or MLP output, and a transcoder (which
    writes ``hook_mlp_out``), write their decoder rows; an SAE on ``mlp.hook_post`` writes
    its rows through the layer's ``W_out``. An SAE on a LayerNorm output writes nothing the
    residual stream adds up, and gets ``None``.
    """
    hook = coder.cfg.write_hook
    if not writes_a_direction(hook):
        return None
    w_dec = coder.W_dec.detach().float()
    if is_residual_stream(hook):
        return w_dec.cpu()
    return (w_dec.to(probe.W_out.device) @ probe.W_out[layer_of(hook)].float()).cpu()


def writes_a_direction(hook: str) -> bool:
    """Whether a coder writing ``hook`` has one residual-stream direction per feature (so logit effects)."""
    return is_residual_stream(hook) or (is_mlp(hook) and hook.endswith("hook_post"))


def shows_logit_effects(coder, probe) -> bool:
    """Whether the page shows logit effects for ``coder``'s features: a model, a coder, and a direction per feature."""
    return probe is not None and coder is not None and writes_a_direction(coder.cfg.write_hook)


def no_logits_reason(coder, probe) -> str:
    """What the page says in place of a hook's logit effects when it has none: no model, no coder, or no direction."""
    if probe is None:
        return NO_MODEL
    if coder is None:
        return NO_CODER
    return (f"none: this coder writes {coder.cfg.write_hook}, neither the residual stream nor an MLP's hook_post, so "
            "its features have no single direction in the residual stream")


def _r(x: float | torch.Tensor, digits: int = 4) -> float | None:
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def _json_block(data: object, ident: str) -> str:
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{ident}">{text}</script>\n'


def _check_coder(harvest, name: str, coder) -> None:
    entry = next(h for h in harvest.manifest["hooks"] if h["name"] == name).get("coder")
    if entry is None or not isinstance(entry, dict) or "sha256" not in entry:
        raise ModelMismatchError(f"{name!r} in {str(harvest.directory)!r} records no coder digest to check against")
    if coder_digest(coder) != entry["sha256"]:
        raise ModelMismatchError(
            f"the coder given for {name!r} ({coder!r}) is not the one harvested (its weights or settings differ): "
            "pass the SAE or transcoder the harvest was made with")


def feature_data(harvest, name: str, *, coder=None, probe=None, decode, examples: int = 10, k_logits: int = 10
                 ) -> dict:
    """Everything the page shows about the features of ``name`` (numbers rounded, token strings escaped)."""
    stats = harvest.stats(name)
    effects = None
    if coder is not None and probe is not None:
        directions = decoder_directions(coder, probe)
        if directions is not None:
            effects = top_logit_effects(directions, probe, k=k_logits)
    tokens_total = int(stats["count"][0]) if stats["count"].numel() else 0
    features = []
    for f in range(harvest.n_units(name)):
        hist = harvest.histogram(name, f)
        exs, words = [], []
        for ex in harvest.top_examples(name, f)[:examples]:
            words += [text for _, _, text in decode.pieces(ex.tokens)]
            exs.append({"value": _r(ex.value), "doc": ex.doc, "pos": ex.pos,
                        **context_row(decode, ex.tokens, ex.acts, ex.center)})
        feature = {"id": f, "active": int(stats["active"][f]), "density": float(stats["frequency"][f]),
                   "mean": _r(stats["mean"][f]), "max": _r(stats["max"][f]) if int(stats["active"][f]) else 0.0,
                   "hist": hist.counts[1:].tolist(), "lo": _r(hist.edges[0], 6), "hi": _r(hist.edges[-1]),
                   "examples": exs}
        if effects is not None:
            up_v, up_i, down_v, down_i = effects
            up = [(decode(int(i)), v) for v, i in zip(up_v[f].tolist(), up_i[f].tolist())]
            down = [(decode(int(i)), v) for v, i in zip(down_v[f].tolist(), down_i[f].tolist())]
            feature["up"] = [[display_token(t), _r(v, 3)] for t, v in up]
            feature["down"] = [[display_token(t), _r(v, 3)] for t, v in down]
            words += [t for t, _ in up] + [t for t, _ in down]
        # Plain text for the search box (compared, never inserted into the page).
        feature["search"] = "\u0000".join(dict.fromkeys(w.lower() for w in words))
        features.append(feature)
    data = {"name": name, "reads": name.removesuffix("." + FEATURE_SUFFIX), "tokens": tokens_total,
            "coder": None if coder is None else repr(coder), "logits": effects is not None, "features": features}
    if effects is None:
        data["no_logits"] = escape_text(no_logits_reason(coder, probe))  # inserted as HTML by the page
    return data


def write_feature_browser(harvest, path: str | os.PathLike, *, saes: Mapping[str, object] | Sequence = (),
                          probe=None, hooks: Sequence[str] | None = None, examples: int = 10) -> Path:
    """Write the feature browser of ``harvest``'s feature hooks to ``path`` (one self-contained HTML file).

    Args:
        harvest: a :class:`gpt2probe.harvest.Harvest` that summarised SAE or transcoder features.
        path: the HTML file to write (atomically).
        saes: the coders harvested (a list, or ``{feature hook name: coder}``); with ``probe``
            they give the logit effects. Each is checked to be the one harvested.
        probe: the harvested model: its tokenizer shows the tokens, its ``W_U`` the logit effects.
        hooks: only these feature hooks (default: every one in the harvest).
        examples: top activating contexts shown per feature.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: the harvest holds no features, or a hook named is not one.
        ModelMismatchError: a coder or model other than the harvested ones.

    Example:
        >>> h = gpt2probe.harvest(probe, texts, saes=[sae], out="runs/f")            # doctest: +SKIP
        >>> write_feature_browser(h, "features.html", saes=[sae], probe=probe)     # doctest: +SKIP
    """
    available = feature_hooks(harvest)
    if not available:
        raise InvalidArgumentError(f"{str(harvest.directory)!r} holds no SAE features (harvested: "
                                   f"{', '.join(harvest.hooks)}); harvest with --sae DIR (saes=[...]) first")
    # one name, as harvest's hooks= takes it (list("blocks...") would be its characters, each refused)
    chosen = ([hooks] if isinstance(hooks, str) else list(hooks)) if hooks else available
    for name in chosen:
        if name not in available:
            raise InvalidArgumentError(f"{name!r} is not a harvested feature hook; feature hooks: {', '.join(available)}")
    validate.integer("examples", examples, minimum=1)  # a float was a raw TypeError from slicing
    coders = _coders_by_name(saes)
    for name, coder in coders.items():
        if name not in available:
            raise InvalidArgumentError(f"the coder {coder!r} reads {name.removesuffix('.' + FEATURE_SUFFIX)!r}, whose "
                                       f"features were not harvested; feature hooks: {', '.join(available)}")
        _check_coder(harvest, name, coder)
    decode = token_decoder(harvest, chosen, probe)

    m = harvest.manifest
    header = {
        "Model": m["model"]["name"],
        "Tokens": f"{m['totals']['tokens']:,}",
        "Documents": f"{m['totals']['documents']:,}",
        "Top-k / context": f"{m['options']['top_k']} / ±{m['options']['window']} tokens",
        "Active means": f"> {m['options']['threshold']}",
    }
    # The formula note belongs where logit effects are shown: some chosen hook has a model, a coder and a direction.
    shows_logits = any(shows_logit_effects(coders.get(name), probe) for name in chosen)
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as out:
        write_page_head(out, title=f"Features: {m['model']['name']}", heading=f"Features of {m['model']['name']}",
                        header=header, style=STYLE, note=LOGIT_NOTE if shows_logits else None)
        out.write('<nav><label>SAE <select id="hook"></select></label> '
                  '<label>Search <input id="search" type="search" placeholder="feature number, or token text"></label> '
                  '<select id="sort"><option value="id">by number</option><option value="density">by density</option>'
                  '<option value="max">by max activation</option></select> '
                  '<label><input id="dead" type="checkbox"> show dead</label> <span id="count" class="meta"></span></nav>\n'
                  '<main><ol id="features"></ol><section id="feature"></section></main>\n')
        out.write(_json_block([{"name": n} for n in chosen], "hooks"))
        for i, name in enumerate(chosen):
            data = feature_data(harvest, name, coder=coders.get(name), probe=probe, decode=decode, examples=examples)
            out.write(_json_block(data, f"hook-{i}"))
        out.write(f"<script>{SCRIPT}</script>\n</body>\n</html>\n")
    return target


def _coders_by_name(saes: object) -> dict[str, object]:  # object: it is the check
    """``{feature hook name: coder}`` from a list of coders (named by the hook each reads) or such a mapping.

    A list's entries and a mapping's values go through the same check, so a wrong object in
    either fails here with our error rather than deep in the page's logit effects.
    """
    if isinstance(saes, Mapping):
        pairs = list(saes.items())
    else:  # a single coder, a path or a string is refused naming the fix (saes=[sae])
        pairs = [(None, coder) for coder in validate.coder_list("saes", saes)]
    out = {}
    for name, coder in pairs:
        cfg = getattr(coder, "cfg", None)
        if cfg is None or not hasattr(cfg, "hook_name") or not hasattr(coder, "W_dec"):
            raise InvalidTypeError(f"saes must be gpt2probe SAE or Transcoder objects, got {type(coder).__name__}")
        out[f"{cfg.hook_name}.{FEATURE_SUFFIX}" if name is None else name] = coder
    return out


STYLE = """
#search { width: 17em; }  /* the whole placeholder shows */
body { font-family: system-ui, sans-serif; margin: 1rem auto; max-width: 1400px; padding: 0 1rem; color: #222; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
header dt { font-weight: 600; } header dd { margin: 0; }
.note { border-left: 4px solid #d9a400; background: #fff8e1; padding: .4rem .8rem; }
nav { position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid #ddd; z-index: 1; }
main { display: grid; grid-template-columns: 16rem 1fr; gap: 1rem; }
#features { list-style: none; padding: 0; margin: 0; max-height: 80vh; overflow-y: auto; border-right: 1px solid #ddd; }
#features li { cursor: pointer; padding: .1rem .4rem; font-family: monospace; }
#features li.sel { background: #dbe7ff; } #features li.dead { color: #999; }
.ctx { font-family: monospace; white-space: pre-wrap; margin: .2rem 0; line-height: 1.6; }
.ctx span.tok { border-radius: 2px; } .ctx span.center { outline: 2px solid #111; outline-offset: 1px; }
.meta { color: #666; font-size: .85em; margin-right: .5rem; }
.density { font-size: 1.1em; }
table { border-collapse: collapse; } td, th { padding: .1rem .6rem; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-family: monospace; } td.tok { font-family: monospace; }
.cols { display: flex; gap: 2rem; flex-wrap: wrap; }
"""

SCRIPT = r"""
const hooks = JSON.parse(document.getElementById('hooks').textContent);
const cache = {};
const hookSel = document.getElementById('hook'), search = document.getElementById('search');
const sortSel = document.getElementById('sort'), dead = document.getElementById('dead');
const list = document.getElementById('features'), panel = document.getElementById('feature');
const counter = document.getElementById('count');
hooks.forEach((h, i) => { const o = document.createElement('option'); o.value = i; o.textContent = h.name; hookSel.appendChild(o); });
function data(i) { if (!(i in cache)) cache[i] = JSON.parse(document.getElementById('hook-' + i).textContent); return cache[i]; }
function fmt(x) { return x === null ? 'n/a' : (Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 0.001) ? x.toExponential(3) : x.toFixed(4)); }
function pct(x) { return x === 0 ? '0%' : (100 * x < 0.001 ? (100 * x).toExponential(2) : (100 * x).toPrecision(3)) + '%'; }
function shade(a, max) {
  if (a === null || !(max > 0) || a <= 0) return 'transparent';
  return `rgba(67,147,195,${Math.min(1, a / max).toFixed(3)})`;  // blue = positive, as on the harvest dashboard
}
function histogram(f) {
  const w = 420, h = 120, n = f.hist.length, top = Math.max(1, ...f.hist), bw = w / n;
  let bars = '';
  f.hist.forEach((c, i) => { const bh = c / top * (h - 14);
    bars += `<rect x="${(i * bw).toFixed(2)}" y="${(h - 14 - bh).toFixed(2)}" width="${Math.max(bw - 0.5, 0.5).toFixed(2)}" height="${bh.toFixed(2)}" fill="${i === n - 1 ? '#999' : '#4a72c4'}"><title>${c}</title></rect>`; });
  return `<svg width="${w}" height="${h}" role="img" aria-label="histogram of positive activations">${bars}` +
    `<text x="0" y="${h - 2}" font-size="10">${fmt(f.lo)}</text><text x="${w}" y="${h - 2}" font-size="10" text-anchor="end">${fmt(f.hi)}</text></svg>` +
    `<div class="meta">activations > 0 (the zeros are not drawn); grey: at or above ${fmt(f.hi)}</div>`;
}
function tokens(rows) { return '<table>' + rows.map(r => `<tr><td class="tok">${r[0]}</td><td class="num">${fmt(r[1])}</td></tr>`).join('') + '</table>'; }
function showFeature(d, k) {
  const f = d.features[k];
  [...list.children].forEach(li => li.classList.toggle('sel', Number(li.dataset.k) === k));
  let s = `<h2>Feature ${f.id}</h2><p class="meta">${d.name}</p>`;
  s += `<p class="density">density <b id="density">${pct(f.density)}</b> (active on ${f.active} of ${d.tokens} tokens) · max ${fmt(f.max)} · mean ${fmt(f.mean)}</p>`;
  s += '<h3>Top activating contexts</h3>';
  if (!f.examples.length) s += '<p class="meta">never active on this corpus</p>';
  f.examples.forEach(e => {
    s += `<div class="ctx"><span class="meta">${fmt(e.value)} · doc ${e.doc} · pos ${e.pos}</span>`;
    e.tokens.forEach((t, i) => { s += `<span class="tok${i === e.center ? ' center' : ''}" style="background:${shade(e.acts[i], f.max)}" title="${fmt(e.acts[i])}">${t}</span>`; });
    s += '</div>';
  });
  s += '<div class="cols"><div><h3>Activation histogram</h3>' + (f.active ? histogram(f) : '<p class="meta">no active token</p>') + '</div>';
  if (f.up) s += '<div><h3>Promoted tokens</h3>' + tokens(f.up) + '</div><div><h3>Suppressed tokens</h3>' + tokens(f.down) + '</div>';
  else s += '<div><h3>Logit effects</h3><p class="meta">' + d.no_logits + '</p></div>';
  panel.innerHTML = s + '</div>';
}
function render() {
  const d = data(hookSel.value);
  list.innerHTML = ''; panel.innerHTML = '';
  const q = search.value.trim().toLowerCase();
  const number = /^#?\d+$/.test(q) ? Number(q.replace('#', '')) : null;
  let idx = d.features.map((f, k) => k).filter(k => {
    const f = d.features[k];
    if (number !== null) return f.id === number;
    if (!dead.checked && f.active === 0) return false;
    return !q || f.search.includes(q);
  });
  if (sortSel.value !== 'id') idx.sort((a, b) => d.features[b][sortSel.value] - d.features[a][sortSel.value] || a - b);
  counter.textContent = `${idx.length} of ${d.features.length} features`;
  idx.slice(0, 2000).forEach(k => { const f = d.features[k], li = document.createElement('li'); li.dataset.k = k;
    if (f.active === 0) li.classList.add('dead');
    li.textContent = `#${f.id}  ${pct(f.density)}`; li.onclick = () => showFeature(d, k); list.appendChild(li); });
  if (idx.length) showFeature(d, idx[0]);
  else panel.innerHTML = '<p class="meta">no feature matches</p>';
}
hookSel.onchange = render; search.oninput = render; sortSel.onchange = render; dead.onchange = render;
render();
"""
