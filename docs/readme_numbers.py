"""Write the demo run's numbers into README.md, between its ``demo-numbers`` markers.

    python docs/readme_numbers.py [RUN] [--readme README.md] [--check]

Every number that README.md states about the demo run stands between two marker comments,

    <!-- demo-numbers:BEGIN name --> … <!-- demo-numbers:END name -->

and is written by this script from what ``steplines run``/``analyze`` left in ``RUN`` (default
``runs/demo``): ``analysis/claims.json``, ``analysis/summary.json``, ``analysis/settings.json``,
``analysis/derivatives.csv``, ``config.toml`` and ``live.jsonl``. Nothing is computed here
beyond reading those files (the median step ratio is the report's own ``overshoot`` of
``derivatives.csv``); numbers are written as the report writes them (3 significant digits).
Needs only the standard library (and ``tomli`` on Python 3.10).
Only the text between the markers changes. A marker of a block this script does not know, a
block it knows that README.md lacks, or a BEGIN without its END is an error.

``--check`` writes nothing: it exits with status 1 and one line naming the stale blocks when
README.md differs from what RUN gives (status 2: RUN or README.md cannot be read).

The claims block is a table of whatever records ``claims.json`` holds (its ``key``, ``claim``,
``verdict``, ``value``, ``low``, ``high`` and ``threshold``; other fields are ignored), so new
claims or fields need no change here.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = re.compile(
    r"<!-- demo-numbers:BEGIN (?P<name>[\w-]+) -->(?P<body>.*?)<!-- demo-numbers:END (?P=name) -->",
    re.DOTALL,
)
ANY_MARKER = re.compile(r"<!-- demo-numbers:(BEGIN|END) ([\w-]+) -->")


class NumbersError(Exception):
    """A run file or README.md cannot be used (one line, exit status 2)."""


# --------------------------------------------------------------------------- reading the run


class Run:
    """The files of one analysed run that the README's numbers come from."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        analysis = self.dir / "analysis"
        self.summary = _json(analysis / "summary.json")
        self.claims = _claim_records(_json(analysis / "claims.json"))
        settings = analysis / "settings.json"
        self.settings = _json(settings) if settings.is_file() else self.summary.get("settings", {})
        config = self.dir / "config.toml"
        self.config = tomllib.loads(config.read_text()) if config.is_file() else {}
        self.live = _live(self.dir / "live.jsonl")
        self.overshoot = _overshoot(analysis / "derivatives.csv")

    def get(self, *keys: str) -> Any:
        """``summary[k0][k1]…``, None where any level is missing."""
        node: Any = self.summary
        for k in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(k)
        return node

    def strategy(self, name: str) -> dict[str, Any]:
        return self.get("strategies", name) or {}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NumbersError(
            f"{path} cannot be read ({exc}); run 'steplines analyze RUN' first"
        ) from exc


def _live(path: Path) -> list[dict[str, Any]]:
    """The records of ``live.jsonl``, the last one of each line (``steplines.live.read_live``)."""
    records: dict[int, dict[str, Any]] = {}
    text = path.read_text() if path.is_file() else ""
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a torn last record
        if isinstance(r, dict) and isinstance(r.get("t"), int):
            records[r["t"]] = r
    return [records[t] for t in sorted(records)]


def _overshoot(path: Path) -> float | None:
    """Median ``s_update / s_opt`` of ``derivatives.csv`` over lines with ``s_opt > 0``.

    The report's ``steplines.report.numbers.overshoot``, read without pandas.
    """
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        pairs = [(_finite(r.get("s_update")), _finite(r.get("s_opt"))) for r in csv.DictReader(f)]
    ratios = [u / o for u, o in pairs if u is not None and o is not None and o > 0]
    return statistics.median(ratios) if ratios else None


def _claim_records(data: Any) -> list[dict[str, Any]]:
    """The claim records of ``claims.json``: a list, or a list under ``claims`` in an object."""
    if isinstance(data, dict):
        data = data.get("claims", [])
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


# --------------------------------------------------------------------------- number styles
# as the report writes numbers (steplines.report.numbers), without importing the report


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; ``—`` when missing."""
    v = _finite(x)
    return "—" if v is None else f"{v:.{digits}g}"


def pct(x: Any) -> str:
    """A share as a percentage with one decimal (``98.6 %``); ``—`` when missing."""
    v = _finite(x)
    return "—" if v is None else f"{100 * v:.1f} %"


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def times(x: Any) -> str:
    """A ratio as ``1.91×``."""
    return "—" if _finite(x) is None else f"{fmt(x)}×"


def pct0(x: Any) -> str:
    """A share as a whole percentage (``85 %``); ``—`` when missing."""
    v = _finite(x)
    return "—" if v is None else f"{100 * v:.0f} %"


def signed_pct(x: Any) -> str:
    """A relative difference as ``+36 %`` / ``−1.4 %`` (2 significant digits)."""
    v = _finite(x)
    if v is None:
        return "—"
    text = f"{abs(100 * v):.2g}"
    return f"{'−' if v < 0 else '+'}{text} %"


def with_span(record: dict[str, Any], key: str, style: Callable[[Any], str] = fmt) -> str:
    """``value [low, high]`` of ``record[key]`` and ``record[key + "_low"/"_high"]``."""
    text = style(record.get(key))
    lo, hi = record.get(f"{key}_low"), record.get(f"{key}_high")
    if _finite(lo) is not None and _finite(hi) is not None:
        text += f" [{style(lo)}, {style(hi)}]"
    return text


def count(n: Any) -> str:
    """An integer with thousands separators (``1,024``)."""
    v = _finite(n)
    return "—" if v is None else f"{int(v):,}"


WIDTH = 100
"""README.md's line length."""
_STARTS_BLOCK = re.compile(r"([-+*] |\d+[.)] |#|>|\||<|=+$|`{3})")


