"""Write a run's claims, key numbers and small figures as a Markdown page (``docs/results/``).

    python docs/results/make_page.py RUN OUT_DIR [--title TEXT] [--command TEXT] [--notes FILE]

Reads what ``steplines analyze``/``report`` wrote into ``RUN`` (``analysis/claims.json``,
``analysis/summary.json``, ``figures/*.png``, ``config.toml``, ``provenance.json``,
``live.jsonl``) and writes ``OUT_DIR/README.md`` with the PNGs copied at most 900 px wide in
256 colours, so that the page can live in the repository. Nothing is computed here: every number
is the analysis' own, written with the report's number format (3 significant digits).
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


def claims_table(claims: list[dict]) -> list[str]:
    """One row per claim: verdict, value with interval, threshold, the paper's figure."""
    rows = [
        "| claim | verdict | value [95 % interval] | threshold | paper | lines | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        if c.get("low") is not None:
            value = f"{fmt(c['value'])} [{fmt(c['low'])}, {fmt(c['high'])}]"
        else:
            value = fmt(c["value"])
        rows.append(
            f"| {_cell(c['claim'])} | **{c['verdict']}** | {value} | {_cell(c['threshold'])} "
            f"| {_cell(c['paper'])} | {c['n']} | {_cell(c['reason'])} |"
        )
    return rows


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
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--title", default="Results")
    ap.add_argument("--command", action="append", default=[], help="command that made the run")
    ap.add_argument("--notes", type=Path, default=None, help="Markdown to put after the claims")
    args = ap.parse_args()
    run, out = args.run, args.out
    layout = RunLayout(run)
    tables = layout.analysis_dir()
    claims = json.loads((tables / "claims.json").read_text())
    summary = read_json(tables / "summary.json")
    config = layout.config_path.read_text()
    prov = read_json(layout.provenance_path)
    live = [json.loads(x) for x in layout.live_path.read_text().splitlines() if x.strip()]
    seconds = sum(r.get("seconds", 0.0) for r in {r["t"]: r for r in live}.values())
    out.mkdir(parents=True, exist_ok=True)

    cfg = layout.read_config()
    rates, settings = summary.get("rates", {}), summary.get("settings", {})
    lines = [
        f"# {args.title}",
        "",
        "Made with these commands (the run, then this page):",
        "",
        "```sh",
        *args.command,
        f"python docs/results/make_page.py {run} {out}",
        "```",
        "",
        f"- **Run:** {summary['lines_used']} lines analysed of {summary['lines_total']}; "
        f"data set {cfg.problem.dataset}, model {cfg.problem.model}, "
        f"{cfg.problem.train_size} training / {cfg.problem.val_size} "
        f"validation images, batch {cfg.problem.batch_size}, "
        f"{cfg.train.optimizer} λ = {cfg.train.lr}, full batch "
        f"`{cfg.measure.full_batch}` ({summary['full_batch_rows_metrics']} rows per line).",
        f"- **Measuring time:** {seconds / 60:.0f} min for the lines "
        f"({seconds / max(len(live), 1):.1f} s per line) on "
        f"{prov.get('device', {}).get('type', '?')}, "
        f"{prov.get('precision', {}).get('num_threads', '?')} threads; steplines "
        f"{prov.get('steplines')}, torch {prov.get('packages', {}).get('torch')}, "
        f"schema {prov.get('schema_version')}.",
        f"- **Analysis:** mode {settings.get('mode')}, scale {settings.get('scale')}: "
        f"window ±{fmt(settings.get('window'))}, µ = {fmt(settings.get('mu'))}; "
        f"{settings.get('resamples')} bootstrap resamples, level {settings.get('level')}.",
        f"- **λ\\*** (s_opt/‖m_t‖, median over lines): {fmt(rates.get('lambda_star_in'))}"
        f"{span(rates, 'lambda_star_in')}; trained λ = {fmt(rates.get('trained'))}.",
        "",
        "## The paper's claims on this run",
        "",
        "A claim **holds** when its whole interval lies on the threshold's side, **does not "
        "hold** when the whole interval lies on the other side, and is **inconclusive** when "
        "the interval straddles the threshold or too few lines were measured "
        "(docs/analysis.md).",
        "",
        *claims_table(claims),
        "",
        *([args.notes.read_text().strip(), ""] if args.notes else []),
        "## Step-size strategies (Fig. 6)",
        "",
        *strategy_rows(summary),
        "",
        "## Figures",
        "",
    ]
    for name, caption in FIGURES:
        src = layout.figures_dir() / f"{name}.png"
        if src.exists():
            small_png(src, out / f"{name}.png")
            lines += [f"**{caption}**", "", f"![{name}]({name}.png)", ""]
    lines += ["## The run's configuration", "", "```toml", config.strip(), "```", ""]
    (out / "README.md").write_text("\n".join(lines))
    print(out / "README.md")


if __name__ == "__main__":
    main()
