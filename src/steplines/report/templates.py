"""Jinja2 templates of the report pages (strings, so no package-data files are needed)."""

from __future__ import annotations

__all__ = ["COMPARE_TEMPLATE", "RUN_TEMPLATE"]

_STYLE = """
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
         max-width: 1500px; padding: 1rem 2rem; color: #222; line-height: 1.4; }
  h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; margin-top: 2rem; }
  .sub { color: #555; margin-top: 0; }
  .banner { background: #fff4ce; border: 1px solid #e0b400; border-radius: 4px;
            padding: 0.5rem 0.8rem; margin: 0.4rem 0; }
  .banner.error { background: #fde7e9; border-color: #c50f1f; }
  table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
  th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: left;
           vertical-align: top; }
  th { background: #f3f3f3; }
  td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
  .meta { display: flex; gap: 2rem; flex-wrap: wrap; }
  .meta table td:first-child { color: #555; }
  figure { margin: 1.5rem 0; }
  figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
  figcaption { max-width: 1100px; font-size: 0.93rem; color: #333; }
  .note { color: #555; font-size: 0.9rem; }
  code { background: #f3f3f3; padding: 0 0.2rem; }
  .verdict.holds b { color: #17692c; }
  .verdict.does-not-hold b { color: #a31515; }
  .verdict.inconclusive b { color: #8a6d00; }
</style>
"""