def wrap(text: str) -> str:
    """A paragraph filled to :data:`WIDTH` columns, no line starting what Markdown would read
    as a list item, heading, quote, table row or HTML block."""
    lines = textwrap.wrap(text, WIDTH, break_long_words=False, break_on_hyphens=False)
    out: list[str] = []
    for line in lines:
        if out and _STARTS_BLOCK.match(line):
            out[-1] += " " + line  # one longer line rather than another block
        else:
            out.append(line)
    return "\n".join(out)


def _cell(text: object) -> str:
    """Text for a Markdown table cell (a ``|`` would end the cell, a newline the row)."""
    return " ".join(str(text).split()).replace("|", "\\|")


# --------------------------------------------------------------------------- the blocks


def block_run(run: Run) -> str:
    """Intro, inline: the steps trained, the lines measured and their positions per line."""
    steps = run.config.get("train", {}).get("steps")
    used, total = run.get("lines_used"), run.get("lines_total")
    lines = f"all {count(used)}" if used == total else f"{count(used)} of {count(total)}"
    sizes = [r.get("n_positions") for r in run.live]
    sizes = [int(n) for n in sizes if _finite(n) is not None]
    where = f" at {min(sizes)}–{max(sizes)} positions per line" if sizes else ""
    return (
        f"{count(steps)} steps and measures {lines} lines into `runs/demo/` (train, validation "
        f"and direction-batch per-sample losses{where})"
    )


def block_claims(run: Run) -> str:
    """The claims of ``claims.json`` as a table, whatever claims and extra fields it has."""
    rows = [
        f"On the demo run ({count(run.get('lines_used'))} lines; `make demo`), "
        "`steplines analyze runs/demo` judges:",
        "",
        "| key | claim | verdict | value [95 % interval] | threshold |",
        "|---|---|---|---|---|",
    ]
    for c in run.claims:
        value = fmt(c.get("value"))
        if _finite(c.get("low")) is not None and _finite(c.get("high")) is not None:
            value += f" [{fmt(c['low'])}, {fmt(c['high'])}]"
        rows.append(
            f"| `{_cell(c.get('key', ''))}` | {_cell(c.get('claim', ''))} "
            f"| **{_cell(c.get('verdict', ''))}** | {value} | {_cell(c.get('threshold', ''))} |"
        )
    if not run.claims:
        rows.append("| — | no claims in `claims.json` | | | |")
    return "\n".join(rows)


def block_strategies(run: Run) -> str:
    """The step-size strategies' shares of the optimum's accumulated improvement."""
    rates = run.get("rates") or {}
    share = "share_of_optimum"
    return wrap(
        f"On the demo run, SGD at the trained λ = {fmt(rates.get('trained'))} steps "
        f"{times(run.overshoot)} past the full-batch line's minimum (median s_update/s_opt). "
        f"As shares of the optimum's accumulated improvement (`summary.json`, with the row "
        f"bootstrap's intervals): the constant λ\\* = {with_span(rates, 'lambda_star_in')} "
        f"earns {with_span(run.strategy('lambda_star_in'), share, pct)} in-sample and "
        f"{with_span(run.strategy('lambda_star_out'), share, pct)} out-of-sample (λ\\* from "
        f"the earlier lines only), SGD as trained "
        f"{with_span(run.strategy('sgd'), share, pct)}, an exact line search on the "
        f"mini-batch {with_span(run.strategy('exact_batch'), share, pct)} and FBPAL "
        f"{with_span(run.strategy('fbpal'), share, pct)}."
    )


def block_analysis(run: Run) -> str:
    """Fit errors, λ*'s spread, the step ratio and two strategies, in one sentence."""
    fits = run.get("fits") or {}
    mae1, mae2 = _finite(fits.get("mean_mae_degree_1")), _finite(fits.get("mean_mae_degree_2"))
    smaller = f" ({mae1 / mae2:.0f}× smaller)" if mae1 is not None and mae2 else ""
    lam = run.get("ratios", "s_opt_over_direction_norm") or {}
    rates = run.get("rates") or {}
    return wrap(
        f"On the demo run ({run.settings.get('scale', '?')} scale, window "
        f"±{fmt(run.settings.get('window'))}): mean degree-2 fit MAE {fmt(mae2)} vs degree-1 "
        f"{fmt(mae1)}{smaller}, λ\\* = {fmt(lam.get('median'))} (IQR {fmt(lam.get('q25'))}–"
        f"{fmt(lam.get('q75'))}) while SGD used λ = {fmt(rates.get('trained'))} and stepped "
        f"{times(run.overshoot)} past the line minimum, FBPAL reached "
        f"{pct0(run.strategy('fbpal').get('share_of_optimum'))} of the optimum's accumulated "
        f"improvement and SGD as trained {pct0(run.strategy('sgd').get('share_of_optimum'))}."
    )


