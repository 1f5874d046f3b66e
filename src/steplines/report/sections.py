"""The numbers and the text of a run's page, section by section, from :class:`RunData` alone:
the core results beside the paper's numbers, the claims, the settings line, the interval
notes, the batch-size table, the estimator and precision sections and "what was run".

Every function returns plain strings, rows or dicts for the templates (and the CLI's text);
none draws, writes or analyses. This module never imports torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from steplines.analysis.claims import family_note
from steplines.analysis.settings import match_preset
from steplines.plotting import STRATEGY_ORDER, strategy_label
from steplines.report.data import RunData
from steplines.report.numbers import fmt, overshoot, pct, span
from steplines.report.paper import paper_values
from steplines.report.pooled import claim_row, min_units_note
from steplines.store.run import PRECISION_CHECKS, RunLayout

if TYPE_CHECKING:
    from steplines.config import RunConfig

__all__ = [
    "SCOPE_NOTE",
    "bs_table",
    "claim_rows",
    "claims_note",
    "claims_text",
    "core_results",
    "estimator_section",
    "interval_note",
    "meta",
    "noise_scale_note",
    "paper_note",
    "precision_section",
    "problem_label",
    "read_precision_checks",
    "settings_line",
]

# ------------------------------------------------------------------------------ core results


def core_results(run: RunData) -> list[dict[str, str]]:
    """The rows of the core-results table: ``key``, ``quantity``, ``ours``, ``paper``.

    Numbers come from ``summary.json`` (plus the SGD overshoot and the fit maxima from
    ``derivatives.csv``/``fits.csv``). ``paper`` is filled for runs matching a paper preset.
    """
    s = run.summary
    _, paper = paper_values(match_preset(run.config))
    rows = [
        _row(
            "lines",
            "lines analysed (measured / total)",
            f"{s.get('lines_used')} / {s.get('lines_total')}",
        ),
        *_fit_rows(run),
        *_distance_rows(s),
        *_lambda_rows(s),
        *_rate_rows(run),
        *_strategy_rows(run),
        *_delta_ratio_rows(s),
    ]
    out = [
        {"key": key, "quantity": quantity, "ours": ours, "paper": paper.get(paper_key or key, "")}
        for key, quantity, ours, paper_key in rows
    ]
    # the paper's text for a group is shown once, on its first row
    seen: set[str] = set()
    for row in out:
        if row["paper"] and row["paper"] in seen:
            row["paper"] = "(as above)"
        seen.add(row["paper"])
    return out


_Row = tuple[str, str, str, "str | None"]
"""``(key, quantity, ours, paper key)`` of a core-results row (paper key None: ``key``)."""


def _row(key: str, quantity: str, ours: str, paper_key: str | None = None) -> _Row:
    return (key, quantity, ours, paper_key)


def _max_mae(fits: pd.DataFrame, degree: int) -> float | None:
    v = fits.loc[fits.degree == degree, "mae"].to_numpy(float)
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else None


def _fit_rows(run: RunData) -> list[_Row]:
    fits = run.summary.get("fits", {})
    over = fits.get("lines", "all lines")
    rows = [
        _row(
            f"fit_{deg}",
            f"MAE of the degree-{deg} fit on ±{fmt(fits.get('window'))}, mean over {over} (max)",
            f"{fmt(fits.get(f'mean_mae_degree_{deg}'))} ({fmt(_max_mae(run.fits, deg))})",
        )
        for deg in (1, 2)
    ]
    m1, m2 = fits.get("mean_mae_degree_1"), fits.get("mean_mae_degree_2")
    if m1 and m2:
        rows.append(_row("fit_ratio", "degree-1 / degree-2 mean MAE", f"{fmt(m1 / m2)}×"))
    return rows


def _distance_rows(s: dict[str, Any]) -> list[_Row]:
    dist = s.get("distances", {})
    later_idx = dist.get("later_from_line_index")
    return [
        _row(
            "dist_first",
            "median distance between the first lines (MAE)",
            fmt(dist.get("first_median")),
        ),
        _row(
            "dist_later",
            f"median distance between later lines (from the {_ordinal(later_idx)} line on) (max)",
            f"{fmt(dist.get('later_median'))} ({fmt(dist.get('later_max'))})",
        ),
        _row(
            "dist_consecutive",
            "median distance of consecutive lines: all / later",
            f"{fmt(dist.get('consecutive_median'))} / {fmt(dist.get('consecutive_median_later'))}",
        ),
    ]


def _lambda_rows(s: dict[str, Any]) -> list[_Row]:
    lam = s.get("lambda_star", {})
    rows = [
        _row(
            "lambda_star",
            "λ* = median s_opt/‖g_t‖ [IQR]; first → second half median (slope per line)",
            f"{fmt(lam.get('median'))} [{fmt(lam.get('q25'))}–{fmt(lam.get('q75'))}]; "
            f"{fmt(lam.get('first_half_median'))} → {fmt(lam.get('second_half_median'))} "
            f"({fmt(lam.get('slope_per_line'), 2)})",
        )
    ]
    ratios = s.get("ratios", {})
    if "s_opt_over_minus_accumulated_delta" in ratios:
        acc = ratios["s_opt_over_minus_accumulated_delta"]
        upd = ratios.get("s_opt_over_direction_norm", {})
        rows.append(
            _row(
                "lambda_star_momentum",
                "β > 0: median s_opt/(−D_t) [IQR]; median s_opt/‖m_t‖; flatter reading",
                f"{fmt(acc.get('median'))} [{fmt(acc.get('q25'))}–{fmt(acc.get('q75'))}]; "
                f"{fmt(upd.get('median'))}; {s.get('momentum_ratio_flatter') or '—'}",
            )
        )
    if reading := s.get("momentum_sgd_lambda_over_sgd_step"):
        rows.append(
            _row(
                "sgd_lambda_reading",
                "β > 0: median SGD λ step / SGD original step, −λ·δ_B vs −λ·D_t",
                "; ".join(f"{strategy_label(k)}: {fmt(v)}" for k, v in reading.items()),
            )
        )
    return rows


def _rate_rows(run: RunData) -> list[_Row]:
    rows = []
    if rates := run.summary.get("rates") or {}:
        rows.append(
            _row(
                "rates",
                "learning rate: as trained; λ* in-sample; λ* out-of-sample at the last line",
                f"{fmt(rates.get('trained'))}; {fmt(rates.get('lambda_star_in'))}"
                f"{span(rates, 'lambda_star_in')}; {fmt(rates.get('lambda_star_out_last'))}",
                "lambda_star",
            )
        )
    rows.append(
        _row(
            "sgd_overshoot",
            f"step as trained / s_opt (median; λ = {fmt(run.lr)})",
            f"{fmt(overshoot(run.derivatives))}×",
        )
    )
    return rows


def _strategy_rows(run: RunData) -> list[_Row]:
    s = run.summary
    rates = s.get("rates") or {}
    opt = s.get("strategies", {}).get("optimal", {})
    rows = []
    for name, st in _ordered(s.get("strategies", {})):
        key = "strategy:sgd_lambda" if name.startswith("sgd_lambda") else f"strategy:{name}"
        ours = (
            f"{fmt(st.get('accumulated_improvement'))}{span(st, 'accumulated_improvement')} "
            f"({pct(st.get('share_of_optimum'))}{span(st, 'share_of_optimum', pct)}); "
            f"Σ|distance| {fmt(st.get('accumulated_abs_distance'))}"
        )
        label = strategy_label(name, run.lr, s.get("mu", 0.1), rates.get("lambda_star_in"))
        rows.append(
            _row(
                f"strategy:{name}",
                f"accumulated improvement of {label} (share of the optimum's)",
                ours if name != "optimal" else f"{fmt(opt.get('accumulated_improvement'))} (100 %)",
                key,
            )
        )
    return rows


def _delta_ratio_rows(s: dict[str, Any]) -> list[_Row]:
    bs = s.get("batch_size", {})
    ref = bs.get("reference_batch_size")
    rows = []
    for key, r in bs.get("delta_ratio", {}).items():
        label = f"bs {key}" if key != "full" else f"full batch ({r.get('batch_size')} rows)"
        rows.append(
            _row(
                f"delta_ratio:{key}",
                f"δ ratio {label} / bs {ref}: median (expected {ref}/bs)",
                f"{fmt(r.get('median_ratio'))} ({fmt(r.get('expected_ratio'))})",
                "delta_ratio",
            )
        )
    return rows


def _ordinal(i: Any) -> str:
    if i is None:
        return "?"
    n = int(i) + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _ordered(strategies: dict[str, Any]) -> list[tuple[str, Any]]:
    def key(item: tuple[str, Any]) -> tuple[int, str]:
        base = "sgd_lambda" if item[0].startswith("sgd_lambda") else item[0]
        return (STRATEGY_ORDER.index(base) if base in STRATEGY_ORDER else 99, item[0])

    return sorted(strategies.items(), key=key)


def paper_note(title: str) -> str:
    """The note under the core results: where the paper column comes from, or why it is
    empty (``title``: the paper setting the run matches, ``""`` for none)."""
    if title:
        return (
            "Paper column: docs/method.md §7; the supplementary numbers were read off the "
            "paper's plots "
            "(≈). The paper's runs have 10 000 lines; runs of another length are not directly "
            "comparable."
        )
    return (
        "This run matches none of the paper's settings (CIFAR-10 with ResNet-20, "
        "ResNet-18 or MobileNetV2, β 0 or 0.9), so there is no paper column; the figure "
        "captions quote the paper's ResNet-20 findings for orientation."
    )


# ------------------------------------------------------------------------------ claims


def claim_rows(run: RunData) -> list[dict[str, str]]:
    """Rows of the "Claims" table: each claim of the paper with this run's verdict
    (:func:`~steplines.report.pooled.claim_row` of each record of ``claims.json``)."""
    return [claim_row(c) for c in run.claims]


def claims_note(run: RunData) -> str:
    """How many claims were judged at which level (the family), and the minimum units."""
    if not run.claims:
        return ""
    family = str(run.summary.get("claims_family") or "none")
    level = float((run.summary.get("bootstrap") or {}).get("level") or 0.95)
    return f"{family_note(run.claims, family, level)} {min_units_note()}"


def claims_text(run: RunData) -> str:
    """The claims as aligned plain text (``steplines analyze`` prints it)."""
    rows = claim_rows(run)
    if not rows:
        return "claims: not analysed (rerun 'steplines analyze RUN')"
    width = max(len(r["key"]) for r in rows)
    lines = ["claims of the paper (verdict: value [interval] vs threshold; reason):"]
    for r in rows:
        why = "" if r["reason"].startswith("the interval") else f"; {r['reason']}"
        if r["verdict"] == "not applicable":
            lines.append(f"  {r['key'].ljust(width)}  {'NOT APPLICABLE':<14}  {r['reason']}")
            continue
        lines.append(
            f"  {r['key'].ljust(width)}  {r['verdict'].upper():<14}  {r['value']} vs "
            f"{r['threshold']}{why}"
        )
    lines.append(claims_note(run))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ notes


SCOPE_NOTE = (
    "These intervals cover the sampling of each line's full batch only; a claim's interval "
    "also resamples blocks of lines (how the lines vary over training), so a share of the "
    "optimum shown in both places (e.g. λ* out-of-sample here, constant_rate_out in the "
    "claims) has one value and a wider interval in the claims."
)
"""Why a quantity of the core results and of the claims has one value and two intervals."""


def interval_note(run: RunData) -> dict[str, str]:
    """``level`` and ``row_note`` of the page's interval notes (from ``summary.bootstrap``)."""
    b = run.summary.get("bootstrap") or {}
    level = f"{100 * float(b.get('level') or 0.95):g} %"
    rows = b.get("row_resamples")
    full = run.config.measure.full_batch if run.config is not None else "epoch"
    if full.startswith("sample:"):
        level += f"; the full batch of every line is a fresh sample of {full[7:]} training rows"
    if rows is None:
        return {"level": level, "row_note": "not computed: these tables predate it"}
    if not rows:
        return {"level": level, "row_note": "switched off: --resamples 0"}
    return {
        "level": level,
        "row_note": f"{rows} resamples of the {b.get('full_batch_rows')} rows per line",
    }


