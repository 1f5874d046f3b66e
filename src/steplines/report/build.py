"""Build the static HTML report of one or several runs (DESIGN "Report").

:func:`build_report` analyses a run when its tables are missing or stale, draws every figure
into ``RUN/figures/`` (PNG for the page, PDF for papers) and renders ``RUN/report.html`` with the
core results beside the paper's numbers. Several runs: every run gets its own report, and one
comparison page links them (default ``RUN_A/compare.html``). This module never imports torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from steplines.analysis import analyze_run
from steplines.analysis.bootstrap import accumulated_bands
from steplines.analysis.lines import lines_missing, scheduled_lines
from steplines.analysis.run import analysis_dir, read_run_config, request_tag
from steplines.analysis.settings import check_mode, match_preset
from steplines.errors import RunDirError, SteplinesError
from steplines.plotting import (
    line_view,
    plot_approximations,
    plot_batch_size,
    plot_compare,
    plot_distance_matrices,
    plot_fits,
    plot_lines,
    plot_strategies,
    plot_training,
    save_figure,
    strategy_label,
)
from steplines.plotting.directions import plot_direction_matrices
from steplines.plotting.estimators import plot_estimators
from steplines.report.paper import paper_values
from steplines.report.templates import COMPARE_TEMPLATE, RUN_TEMPLATE
from steplines.store import LineStore

__all__ = [
    "RunData",
    "build_report",
    "build_run_report",
    "claim_rows",
    "claims_text",
    "core_results",
    "load_run",
]

ANALYSIS_FILES = (
    "strategies.csv",
    "fits.csv",
    "derivatives.csv",
    "batch_size.csv",
    "distances.npz",
    "summary.json",
    "claims.json",
    "settings.json",
)

PRECISION_CHECKS = "precision_checks.jsonl"  # steplines.engine.precision.CHECKS_FILE (no torch)


# ------------------------------------------------------------------------------ loading


@dataclass
class RunData:
    """Everything the report of one run draws from.

    Attributes:
        path: The run directory.
        config: ``config.toml`` as a dict ({} if absent).
        provenance: ``provenance.json`` as a dict ({} if absent).
        summary: ``analysis/summary.json``.
        strategies, fits, derivatives, batch_size: The analysis tables.
        distances: The arrays of ``analysis/distances.npz``.
        banners: Problems found while loading (shown at the top of the page).
        estimators: ``analysis/estimators.csv``, or None when the analysis predates it.
        claims: ``analysis/claims.json``: one record per claim of the paper.
        tables: The directory the tables were read from (``RUN/analysis`` or
            ``RUN/analysis-<tag>`` for a non-default mode, scale or override).
    """

    path: Path
    config: dict[str, Any]
    provenance: dict[str, Any]
    summary: dict[str, Any]
    strategies: pd.DataFrame
    fits: pd.DataFrame
    derivatives: pd.DataFrame
    batch_size: pd.DataFrame
    distances: dict[str, np.ndarray]
    banners: list[dict[str, str]] = field(default_factory=list)
    estimators: pd.DataFrame | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)
    tables: Path | None = None

    @property
    def figures(self) -> Path:
        """Where this analysis' figures go: ``RUN/figures`` (default) or beside its tables."""
        if self.tables is None or self.tables.name == "analysis":
            return self.path / "figures"
        return self.tables / "figures"

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.resolve().name

    @property
    def momentum(self) -> float:
        """β used by the analysis."""
        return float(self.summary.get("momentum") or 0.0)

    @property
    def lr(self) -> float | None:
        """The run's (median) learning rate."""
        lr = self.derivatives["lr"].to_numpy(float) if "lr" in self.derivatives else []
        lr = np.asarray(lr)[np.isfinite(lr)]
        return float(np.median(lr)) if lr.size else None


def _store_mtime(store: Path) -> float:
    """Newest modification time of the store's metadata and done mask (written last per line)."""
    times = [store.stat().st_mtime]
    for sub in (store / "zarr.json", store / "done"):
        if sub.exists():
            times.append(sub.stat().st_mtime)
            if sub.is_dir():
                times.extend(p.stat().st_mtime for p in sub.rglob("*") if p.is_file())
    return max(times)


def _needs_analysis(run_dir: Path, adir: Path, mode: str) -> bool:
    if not all((adir / f).is_file() for f in ANALYSIS_FILES):
        return True
    try:
        summary = json.loads((adir / "summary.json").read_text())
    except (OSError, ValueError):
        return True
    if summary.get("mode") != mode or "settings" not in summary:
        return True
    store = run_dir / "lines.zarr"
    if store.is_dir() and not (adir / "estimators.csv").is_file():
        return True  # made before the estimator analysis existed
    if store.is_dir():
        oldest = min((adir / f).stat().st_mtime for f in ANALYSIS_FILES)
        return oldest < _store_mtime(store)
    return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} cannot be read ({exc}); delete it and rerun") from exc
    return data if isinstance(data, dict) else {}


