"""The report's line picker (the SVG and script in ``RUN_TEMPLATE``): every mark inside the frame,
s = 0 marked, both axes labelled.

The script runs in ``node`` against a stub of the few DOM calls it makes (``getElementById``,
``setAttribute``, ``textContent``, ``addEventListener``), on lines whose SGD step is the last grid
point or lies beyond the grid; without ``node`` that test is skipped and only the template's text
is checked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from steplines.report.templates import RUN_TEMPLATE

NODE = shutil.which("node") or shutil.which("nodejs")
FRAME_X = (60.0, 660.0)  # the plot area's rectangle in the SVG's coordinates
FRAME_Y = (10.0, 290.0)
MARGIN = 10.0  # px: a mark this close to the frame would sit under its stroke or the tick text

HARNESS = r"""
const els = {};
const el = id => els[id] || (els[id] = {
  id, attrs: {}, textContent: '', listeners: {}, value: '0',
  setAttribute(k, v) { this.attrs[k] = String(v); },
  getAttribute(k) { return this.attrs[k]; },
  addEventListener(t, f) { this.listeners[t] = f; },
});
globalThis.document = { getElementById: el };
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
el('line-data').textContent = JSON.stringify({ lines: input.lines });
(0, eval)(input.script);
const out = [];
for (let i = 0; i < input.lines.length; i++) {
  el('line-picker').value = String(i);
  el('line-picker').listeners.input();
  const snap = {};
  for (const [id, e] of Object.entries(els)) {
    snap[id] = { attrs: { ...e.attrs }, text: e.textContent };
  }
  out.push(snap);
}
process.stdout.write(JSON.stringify(out));
"""


def _svg() -> str:
    m = re.search(r'<svg id="line-plot".*?</svg>', RUN_TEMPLATE, re.S)
    assert m, "no line picker SVG in RUN_TEMPLATE"
    return m.group(0)


def _script() -> str:
    m = re.search(
        r"<script>\s*(\(function \(\) \{.*?line-picker.*?\}\)\(\);)\s*</script>", RUN_TEMPLATE, re.S
    )
    assert m, "no line picker script in RUN_TEMPLATE"
    return m.group(1)


def _line(t: int, s: np.ndarray, s_update: float, s_opt_index: int, band: bool = True) -> dict:
    full = 1.0 + 2.0 * (s - s[s_opt_index]) ** 2
    batch = 0.95 + 2.5 * (s - 0.1) ** 2
    line = {
        "t": t,
        "s": s.round(6).tolist(),
        "l": full.round(6).tolist(),
        "lb": batch.round(6).tolist(),
        "lo": (batch - 0.1).round(6).tolist() if band else [],
        "hi": (batch + 0.2).round(6).tolist() if band else [],
        "s_update": s_update,
        "s_opt": float(s.round(6)[s_opt_index]),
    }
    if not band:
        line["lb"][3] = None  # a missing value is skipped, not drawn
    return line


def _points(attr: str) -> list[tuple[float, float]]:
    return [tuple(float(c) for c in p.split(",")) for p in attr.split()]


def test_picker_svg_labels_both_axes_and_marks_s_zero() -> None:
    svg = _svg()
    y_label = re.search(r'<text id="y-label"[^>]*>([^<]*)</text>', svg)
    assert y_label and y_label.group(1).strip() == "loss"
    assert "rotate(-90" in y_label.group(0)
    x_label = re.search(r'<text id="x-label"[^>]*>([^<]*)</text>', svg)
    assert x_label and x_label.group(1).strip().startswith("s ")
    zero = re.search(r'<line id="line-zero"[^>]*/>', svg)
    assert zero and "stroke-dasharray" in zero.group(0)
    assert re.search(r'<text id="zero-label"[^>]*>s = 0</text>', svg)


def test_picker_pads_the_x_range() -> None:
    # the text-level check that stands in where node is missing: x0/x1 are the padded extremes
    # of the positions, SGD's step, s_opt and 0, not the grid's ends
    script = _script()
    pad = re.search(r"const PAD = ([0-9.]+);", script)
    assert pad and float(pad.group(1)) > 0
    assert re.search(r"d\.s\.concat\(\[d\.s_update, d\.s_opt, 0\]\)", script)
    assert re.search(r"const \[x0, x1\] = padded\(", script)
    assert "Math.min(...d.s), x1 = Math.max(...d.s)" not in script


@pytest.mark.skipif(NODE is None, reason="node not installed: the picker's script is not run")
def test_picker_draws_every_mark_inside_the_frame() -> None:
    grid = np.linspace(-0.5, 0.3, 41)  # 0 is the 26th grid point
    lines = [
        _line(0, grid, float(grid.round(6)[-1]), 32),  # SGD's step is the last grid point
        _line(1, np.linspace(-0.2, 0.4, 31), 0.55, 0, band=False),  # beyond the grid
        _line(2, grid, 0.05, 40),  # s_opt is the last grid point
    ]
    run = subprocess.run(
        [NODE, "-e", HARNESS],
        input=json.dumps({"script": _script(), "lines": lines}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    snaps = json.loads(run.stdout)
    lo, hi = FRAME_X[0] + MARGIN, FRAME_X[1] - MARGIN
    for line, snap in zip(lines, snaps):
        # SGD's step: strictly inside the frame, clear of its edges
        update = snap["line-update"]["attrs"]
        assert update["x1"] == update["x2"]
        assert lo < float(update["x1"]) < hi, (line["t"], update)
        # both ends of the grid are inside the frame too
        full = _points(snap["line-full"]["attrs"]["points"])
        assert len(full) == len(line["s"])
        assert lo < full[0][0] and full[-1][0] < hi, (line["t"], full[0], full[-1])
        # s_opt's diamond lies wholly inside the frame
        for x, y in _points(snap["line-opt"]["attrs"]["points"]):
            assert FRAME_X[0] < x < FRAME_X[1] and FRAME_Y[0] < y < FRAME_Y[1], (line["t"], x, y)
        # s = 0: a vertical line where l's point at s = 0 is drawn, and its label beside it
        zero = snap["line-zero"]["attrs"]
        assert zero["x1"] == zero["x2"]
        k0 = line["s"].index(0.0) if 0.0 in line["s"] else None
        if k0 is not None:
            assert float(zero["x1"]) == pytest.approx(full[k0][0], abs=0.051)
        assert lo < float(zero["x1"]) < hi
        assert float(snap["zero-label"]["attrs"]["x"]) == pytest.approx(float(zero["x1"]) + 3)
        # the tick labels at the frame's ends say the padded range
        x_lo, x_hi = float(snap["x-lo"]["text"]), float(snap["x-hi"]["text"])
        assert x_lo < min(line["s"]) and x_hi > max(*line["s"], line["s_update"])
        assert snap["line-label"]["text"].startswith(f"line {line['t']}: ")
