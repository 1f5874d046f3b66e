"""docs/readme_numbers.py: README.md's demo numbers are rewritten from a run's analysis files."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "readme_numbers.py"


@pytest.fixture(scope="module")
def numbers():
    spec = importlib.util.spec_from_file_location("readme_numbers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strategy(share: float) -> dict:
    return {
        "accumulated_improvement": 10 * share,
        "share_of_optimum": share,
        "share_of_optimum_low": share - 0.02,
        "share_of_optimum_high": share + 0.01,
        "median_step": 0.5,
        "lines": 40,
    }


def _quantiles(median: float, n: int = 40) -> dict:
    return {"n": n, "median": median, "q10": None, "q25": None, "q75": None, "q90": None}


def fake_run(root: Path, *, claims: object = None) -> Path:
    """A run directory with the files (and keys) ``steplines analyze`` writes, values made up."""
    run = root / "run"
    (run / "analysis").mkdir(parents=True)
    summary = {
        "mode": "corrected",
        "scale": "run",
        "lines_used": 40,
        "lines_total": 40,
        "fits": {"window": 0.5, "mean_mae_degree_1": 0.12, "mean_mae_degree_2": 0.015},
        "strategies": {
            name: _strategy(share)
            for name, share in [
                ("optimal", 1.0),
                ("exact_batch", 0.9),
                ("sgd", 0.3),
                ("fbpal", 0.97),
                ("lambda_star_in", 0.91),
                ("lambda_star_out", 0.84),
            ]
        },
        "ratios": {"s_opt_over_direction_norm": {"median": 0.52, "q25": 0.43, "q75": 0.65}},
        "rates": {
            "lambda_star_in": 0.52,
            "lambda_star_in_low": 0.51,
            "lambda_star_in_high": 0.54,
            "trained": 1.0,
        },
        "noisy_directions": {"positions": 2, "directions": 6, "steps": [0, 20]},
        "estimators": {
            "errors": {
                "alpha_error": _quantiles(-0.6),
                "labpal_a_rel_error": _quantiles(0.014),
                "labpal_step_ratio": _quantiles(0.93),
                "armijo_step_ratio": _quantiles(2.0),
                "curvature_rel_error": _quantiles(0.36),
            },
            "alpha_cockpit": _quantiles(0.22),
            "alpha_true": _quantiles(0.86),
            "b_simple": _quantiles(76.3, n=4),
            "batch_size": 128,
            "some_future_field": 1,
        },
        "claims": {"parabola": "holds"},
    }
    settings = {"mode": "corrected", "scale": "run", "window": 0.5, "mu": 0.25}
    if claims is None:
        claims = [
            {
                "key": "parabola",
                "claim": "the full-batch line is locally a parabola",
                "metric": "fit MAE / range",
                "value": 0.0113,
                "low": 0.00777,
                "high": 0.0172,
                "threshold": "≤ 0.05",
                "verdict": "holds",
                "reason": "the interval lies below the threshold",
                "n": 40,
                "range": [0, 39],  # fields the script does not know are ignored
                "per_run": None,
                "quote": "a | pipe",
            },
            {
                "key": "new_claim",
                "claim": "something not yet measured",
                "value": None,
                "low": None,
                "high": None,
                "threshold": "≥ 1",
                "verdict": "inconclusive",
            },
        ]
    (run / "analysis" / "summary.json").write_text(json.dumps(summary))
    (run / "analysis" / "settings.json").write_text(json.dumps(settings))
    (run / "analysis" / "claims.json").write_text(json.dumps(claims, ensure_ascii=False))
    (run / "analysis" / "derivatives.csv").write_text(
        "line,s_opt,s_update\n0,1.0,2.0\n1,1.0,1.8\n2,1.0,1.9\n"
    )
    (run / "config.toml").write_text("[train]\nsteps = 40\n")
    (run / "live.jsonl").write_text(
        "".join(json.dumps({"t": t, "n_positions": 90 + 60 * t}) + "\n" for t in range(3))
    )
    return run


def readme_with(numbers, body: str = "STALE") -> str:
    """A README with every block of the script, each holding ``body``, amid fixed prose."""
    parts = ["# title", "", "prose 1.5 before"]
    for name, (_, inline) in numbers.BLOCKS.items():
        sep = "" if inline else "\n"
        parts.append(
            f"x <!-- demo-numbers:BEGIN {name} -->{sep}{body}{sep}"
            f"<!-- demo-numbers:END {name} --> y"
        )
    parts.append("prose 2.5 after")
    return "\n".join(parts) + "\n"


def test_rewrite_then_check(numbers, tmp_path, capsys):
    run = fake_run(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(readme_with(numbers))

    assert numbers.main([str(run), "--readme", str(readme), "--check"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "stale" in err and "claims" in err and "estimators" in err
    assert readme.read_text() == readme_with(numbers)  # --check writes nothing

    assert numbers.main([str(run), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "STALE" not in text
    # prose outside the markers is kept
    assert text.startswith("# title\n\nprose 1.5 before\nx <!-- demo-numbers:BEGIN run -->")
    assert text.endswith("<!-- demo-numbers:END estimators --> y\nprose 2.5 after\n")
    assert "40 steps and measures all 40 lines" in text
    assert "at 90–210 positions per line" in text
    claims = "| `parabola` | the full-batch line is locally a parabola | **holds** | "
    assert claims + "0.0113 [0.00777, 0.0172] | ≤ 0.05 |" in text
    assert "| `new_claim` | something not yet measured | **inconclusive** | — | ≥ 1 |" in text
    text = " ".join(text.split())  # the prose blocks are filled to 100 columns
    assert "λ\\* = 0.52 [0.51, 0.54]" in text
    assert "84.0 % [82.0 %, 85.0 %] out-of-sample" in text
    assert "steps 1.9× past" in text  # median of 2.0, 1.8, 1.9
    assert "(8× smaller)" in text
    assert "6 directions at steps 0 and 20" in text
    assert "Cockpit's α is 0.6 below" in text
    assert "dᵀH_B d is +36 % off" in text
    assert "B_simple ≈ 76 (4 lines)" in text

    assert numbers.main([str(run), "--readme", str(readme), "--check"]) == 0

    # a changed analysis makes exactly the blocks that read it stale
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    summary["estimators"]["b_simple"]["median"] = 90.0
    (run / "analysis" / "summary.json").write_text(json.dumps(summary))
    assert numbers.main([str(run), "--readme", str(readme), "--check"]) == 1
    err = capsys.readouterr().err
    assert "stale demo-numbers blocks: estimators (" in err


def test_wrap(numbers):
    words = "x " * 40 + "y 1. z - w | v " + "u " * 60
    lines = numbers.wrap(words).splitlines()
    assert " ".join(lines) == words.strip()
    assert all(not numbers._STARTS_BLOCK.match(line) for line in lines[1:])
    assert max(len(line) for line in lines) <= numbers.WIDTH + 3


def test_claims_in_an_object_and_missing_files(numbers, tmp_path, capsys):
    run = fake_run(tmp_path, claims={"claims": [{"key": "k", "verdict": "holds", "value": 2}]})
    text = numbers.render(readme_with(numbers), numbers.Run(run))[0]
    assert "| `k` |  | **holds** | 2 |  |" in text

    (run / "analysis" / "summary.json").unlink()
    readme = tmp_path / "README.md"
    readme.write_text(readme_with(numbers))
    assert numbers.main([str(run), "--readme", str(readme), "--check"]) == 2
    assert "summary.json cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("<!-- demo-numbers:END claims -->", ""), "without its END"),
        (lambda t: t + "<!-- demo-numbers:BEGIN nope -->1<!-- demo-numbers:END nope -->\n", "nope"),
        (lambda t: re.sub(r"<!-- demo-numbers:BEGIN noisy.*END noisy -->", "", t), "lacks"),
    ],
)
def test_bad_markers(numbers, tmp_path, capsys, edit, message):
    run = fake_run(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(edit(readme_with(numbers)))
    assert numbers.main([str(run), "--readme", str(readme)]) == 2
    assert message in capsys.readouterr().err


def test_the_readme_has_every_block(numbers, tmp_path):
    """README.md's markers are well formed and name exactly the script's blocks."""
    text = (ROOT / "README.md").read_text()
    new, _ = numbers.render(text, numbers.Run(fake_run(tmp_path)))
    assert sorted(m.group("name") for m in numbers.MARKER.finditer(new)) == sorted(numbers.BLOCKS)
    # an inline block must not start a line: Markdown would end the paragraph there
    for line in text.splitlines():
        for name, (_, inline) in numbers.BLOCKS.items():
            if inline and f"BEGIN {name} " in line:
                assert not line.startswith("<!--")