def settings_line(run: RunData) -> str:
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
            f"s_typ = median |s_opt| = {fmt(st.get('typical_step'))} (w = 2·s_typ, µ = s_typ), "
            "and SGD is compared at the run's own λ* (in- and out-of-sample)"
        )
    else:
        how = "paper scale: the constants of the paper's ResNet-20 run"
    given = st.get("overrides") or []
    lams = ", ".join(fmt(x) for x in s.get("lambdas") or [])
    return (
        f"{how}; window ±{fmt(s.get('window'))}, µ = {fmt(s.get('mu'))}"
        + (f", SGD λ = {lams}" if lams else "")
        + f"; optimizer {name}"
        + (f" (β = {fmt(opt.get('momentum'))})" if opt.get("momentum") else "")
        + (f"; set by you: {', '.join(given)}" if given else "")
        + "."
    )


# ------------------------------------------------------------------------------ batch size


def noise_scale_note(run: RunData) -> str:
    """One line on B_simple beside the batch-size table ('' when it was not measured)."""
    est = run.summary.get("estimators") or {}
    if not est.get("noise_scale_measured"):
        return ""
    bs = est.get("b_simple", {})
    return (
        f"Gradient noise scale B_simple = tr Σ/|G|² of the direction batch (McCandlish et al. "
        f"2018; per-sample gradients on {bs.get('n', 0)} lines): median {fmt(bs.get('median'))} "
        f"[{fmt(bs.get('q25'))}, {fmt(bs.get('q75'))}], against the run's batch size "
        f"{est.get('batch_size')}; McCandlish et al. expect little gain from batches much "
        "larger than B_simple. Over training: the estimators section below."
    )