def load_run(
    run_dir: Path,
    mode: str = "corrected",
    reanalyze: bool | None = None,
    **options: Any,
) -> RunData:
    """Analyse ``run_dir`` if needed and load its tables.

    Args:
        run_dir: A run directory.
        mode: Analysis mode (``corrected`` or ``faithful``).
        reanalyze: True: always analyse; False: never (the tables must exist); None: when a
            table is missing, was made in another mode, or is older than the line store.
        options: ``scale``, ``window``, ``lambdas``, ``mu`` of
            :func:`steplines.analysis.analyze_run`. An analysis other than the run's default
            is read from (and written to) ``RUN/analysis-<tag>/``, never ``RUN/analysis/``.

    Raises:
        RunDirError: The directory does not exist, has no line store and no tables, has no
            measured line, or its store has another schema version.
        ConfigError: Unknown ``mode``.
    """
    check_mode(mode)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory; pass a run directory")
    banners: list[dict[str, str]] = []
    store = run_dir / "lines.zarr"
    adir = analysis_dir(run_dir, request_tag(run_dir, mode, **options))
    if reanalyze is None:
        reanalyze = _needs_analysis(run_dir, adir, mode)
    if reanalyze:
        if not store.is_dir():
            raise RunDirError(
                f"{run_dir} has no lines.zarr and no complete {adir.name}/ tables in mode "
                f"{mode}; pass a run directory made by 'steplines run'"
            )
        analyze_run(run_dir, mode, **options)
    elif not store.is_dir():
        banners.append(
            _banner("lines.zarr is missing: figures that need the raw lines are left out.")
        )
    try:
        summary = _read_json(adir / "summary.json")
        tables = {
            name: pd.read_csv(adir / f"{name}.csv")
            for name in ("strategies", "fits", "derivatives", "batch_size")
        }
        with np.load(adir / "distances.npz") as npz:
            distances = {k: np.asarray(npz[k]) for k in npz.files}
        est_path = adir / "estimators.csv"
        estimators = pd.read_csv(est_path) if est_path.is_file() else None
        claims_path = adir / "claims.json"
        claims = json.loads(claims_path.read_text()) if claims_path.is_file() else []
    except (OSError, ValueError, KeyError) as exc:
        raise RunDirError(
            f"{adir} is incomplete or unreadable ({type(exc).__name__}: {exc}); "
            "rerun 'steplines analyze'"
        ) from exc
    config = read_run_config(run_dir)
    if not config:
        banners.append(
            _banner(
                "config.toml is missing: what was run is unknown; β was "
                f"{summary.get('momentum_source', 'inferred')} as {summary.get('momentum')}."
            )
        )
    prov_path = run_dir / "provenance.json"
    provenance: dict[str, Any] = {}
    if prov_path.is_file():
        try:
            provenance = _read_json(prov_path)
        except RunDirError as exc:
            banners.append(_banner(str(exc)))
    else:
        banners.append(_banner("provenance.json is missing: versions and device are unknown."))
    missing, total = _missing_lines(run_dir, config, summary)
    used = int(summary.get("lines_used") or 0)
    if missing:
        banners.append(
            _banner(
                f"{missing} of {total} lines are not measured (not done): every number and "
                f"figure covers the {used} measured lines only. Measure the rest with "
                + (
                    "your training loop and the same LineProbe settings (it measures only "
                    "the missing lines)"
                    if config.get("probe")
                    else "'steplines measure RUN'"
                )
                + " and rebuild the report.",
                "error",
            )
        )
    if used < 50:
        banners.append(
            _banner(
                f"Only {used} lines: the 25-line moving averages and the 'later lines' "
                "statistics (the paper starts them at line 50 of 10 000) are rough."
            )
        )
    if summary.get("momentum_source") == "inferred":
        banners.append(
            _banner(f"β inferred from the store as {summary.get('momentum')} (no config value).")
        )
    return RunData(
        path=run_dir,
        config=config,
        provenance=provenance,
        summary=summary,
        strategies=tables["strategies"],
        fits=tables["fits"],
        derivatives=tables["derivatives"],
        batch_size=tables["batch_size"],
        distances=distances,
        banners=banners,
        estimators=estimators,
        claims=claims if isinstance(claims, list) else [],
        tables=adir,
    )


def _banner(text: str, level: str = "warning") -> dict[str, str]:
    return {"text": text, "level": level}


# ------------------------------------------------------------------------------ numbers


def _f(x: Any, digits: int = 3) -> str:
    """Format a number with ``digits`` significant digits; '—' for None/NaN."""
    if x is None:
        return "—"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "—"
    return f"{v:.{digits}g}"


def _span(record: dict[str, Any], key: str, fmt: Callable[[Any], str] = _f) -> str:
    """`` [low, high]`` of ``record[key + "_low"/"_high"]`` (the row bootstrap), or ``""``."""
    lo, hi = record.get(f"{key}_low"), record.get(f"{key}_high")
    if lo is None or hi is None:
        return ""
    return f" [{fmt(lo)}, {fmt(hi)}]"


def _pct(x: Any) -> str:
    if x is None:
        return "—"
    v = float(x)
    return f"{100 * v:.1f} %" if math.isfinite(v) else "—"


def _overshoot(d: pd.DataFrame) -> float | None:
    """Median of ``s_update / s_opt`` over lines with ``s_opt > 0`` (paper: ≈ 2 for λ = 0.1)."""
    if not {"s_update", "s_opt"} <= set(d.columns):
        return None
    s_opt = d.s_opt.to_numpy(float)
    s_upd = d.s_update.to_numpy(float)
    ok = np.isfinite(s_opt) & np.isfinite(s_upd) & (s_opt > 0)
    return float(np.median(s_upd[ok] / s_opt[ok])) if ok.any() else None


def _max_mae(fits: pd.DataFrame, degree: int) -> float | None:
    v = fits.loc[fits.degree == degree, "mae"].to_numpy(float)
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else None