def block_noisy(run: Run) -> str:
    """Inline: the noisy directions measured and at which steps."""
    noisy = run.get("noisy_directions") or {}
    steps = [str(t) for t in noisy.get("steps", [])]
    at = " and ".join([", ".join(steps[:-1]), steps[-1]] if len(steps) > 1 else steps)
    return f"{count(noisy.get('directions'))} directions at steps {at or '—'}"


def block_estimators(run: Run) -> str:
    """The cheap estimators' median errors against the measured line, and B_simple."""
    est = run.get("estimators") or {}
    err = est.get("errors") or {}

    def med(block: dict[str, Any] | None) -> Any:
        return (block or {}).get("median")

    alpha = _finite(med(err.get("alpha_error")))
    if alpha is None:
        cockpit = "Cockpit's α was not measured"
    else:
        side = "below" if alpha < 0 else "above"
        cockpit = (
            f"Cockpit's α is {fmt(abs(alpha))} {side} the measured full-batch α (it sees the "
            f"step landing at {fmt(med(est.get('alpha_cockpit')))} where the full batch says "
            f"{fmt(med(est.get('alpha_true')))})"
        )
    curv = _finite(med(err.get("curvature_rel_error")))
    b_simple = est.get("b_simple") or {}
    return wrap(
        f"On the demo run (`steplines analyze runs/demo`, `estimators` in "
        f"`analysis/summary.json`; {count(run.get('lines_used'))} lines, medians): {cockpit}, "
        f"the LABPAL-style step is {fmt(med(err.get('labpal_step_ratio')))} × s_opt and its "
        f"curvature differs from the full-batch fit's by "
        f"{signed_pct(med(err.get('labpal_a_rel_error')))}, the Armijo (SLS) step on the "
        f"direction batch is {fmt(med(err.get('armijo_step_ratio')))} × s_opt, dᵀH_B d is "
        f"{signed_pct(curv)} off the full batch's 2a, and B_simple ≈ "
        f"{fmt(b_simple.get('median'), 2)} ({count(b_simple.get('n'))} lines) beside the "
        f"training batch size of {count(est.get('batch_size'))}."
    )


BLOCKS: dict[str, tuple[Callable[[Run], str], bool]] = {
    # name → (renderer, inline); an inline block sits inside a line of prose, the others
    # stand alone between a BEGIN line and an END line
    "run": (block_run, True),
    "claims": (block_claims, False),
    "strategies": (block_strategies, False),
    "noisy": (block_noisy, True),
    "analysis": (block_analysis, False),
    "estimators": (block_estimators, False),
}


# --------------------------------------------------------------------------- the README


def render(text: str, run: Run) -> tuple[str, list[str]]:
    """``text`` with every block rewritten from ``run``, and the names of the blocks changed."""
    _check_markers(text)
    stale: list[str] = []

    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        fn, inline = BLOCKS[name]
        body = fn(run) if inline else f"\n{fn(run)}\n"
        if body != m.group("body"):
            stale.append(name)
        return f"<!-- demo-numbers:BEGIN {name} -->{body}<!-- demo-numbers:END {name} -->"

    return MARKER.sub(replace, text), stale


def _check_markers(text: str) -> None:
    """Every marker pairs up, every name is known, every known block is there once."""
    found = [m.group("name") for m in MARKER.finditer(text)]
    pairs = len(ANY_MARKER.findall(text))
    if pairs != 2 * len(found):
        raise NumbersError("README.md has a demo-numbers BEGIN without its END (or the reverse)")
    unknown = sorted(set(found) - set(BLOCKS))
    if unknown:
        raise NumbersError(
            f"README.md has demo-numbers blocks this script does not know: {unknown}"
        )
    missing = [n for n in BLOCKS if n not in found]
    twice = sorted({n for n in found if found.count(n) > 1})
    if missing or twice:
        raise NumbersError(
            f"README.md lacks the demo-numbers blocks {missing}"
            if missing
            else f"README.md has the demo-numbers blocks {twice} more than once"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", default=Path("runs/demo"))
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = ap.parse_args(argv)
    try:
        text = args.readme.read_text()
        new, stale = render(text, Run(args.run))
    except (NumbersError, OSError, ValueError) as exc:  # ValueError: a bad config.toml
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if stale:
            print(
                f"{args.readme}: stale demo-numbers blocks: {', '.join(stale)} (run: python "
                f"docs/readme_numbers.py {args.run})",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        args.readme.write_text(new)
    print(f"{args.readme}: {len(stale)} of {len(BLOCKS)} blocks rewritten from {args.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