def bs_table(run: RunData) -> tuple[list[str], list[list[str]]]:
    """The batch-size table: its header (one column per strategy) and one row per size."""
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
                f"{fmt(v.get('accumulated_improvement'))} ({pct(v.get('share_of_optimum'))})"
            )
        rows.append(cells)
    return header, rows


# ------------------------------------------------------------------------------ estimators

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

_EST_INTRO = (
    "What a practitioner could have estimated cheaply during training, set against the "
    "measured full-batch line of each step (formulas and variants: docs/analysis.md). "
    "Errors: α as a difference, steps as ratios to s_opt (1 = exact), curvatures as "
    "relative errors (0 = exact)."
)


def estimator_section(run: RunData) -> dict[str, Any]:
    """Numbers of the section "Cheap estimators against the measured line" (never fails);
    its ``figure`` is None (the page puts the drawn figure there)."""
    est = run.summary.get("estimators")
    if not est:
        return {
            "intro": _EST_INTRO,
            "note": "Not analysed: these tables predate the estimator analysis; run "
            "'steplines analyze RUN' with the line store present.",
            "rows": [],
            "figure": None,
        }
    measured = bool(est.get("measured"))
    rows = [*_estimator_rows(est, measured), _noise_scale_row(est)]
    note = ""
    if not measured:
        note = (
            "Not measured: this line store has no estimator inputs (made with store schema "
            "version 1 or with measure.estimators = false), so Cockpit α, dᵀHd and B_simple "
            "are not available; the LABPAL-style parabola and the Armijo step need only the "
            "stored line and are shown."
        )
    return {"intro": _EST_INTRO, "note": note, "rows": rows, "figure": None, "measured": measured}


