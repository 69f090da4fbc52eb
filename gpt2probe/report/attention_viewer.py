"""An attention viewer for every head at once, in one self-contained offline HTML file.

In the spirit of CircuitsVis's ``attention_heads``: every head of every layer as a
thumbnail with its scores (previous-token, induction, first-token) beside it, one selected
head drawn large, and the tokens: hover one to see what it attends to (blue) and what
attends to it (orange). It must hold GPT-2 small's 144 heads at 1,024 tokens, which as
float32 would be 600 MB, in well under 40 MB.

How the patterns are stored (data here, drawing in the page's plain JavaScript):

* **Lower triangle only.** A causal pattern is zero above the diagonal, so a head keeps
  ``n (n + 1) / 2`` weights, row by row.
* **8 bits.** Each weight becomes ``round(255 w)``: steps of 1/255, so weights below
  1/510 read as 0. The page shows the weights as ``k/255``.
* **Deflate per head, base64 in the page.** Long-range attention is mostly (near) zero,
  and runs of zeros compress to almost nothing. The page inflates the selected head with
  the browser's own ``DecompressionStream('deflate')``: no library, no network.
* **A size budget, announced.** If the file would exceed ``max_bytes`` (diffuse patterns
  compress less), weights below a threshold (2/255, then 4/255, ...) are stored as 0 until
  it fits, and the page and :attr:`AttentionData.threshold` say so. Nothing else is dropped.
* **Thumbnails precomputed** by max-pooling each pattern to at most 64x64 pixels, so that
  a single strong weight stays visible and the grid draws before any head is inflated.

Measured (``tests/test_attention_viewer.py``, a random 12-layer, 12-head model at 1,024
tokens): see the file size it prints; GPT-2's own heads are sparser than random ones.
"""

from __future__ import annotations

import base64
import html
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ..atomic import atomic_path
from ..display.escape import token_text
from ..errors import InvalidArgumentError, ShapeError
from .html import CONTENT_SECURITY_POLICY, STYLE, _header

MAX_BYTES = 40 * 10**6
THUMB = 64
# (threshold in steps of 1/255, zlib level), tried in order until the page fits: deflate level 1 is ~7x faster
# than level 6 and ~50% larger on attention patterns (measured on a random 12 x 12 model at 1,024 tokens:
# 13.6 MB vs 8.9 MB); then weights below the threshold are stored as 0.
ENCODINGS = ((0, 1), (0, 6), (2, 6), (4, 6), (8, 6), (16, 6), (32, 6), (64, 6))
SCORE_KEYS = ("previous_token", "induction", "first_token")