def core_results(run: RunData) -> list[dict[str, str]]:
    """The rows of the core-results table: ``key``, ``quantity``, ``ours``, ``paper``.

    Numbers come from ``summary.json`` (plus the SGD overshoot and the fit maxima from
    ``derivatives.csv``/``fits.csv``). ``paper`` is filled for runs matching a paper preset.
    """
    s = run.summary
    _, paper = paper_values(match_preset(run.config))
    rows: list[dict[str, str]] = []

    def add(key: str, quantity: str, ours: str, paper_key: str | None = None) -> None:
        rows.append(
            {
                "key": key,
                "quantity": quantity,
                "ours": ours,
                "paper": paper.get(paper_key or key, ""),
            }
        )

    add(
        "lines",
        "lines analysed (measured / total)",
        f"{s.get('lines_used')} / {s.get('lines_total')}",
    )
    fits = s.get("fits", {})
    over = fits.get("lines", "all lines")
    for deg in (1, 2):
        add(
            f"fit_{deg}",
            f"MAE of the degree-{deg} fit on ±{_f(fits.get('window'))}, mean over {over} (max)",
            f"{_f(fits.get(f'mean_mae_degree_{deg}'))} ({_f(_max_mae(run.fits, deg))})",
        )
    m1, m2 = fits.get("mean_mae_degree_1"), fits.get("mean_mae_degree_2")
    if m1 and m2:
        add("fit_ratio", "degree-1 / degree-2 mean MAE", f"{_f(m1 / m2)}×")
    dist = s.get("distances", {})
    later_idx = dist.get("later_from_line_index")
    add("dist_first", "median distance between the first lines (MAE)", _f(dist.get("first_median")))
    add(
        "dist_later",
        f"median distance between later lines (from the {_ordinal(later_idx)} line on) (max)",
        f"{_f(dist.get('later_median'))} ({_f(dist.get('later_max'))})",
    )
    add(
        "dist_consecutive",
        "median distance of consecutive lines: all / later",
        f"{_f(dist.get('consecutive_median'))} / {_f(dist.get('consecutive_median_later'))}",
    )
    lam = s.get("lambda_star", {})
    add(
        "lambda_star",
        "λ* = median s_opt/‖g_t‖ [IQR]; first → second half median (slope per line)",
        f"{_f(lam.get('median'))} [{_f(lam.get('q25'))}–{_f(lam.get('q75'))}]; "
        f"{_f(lam.get('first_half_median'))} → {_f(lam.get('second_half_median'))} "
        f"({_f(lam.get('slope_per_line'), 2)})",
    )
    ratios = s.get("ratios", {})
    if "s_opt_over_minus_accumulated_delta" in ratios:
        acc = ratios["s_opt_over_minus_accumulated_delta"]
        upd = ratios.get("s_opt_over_update_norm", {})
        add(
            "lambda_star_momentum",
            "β > 0: median s_opt/(−D_t) [IQR]; median s_opt/‖m_t‖; flatter reading",
            f"{_f(acc.get('median'))} [{_f(acc.get('q25'))}–{_f(acc.get('q75'))}]; "
            f"{_f(upd.get('median'))}; {s.get('momentum_ratio_flatter') or '—'}",
        )
    reading = s.get("momentum_sgd_lambda_over_sgd_step")
    if reading:
        add(
            "sgd_lambda_reading",
            "β > 0: median SGD λ step / SGD original step, −λ·δ_B vs −λ·D_t",
            "; ".join(f"{strategy_label(k)}: {_f(v)}" for k, v in reading.items()),
        )
    rates = s.get("rates") or {}
    if rates:
        add(
            "rates",
            "learning rate: as trained; λ* in-sample; λ* out-of-sample at the last line",
            f"{_f(rates.get('trained'))}; {_f(rates.get('lambda_star_in'))}"
            f"{_span(rates, 'lambda_star_in')}; {_f(rates.get('lambda_star_out_last'))}",
            "lambda_star",
        )
    add(
        "sgd_overshoot",
        f"SGD original step / s_opt (median; λ = {_f(run.lr)})",
        f"{_f(_overshoot(run.derivatives))}×",
    )
    opt = s.get("strategies", {}).get("optimal", {})
    for name, st in _ordered(s.get("strategies", {})):
        key = "strategy:sgd_lambda" if name.startswith("sgd_lambda") else f"strategy:{name}"
        ours = (
            f"{_f(st.get('accumulated_improvement'))}{_span(st, 'accumulated_improvement')} "
            f"({_pct(st.get('share_of_optimum'))}{_span(st, 'share_of_optimum', _pct)}); "
            f"Σ|distance| {_f(st.get('accumulated_abs_distance'))}"
        )
        label = strategy_label(name, run.lr, s.get("mu", 0.1), rates.get("lambda_star_in"))
        add(
            f"strategy:{name}",
            f"accumulated improvement of {label} (share of the optimum's)",
            ours if name != "optimal" else f"{_f(opt.get('accumulated_improvement'))} (100 %)",
            key,
        )
    bs = s.get("batch_size", {})
    ref = bs.get("reference_batch_size")
    for key, r in bs.get("delta_ratio", {}).items():
        label = f"bs {key}" if key != "full" else f"full batch ({r.get('batch_size')} rows)"
        add(
            f"delta_ratio:{key}",
            f"δ ratio {label} / bs {ref}: median (expected {ref}/bs)",
            f"{_f(r.get('median_ratio'))} ({_f(r.get('expected_ratio'))})",
            "delta_ratio",
        )
    # the paper's text for a group is shown once, on its first row
    seen: set[str] = set()
    for row in rows:
        if row["paper"] and row["paper"] in seen:
            row["paper"] = "(as above)"
        seen.add(row["paper"])
    return rows


def claim_rows(run: RunData) -> list[dict[str, str]]:
    """Rows of the "Claims" table: each claim of the paper with this run's verdict.

    From ``claims.json`` (:mod:`steplines.analysis.claims`): the claim, its metric, this run's
    value with its 95 % interval, the threshold, the verdict and its reason, the paper's value.
    """
    rows = []
    for c in run.claims:
        value = _f(c.get("value"))
        if c.get("low") is not None and c.get("high") is not None:
            value += f" [{_f(c['low'])}, {_f(c['high'])}]"
        verdict = str(c.get("verdict", "inconclusive"))
        rows.append(
            {
                "key": str(c.get("key", "")),
                "claim": str(c.get("claim", "")),
                "metric": str(c.get("metric", "")),
                "value": value,
                "threshold": str(c.get("threshold", "")),
                "verdict": verdict,
                "css": verdict.replace(" ", "-"),
                "reason": str(c.get("reason", "")),
                "paper": str(c.get("paper", "")),
                "n": str(c.get("n", "")),
            }
        )
    return rows


def claims_text(run: RunData) -> str:
    """The claims as aligned plain text (``steplines analyze`` prints it)."""
    rows = claim_rows(run)
    if not rows:
        return "claims: not analysed (rerun 'steplines analyze RUN')"
    width = max(len(r["key"]) for r in rows)
    lines = ["claims of the paper (verdict: value [95 % interval] vs threshold; reason):"]
    for r in rows:
        why = "" if r["reason"].startswith("the interval") else f"; {r['reason']}"
        lines.append(
            f"  {r['key'].ljust(width)}  {r['verdict'].upper():<13}  {r['value']} vs "
            f"{r['threshold']}{why}"
        )
    return "\n".join(lines)


def _interval_note(run: RunData) -> dict[str, str]:
    """``level`` and ``row_note`` of the page's interval notes (from ``summary.bootstrap``)."""
    b = run.summary.get("bootstrap") or {}
    level = f"{100 * float(b.get('level') or 0.95):g} %"
    rows = b.get("row_resamples")
    if rows is None:
        return {"level": level, "row_note": "not computed: these tables predate it"}
    if not rows:
        return {"level": level, "row_note": "switched off: --resamples 0"}
    return {
        "level": level,
        "row_note": f"{rows} resamples of the {b.get('full_batch_rows')} rows per line",
    }


def _settings_line(run: RunData) -> str:
    """One sentence on the analysis' scale and constants."""
    st = run.summary.get("settings") or {}
    s = run.summary
    if not st:
        return ""
    opt = st.get("optimizer") or {}
    name = opt.get("name", "?")
    if st.get("scale") == "run":
        how = (
            f"run scale: the window and µ follow this run's typical step "
            f"s_typ = median |s_opt| = {_f(st.get('typical_step'))} (w = 2·s_typ, µ = s_typ), "
            "and SGD is compared at the run's own λ* (in- and out-of-sample)"
        )
    else:
        how = "paper scale: the constants of the paper's ResNet-20 run"
    given = st.get("overrides") or []
    lams = ", ".join(_f(x) for x in s.get("lambdas") or [])
    return (
        f"{how}; window ±{_f(s.get('window'))}, µ = {_f(s.get('mu'))}"
        + (f", SGD λ = {lams}" if lams else "")
        + f"; optimizer {name}"
        + (f" (β = {_f(opt.get('momentum'))})" if opt.get("momentum") else "")
        + (f"; set by you: {', '.join(given)}" if given else "")
        + "."
    )


