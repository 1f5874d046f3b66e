"""Write the claims of one setup measured with several seeds as a Markdown page (``docs/results/``).

    python docs/results/make_page.py POOLED OUT_DIR RUN1 RUN2 RUN3 [--title T] [--command C]

Reads the pooled claims (``POOLED/claims.json``, written by ``steplines analyze RUN1 RUN2 RUN3
--out POOLED``), each run's own analysis (``RUN/analysis/summary.json``, ``config.toml``,
``provenance.json``, ``live.jsonl``) and the first run's figures (``RUN1/figures/*.png``), and
writes ``OUT_DIR/README.md`` with the PNGs copied at most 900 px wide in 256 colours, so that the
page can live in the repository. Nothing is computed here and nothing is typed by hand: every
number and every sentence with a number comes from those files, in the report's number format
(3 significant digits).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from steplines.report.numbers import fmt, pct, read_json, span
from steplines.store.run import RunLayout

FIGURES = (
    ("training", "Training: loss and accuracy of the run (eval mode at the checkpoints)."),
    ("lines", "Fig. 1–2: the full-batch loss along lines of the run."),
    ("fits", "Fig. 4: polynomial fits of each line on ±w (degree-2 ≈ parabola)."),
    ("distances", "Fig. 3: how much consecutive and distant lines differ."),
    ("strategies", "Fig. 6: accumulated improvement of step-size strategies (with bands)."),
    ("batch_size", "Fig. 7: batch size against learning rate."),
    ("approximations", "Fig. 5: parabolic approximations of lines."),
    ("directions", "Fig. 8: lines along other mini-batches' directions from one θ_t."),
    ("estimators", "Step-size estimators against the measured optimum."),
)
MAX_WIDTH = 900


def small_png(src: Path, dst: Path) -> None:
    """Copy a PNG at most :data:`MAX_WIDTH` px wide, palette-quantised (256 colours)."""
    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > MAX_WIDTH:
            im = im.resize((MAX_WIDTH, round(im.height * MAX_WIDTH / im.width)), Image.LANCZOS)
        im.quantize(colors=256).save(dst, optimize=True)


def _cell(text: object) -> str:
    """Text for a Markdown table cell (a ``|`` would end the cell)."""
    return str(text).replace("|", "\\|")


def _value(c: dict) -> str:
    if c.get("value") is None:
        return "—"
    if c.get("low") is None:
        return fmt(c["value"])
    return f"{fmt(c['value'])} [{fmt(c['low'])}, {fmt(c['high'])}]"


def claims_table(claims: list[dict]) -> list[str]:
    """One row per claim: the paper's sentence, the pooled verdict and value, each seed's."""
    seeds = [r["run"] for r in claims[0]["per_run"]] if claims else []
    rows = [
        "| claim (the paper's words) | pooled verdict | value [interval] | holds if | "
        + " | ".join(seeds)
        + " | units |",
        "|---|---|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for c in claims:
        own = " | ".join(f"{r['verdict']}: {_value(r)}" for r in c["per_run"])
        rows.append(
            f"| **{c['key']}**: “{_cell(c['quote'])}” ({c['figure']}) | **{c['verdict']}** "
            f"| {_value(c)} | {_cell(c['threshold'])} | {_cell(own)} | {c['n']} {c['unit']} |"
        )
    return rows


def quantity_table(claims: list[dict]) -> list[str]:
    """The paper's own number beside each seed's value of the same quantity."""
    rows = ["| claim | quantity | the paper | each seed |", "|---|---|---|---|"]
    for c in claims:
        q = c.get("quantity")
        if not q:
            continue
        values = q["value"] if isinstance(q["value"], list) else [q["value"]]
        shown = ", ".join(fmt(v) for v in values)
        if q.get("noise_floor") is not None:
            floors = q["noise_floor"] if isinstance(q["noise_floor"], list) else [q["noise_floor"]]
            shown += f" (noise floor: {', '.join(fmt(v) for v in floors)})"
        rows.append(f"| {c['key']} | {_cell(q['name'])} | {_cell(q['paper'])} | {shown} |")
    return rows


def reading(claims: list[dict]) -> list[str]:
    """The verdicts grouped, each claim named once with its pooled value and reason."""
    out = []
    for verdict in ("holds", "does not hold", "inconclusive", "not applicable"):
        group = [c for c in claims if c["verdict"] == verdict]
        if not group:
            continue
        out += [f"**{verdict.capitalize()}** ({len(group)}):", ""]
        out += [f"- `{c['key']}` — {c['claim']} {_value(c)}: {c['reason']}." for c in group]
        out.append("")
    return out


def run_row(run: Path) -> str:
    """One seed: lines, training length in epochs, time per line, λ and λ*."""
    layout = RunLayout(run)
    summary = read_json(layout.analysis_dir() / "summary.json")
    cfg = layout.read_config()
    live = [json.loads(x) for x in layout.live_path.read_text().splitlines() if x.strip()]
    per_line = {r["t"]: r.get("seconds", 0.0) for r in live}
    seconds = sum(per_line.values())
    epochs = summary["lines_total"] * cfg.problem.batch_size / cfg.problem.train_size
    rates = summary.get("rates", {})
    return (
        f"| {run.name} | {cfg.train.seed} | {summary['lines_used']} | {epochs:.1f} "
        f"| {seconds / 60:.0f} min ({seconds / max(len(per_line), 1):.2f} s) "
        f"| {fmt(rates.get('trained'))} | {fmt(rates.get('lambda_star_in'))}"
        f"{span(rates, 'lambda_star_in')} |"
    )


def strategy_rows(summary: dict) -> list[str]:
    """Accumulated improvement and share of the optimum per strategy, with intervals."""
    rows = [
        "| strategy | accumulated improvement | share of the optimum | median step |",
        "|---|---|---|---|",
    ]
    for name, s in summary.get("strategies", {}).items():
        rows.append(
            f"| {name} | {fmt(s['accumulated_improvement'])}"
            f"{span(s, 'accumulated_improvement')} | {pct(s['share_of_optimum'])}"
            f"{span(s, 'share_of_optimum', pct)} | {fmt(s['median_step'])} |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pooled", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--title", default="Results")
    ap.add_argument("--command", action="append", default=[], help="command that made the runs")
    args = ap.parse_args()
    out, runs = args.out, args.runs
    claims = json.loads((args.pooled / "claims.json").read_text())
    first = RunLayout(runs[0])
    cfg = first.read_config()
    summary = read_json(first.analysis_dir() / "summary.json")
    settings = summary.get("settings", {})
    prov = read_json(first.provenance_path)
    out.mkdir(parents=True, exist_ok=True)
    level = claims[0]["level"] if claims else 0.95
    lines = [
        f"# {args.title}",
        "",
        "Made with these commands (the runs, the pooled analysis, then this page):",
        "",
        "```sh",
        *args.command,
        f"python docs/results/make_page.py {args.pooled} {out} {' '.join(map(str, runs))}",
        "```",
        "",
        f"- **Setup:** data set {cfg.problem.dataset}, model {cfg.problem.model}, "
        f"{cfg.problem.train_size} training / {cfg.problem.val_size} validation images, batch "
        f"{cfg.problem.batch_size}, {cfg.train.optimizer} λ = {cfg.train.lr}, full batch "
        f"`{cfg.measure.full_batch}` ({summary['full_batch_rows_metrics']} rows per line), "
        f"{len(runs)} seeds. The paper: 10,000 steps of batch 128 on 4,000 images, 320 epochs.",
        f"- **Measured on** {prov.get('device', {}).get('type', '?')}, "
        f"{prov.get('precision', {}).get('num_threads', '?')} threads; steplines "
        f"{prov.get('steplines')}, torch {prov.get('packages', {}).get('torch')}.",
        f"- **Analysis:** mode {settings.get('mode')}, scale {settings.get('scale')}: window "
        f"±{fmt(settings.get('window'))} (first seed), µ = {fmt(settings.get('mu'))}; "
        f"{settings.get('resamples')} row resamples per line; claims at level {level:.4g}.",
        "",
        "| run | seed | lines | epochs | measuring time (per line) | λ | λ\\* [interval] |",
        "|---|---|---|---|---|---|---|",
        *[run_row(r) for r in runs],
        "",
        "## The paper's claims, pooled over the seeds",
        "",
        'Each claim is tested as the paper states it (docs/analysis.md, "Claims"). The pooled '
        "interval resamples the seeds, then blocks of lines, then each line's rows, so it covers "
        'the variation between seeds. A pooled verdict is never "holds" where a seed\'s own is '
        '"does not hold", or the reverse. A claim **holds** when its whole interval lies on '
        "the threshold's side, **does not hold** when it lies on the other side.",
        "",
        *claims_table(claims),
        "",
        "## What the runs say",
        "",
        *reading(claims),
        "## The paper's numbers beside the same quantities",
        "",
        "Absolute numbers depend on the network and the data set; they are shown, not judged.",
        "",
        *quantity_table(claims),
        "",
        f"## Step-size strategies of the first seed ({runs[0].name}, Fig. 6)",
        "",
        *strategy_rows(summary),
        "",
        f"## Figures of the first seed ({runs[0].name})",
        "",
    ]
    for name, caption in FIGURES:
        src = first.figures_dir() / f"{name}.png"
        if src.exists():
            small_png(src, out / f"{name}.png")
            lines += [f"**{caption}**", "", f"![{name}]({name}.png)", ""]
    config = first.config_path.read_text()
    lines += ["## The first seed's configuration", "", "```toml", config.strip(), "```", ""]
    (out / "README.md").write_text("\n".join(lines))
    print(out / "README.md")


if __name__ == "__main__":
    main()