def quantise(pattern: Float[Tensor, "query_pos key_pos"]) -> np.ndarray:
    """The lower triangle of one head's pattern, row by row, as ``round(255 w)`` in uint8."""
    n = pattern.shape[-1]
    lower = torch.ones(n, n, dtype=torch.bool, device=pattern.device).tril()
    steps = (pattern.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return steps[lower].cpu().numpy()


def thumbnail(pattern: Float[Tensor, "query_pos key_pos"], size: int = THUMB) -> np.ndarray:
    """A ``[size, size]`` uint8 image of the pattern, max-pooled so that sharp weights stay visible."""
    n = pattern.shape[-1]
    side = min(size, n)
    pooled = F.adaptive_max_pool2d(pattern.detach().float().clamp(0.0, 1.0)[None], side)[0]
    return (pooled * 255.0).round().to(torch.uint8).cpu().numpy()


@dataclass
class AttentionData:
    """Every head's quantised lower triangle, compressed, with thumbnails and scores: what the page embeds.

    Build it with :func:`encode_attention` (or add heads one layer at a time with :meth:`add_layer`,
    so that a long input never holds every float pattern at once), then :func:`write_attention_viewer`.
    ``scores`` maps score names to ``[layer, head]`` tensors.
    """

    tokens: list[str]
    n_layers: int
    n_heads: int
    heads: list[bytes] = field(default_factory=list)  # lower triangles, uint8, one per (layer, head)
    thumbs: list[bytes] = field(default_factory=list)
    scores: dict[str, list[list[float]]] = field(default_factory=dict)
    threshold: int = 0

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def add_layer(self, pattern: Float[Tensor, "head query_pos key_pos"]) -> None:
        """Quantise one layer's heads (one prompt) and keep them."""
        n = self.n_tokens
        if tuple(pattern.shape) != (self.n_heads, n, n):
            raise ShapeError(f"a layer's pattern must be [head={self.n_heads}, {n}, {n}], got {tuple(pattern.shape)}")
        if len(self.heads) >= self.n_layers * self.n_heads:
            raise InvalidArgumentError(f"already {self.n_layers} layers of heads")
        for h in range(self.n_heads):
            self.heads.append(quantise(pattern[h]).tobytes())
            self.thumbs.append(thumbnail(pattern[h]).tobytes())

    def set_scores(self, scores: Mapping[str, Float[Tensor, "layer head"]]) -> None:
        for key, grid in scores.items():
            if tuple(grid.shape) != (self.n_layers, self.n_heads):
                raise ShapeError(f"score {key!r} has shape {tuple(grid.shape)}, expected ({self.n_layers}, {self.n_heads})")
            self.scores[key] = [[round(float(v), 4) for v in row] for row in grid]


def encode_attention(
    patterns: Float[Tensor, "layer head query_pos key_pos"],
    tokens: Sequence[str],
    scores: Mapping[str, Float[Tensor, "layer head"]] | None = None,
) -> AttentionData:
    """:class:`AttentionData` of one prompt's patterns (all layers in one tensor)."""
    n_layers, n_heads = patterns.shape[:2]
    data = AttentionData(list(tokens), n_layers, n_heads)
    for layer in range(n_layers):
        data.add_layer(patterns[layer])
    data.set_scores(scores or {})
    return data


def _compress(data: AttentionData, threshold: int, level: int) -> list[str]:
    out = []
    for raw in data.heads:
        values = np.frombuffer(raw, dtype=np.uint8)
        if threshold:
            values = np.where(values < threshold, 0, values).astype(np.uint8)
        out.append(base64.b64encode(zlib.compress(values.tobytes(), level)).decode("ascii"))
    return out


def _payload(data: AttentionData, heads: list[str], threshold: int) -> str:
    payload = {
        "n_tokens": data.n_tokens,
        "n_layers": data.n_layers,
        "n_heads": data.n_heads,
        "tokens": [token_text(t) for t in data.tokens],
        "thumb": min(THUMB, data.n_tokens),
        "thumbs": base64.b64encode(b"".join(data.thumbs)).decode("ascii"),
        "heads": heads,
        "sums": [int(np.frombuffer(raw, dtype=np.uint8).astype(np.int64)[
            np.frombuffer(raw, dtype=np.uint8) >= threshold].sum()) for raw in data.heads],
        "scores": data.scores,
        "score_labels": {"previous_token": "previous-token", "induction": "induction", "first_token": "first-token",
                         "diagonal": "diagonal (self)"},
        "threshold": threshold,
    }
    # Inside <script type="application/json">: "<" as \u003c so no token can close the element.
    return json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")


def write_attention_viewer(
    path: str | os.PathLike,
    data: AttentionData,
    *,
    title: str,
    model_name: str,
    prompt: str,
    notes: Sequence[str] = (),
    metadata: Mapping[str, object] | None = None,
    max_bytes: int = MAX_BYTES,
) -> tuple[Path, int]:
    """Write the viewer page; returns ``(path, threshold)`` (0 unless the budget forced small weights to 0)."""
    if len(data.heads) != data.n_layers * data.n_heads:
        raise ShapeError(f"{len(data.heads)} heads encoded, expected {data.n_layers} x {data.n_heads}")
    page = ""  # (ENCODINGS is never empty)
    for threshold, level in ENCODINGS:
        body = _payload(data, _compress(data, threshold, level), threshold)
        notes_now = list(notes)
        if threshold:
            notes_now.append(f"To keep this file under {max_bytes / 1e6:.0f} MB, attention weights below {threshold}/255 "
                             f"(= {threshold / 255:.3f}) are stored as 0; larger weights are exact to 1/255.")
        page = _page(title, model_name, prompt, notes_now, metadata or {}, body)
        if len(page.encode("utf-8")) <= max_bytes:
            break
    else:
        raise InvalidArgumentError(f"the attention viewer would be {len(page.encode('utf-8')) / 1e6:.1f} MB even with weights "
                         f"below {ENCODINGS[-1][0]}/255 dropped: use a shorter input")
    data.threshold = threshold
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write(page)
    return target, threshold


def _page(title: str, model_name: str, prompt: str, notes: list[str], metadata: Mapping[str, object], payload: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}{VIEWER_STYLE}</style>\n</head>\n<body>\n"
        + _header(title, model_name, [prompt], notes, metadata)
        + VIEWER_BODY
        + f'<script type="application/json" id="attention-data">{payload}</script>\n'
        + f"<script>{VIEWER_SCRIPT}</script>\n</body>\n</html>\n"
    )