def _ordinal(i: Any) -> str:
    if i is None:
        return "?"
    n = int(i) + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


_STRAT_ORDER = (
    "optimal",
    "fbpal",
    "lambda_star_out",
    "lambda_star_in",
    "sgd_lambda",
    "pal",
    "exact_batch",
    "sgd",
    "fbpal_sgd",
)


def _ordered(strategies: dict[str, Any]) -> list[tuple[str, Any]]:
    def key(item: tuple[str, Any]) -> tuple[int, str]:
        base = "sgd_lambda" if item[0].startswith("sgd_lambda") else item[0]
        return (_STRAT_ORDER.index(base) if base in _STRAT_ORDER else 99, item[0])

    return sorted(strategies.items(), key=key)


def _noise_scale_note(run: RunData) -> str:
    """One line on B_simple beside the batch-size table ('' when it was not measured)."""
    est = run.summary.get("estimators") or {}
    if not est.get("noise_scale_measured"):
        return ""
    bs = est.get("b_simple", {})
    return (
        f"Gradient noise scale B_simple = tr Σ/|G|² of the direction batch (McCandlish et al. "
        f"2018; per-sample gradients on {bs.get('n', 0)} lines): median {_f(bs.get('median'))} "
        f"[{_f(bs.get('q25'))}, {_f(bs.get('q75'))}], against the run's batch size "
        f"{est.get('batch_size')}; McCandlish et al. expect little gain from batches much "
        "larger than B_simple. Over training: the estimators section below."
    )


def _bs_table(run: RunData) -> tuple[list[str], list[list[str]]]:
    imp = run.summary.get("batch_size", {}).get("improvement", {})
    if not imp:
        return [], []
    names = sorted({n for v in imp.values() for n in v}, key=lambda n: (n != "sgd", n))
    header = [strategy_label(n, run.lr, run.summary.get("mu", 0.1)) for n in names]
    rows = []
    for bs in sorted(imp, key=int):
        cells = [bs]
        for n in names:
            v = imp[bs].get(n, {})
            cells.append(
                f"{_f(v.get('accumulated_improvement'))} ({_pct(v.get('share_of_optimum'))})"
            )
        rows.append(cells)
    return header, rows


# ------------------------------------------------------------------------------ figures


