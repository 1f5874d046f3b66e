"""Figure labels print numbers as the tables do (3 significant digits)."""

from __future__ import annotations

from steplines.plotting.figures import strategy_label


def test_sgd_rates_in_legends_match_the_tables() -> None:
    assert strategy_label("sgd_lambda_0.537644") == "SGD λ = 0.538"
    assert strategy_label("sgd_lambda_0.05_accum") == "SGD λ = 0.05 (−λ·D_t)"
    assert strategy_label("sgd", lr=0.123456) == "SGD as trained λ = 0.123"