VIEWER_STYLE = """
body { max-width: none; }
#viewer { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
#grid { display: grid; gap: 2px 4px; align-items: start; max-height: 88vh; overflow: auto; padding-right: .5rem; }
#grid .layer { font: 600 11px system-ui; color: #555; text-align: right; padding-right: 2px; align-self: center; }
.thumb { display: flex; flex-direction: column; align-items: center; cursor: pointer; border: 2px solid transparent;
         border-radius: 3px; padding: 1px; font: 10px/1.15 ui-monospace, monospace; color: #333; box-sizing: border-box;
         overflow: hidden; }
.thumb:hover { border-color: #9ab; }
.thumb.selected { border-color: #d62728; background: #fff3f0; }
.thumb canvas { border: 1px solid #ccc; background: #f3f3f3; }
.thumb .s { display: flex; flex-wrap: wrap; justify-content: center; column-gap: 3px; font-size: 9px; line-height: 1.2;
            max-width: 100%; }
#main { display: flex; flex-direction: column; gap: .4rem; min-width: 0; max-width: 100%; }
#plot { display: grid; grid-template-columns: auto auto auto; grid-template-rows: auto auto; gap: 0 6px;
        align-items: start; justify-content: start; }
#yaxis { justify-self: end; } #xaxis { align-self: end; }
#plot .axis-title { font: 12px system-ui; color: #444; }
#stage { position: relative; border: 1px solid #bbb; align-self: start; }
#stage canvas { display: block; image-rendering: pixelated; }
#overlay { position: absolute; left: 0; top: 0; pointer-events: none; }
#colorbar { display: flex; flex-direction: column; align-items: flex-start; font: 11px system-ui; color: #444; }
#info { font: 13px system-ui; min-height: 1.3em; }
#tip { font: 12px ui-monospace, monospace; min-height: 1.2em; color: #333; }
#tokens { font: 12px/1.9 ui-monospace, monospace; max-height: 40vh; overflow: auto; border: 1px solid #ddd; padding: .3rem;
          display: flex; flex-wrap: wrap; max-width: 1100px; }
#tokens span { padding: 1px 1px; margin: 0 1px; border-radius: 2px; white-space: pre; cursor: default; }
#tokens span.focus { outline: 2px solid #d62728; }
.legend { font: 12px system-ui; color: #444; }
.legend b.q { background: rgba(31,119,180,.6); padding: 0 .3em; } .legend b.k { background: rgba(255,127,14,.6); padding: 0 .3em; }
"""