def _estimator_rows(est: dict[str, Any], measured: bool) -> list[dict[str, str]]:
    """One row per estimator of :data:`_EST_ROWS`: its error's median [IQR] over the lines."""
    errors = est.get("errors", {})
    arm = est.get("armijo", {})
    rows = []
    for name, what, col, needs_inputs in _EST_ROWS:
        q = errors.get(col, {})
        if needs_inputs and not measured:
            error, n = "not measured", "0"
        else:
            error = f"{fmt(q.get('median'))} [{fmt(q.get('q25'))}, {fmt(q.get('q75'))}]"
            n = str(q.get("n", 0))
        what = what.format(
            labpal=est.get("labpal_batches", "?"),
            c=float(arm.get("c", 0.1)),
            beta=float(arm.get("beta", 0.9)),
            gamma=float(arm.get("gamma", 2.0)),
        )
        rows.append({"name": name, "what": what, "error": error, "n": n})
    return rows


def _noise_scale_row(est: dict[str, Any]) -> dict[str, str]:
    """The row of B_simple: a value, not an error."""
    bs = est.get("b_simple", {})
    if est.get("noise_scale_measured"):
        naive = est.get("b_simple_naive", {})
        b_err = (
            f"{fmt(bs.get('median'))} [{fmt(bs.get('q25'))}, {fmt(bs.get('q75'))}] "
            f"(plug-in tr Σ/|G_B|²: {fmt(naive.get('median'))})"
        )
        b_n = str(bs.get("n", 0))
    else:
        b_err, b_n = "not measured", "0"
    return {
        "name": "gradient noise scale B_simple",
        "what": "tr Σ/|G|² from per-sample gradients of the direction batch (McCandlish et "
        f"al. 2018), a value, not an error; the run's batch size is {est.get('batch_size')}: "
        "next to the batch-size table above",
        "error": b_err,
        "n": b_n,
    }


# ------------------------------------------------------------------------------ precision