RUN_TEMPLATE = (
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>steplines report: {{ name }}</title>
<link rel="icon" href="data:,">
"""
    + _STYLE
    + """
</head>
<body>
<h1>steplines report: {{ name }}</h1>
<p class="sub">Reproduction of Mutschler &amp; Zell (ICANN 2021), “Empirically explaining SGD from
a line search perspective”. Analysis mode: <b>{{ mode }}</b>{% if mode == "corrected" %}
(the original analysis's quirks fixed; <code>--mode faithful</code> reproduces them){% else %}
(the original analysis code's behaviour, quirks included){% endif %}.
{{ lines_used }} of {{ lines_total }} lines analysed.</p>

{% for b in banners %}<div class="banner{% if b.level == 'error' %} error{% endif %}">
{{ b.text }}</div>
{% endfor %}

<h2 id="claims">Claims of the paper on this run</h2>
{% if claims %}<table id="claims-table">
<tr><th>claim</th><th>the paper says</th><th>metric</th><th>this run [interval]</th>
<th>holds if</th><th>verdict</th><th>the paper's quantity: this run / paper</th></tr>
{% for c in claims %}<tr id="claim-{{ c.key }}"><td>{{ c.claim }}</td>
<td class="quote">“{{ c.quote }}” <span class="note">({{ c.figure }})</span></td>
<td>{{ c.metric }}</td>
<td class="num">{{ c.value }} <span class="note">({{ c.n }})</span></td><td>{{ c.threshold }}</td>
<td class="verdict {{ c.css }}"><b>{{ c.verdict }}</b><br><span class="note">{{ c.reason }}</span>
</td><td>{% if c.quantity %}{{ c.quantity }}<br>{% endif %}<span class="note">paper:
{{ c.paper }}</span></td></tr>
{% endfor %}</table>
<p class="note">{{ settings_line }} Intervals ({{ level }}): a bootstrap over non-overlapping
blocks of lines (single noisy steps for the noisy-direction claim) that also resamples the
full-batch rows of each drawn line for the shares of the optimum ({{ row_note }}); a claim
whose interval straddles its threshold is inconclusive. Metrics and thresholds:
docs/analysis.md, "Claims".</p>
<p class="note" id="claims-note">{{ claims_note }}</p>
{% else %}<div class="banner">No claims: these tables predate them; rerun
<code>steplines analyze RUN</code>.</div>{% endif %}

<h2>What was run</h2>
<div class="meta">
{% for title, rows in meta %}<table>
<tr><th colspan="2">{{ title }}</th></tr>
{% for k, v in rows %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>
{% endfor %}</table>
{% endfor %}</div>

<h2>Core results</h2>
<table id="core-results">
<tr><th>quantity</th><th>this run</th>{% if paper_title %}<th>{{ paper_title }}
</th>{% endif %}</tr>
{% for r in core %}<tr><td>{{ r.quantity }}</td><td class="num">{{ r.ours }}</td>
{% if paper_title %}<td>{{ r.paper }}</td>{% endif %}</tr>
{% endfor %}</table>
<p class="note">{{ paper_note }} [low, high]: {{ level }} interval from resampling each line's
full-batch rows ({{ row_note }}). {{ scope_note }}</p>

{% if bs_table %}<h3>Accumulated improvement per batch size (share of the optimum's)</h3>
<table id="batch-size-results">
<tr><th>batch size</th>{% for s in bs_strategies %}<th>{{ s }}</th>{% endfor %}</tr>
{% for row in bs_table %}<tr><td>{{ row[0] }}</td>{% for v in row[1:] %}
<td class="num">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{% if bs_note %}<p class="note" id="noise-scale">{{ bs_note }}</p>{% endif %}

<h2 id="estimators">Cheap estimators against the measured line</h2>
<p class="note">{{ est.intro }}</p>
{% if est.note %}<div class="banner">{{ est.note }}</div>{% endif %}
{% if est.rows %}<table id="estimator-results">
<tr><th>estimator</th><th>what is compared</th><th>error: median [25 %, 75 %]</th>
<th>lines</th></tr>
{% for r in est.rows %}<tr><td>{{ r.name }}</td><td>{{ r.what }}</td>
<td class="num">{{ r.error }}</td><td class="num">{{ r.n }}</td></tr>
{% endfor %}</table>{% endif %}
{% if est.figure %}<figure id="fig-{{ est.figure.name }}">
<img src="{{ est.figure.src }}" alt="{{ est.figure.title }}">
<figcaption>{{ est.figure.caption }}{% if est.figure.pdf %} <a href="{{ est.figure.pdf }}">PDF</a>
{% endif %}</figcaption>
</figure>{% endif %}

{% if precision %}<h2 id="precision">Measurement precision</h2>
<p class="note">{{ precision.intro }}</p>
{% if precision.note %}<div class="banner">{{ precision.note }}</div>{% endif %}
{% if precision.rows %}<table id="precision-checks">
<tr><th>precision</th><th>checks</th><th>worst per-sample max |Δℓ|</th>
<th>worst full-batch max |ΔL|</th><th>worst |Δs| of the full-batch minimum</th></tr>
{% for r in precision.rows %}<tr><td>{{ r.precision }}</td><td class="num">{{ r.checks }}</td>
<td class="num">{{ r.per_sample }}</td><td class="num">{{ r.full_batch }}</td>
<td class="num">{{ r.s_min }}</td></tr>
{% endfor %}</table>{% endif %}{% endif %}

{% if browser %}<h2 id="browser">Any line of the run</h2>
<p class="note">Pick a line: full-batch loss l (red), direction-batch loss l_B (green), the
min–max band of the mini-batch losses (grey), SGD's step (dashed), s_opt (diamond) and s = 0
(dotted). The lines and positions are downsampled for the page (analysis/browser.json).</p>
<div><input type="range" id="line-picker" min="0" max="0" value="0" step="1"
 aria-label="line"> <b id="line-label"></b></div>
<svg id="line-plot" viewBox="0 0 680 330" width="680" height="330" role="img"
 style="border:1px solid #eee;background:#fff">
<defs><clipPath id="plot-area"><rect x="60" y="10" width="600" height="280"/></clipPath></defs>
<g clip-path="url(#plot-area)">
<polygon id="line-band" fill="#ddd" stroke="none"/>
<line id="line-zero" stroke="#777" stroke-width="1" stroke-dasharray="2 3" y1="10" y2="290"/>
<polyline id="line-batch" fill="none" stroke="green" stroke-width="1.5"/>
<polyline id="line-full" fill="none" stroke="red" stroke-width="2"/>
<line id="line-update" stroke="black" stroke-dasharray="5 4"/>
<polygon id="line-opt" fill="red"/>
<text id="zero-label" y="22" font-size="10" fill="#555">s = 0</text>
</g>
<rect x="60" y="10" width="600" height="280" fill="none" stroke="#999"/>
<text id="x-lo" x="60" y="308" font-size="11"></text>
<text id="x-hi" x="660" y="308" font-size="11" text-anchor="end"></text>
<text id="x-label" x="360" y="325" font-size="11"
 text-anchor="middle">s (step along the update)</text>
<text id="y-lo" x="55" y="290" font-size="11" text-anchor="end"></text>
<text id="y-hi" x="55" y="20" font-size="11" text-anchor="end"></text>
<text id="y-label" x="14" y="150" font-size="11" text-anchor="middle"
 transform="rotate(-90 14 150)">loss</text>
</svg>
<script id="line-data" type="application/json">{{ browser|safe }}</script>
<script>
(function () {
  const data = JSON.parse(document.getElementById('line-data').textContent).lines;
  const picker = document.getElementById('line-picker');
  const el = id => document.getElementById(id);
  const fmt = v => Number(v).toPrecision(3);
  const PAD = 0.04;  // share of the span added on each side, so no mark lies on the frame
  const padded = (lo, hi) => {
    const w = hi - lo || Math.abs(hi) || 1;
    return [lo - PAD * w, hi + PAD * w];
  };
  // x: every position, SGD's step, s_opt and s = 0; y: l, l_B and the band near the steps
  function ranges(d) {
    const xs = d.s.concat([d.s_update, d.s_opt, 0]).filter(Number.isFinite);
    const reach = 1.5 * Math.max(Math.abs(d.s_update), Math.abs(d.s_opt), 1e-12);
    const near = d.s.map((s, k) => Math.abs(s) <= reach ? k : -1).filter(k => k >= 0);
    const ys = [];
    for (const k of (near.length ? near : d.s.map((_, k) => k))) {
      for (const v of [d.l[k], d.lb[k], d.lo[k], d.hi[k]]) {
        if (Number.isFinite(v)) ys.push(v);
      }
    }
    const [x0, x1] = padded(Math.min(...xs), Math.max(...xs));
    const [y0, y1] = ys.length ? padded(Math.min(...ys), Math.max(...ys)) : [0, 1];
    return {x0, x1, y0, y1};
  }
  picker.max = String(data.length - 1);
  function draw(i) {
    const d = data[i];
    const {x0, x1, y0, y1} = ranges(d);
    const X = s => 60 + 600 * (s - x0) / (x1 - x0);
    const Y = v => 290 - 280 * (v - y0) / (y1 - y0);
    const pts = ys => d.s.map((s, k) => Number.isFinite(ys[k]) ? X(s).toFixed(1) + ',' +
      Y(ys[k]).toFixed(1) : null).filter(p => p !== null).join(' ');
    el('line-full').setAttribute('points', pts(d.l));
    el('line-batch').setAttribute('points', pts(d.lb));
    el('line-band').setAttribute('points', d.lo.length ?
      pts(d.hi) + ' ' + pts(d.lo).split(' ').reverse().join(' ') : '');
    const xz = X(0).toFixed(1);
    el('line-zero').setAttribute('x1', xz); el('line-zero').setAttribute('x2', xz);
    el('zero-label').setAttribute('x', (X(0) + 3).toFixed(1));
    const xu = X(d.s_update).toFixed(1);
    el('line-update').setAttribute('x1', xu); el('line-update').setAttribute('x2', xu);
    el('line-update').setAttribute('y1', '10'); el('line-update').setAttribute('y2', '290');
    const k = d.s.indexOf(d.s_opt), xo = X(d.s_opt);
    const yo = Y(k >= 0 && Number.isFinite(d.l[k]) ? d.l[k] : y0);
    el('line-opt').setAttribute('points', [[xo, yo - 6], [xo + 6, yo], [xo, yo + 6],
      [xo - 6, yo]].map(p => p.map(c => c.toFixed(1)).join(',')).join(' '));
    el('x-lo').textContent = fmt(x0); el('x-hi').textContent = fmt(x1);
    el('y-lo').textContent = fmt(y0); el('y-hi').textContent = fmt(y1);
    el('line-label').textContent = 'line ' + d.t + ': s_opt = ' + fmt(d.s_opt) +
      ', SGD step = ' + fmt(d.s_update) + ' (' + (i + 1) + ' of ' + data.length + ')';
  }
  picker.addEventListener('input', () => draw(Number(picker.value)));
  if (data.length) draw(0);
})();
</script>
{% endif %}

<h2>Figures</h2>
{% for f in figures %}<figure id="fig-{{ f.name }}">
<h3>{{ f.title }}</h3>
<img src="{{ f.src }}" alt="{{ f.title }}">
<figcaption>{{ f.caption }}{% if f.pdf %} <a href="{{ f.pdf }}">PDF</a>{% endif %}</figcaption>
</figure>
{% endfor %}
<p class="note">Generated by steplines {{ version }}. Tables: <code>analysis/</code>;
figures (PNG, PDF): <code>figures/</code>{% if book %}; every figure in one PDF:
<a href="{{ book }}">{{ book }}</a>{% endif %}.</p>
</body>
</html>
"""
)

COMPARE_TEMPLATE = (
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>steplines: {{ runs|length }} runs compared</title>
<link rel="icon" href="data:,">
"""
    + _STYLE
    + """
</head>
<body>
<h1>steplines: {{ runs|length }} runs compared</h1>
<p class="sub">Analysis mode: <b>{{ mode }}</b>. One row per run; each name links to the run's
full report.</p>
{% for b in banners %}<div class="banner">{{ b.text }}</div>
{% endfor %}
<h2 id="claims">Claims of the paper, one column per run</h2>
<table id="claims-matrix">
<tr><th>claim</th><th>holds if</th>{% for n in claims.runs %}<th>{{ n }}</th>{% endfor %}</tr>
{% for row in claims.rows %}<tr><td>{{ row.claim }}</td><td>{{ row.threshold }}</td>
{% for c in row.cells %}<td class="verdict {{ c.css }}"><b>{{ c.verdict }}</b><br>
<span class="note">{{ c.value }}</span></td>{% endfor %}</tr>
{% endfor %}</table>
<p class="note">Each cell: the verdict, this run's value [interval] (lines). Each run's own report
gives the metrics, reasons and the paper's values.</p>
{% if pooled %}<h2 id="pooled">Claims pooled over the runs</h2>
{% if pooled.rows %}<table id="pooled-claims">
<tr><th>claim</th><th>the paper says</th><th>the paper's quantity: each run / paper</th>
<th>pooled [interval]</th><th>holds if</th><th>pooled verdict</th>
{% for n in pooled.runs %}<th>{{ n }}</th>{% endfor %}</tr>
{% for c in pooled.rows %}<tr id="pooled-{{ c.key }}"><td>{{ c.claim }}<br>
<span class="note">{{ c.metric }}</span></td>
<td class="quote">“{{ c.quote }}” <span class="note">({{ c.figure }})</span></td>
<td>{% if c.quantity %}{{ c.quantity }}<br>{% endif %}<span class="note">paper:
{{ c.paper }}</span></td>
<td class="num">{{ c.value }} <span class="note">({{ c.n }})</span></td><td>{{ c.threshold }}</td>
<td class="verdict {{ c.css }}"><b>{{ c.verdict }}</b><br><span class="note">{{ c.reason }}</span>
</td>{% for r in c.runs %}<td class="verdict {{ r.css }} per-run"><b>{{ r.verdict }}</b><br>
<span class="note">{{ r.value }} ({{ r.n }})</span></td>{% endfor %}</tr>
{% endfor %}</table>
<p class="note">Pooled intervals resample the runs, then blocks of lines in each drawn run,
then each line's full-batch rows, so that they include the variation between seeds. A pooled
verdict is never "holds" where a run's own is "does not hold", or the reverse: the runs then
disagree and the pooled verdict is inconclusive.</p>{% endif %}
<p class="note" id="pooled-note">{{ pooled.note }}</p>{% endif %}

<h2>Numbers</h2>
<table id="compare-results">
<tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in runs %}<tr><td><a href="{{ r.href }}">{{ r.name }}</a></td>
{% for v in r.cells %}<td class="num">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if book %}<p class="note">Every figure of this page in one PDF:
<a href="{{ book }}">{{ book }}</a>.</p>{% endif %}
{% for f in figures %}<figure id="fig-{{ f.name }}">
<h3>{{ f.title }}</h3>
<img src="{{ f.src }}" alt="{{ f.title }}">
<figcaption>{{ f.caption }}{% if f.pdf %} <a href="{{ f.pdf }}">PDF</a>{% endif %}</figcaption>
</figure>
{% endfor %}
</body>
</html>
"""
)