VIEWER_BODY = """<main>
<p class="legend">Every head of every layer (rows: layers; columns: heads) with its scores:
<b>p</b> previous-token, <b>i</b> induction, <b>f</b> first-token. Click a head (or use the arrow keys) to draw it large:
rows are queries, columns keys, darker is more attention (weights stored as multiples of 1/255; the colour bar gives the scale).
Hover a token or the pattern: <b class="q">blue</b> = what that token attends to, <b class="k">orange</b> = what attends to it.</p>
<label class="legend">colour scale <select id="scale"><option value="linear">linear</option><option value="sqrt">square root (shows small weights)</option></select></label>
<div id="viewer">
<div id="grid" role="listbox" aria-label="attention heads"></div>
<div id="main">
<div id="info"></div>
<div id="plot">
<div class="axis-title" id="corner">query ↓ · key →</div><canvas id="xaxis" aria-label="key tokens"></canvas><div></div>
<canvas id="yaxis" aria-label="query tokens"></canvas>
<div id="stage"><canvas id="big"></canvas><canvas id="overlay"></canvas></div>
<div id="colorbar"><span>attention</span><canvas id="cbar" aria-label="colour bar"></canvas></div>
</div>
<div id="tip"></div>
<div id="tokens"></div>
</div>
</div>
<output id="selfcheck" hidden></output>
</main>
"""