def _num(x: Any) -> float | None:
    """A finite float, else None (records are read from a file a user may have edited)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _worst(records: list[dict[str, Any]], key: str) -> str:
    values = [v for r in records if (v := _num(r.get(key))) is not None]
    return fmt(max(values)) if values else "—"


def read_precision_checks(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of ``RUN/precision_checks.jsonl`` and the number of unreadable lines."""
    try:
        text = RunLayout(run_dir).precision_checks_path.read_text(encoding="utf-8")
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


def precision_section(run: RunData) -> dict[str, Any] | None:
    """The paragraph "Measurement precision" (never fails); None for a plain fp32 run.

    Per precision: the checks of ``RUN/precision_checks.jsonl`` (a line measured again in
    fp32) and the worst of each error over them: per-sample max |Δℓ|, full-batch max |ΔL| and
    the shift of the full-batch minimum |Δs_min|.
    """
    measure = run.config.measure if run.config is not None else None
    precision = measure.precision if measure is not None else "fp32"
    records, bad = read_precision_checks(run.path)
    if not records and not bad and precision == "fp32":
        return None
    every = measure.precision_check_every if measure is not None else "?"
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


# ------------------------------------------------------------------------------ what was run

_Meta = list[tuple[str, list[tuple[str, str]]]]
"""Groups of ``(label, value)`` rows, each under a heading."""

_MEASURE_KEYS = ("grid", "interval", "resolution", "full_batch", "batchnorm", "dtype", "precision")


def problem_label(config: RunConfig | None) -> str:
    """``data / model`` of a run; a LineProbe run names the user's model and optimizer."""
    if config is None:
        return "? / ?"
    if probe := config.probe:
        opt = f" ({probe.optimizer})" if probe.optimizer else ""
        return f"{probe.data} / {probe.model}{opt}"
    if config.problem.factory:
        return config.problem.factory
    return f"{config.problem.dataset} / {config.problem.model}"


def meta(run: RunData) -> _Meta:
    """The "what was run" table: the configuration, the provenance and the analysis."""
    return [*_config_meta(run.config), *_provenance_meta(run.provenance), _analysis_meta(run)]


def _rows(table: dict[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    return [(k, str(table[k])) for k in keys if k in table]


def _config_meta(config: RunConfig | None) -> _Meta:
    """The problem, the user's loop, the training and the measurement, as ``config.toml``
    holds them (None values are not written)."""
    c = config.model_dump(mode="json", exclude_none=True) if config is not None else {}
    prob, train, meas = c.get("problem", {}), c.get("train", {}), c.get("measure", {})
    out = []
    if prob:
        keys = ("dataset", "model", "factory", "train_size", "val_size", "batch_size")
        out.append(("problem", _rows(prob, keys)))
    if probe := c.get("probe"):
        out.append(
            ("your own loop (LineProbe)", _rows(probe, ("model", "optimizer", "schedule", "data")))
        )
    if train:
        keys = ("optimizer", "lr", "momentum", "weight_decay", "steps", "seed")
        out.append(("training", _rows(train, keys)))
    if meas:
        out.append(("measurement", _rows(meas, _MEASURE_KEYS)))
    return out


def _provenance_meta(p: dict[str, Any]) -> _Meta:
    if not p:
        return []
    pk = p.get("packages", {})
    dev = p.get("device", {})
    rows = [
        ("steplines", str(p.get("steplines", "—"))),
        ("git commit", str(p.get("git_commit", "—"))[:12]),
        ("device", ", ".join(f"{k}: {v}" for k, v in dev.items()) or "—"),
        ("torch", str(pk.get("torch", "—"))),
        ("python", str(p.get("python", "—"))),
        ("store schema", str(p.get("schema_version", "—"))),
    ]
    return [("provenance", rows)]


def _analysis_meta(run: RunData) -> tuple[str, list[tuple[str, str]]]:
    s = run.summary
    lams = ", ".join(fmt(x) for x in s.get("lambdas") or []) or "—"
    rows = [
        ("mode / scale", f"{s.get('mode')} / {s.get('scale', 'paper')}"),
        ("lines", f"{s.get('lines_used')} of {s.get('lines_total')}"),
        ("optimizer", str(s.get("optimizer", "sgd"))),
        ("β (SGD momentum)", f"{s.get('momentum')} ({s.get('momentum_source')})"),
        ("window", f"±{fmt(s.get('window'))}"),
        ("SGD λ / PAL µ", f"{lams} / {fmt(s.get('mu'))}"),
        (
            "full batch rows",
            f"{s.get('full_batch_rows_metrics')} (metrics), "
            f"{s.get('full_batch_rows_shape')} (shape)",
        ),
    ]
    return ("analysis", rows)