def _representative(lines: np.ndarray, n_total: int) -> list[int]:
    """Three analysed lines spread over training (paper: 10, 4000, 8000 of 10 000)."""
    if lines.size == 0:
        return []
    targets = [min(10, n_total // 8), round(0.4 * n_total), round(0.8 * n_total)]
    picked: list[int] = []
    for t in targets:
        best = int(lines[int(np.argmin(np.abs(lines - t)))])
        if best not in picked:
            picked.append(best)
    return picked


@dataclass
class _Fig:
    name: str
    title: str
    caption: str
    draw: Callable[[], Figure]


def _missing_lines(
    run_dir: Path, config: dict[str, Any], summary: dict[str, Any]
) -> tuple[int, int]:
    """``(scheduled but not done, scheduled)`` lines (:func:`analysis.lines.lines_missing`):
    from the store when it is there, else ``summary.json``'s ``lines_missing``/``lines_total``.
    """
    store = run_dir / "lines.zarr"
    if store.is_dir():
        done = LineStore.open(store).done()
        return lines_missing(done, config), int(scheduled_lines(config, done.size).sum())
    return int(summary.get("lines_missing") or 0), int(summary.get("lines_total") or 0)


def _bands(run: RunData) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Row-bootstrap bands of the accumulated improvements (None without ``bootstrap.npz``)."""
    path = (run.tables or run.path / "analysis") / "bootstrap.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        reps = {k: z[k] for k in z.files if k.startswith("impr:")}
    level = float((run.summary.get("bootstrap") or {}).get("level") or 0.95)
    return accumulated_bands(reps, level)


def _evals(run_dir: Path) -> pd.DataFrame | None:
    """Eval-mode metrics at the checkpoints (``trajectory/eval_*.json``), or None."""
    rows = [_read_json(p) for p in sorted((run_dir / "trajectory").glob("eval_*.json"))]
    rows = [r for r in rows if "val_accuracy" in r]
    return pd.DataFrame(rows).sort_values("step") if rows else None


def _acc_text(run_dir: Path) -> str:
    ev = _evals(run_dir)
    if ev is None:
        return ""
    last = ev.iloc[-1]
    return (
        f"; ours at step {int(last.step)}: training accuracy {last.train_accuracy:.3f}, "
        f"validation accuracy {last.val_accuracy:.3f}"
    )


def _line_bn(config: dict[str, Any]) -> str:
    """How the lines normalise BatchNorm (``measure.batchnorm``, default ``batch``)."""
    if (config.get("measure") or {}).get("batchnorm", "batch") == "running":
        return "BatchNorm with θ_t's running statistics"
    return "BatchNorm with each evaluation batch's own statistics"


def _eval_vs_lines(run_dir: Path, d: pd.DataFrame) -> str:
    """Eval-mode training loss at the last checkpoint with a line beside that line's l(0)."""
    ev = _evals(run_dir)
    if ev is None or "train_loss" not in ev or d.empty:
        return ""
    ev = ev[ev.step <= d.line.max()]
    if ev.empty:
        return ""
    last = ev.iloc[-1]
    row = d[d.line <= last.step].iloc[-1] if (d.line <= last.step).any() else d.iloc[0]
    return (
        f"; at step {int(last.step)} the eval-mode training loss is {_f(last.train_loss)} "
        f"and l(0) of line {int(row.line)} is {_f(row.l0)}"
    )


def _figures(run: RunData, mode: str) -> list[_Fig]:
    s = run.summary
    d = run.derivatives.sort_values("line")
    lines = d.line.to_numpy()
    dist = s.get("distances", {})
    fits = s.get("fits", {})
    lam = s.get("lambda_star", {})
    strat = s.get("strategies", {})
    mu = float(s.get("mu", 0.1))
    # Fig. 5's "SGD λ" parabola: the paper's λ, or in run scale the run's own λ*
    lambdas = s.get("lambdas") or [(s.get("rates") or {}).get("lambda_star_in") or 0.05]
    store_path = run.path / "lines.zarr"
    has_store = store_path.is_dir()
    figs: list[_Fig] = []

    def share(name: str) -> str:
        return _pct(strat.get(name, {}).get("share_of_optimum"))

    if has_store:

        def draw_training() -> Figure:
            store = LineStore.open(store_path)
            sm = store.read_summary()
            done = np.flatnonzero(sm["done"])
            z = sm["zero_index"][done]
            ok = z >= 0
            t, z = done[ok], z[ok]
            return plot_training(
                t,
                sm["train_mean"][t, z],
                sm["val_mean"][t, z],
                sm["batch_loss"][t],
                evals=_evals(run.path),
            )

        figs.append(
            _Fig(
                "training",
                "Fig. 1 — training curves",
                "Both kinds of numbers are drawn, labelled. Solid: full-batch training loss "
                "l(0), validation loss at s = 0 and the direction batch's loss at every "
                f"measured line, evaluated as the lines are ({_line_bn(run.config)}). "
                "Squares: losses and (right) accuracy in eval mode at "
                "every checkpoint (model.eval(): running BatchNorm statistics, no dropout; "
                "the store holds no accuracy), when the trajectory recorded them. Paper "
                "(ResNet-20, λ = 0.1): training and validation accuracy rise steadily over the "
                f"10,000 steps{_acc_text(run.path)}. Ours: l(0) from "
                f"{_f(d.l0.iloc[0])} (line {lines[0]}) to {_f(d.l0.iloc[-1])} "
                f"(line {lines[-1]}){_eval_vs_lines(run.path, d)}.",
                draw_training,
            )
        )
        reps = _representative(lines, int(s.get("lines_total") or lines.size))

        def views() -> list:
            store = LineStore.open(store_path)
            return [line_view(store.read_line(t), t, mode) for t in reps]

        figs.append(
            _Fig(
                "lines",
                "Fig. 2 — representative lines",
                f"Full-batch loss l (red), direction-batch loss l_B (green) and the min–max "
                f"band of the mini-batch losses (training rows in consecutive groups of the "
                f"batch size) at lines {', '.join(map(str, reps))}; dashed: SGD's step, "
                "diamond: s_opt. Paper (ResNet-20, lines 10/4000/8000): l_B is always steeper "
                "at 0 and lower than l; the lines look like simple parabolas; the band is ≈ 0.4 "
                "wide at line 10.",
                lambda: plot_lines(views()),
            )
        )
    figs.append(
        _Fig(
            "distances",
            "Figs. 3/11/12 — distances between lines",
            f"MAE between min-shifted full-batch lines on ±{_f(s.get('window'))}: all lines, "
            "the first 50, the later lines, and consecutive lines (log y). Paper (ResNet-20): "
            "high for the first ~10 lines, afterwards < 0.3 and concentrated around 0.01; "
            "consecutive lines similar. Ours: first lines median "
            f"{_f(dist.get('first_median'))}, later lines median {_f(dist.get('later_median'))} "
            f"(max {_f(dist.get('later_max'))}), consecutive median "
            f"{_f(dist.get('consecutive_median_later'))} (later lines).",
            lambda: plot_distance_matrices(
                run.distances,
                int(dist.get("later_from_line_index") or 0),
                dist.get("matrix_stride"),
            ),
        )
    )
    noisy = s.get("noisy_directions")
    noisy_path = (run.tables or run.path / "analysis") / "directions.npz"
    if noisy and noisy_path.exists():

        def draw_noisy() -> Figure:
            with np.load(noisy_path) as z:
                return plot_direction_matrices({k: z[k] for k in z.files})

        figs.append(
            _Fig(
                "directions",
                "Fig. 8 — lines along noisy directions",
                f"At {noisy['positions']} steps, {noisy['directions']} lines from the same "
                "parameters along the gradients of different mini-batches: MAE between their "
                "min-shifted full-batch lines, and its median over training. Paper (ResNet-20, "
                "31 directions at 100 positions): the distances are low, so the line shape "
                "hardly depends on the mini-batch. Ours: median "
                f"{_f(noisy.get('median'))} (later SGD lines: {_f(dist.get('later_median'))}).",
                draw_noisy,
            )
        )
    figs.append(
        _Fig(
            "fits",
            "Figs. 4/13/14 — polynomial fits",
            f"MAE of least-squares polynomials of degree 1–4 fitted to l on "
            f"±{_f(fits.get('window'))} (log y), and the degree-2 coefficients each shifted "
            "by its own minimum. Paper: the degree-2 error is always low and degree 1 clearly "
            "worse; the slope stays roughly constant, the curvature rises over the first steps "
            f"and then decreases. Ours: mean MAE degree 1 {_f(fits.get('mean_mae_degree_1'))}, "
            f"degree 2 {_f(fits.get('mean_mae_degree_2'))}.",
            lambda: plot_fits(run.fits),
        )
    )
    if has_store and lines.size:
        t5 = _representative(lines, int(s.get("lines_total") or lines.size))[0]
        row = d.set_index("line").loc[t5]

        def draw_approx() -> Figure:
            store = LineStore.open(store_path)
            return plot_approximations(
                line_view(store.read_line(t5), t5, mode),
                update_norm=float(row.update_norm),
                delta_batch=float(row.delta_batch),
                lam=float(lambdas[0]),
                mu=mu,
            )

        figs.append(
            _Fig(
                "approximations",
                "Fig. 5 — parabolic approximations",
                f"Line {t5}: l, l_B and the parabolas implied by SGD (original, vertex at its "
                f"step), SGD λ = {_f(lambdas[0])} and PAL µ = {_f(mu)}, all through l_B(0); "
                "dashed: their minima; red diamond: s_opt; green cross: the minimum of l_B. "
                "Paper: SGD's parabola approximates l_B, not l, and overshoots s_opt.",
                draw_approx,
            )
        )
    lam_name = next((n for n in strat if n.startswith("sgd_lambda") and "accum" not in n), None)
    figs.append(
        _Fig(
            "strategies",
            "Figs. 6/9/15–18 — line-search strategies",
            "Update steps, distances to the full-batch minimum (symlog), improvements "
            "(symlog; smoothed over 25 lines), accumulated |distance| and improvement, and "
            f"the ratio s_opt/{'(−D_t)' if run.momentum > 0 else '‖g_t‖'}. Paper (ResNet-20, "
            "β = 0): FBPAL ≈ optimal, SGD λ = 0.05 about as good, λ = 0.1 steps ≈ 2× beyond "
            "s_opt, the exact line search on the direction batch performs poorly, "
            "s_opt/‖g‖ ≈ 0.05. Ours (share of the optimum's accumulated improvement): "
            f"FBPAL {share('fbpal')}, "
            + (f"SGD λ = {lam_name[len('sgd_lambda_') :]} {share(lam_name)}, " if lam_name else "")
            + f"constant λ* out-of-sample {share('lambda_star_out')} (in-sample "
            f"{share('lambda_star_in')}), "
            f"PAL {share('pal')}, direction batch {share('exact_batch')}, SGD as trained "
            f"{share('sgd')}; λ* = {_f(lam.get('median'))}; SGD's step is "
            f"{_f(_overshoot(d))}× s_opt (median).",
            lambda: plot_strategies(
                run.strategies,
                run.derivatives,
                momentum=run.momentum,
                mode=mode,
                mu=mu,
                bands=_bands(run),
            ),
        )
    )
    bs = s.get("batch_size", {})
    if not run.batch_size.empty and bs.get("reference_batch_size"):
        ratios = bs.get("delta_ratio", {})
        ratio_txt = ", ".join(
            f"bs {k}: {_f(v.get('median_ratio'))} (exp. {_f(v.get('expected_ratio'))})"
            for k, v in ratios.items()
            if k != "full"
        )
        figs.append(
            _Fig(
                "batch_size",
                "Figs. 7/19/20 — batch size",
                "Accumulated improvement of SGD (original) and PAL with simulated direction "
                "batches of each size, against the optimum; |δ| per batch size; the ratio "
                f"δ_bs/δ_{bs['reference_batch_size']} against the expected "
                f"{bs['reference_batch_size']}/bs (dashed). Paper (ResNet-20): SGD suffers more "
                "than PAL at small bs, bs 512 is almost optimal, the ratio equals 128/bs for bs "
                "32…256 throughout and is lower early for bs ≥ 512. Ours (median ratio): "
                f"{ratio_txt}.",
                lambda: plot_batch_size(
                    run.batch_size,
                    reference_batch_size=int(bs["reference_batch_size"]),
                    mode=mode,
                    lr=run.lr,
                    mu=mu,
                ),
            )
        )
    if run.momentum > 0:
        for f in figs:
            if f.name == "strategies":
                f.caption += (
                    " For β > 0 (Fig. 9) the ratio divides by the accumulated directional "
                    "derivative D_t (SPEC §6.9); dashed grey: s_opt/‖m_t‖."
                )
    return figs


_EST_ROWS: tuple[tuple[str, str, str, bool], ...] = (
    (
        "Cockpit α",
        "α from a least-squares parabola through l_B(0), l_B(s_u) and the direction-batch "
        "slopes at 0 and s_u (same batch; Schneider et al. 2021) against α_true = "
        "s_u/s_opt − 1 of the measured full-batch line",
        "alpha_error",
        True,
    ),
    (
        "LABPAL-style parabola",
        "PAL's parabola (l(0), l(µ), slope at 0) of the mean of {labpal} mini-batches: its "
        "step against s_opt",
        "labpal_step_ratio",
        False,
    ),
    (
        "LABPAL-style curvature",
        "its a against a of the degree-2 fit of the full-batch line",
        "labpal_a_rel_error",
        False,
    ),
    (
        "Armijo backtracking (SLS)",
        "first step with l_B(s) ≤ l_B(0) + c·s·g·d on the measured direction-batch line "
        "(c = {c:g}, β = {beta:g}, SLS's reset γ = {gamma:g}; Vaswani et al. 2019) against s_opt",
        "armijo_step_ratio",
        False,
    ),
    (
        "directional curvature",
        "dᵀH_B d by a Hessian-vector product at θ_t against 2a of the full-batch degree-2 fit",
        "curvature_rel_error",
        True,
    ),
)


def _estimator_section(run: RunData) -> dict[str, Any]:
    """Numbers of the section "Cheap estimators against the measured line" (never fails)."""
    intro = (
        "What a practitioner could have estimated cheaply during training, set against the "
        "measured full-batch line of each step (formulas and variants: docs/analysis.md). "
        "Errors: α as a difference, steps as ratios to s_opt (1 = exact), curvatures as "
        "relative errors (0 = exact)."
    )
    est = run.summary.get("estimators")
    if not est:
        return {
            "intro": intro,
            "note": "Not analysed: these tables predate the estimator analysis; run "
            "'steplines analyze RUN' with the line store present.",
            "rows": [],
            "figure": None,
        }
    measured = bool(est.get("measured"))
    errors = est.get("errors", {})
    arm = est.get("armijo", {})
    rows = []
    for name, what, col, needs_inputs in _EST_ROWS:
        q = errors.get(col, {})
        if needs_inputs and not measured:
            error, n = "not measured", "0"
        else:
            error = f"{_f(q.get('median'))} [{_f(q.get('q25'))}, {_f(q.get('q75'))}]"
            n = str(q.get("n", 0))
        what = what.format(
            labpal=est.get("labpal_batches", "?"),
            c=float(arm.get("c", 0.1)),
            beta=float(arm.get("beta", 0.9)),
            gamma=float(arm.get("gamma", 2.0)),
        )
        rows.append({"name": name, "what": what, "error": error, "n": n})
    bs = est.get("b_simple", {})
    b = est.get("batch_size")
    if est.get("noise_scale_measured"):
        naive = est.get("b_simple_naive", {})
        b_err = (
            f"{_f(bs.get('median'))} [{_f(bs.get('q25'))}, {_f(bs.get('q75'))}] "
            f"(plug-in tr Σ/|G_B|²: {_f(naive.get('median'))})"
        )
        b_n = str(bs.get("n", 0))
    else:
        b_err, b_n = "not measured", "0"
    rows.append(
        {
            "name": "gradient noise scale B_simple",
            "what": "tr Σ/|G|² from per-sample gradients of the direction batch (McCandlish et "
            f"al. 2018), a value, not an error; the run's batch size is {b}: next to the "
            "batch-size table above",
            "error": b_err,
            "n": b_n,
        }
    )
    note = ""
    if not measured:
        note = (
            "Not measured: this line store has no estimator inputs (made with store schema "
            "version 1 or with measure.estimators = false), so Cockpit α, dᵀHd and B_simple "
            "are not available; the LABPAL-style parabola and the Armijo step need only the "
            "stored line and are shown."
        )
    return {"intro": intro, "note": note, "rows": rows, "figure": None, "measured": measured}


def _num(x: Any) -> float | None:
    """A finite float, else None (records are read from a file a user may have edited)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _worst(records: list[dict[str, Any]], key: str) -> str:
    values = [v for r in records if (v := _num(r.get(key))) is not None]
    return _f(max(values)) if values else "—"


def read_precision_checks(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of ``RUN/precision_checks.jsonl`` and the number of unreadable lines."""
    try:
        text = (Path(run_dir) / PRECISION_CHECKS).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return [], 0
    records, bad = [], 0
    for line in filter(None, (ln.strip() for ln in text.splitlines())):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def _precision_section(run: RunData) -> dict[str, Any] | None:
    """The paragraph "Measurement precision" (never fails); None for a plain fp32 run.

    Per precision: the checks of ``RUN/precision_checks.jsonl`` (a line measured again in
    fp32) and the worst of each error over them: per-sample max |Δℓ|, full-batch max |ΔL| and
    the shift of the full-batch minimum |Δs_min|.
    """
    precision = str((run.config.get("measure") or {}).get("precision", "fp32"))
    records, bad = read_precision_checks(run.path)
    if not records and not bad and precision == "fp32":
        return None
    every = (run.config.get("measure") or {}).get("precision_check_every", "?")
    intro = (
        f"The lines were measured in {precision} (measure.precision; fp32 is the default and "
        f"the oracle). The first line of each measuring process, then one in every {every} "
        "lines, was measured again in fp32 on the same positions and batches; worst differences "
        f"over these checks ({PRECISION_CHECKS}): per-sample losses, full-batch (mean "
        "training) loss, and the position of the full-batch minimum on the grid."
    )
    rows = []
    for p in sorted({str(r.get("precision", "?")) for r in records}):
        mine = [r for r in records if str(r.get("precision", "?")) == p]
        rows.append(
            {
                "precision": p,
                "checks": str(len(mine)),
                "per_sample": _worst(mine, "per_sample_max"),
                "full_batch": _worst(mine, "full_batch_max"),
                "s_min": _worst(mine, "s_min_diff"),
            }
        )
    note = ""
    if not records:
        note = f"No precision check is recorded ({PRECISION_CHECKS} is missing or empty)."
    if bad:
        note = f"{bad} line(s) of {PRECISION_CHECKS} could not be read and are left out. {note}"
    return {"intro": intro, "rows": rows, "note": note.strip()}


def _estimator_figure(run: RunData) -> _Fig | None:
    if run.estimators is None or run.estimators.empty:
        return None
    b = (run.summary.get("estimators") or {}).get("batch_size")
    return _Fig(
        "estimators",
        "Cheap estimators against the measured line",
        "Top: each estimator's error at every line (grey), its rolling median and 25–75 % "
        "band; dashed: no error (B_simple: the run's batch size). Bottom: distribution over "
        "all lines (red: median). Panels without data say 'not measured'.",
        lambda: plot_estimators(run.estimators, batch_size=b),
    )


def _draw_all(
    figs: Sequence[_Fig],
    fig_dir: Path,
    page_dir: Path,
    banners: list[dict[str, str]],
    formats: Sequence[str] = ("png", "pdf"),
) -> list[dict[str, str]]:
    formats = ("png", *[f for f in formats if f != "png"])
    out = []
    for f in figs:
        try:
            fig = f.draw()
            paths = save_figure(fig, fig_dir, f.name, formats)
        except SteplinesError as exc:
            banners.append(_banner(f"{f.title} not drawn: {exc}"))
            continue
        except Exception as exc:  # a figure must never break the page
            banners.append(_banner(f"{f.title} not drawn ({type(exc).__name__}: {exc})."))
            continue
        out.append(
            {
                "name": f.name,
                "title": f.title,
                "caption": f.caption,
                "src": _rel(paths["png"], page_dir),
                "pdf": _rel(paths["pdf"], page_dir) if "pdf" in paths else "",
            }
        )
    return out


def _problem_label(config: dict[str, Any]) -> str:
    """``data / model`` of a run; a LineProbe run names the user's model and optimizer."""
    if probe := config.get("probe"):
        opt = f" ({probe['optimizer']})" if probe.get("optimizer") else ""
        return f"{probe.get('data', '?')} / {probe.get('model', '?')}{opt}"
    prob = config.get("problem", {})
    if prob.get("factory"):
        return f"{prob['factory']}"
    return f"{prob.get('dataset', '?')} / {prob.get('model', '?')}"


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


# ------------------------------------------------------------------------------ pages


def _meta(run: RunData) -> list[tuple[str, list[tuple[str, str]]]]:
    c, p = run.config, run.provenance
    prob, train, meas = c.get("problem", {}), c.get("train", {}), c.get("measure", {})

    def rows(table: dict[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
        return [(k, str(table[k])) for k in keys if k in table]

    out = []
    if prob:
        keys = ("dataset", "model", "factory", "train_size", "val_size", "batch_size")
        out.append(("problem", rows(prob, keys)))
    if probe := c.get("probe"):
        out.append(
            ("your own loop (LineProbe)", rows(probe, ("model", "optimizer", "schedule", "data")))
        )
    if train:
        out.append(
            (
                "training",
                rows(train, ("optimizer", "lr", "momentum", "weight_decay", "steps", "seed")),
            )
        )
    if meas:
        out.append(
            (
                "measurement",
                rows(
                    meas,
                    (
                        "grid",
                        "interval",
                        "resolution",
                        "full_batch",
                        "batchnorm",
                        "dtype",
                        "precision",
                    ),
                ),
            )
        )
    if p:
        pk = p.get("packages", {})
        dev = p.get("device", {})
        out.append(
            (
                "provenance",
                [
                    ("steplines", str(p.get("steplines", "—"))),
                    ("git commit", str(p.get("git_commit", "—"))[:12]),
                    ("device", ", ".join(f"{k}: {v}" for k, v in dev.items()) or "—"),
                    ("torch", str(pk.get("torch", "—"))),
                    ("python", str(p.get("python", "—"))),
                    ("store schema", str(p.get("schema_version", "—"))),
                ],
            )
        )
    s = run.summary
    out.append(
        (
            "analysis",
            [
                ("mode / scale", f"{s.get('mode')} / {s.get('scale', 'paper')}"),
                ("lines", f"{s.get('lines_used')} of {s.get('lines_total')}"),
                ("optimizer", str(s.get("optimizer", "sgd"))),
                ("β (SGD momentum)", f"{s.get('momentum')} ({s.get('momentum_source')})"),
                ("window", f"±{_f(s.get('window'))}"),
                (
                    "SGD λ / PAL µ",
                    f"{', '.join(_f(x) for x in s.get('lambdas') or []) or '—'} / "
                    f"{_f(s.get('mu'))}",
                ),
                (
                    "full batch rows",
                    f"{s.get('full_batch_rows_metrics')} (metrics), "
                    f"{s.get('full_batch_rows_shape')} (shape)",
                ),
            ],
        )
    )
    return out


def _env() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("steplines")
    except Exception:  # pragma: no cover - not installed
        return "?"


def build_run_report(
    run: RunData, out: Path, mode: str, formats: Sequence[str] = ("png", "pdf")
) -> Path:
    """Draw the figures of ``run`` into ``RUN/figures/`` and write its page to ``out``.

    Args:
        run: The loaded run (:func:`load_run`).
        out: The HTML file.
        mode: Analysis mode (figure smoothing follows it).
        formats: Figure files to write; PNG is always written (the page shows it).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    banners = list(run.banners)
    figures = _draw_all(_figures(run, mode), run.figures, out.parent, banners, formats)
    est = _estimator_section(run)
    est_fig = _estimator_figure(run)
    if est_fig is not None:
        drawn = _draw_all([est_fig], run.figures, out.parent, banners, formats)
        est["figure"] = drawn[0] if drawn else None
    title, _ = paper_values(match_preset(run.config))
    paper_note = (
        "Paper column: SPEC §7; the supplementary numbers were read off the paper's plots "
        "(≈). The paper's runs have 10 000 lines; runs of another length are not directly "
        "comparable."
        if title
        else "This run matches none of the paper's settings (CIFAR-10 with ResNet-20, "
        "ResNet-18 or MobileNetV2, β 0 or 0.9), so there is no paper column; the figure "
        "captions quote the paper's ResNet-20 findings for orientation."
    )
    bs_header, bs_rows = _bs_table(run)
    html = (
        _env()
        .from_string(RUN_TEMPLATE)
        .render(
            name=run.name,
            mode=run.summary.get("mode", mode),
            lines_used=run.summary.get("lines_used"),
            lines_total=run.summary.get("lines_total"),
            banners=banners,
            meta=_meta(run),
            core=core_results(run),
            claims=claim_rows(run),
            settings_line=_settings_line(run),
            **_interval_note(run),
            paper_title=title,
            paper_note=paper_note,
            bs_strategies=bs_header,
            bs_table=bs_rows,
            bs_note=_noise_scale_note(run),
            figures=figures,
            est=est,
            precision=_precision_section(run),
            version=_version(),
        )
    )
    out.write_text(html, encoding="utf-8")
    return out


def _l0(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    d = run.derivatives.sort_values("line")
    return d.line.to_numpy(), d.l0.to_numpy(float)


def _compare_page(
    runs: Sequence[RunData],
    pages: Sequence[Path],
    out: Path,
    mode: str,
    formats: Sequence[str] = ("png", "pdf"),
) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    header = [
        "run",
        "dataset / model",
        "λ",
        "β",
        "lines",
        "final l(0)",
        "fit MAE deg 1 / 2",
        "later-line distance",
        "λ* [IQR]",
        "SGD / SGD λ / PAL / FBPAL (share of optimum)",
    ]
    rows = []
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for run, page in zip(runs, pages):
        s = run.summary
        fits, lam, st = s.get("fits", {}), s.get("lambda_star", {}), s.get("strategies", {})
        lam_name = next((n for n in st if n.startswith("sgd_lambda") and "accum" not in n), "")
        lines, l0 = _l0(run)
        rows.append(
            {
                "name": run.name,
                "href": _rel(page, out.parent),
                "cells": [
                    _problem_label(run.config),
                    _f(run.lr),
                    _f(run.momentum),
                    f"{s.get('lines_used')} / {s.get('lines_total')}",
                    _f(l0[-1]) if l0.size else "—",
                    f"{_f(fits.get('mean_mae_degree_1'))} / {_f(fits.get('mean_mae_degree_2'))}",
                    _f(s.get("distances", {}).get("later_median")),
                    f"{_f(lam.get('median'))} [{_f(lam.get('q25'))}–{_f(lam.get('q75'))}]",
                    " / ".join(
                        _pct(st.get(n, {}).get("share_of_optimum"))
                        for n in ("sgd", lam_name, "pal", "fbpal")
                    ),
                ],
            }
        )
        label = f"{run.name} (λ = {_f(run.lr)}, β = {_f(run.momentum)})"
        labels[label if label not in labels else f"{label} [{len(labels)}]"] = (lines, l0)
    banners = [
        {"text": f"{r.name}: {b['text']}"} for r in runs for b in r.banners if b["level"] == "error"
    ]
    fig = _Fig(
        "compare",
        "Fig. 10 — runs compared",
        "Full-batch training loss l(0) over lines for every run (faint: per line; solid: moving "
        "average over 25 lines). Paper (Fig. 10): a step larger than the locally optimal one "
        "(λ = 0.1 vs ≈ 0.05) can perform better globally.",
        lambda: plot_compare(labels),
    )
    extra: list[dict[str, str]] = []
    stem = out.stem
    figs = _draw_all(
        [_Fig(f"{stem}_l0", fig.title, fig.caption, fig.draw)],
        out.parent / "figures",
        out.parent,
        extra,
        formats,
    )
    html = (
        _env()
        .from_string(COMPARE_TEMPLATE)
        .render(
            runs=rows,
            header=header,
            mode=mode,
            banners=banners + extra,
            figures=figs,
        )
    )
    out.write_text(html, encoding="utf-8")
    return out


def _page(run: RunData) -> Path:
    """``RUN/report.html`` for the default analysis, else beside its tables."""
    if run.tables is None or run.tables.name == "analysis":
        return run.path / "report.html"
    return run.tables / "report.html"


def build_report(
    run_dirs: Sequence[Path],
    out: Path | None = None,
    mode: str = "corrected",
    *,
    formats: Sequence[str] = ("png", "pdf"),
    **options: Any,
) -> Path:
    """Analyse (when needed), draw every figure and write the HTML report.

    Args:
        run_dirs: One or more run directories. Each gets ``RUN/figures/`` and
            ``RUN/report.html``.
        out: The page to return. One run: where its report goes (default
            ``RUN/report.html``). Several runs: the comparison page (default
            ``RUN_A/compare.html``, in the first run's directory); each run's own report
            stays at ``RUN/report.html``.
        mode: Analysis mode, ``corrected`` (default) or ``faithful``. Tables made in the other
            mode, missing, or older than the line store are recomputed.
        formats: Figure files written to ``RUN/figures/`` (PNG always: the page shows it).
        options: ``scale``, ``window``, ``lambdas``, ``mu`` (:func:`load_run`). Any analysis
            but the run's default keeps its tables, figures and (default) page in
            ``RUN/analysis-<tag>/``, so it never replaces the default report.

    Returns:
        The path of the HTML page (the run's report, or the comparison page).

    Raises:
        RunDirError: A run directory is missing, has no measured line, or has another
            store schema version (one-line message).
        ConfigError: Unknown ``mode``.
    """
    check_mode(mode)
    dirs = [Path(p) for p in run_dirs]
    if not dirs:
        raise RunDirError("no run directory given; pass at least one RUN")
    runs = [load_run(p, mode, **options) for p in dirs]
    if len(runs) == 1:
        target = Path(out) if out is not None else _page(runs[0])
        return build_run_report(runs[0], target, mode, formats)
    pages = [build_run_report(run, _page(run), mode, formats) for run in runs]
    target = Path(out) if out is not None else dirs[0] / "compare.html"
    return _compare_page(runs, pages, target, mode, formats)
