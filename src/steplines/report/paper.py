"""The paper's headline numbers (docs/method.md §7), keyed by the preset a run matches.

Supplementary numbers were read off the paper's plots (docs/method.md §7 says so); they are quoted
as text with "≈" so nobody mistakes them for exact values. Keys are the row keys of
:func:`steplines.report.sections.core_results`.
"""

from __future__ import annotations

from steplines.analysis.settings import PAPER_MODELS, match_preset

__all__ = ["PAPER_MODELS", "match_preset", "paper_values"]

_R20 = {
    "fit_1": "clearly worse than degree 2 (no number given)",
    "fit_2": "always low (no number given)",
    "dist_first": "high for the first ~10 lines",
    "dist_later": "≈ 0.01 (all < 0.3)",
    "dist_consecutive": "similar to the later lines",
    "sgd_overshoot": "≈ 2 (λ = 0.1 always steps well beyond s_opt)",
}

_VALUES: dict[tuple[str, bool], dict[str, str]] = {
    ("resnet20", False): {
        **_R20,
        "lambda_star": "≈ 0.05, about constant (noisier late in training)",
        "strategy:fbpal": "≈ optimal",
        "strategy:sgd_lambda": "about as good as FBPAL (λ = 0.05 ≈ locally optimal)",
        "strategy:exact_batch": "performs poorly",
        "delta_ratio": "equals 128/bs for bs 32…256 over the whole training; bs ≥ 512: lower "
        "early, converging towards 128/bs later",
        "batch_size": "SGD suffers more than PAL at small bs; both improve with bs; bs 512 "
        "almost optimal",
    },
    ("resnet20", True): {
        **_R20,
        "sgd_overshoot": "— (stated for β = 0)",
        "dist_later": "≈ 0.01 (window ±0.5)",
        "lambda_star": "— (ratio panel of Fig. 9, no number in the text)",
    },
    ("resnet18", False): {
        "fit_1": "≤ 0.07 (max over lines)",
        "fit_2": "≤ 0.005 (max over lines)",
        "dist_first": "high for the first ~20 lines",
        "dist_later": "≈ 0.005 (all < 0.4)",
        "dist_consecutive": "falls from ~1e-1 to ~1e-3",
        "lambda_star": "≈ 0.05 early, then rising (the one case whose ratio mean changes much)",
        "strategy:optimal": "≈ 205 (100 %)",
        "strategy:fbpal": "≈ 200 (≈ 98 %); Σ|distance| ≈ 400",
        "strategy:sgd_lambda": "≈ 195 (≈ 95 %); Σ|distance| ≈ 500",
        "strategy:pal": "≈ 170 (≈ 83 %); Σ|distance| ≈ 640",
        "strategy:exact_batch": "≈ 110 (≈ 54 %); Σ|distance| ≈ 1 040",
        "strategy:sgd": "≈ 35 (≈ 17 %); Σ|distance| ≈ 1 120",
        "delta_ratio": "flat at 128/bs for bs 32…256; bs ≥ 512 below 128/bs early, approaching "
        "it later",
        "batch_size": "SGD original strongly negative at bs 32 (≈ −450), negative at 64, "
        "positive and increasing above; PAL positive for every bs, ordered by bs",
    },
    ("resnet18", True): {
        "fit_1": "≤ 0.03 (max over lines)",
        "fit_2": "≤ 0.001 (max over lines)",
        "lambda_star_momentum": "s_opt/(−D_t) ≈ 0.07",
        "strategy:exact_batch": "becomes negative (≈ −45)",
        "sgd_lambda_reading": "SGD λ = 0.05 steps ≈ 0.5 × SGD original",
    },
    ("mobilenetv2", False): {
        "fit_1": "≤ 0.05 (max over lines)",
        "fit_2": "≤ 0.0025 (max over lines)",
        "dist_first": "high for the first ~25 lines",
        "dist_later": "≈ 0.01 (all < 0.6)",
        "dist_consecutive": "falls from ~1e-1 to ~1e-3",
        "lambda_star": "≈ 0.05–0.06",
        "delta_ratio": "flat at 128/bs for bs 32…256; bs ≥ 512 below 128/bs early, approaching "
        "it later",
        "batch_size": "like ResNet-18: SGD original negative at small bs, PAL positive",
    },
    ("mobilenetv2", True): {
        "fit_1": "≤ 0.012 (max over lines)",
        "fit_2": "≤ 0.0007 (max over lines)",
        "sgd_lambda_reading": "SGD λ = 0.07 steps ≈ 0.5 × SGD original",
    },
}

_NAMES = {
    "resnet20": "ResNet-20",
    "resnet18": "ResNet-18",
    "mobilenetv2": "MobileNetV2",
}


def paper_values(match: tuple[str, bool] | None) -> tuple[str, dict[str, str]]:
    """Title and row-key → text of the paper's numbers for a matched preset."""
    if match is None:
        return "", {}
    model, mom = match
    title = f"paper, {_NAMES[model]} β = {'0.9' if mom else '0'}"
    return title, dict(_VALUES.get(match, {}))