VIEWER_SCRIPT = r"""
(() => {
'use strict';
const D = JSON.parse(document.getElementById('attention-data').textContent);
const n = D.n_tokens, L = D.n_layers, H = D.n_heads, T = D.thumb;
const rowStart = q => q * (q + 1) / 2;
const grid = document.getElementById('grid'), big = document.getElementById('big'), overlay = document.getElementById('overlay');
const info = document.getElementById('info'), tip = document.getElementById('tip'), tokenBox = document.getElementById('tokens');
const check = document.getElementById('selfcheck');
const dpr = Math.max(1, window.devicePixelRatio || 1);
const cell = Math.max(1, Math.floor(768 / n));
big.width = big.height = overlay.width = overlay.height = n * cell;
const fail = msg => { check.dataset.status = 'fail'; check.textContent += msg + '\n'; console.error('attention viewer: ' + msg); };

// A canvas of css size w x h drawn at the screen's device pixel ratio (sharp on high-density screens).
function sharpCanvas(canvas, w, h) {
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  canvas.style.width = w + 'px'; canvas.style.height = h + 'px';
  const ctx = canvas.getContext('2d'); ctx.setTransform(dpr, 0, 0, dpr, 0, 0); return ctx;
}

function bytesOf(b64) {
  const bin = atob(b64), out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
const decoded = new Map();  // the last few heads inflated, so memory stays bounded
async function head(l, h) {
  const key = l * H + h;
  if (!decoded.has(key)) {
    if (decoded.size >= 12) decoded.delete(decoded.keys().next().value);
    decoded.set(key, inflate(bytesOf(D.heads[key])).then(tri => {
      let sum = 0;
      for (let i = 0; i < tri.length; i++) sum += tri[i];
      if (tri.length !== rowStart(n)) fail(`L${l}H${h}: ${tri.length} weights, expected ${rowStart(n)}`);
      if (sum !== D.sums[key]) fail(`L${l}H${h}: checksum ${sum}, expected ${D.sums[key]}`);
      return tri;
    }));
  }
  return decoded.get(key);
}
const weight = (tri, q, k) => (k > q ? 0 : tri[rowStart(q) + k]);

let scale = 'linear';
const shade = v => (scale === 'sqrt' ? Math.sqrt(v / 255) : v / 255);
function lut() {
  const out = new Uint8ClampedArray(256 * 3);
  for (let v = 0; v < 256; v++) {
    const t = shade(v);
    out[3 * v] = Math.round(255 - t * (255 - 8)); out[3 * v + 1] = Math.round(255 - t * (255 - 48)); out[3 * v + 2] = Math.round(255 - t * (255 - 107));
  }
  return out;
}
let colours = lut();

// -- axes and colour bar of the large pattern -------------------------------------------------
const AXIS = 150, LABEL_PX = 12;                 // room for the labels; at least 12 px between two labels
const axisStep = Math.ceil(LABEL_PX / cell);     // every token labelled when a cell is 12 px or more
const axisText = i => { const t = `${i} ${D.tokens[i]}`; return t.length > 22 ? t.slice(0, 21) + '…' : t; };
const labelled = [];
for (let i = 0; i < n; i += axisStep) labelled.push(i);
function drawAxes() {
  const W = n * cell;
  const y = sharpCanvas(document.getElementById('yaxis'), AXIS, W), x = sharpCanvas(document.getElementById('xaxis'), W, AXIS);
  for (const ctx of [x, y]) { ctx.font = '11px ui-monospace, monospace'; ctx.fillStyle = '#333'; ctx.textBaseline = 'middle'; }
  y.textAlign = 'right'; x.textAlign = 'left';
  for (const i of labelled) {
    const mid = Math.min(Math.max(i * cell + cell / 2, 6), W - 6);  // the first and last labels stay whole
    y.fillText(axisText(i), AXIS - 4, mid);                                     // queries: rows, left of the pattern
    x.save(); x.translate(mid, AXIS - 4); x.rotate(-Math.PI / 2); x.fillText(axisText(i), 0, 0); x.restore();  // keys: columns, above
  }
}
const BAR_H = Math.min(256, Math.max(120, n * cell)), BAR_TICKS = [0, 0.25, 0.5, 0.75, 1];
function drawColorbar() {
  const ctx = sharpCanvas(document.getElementById('cbar'), 64, BAR_H + 12);
  for (let py = 0; py < BAR_H; py++) {  // top = weight 1, bottom = weight 0
    const v = Math.round(255 * (1 - py / (BAR_H - 1)));
    ctx.fillStyle = `rgb(${colours[3 * v]},${colours[3 * v + 1]},${colours[3 * v + 2]})`; ctx.fillRect(0, py + 6, 16, 1);
  }
  ctx.strokeStyle = '#999'; ctx.strokeRect(0.5, 6.5, 15, BAR_H - 1);
  ctx.font = '11px system-ui'; ctx.fillStyle = '#333'; ctx.textBaseline = 'middle';
  for (const w of BAR_TICKS) {
    const py = 6 + (1 - w) * (BAR_H - 1);
    ctx.fillRect(16, py, 4, 1); ctx.fillText(w.toFixed(2), 23, py);
  }
}

// -- thumbnails --------------------------------------------------------------------------
const thumbs = bytesOf(D.thumbs);
const THUMB_PX = T * Math.max(1, Math.floor(64 / T));  // css size: a whole number of css pixels per thumbnail pixel
const label = (l, h) => `L${l}H${h}`;
const fmt = v => (v === undefined || v === null || Number.isNaN(v) ? '–' : v.toFixed(2).replace(/^0\./, '.').replace(/^-0\./, '-.'));
function scoreParts(l, h) {
  const s = D.scores, parts = [];
  if (s.previous_token) parts.push('p' + fmt(s.previous_token[l][h]));
  if (s.induction) parts.push('i' + fmt(s.induction[l][h]));
  if (s.first_token) parts.push('f' + fmt(s.first_token[l][h]));
  return parts;
}
function scoreTitle(l, h) {
  return label(l, h) + Object.keys(D.scores).map(k => `\n${D.score_labels[k] || k}: ${fmt(D.scores[k][l][h])}`).join('');
}
const small = document.createElement('canvas'); small.width = small.height = T;  // one thumbnail at its own resolution
function drawThumb(canvas, l, h) {
  const sctx = small.getContext('2d'), img = sctx.createImageData(T, T), off = (l * H + h) * T * T;
  for (let i = 0; i < T * T; i++) {
    const q = Math.floor(i / T), k = i % T, v = thumbs[off + i];
    const future = k > q;
    img.data[4 * i] = future ? 243 : colours[3 * v]; img.data[4 * i + 1] = future ? 243 : colours[3 * v + 1];
    img.data[4 * i + 2] = future ? 243 : colours[3 * v + 2]; img.data[4 * i + 3] = 255;
  }
  sctx.putImageData(img, 0, 0);
  const ctx = sharpCanvas(canvas, THUMB_PX, THUMB_PX);
  ctx.imageSmoothingEnabled = false;  // nearest neighbour: each stored pixel a sharp square
  ctx.drawImage(small, 0, 0, THUMB_PX, THUMB_PX);
}
grid.style.gridTemplateColumns = `auto repeat(${H}, ${Math.max(THUMB_PX + 8, 76)}px)`;
const thumbEls = [];
for (let l = L - 1; l >= 0; l--) {  // layer 0 at the bottom, as in every gpt2probe figure
  const name = document.createElement('div'); name.className = 'layer'; name.textContent = 'L' + l; grid.appendChild(name);
  for (let h = 0; h < H; h++) {
    const box = document.createElement('div'); box.className = 'thumb'; box.title = scoreTitle(l, h);
    box.setAttribute('role', 'option'); box.dataset.layer = l; box.dataset.head = h;
    const canvas = document.createElement('canvas');
    const name2 = document.createElement('div'); name2.textContent = label(l, h);
    const s = document.createElement('div'); s.className = 's';
    for (const part of scoreParts(l, h)) { const span = document.createElement('span'); span.textContent = part; s.appendChild(span); }
    box.append(canvas, name2, s); grid.appendChild(box); thumbEls.push(box);
    drawThumb(canvas, l, h);
    box.addEventListener('click', () => select(l, h));
  }
}

// -- tokens ------------------------------------------------------------------------------
const tokenEls = D.tokens.map((t, i) => {
  const span = document.createElement('span'); span.textContent = t; span.title = `${i}: ${t}`;
  span.addEventListener('mouseenter', () => focus(i)); tokenBox.appendChild(span); return span;
});

// -- the selected head -------------------------------------------------------------------
let current = null, focused = null;
async function select(l, h) {
  const tri = await head(l, h);
  current = { l, h, tri };
  thumbEls.forEach(el => el.classList.toggle('selected', +el.dataset.layer === l && +el.dataset.head === h));
  info.textContent = `${label(l, h)} — ` + Object.keys(D.scores).map(k => `${D.score_labels[k] || k} ${fmt(D.scores[k][l][h])}`).join(', ');
  const ctx = big.getContext('2d'), img = ctx.createImageData(n * cell, n * cell), W = n * cell;
  for (let q = 0; q < n; q++) {
    const start = rowStart(q);
    for (let k = 0; k < n; k++) {
      const v = k > q ? -1 : tri[start + k];
      const r = v < 0 ? 243 : colours[3 * v], g = v < 0 ? 243 : colours[3 * v + 1], b = v < 0 ? 243 : colours[3 * v + 2];
      for (let dy = 0; dy < cell; dy++) {
        let p = 4 * ((q * cell + dy) * W + k * cell);
        for (let dx = 0; dx < cell; dx++, p += 4) { img.data[p] = r; img.data[p + 1] = g; img.data[p + 2] = b; img.data[p + 3] = 255; }
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  if (focused !== null) focus(focused);  // no token is focused until the pointer is on the pattern
  return current;
}

function focus(i) {
  focused = i;
  const octx = overlay.getContext('2d');
  octx.clearRect(0, 0, overlay.width, overlay.height);
  octx.fillStyle = 'rgba(31,119,180,.18)'; octx.fillRect(0, i * cell, (i + 1) * cell, cell);            // row i: what i attends to
  octx.fillStyle = 'rgba(255,127,14,.18)'; octx.fillRect(i * cell, i * cell, cell, (n - i) * cell);   // column i: what attends to i
  if (!current) return;
  tokenEls.forEach((el, j) => {
    const v = j <= i ? weight(current.tri, i, j) : weight(current.tri, j, i);
    const a = shade(v).toFixed(3);
    el.style.background = v === 0 ? '' : (j <= i ? `rgba(31,119,180,${a})` : `rgba(255,127,14,${a})`);
    el.classList.toggle('focus', j === i);
  });
}

function unfocus() {  // nothing tinted: a row and a column are shaded only while a token is pointed at
  focused = null;
  overlay.getContext('2d').clearRect(0, 0, overlay.width, overlay.height);
  tokenEls.forEach(el => { el.style.background = ''; el.classList.remove('focus'); });
}
overlay.parentElement.addEventListener('mouseleave', unfocus);
tokenBox.addEventListener('mouseleave', unfocus);
overlay.parentElement.addEventListener('mousemove', e => {
  const r = big.getBoundingClientRect();
  const k = Math.floor((e.clientX - r.left) / r.width * n), q = Math.floor((e.clientY - r.top) / r.height * n);
  if (!current || q < 0 || k < 0 || q >= n || k >= n) return;
  tip.textContent = k > q ? `query ${q} ${D.tokens[q]}  key ${k} ${D.tokens[k]}: the future (masked)`
                          : `query ${q} ${D.tokens[q]} → key ${k} ${D.tokens[k]}: ${(weight(current.tri, q, k) / 255).toFixed(3)}`;
  if (q !== focused) focus(q);
});
document.getElementById('scale').addEventListener('change', e => {
  scale = e.target.value; colours = lut();
  thumbEls.forEach(el => drawThumb(el.querySelector('canvas'), +el.dataset.layer, +el.dataset.head));
  drawColorbar();
  if (current) select(current.l, current.h);
});
document.addEventListener('keydown', e => {
  if (!current) return;
  const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [1, 0], ArrowDown: [-1, 0] };  // up = the layer drawn above
  if (!(e.key in moves)) return;
  const l = (current.l + moves[e.key][0] + L) % L, h = (current.h + moves[e.key][1] + H) % H;
  e.preventDefault(); select(l, h);
});
drawAxes();
drawColorbar();

// -- self-check: what is drawn and highlighted is the data ---------------------------------
async function selfCheck(l, h) {
  const { tri } = await select(l, h);
  const ctx = big.getContext('2d');
  for (const [q, k] of [[n - 1, 0], [n - 1, n - 1], [Math.floor(n / 2), Math.floor(n / 3)], [0, 0]]) {
    const px = ctx.getImageData(k * cell, q * cell, 1, 1).data, v = weight(tri, q, k);
    if (px[0] !== colours[3 * v] || px[1] !== colours[3 * v + 1] || px[2] !== colours[3 * v + 2])
      fail(`${label(l, h)} pixel (${q}, ${k}) is ${[...px.slice(0, 3)]}, expected the colour of ${v}/255`);
  }
  if (n > 1) {
    const i = Math.floor(n / 2);
    focus(i);
    for (const j of [0, i, n - 1]) {
      const v = j <= i ? weight(tri, i, j) : weight(tri, j, i), bg = tokenEls[j].style.background;
      if ((v === 0) !== (bg === '')) fail(`token ${j} highlighted as '${bg}' for weight ${v}/255 while hovering ${i}`);
    }
  }
  return true;
}
window.attentionViewer = { select, head, focus, unfocus, weight, selfCheck, n, L, H, D, dpr, cell, THUMB_PX,
                           axis: { labelled, text: labelled.map(axisText) }, colorbarTicks: BAR_TICKS,
                           focused: () => focused };
selfCheck(0, 0).then(() => { unfocus(); if (check.dataset.status !== 'fail') check.dataset.status = 'ok'; })
  .catch(err => fail(String(err && err.stack || err)));
})();
"""

