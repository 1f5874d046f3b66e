"""The claims pooled over several runs, as text (``steplines analyze RUN... --out``) and as a
section of the comparison page (``steplines report RUN...``).

This module never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steplines.analysis.claims import MIN_UNITS
from steplines.report.numbers import fmt

__all__ = [
    "claim_quantity",
    "claim_row",
    "claim_value",
    "min_units_note",
    "pooled_rows",
    "pooled_text",
]

_SHORT = {
    "holds": "holds",
    "does not hold": "fails",
    "inconclusive": "inconcl.",
    "not applicable": "n/a",
}


def claim_value(record: dict[str, Any]) -> str:
    """``value [low, high]`` of a claim record (pooled or one run's)."""
    text = fmt(record.get("value"))
    if record.get("low") is not None and record.get("high") is not None:
        text += f" [{fmt(record['low'])}, {fmt(record['high'])}]"
    return text


def claim_quantity(record: dict[str, Any]) -> str:
    """``name = value`` of the paper's quantity on the run(s) (values per run when pooled)."""
    q = record.get("quantity")
    if not isinstance(q, dict) or not q.get("name"):
        return ""
    value = q.get("value")
    shown = " / ".join(fmt(v) for v in value) if isinstance(value, list) else fmt(value)
    return f"{q['name']} = {shown}"


def min_units_note() -> str:
    """The fewest independent units behind a verdict (:data:`MIN_UNITS`), in words."""
    return (
        f"A verdict needs at least {MIN_UNITS['lines']} lines, {MIN_UNITS['noisy steps']} "
        f"noisy steps (a step with all its directions) or, pooled, {MIN_UNITS['runs']} runs; "
        "with fewer it is inconclusive."
    )


def claim_row(c: dict[str, Any]) -> dict[str, str]:
    """One claim record (one run's or pooled) as a row of a claims table: the claim, the
    paper's sentence and figure, the metric, value [interval], threshold, verdict and reason,
    the paper's quantity beside the run's."""
    verdict = str(c.get("verdict", "inconclusive"))
    return {
        "key": str(c.get("key", "")),
        "claim": str(c.get("claim", "")),
        "metric": str(c.get("metric", "")),
        "value": claim_value(c),
        "threshold": str(c.get("threshold", "")),
        "verdict": verdict,
        "css": verdict.replace(" ", "-"),
        "reason": str(c.get("reason", "")),
        "paper": str(c.get("paper", "")),
        "n": str(c.get("n", "")),
        "quote": str(c.get("quote", "")),
        "figure": str(c.get("figure", "")),
        "quantity": claim_quantity(c),
    }


def pooled_rows(claims: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the pooled claims table: :func:`claim_row` and each run's verdict."""
    return [
        claim_row(c)
        | {
            "runs": [
                {
                    "run": str(r.get("run", "")),
                    "verdict": str(r.get("verdict", "")),
                    "css": str(r.get("verdict", "")).replace(" ", "-"),
                    "value": claim_value(r),
                    "n": str(r.get("n", "")),
                    "reason": str(r.get("reason", "")),
                }
                for r in c.get("per_run") or []
            ]
        }
        for c in claims
    ]


def pooled_text(claims: Sequence[dict[str, Any]], note: str) -> str:
    """The pooled claims as aligned plain text, each run's verdict in the last column."""
    rows = pooled_rows(claims)
    if not rows:
        return "claims: none judged"
    names = [r["run"] for r in rows[0]["runs"]]
    key_w = max(len(r["key"]) for r in rows)
    val_w = max(len(f"{r['value']} vs {r['threshold']}") for r in rows)
    lines = [
        f"claims pooled over {len(names)} runs (verdict: value [interval] vs threshold; "
        f"each run's own verdict: {', '.join(names)}):"
    ]
    for r in rows:
        own = " / ".join(_SHORT.get(x["verdict"], x["verdict"]) for x in r["runs"])
        why = "" if r["reason"].startswith("the interval") else f"; {r['reason']}"
        lines.append(
            f"  {r['key'].ljust(key_w)}  {r['verdict'].upper():<14}  "
            f"{(r['value'] + ' vs ' + r['threshold']).ljust(val_w)}  [{own}]{why}"
        )
    lines.append(note)
    lines.append(min_units_note())
    return "\n".join(lines)
