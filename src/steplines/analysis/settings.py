"""The analysis settings of one run, resolved once (``docs/analysis.md``, "Settings and scale").

Every choice that changes an analysis number lives in one frozen :class:`AnalysisSettings`
record: the mode (``corrected`` or ``faithful``), the scale (``paper`` or ``run``), the window
``w`` of the fits and distances, the comparison rates λ of "SGD λ", PAL's µ, and what the run's
optimizer was. :func:`resolve_settings` builds it from the run's config and its measured lines;
the analyses receive it and never look at the config again. It is written beside the tables as
``settings.json``.

Scales:

* ``paper``: the constants of the paper's own run (ResNet-20 on CIFAR-10 at λ = 0.1):
  ``w = 0.2`` (0.5 with momentum), λ = 0.05 (0.07 for MobileNetV2 with momentum), µ = 0.1.
* ``run``: the same rule read off this run. With ``s_typ`` the median of ``|s_opt|`` over the
  analysed lines, ``w = 2·s_typ`` (at least four grid steps of line 0), ``µ = s_typ``, and the
  comparison rate is the run's own λ*, estimated in-sample and out-of-sample (strategies
  ``lambda_star_in`` and ``lambda_star_out``) instead of a fixed λ. On the paper's setting
  (``s_opt`` ≈ 0.1, λ* ≈ 0.05) the rule gives the paper's constants: ``w`` ≈ 0.2, µ ≈ 0.1.
  Multiplying every position of a store by ``c`` multiplies ``w`` and µ by ``c`` and leaves
  every dimensionless result unchanged (tested).

``--window``, ``--lambdas`` and ``--mu`` override either scale.

This module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from steplines.analysis.claims import FAMILIES, RESAMPLES
from steplines.errors import ConfigError

if TYPE_CHECKING:
    from steplines.config import RunConfig

__all__ = [
    "BATCH_SIZES",
    "MODES",
    "PAPER_MODELS",
    "SCALES",
    "AnalysisRequest",
    "AnalysisSettings",
    "Optimizer",
    "analysis_tag",
    "check_mode",
    "default_scale",
    "match_preset",
    "optimizer_of",
    "resolve_settings",
    "typical_step",
]

MODES = ("corrected", "faithful")
"""Analysis modes: ``corrected`` (default) and ``faithful`` (the original's quirks)."""

SCALES = ("paper", "run")
"""Analysis scales: the paper's constants, or constants read off the run."""

PAPER_MODELS: tuple[str, ...] = ("resnet20", "resnet18", "mobilenetv2")
"""The paper's models (its settings: CIFAR-10, one of these, β ∈ {0, 0.9})."""

BATCH_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
"""The batch sizes of the original analysis (docs/method.md §6.3)."""

PAPER_MU = 0.1
PAPER_WINDOW = 0.2
PAPER_WINDOW_MOMENTUM = 0.5


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise :class:`ConfigError`."""
    if mode not in MODES:
        raise ConfigError(f"unknown analysis mode {mode!r}; use 'corrected' or 'faithful'")
    return mode


def check_scale(scale: str) -> str:
    """Return ``scale`` if it is one of :data:`SCALES`, else raise :class:`ConfigError`."""
    if scale not in SCALES:
        raise ConfigError(f"unknown analysis scale {scale!r}; use 'paper' or 'run'")
    return scale


@dataclass(frozen=True)
class Optimizer:
    """What trained the run, as far as the analysis needs it.

    Attributes:
        name: ``sgd`` or a ``torch.optim`` class name in lower case (``adamw``); ``unknown``
            when the run's config does not say.
        momentum: SGD's β (0 for every other optimizer: Adam's β₁ is not SGD momentum).
        source: ``config`` or ``inferred`` (β = 0 when ``‖m_t‖ = ‖g_t‖`` on every line, else
            0.9, as the original analysis assumed).
    """

    name: str
    momentum: float
    source: str

    @property
    def is_sgd(self) -> bool:
        """True for plain SGD and SGD with momentum."""
        return self.name in ("sgd", "unknown")

    @property
    def plain_sgd(self) -> bool:
        """SGD without momentum (then ``d_t = −g_t/‖g_t‖`` and ``δ_B = −‖g_t‖``)."""
        return self.is_sgd and self.momentum == 0

    def label(self) -> str:
        """Human-readable name, e.g. ``SGD β = 0.9`` or ``AdamW``."""
        if self.is_sgd:
            return f"SGD β = {self.momentum:g}" if self.momentum else "SGD"
        return {"adamw": "AdamW", "adam": "Adam", "rmsprop": "RMSprop"}.get(self.name, self.name)


def optimizer_of(
    config: RunConfig | None, direction_norm: np.ndarray, grad_norm: np.ndarray
) -> Optimizer:
    """The run's optimizer from ``config.toml`` (``train.optimizer``, ``train.momentum``).

    Without a config (None) the run is taken as SGD and β is inferred from the store: 0 when
    ``‖m_t‖ = ‖g_t‖`` on every line, else 0.9.
    """
    if config is not None:
        probe = config.probe.optimizer if config.probe is not None else ""
        name = (config.train.optimizer or probe).lower()
        if name and name != "sgd":
            return Optimizer(name=name, momentum=0.0, source="config")
        return Optimizer(name="sgd", momentum=float(config.train.momentum), source="config")
    same = np.allclose(direction_norm, grad_norm, rtol=1e-6, equal_nan=True)
    return Optimizer(name="unknown", momentum=0.0 if same else 0.9, source="inferred")


def match_preset(config: RunConfig | None) -> tuple[str, bool] | None:
    """``(model, momentum > 0)`` when the run is one of the paper's settings, else None.

    A paper setting is CIFAR-10's 8 % subset (4,000 training images, or no size given) with
    ResNet-20, ResNet-18 or MobileNetV2 and β ∈ {0, 0.9}; full CIFAR-10 is not. No config
    (None) is no paper setting.
    """
    if config is None:
        return None
    problem = config.problem
    dataset = problem.dataset.lower().replace("-", "").replace("_", "")
    model = problem.model.lower().replace("-", "").replace("_", "")
    if dataset != "cifar10" or model not in PAPER_MODELS:
        return None
    if (problem.train_size or 4000) != 4000:
        return None
    beta = float(config.train.momentum)
    if beta not in (0.0, 0.9):
        return None
    return model, beta > 0


def default_scale(mode: str, paper_setting: bool) -> str:
    """``paper`` for the paper's settings and for ``faithful``; ``run`` otherwise."""
    return "paper" if (mode == "faithful" or paper_setting) else "run"


def typical_step(s_opt: np.ndarray) -> float:
    """``s_typ``: median of ``|s_opt|`` over lines with a finite, non-zero ``s_opt`` (or NaN)."""
    s = np.abs(np.asarray(s_opt, dtype=np.float64))
    s = s[np.isfinite(s) & (s > 0)]
    return float(np.median(s)) if s.size else float("nan")


def _given(**values: Any) -> dict[str, Any]:
    """The overrides a user set (the values that are not None), in a fixed order."""
    return {k: v for k, v in values.items() if v is not None}


def analysis_tag(
    mode: str,
    scale: str | None,
    paper_setting: bool,
    *,
    window: float | None = None,
    lambdas: Sequence[float] | None = None,
    mu: float | None = None,
    resamples: int | None = None,
    level: float | None = None,
) -> str:
    """Name of an analysis: ``""`` for the run's default, else ``<mode>-<scale>[-<hash>]``.

    The default analysis (mode ``corrected``, the run's default scale, no override) is the one
    in ``RUN/analysis/``; any other is kept apart in ``RUN/analysis-<tag>/`` so that it never
    replaces the default. ``<hash>``: 8 hex digits of the overrides' SHA-256.
    """
    scale = scale or default_scale(mode, paper_setting)
    given = _given(window=window, lambdas=lambdas, mu=mu, resamples=resamples, level=level)
    if mode == "corrected" and scale == default_scale(mode, paper_setting) and not given:
        return ""
    tag = f"{mode}-{scale}"
    if given:
        spec = json.dumps(
            {k: list(map(float, v)) if k == "lambdas" else float(v) for k, v in given.items()},
            sort_keys=True,
        )
        tag += "-" + hashlib.sha256(spec.encode()).hexdigest()[:8]
    return tag


@dataclass(frozen=True)
class AnalysisRequest:
    """What a user asks of an analysis, checked once where it enters (CLI or API).

    Attributes:
        mode: ``corrected`` (default) or ``faithful`` (the original's quirks; docs/method.md
            §9–§10).
        scale: ``paper`` or ``run`` (None: ``paper`` for the paper's settings and faithful,
            else ``run``).
        window: Override of the fit and distance half-width ``w``.
        lambdas: Override of the SGD λ list (strategies ``sgd_lambda_<λ>``).
        mu: Override of PAL/FBPAL's µ.
        resamples: Override of the bootstrap resamples of each line's full-batch rows
            (default 200; 0 = no intervals).
        level: Override of the level of every interval (default 0.95).
        batch_sizes: Simulated direction-batch sizes (sizes above N + B are skipped).
        smoothing: Moving-average length (faithful δ ratios use MA-``smoothing`` "valid").
        max_matrix_lines: The stored distance matrix covers every ``ceil(T/max)``-th line.
        line_resamples: Resamples of the lines behind each claim's interval.
        family: How the claims' verdicts are read together: ``none``, ``bonferroni`` or
            ``holm``.

    Raises:
        ConfigError: Unknown mode, scale or family; a non-positive window or µ; a negative
            λ; resamples not a whole number ≥ 0; a level outside (0, 1).
    """

    mode: str = "corrected"
    scale: str | None = None
    window: float | None = None
    lambdas: tuple[float, ...] | None = None
    mu: float | None = None
    resamples: int | None = None
    level: float | None = None
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    smoothing: int = 25
    max_matrix_lines: int = 1000
    line_resamples: int = RESAMPLES
    family: str = "none"

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.scale is not None:
            check_scale(self.scale)
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown --family {self.family!r}; use one of {FAMILIES}")
        if self.window is not None and not self.window > 0:
            raise ConfigError(f"--window must be positive, got {self.window}")
        if self.mu is not None and not self.mu > 0:
            raise ConfigError(f"--mu must be positive, got {self.mu}")
        if self.lambdas is not None:
            if any(not lam > 0 for lam in self.lambdas):
                raise ConfigError(f"--lambdas must be positive, got {list(self.lambdas)}")
            object.__setattr__(self, "lambdas", tuple(float(x) for x in self.lambdas))
        r = self.resamples
        if r is not None and not (int(r) == r and r >= 0):
            raise ConfigError(f"--resamples must be a whole number ≥ 0, got {r}")
        if self.level is not None and not 0 < self.level < 1:
            raise ConfigError(f"--level must lie between 0 and 1 (e.g. 0.95), got {self.level}")
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))

    @property
    def faithful(self) -> bool:
        """The original code's rules (``mode`` ``faithful``; docs/method.md §9–§10)."""
        return self.mode == "faithful"

    @property
    def overrides(self) -> dict[str, Any]:
        """The settings the user set (window, lambdas, mu, resamples, level), in a fixed order."""
        return _given(
            window=self.window,
            lambdas=self.lambdas,
            mu=self.mu,
            resamples=self.resamples,
            level=self.level,
        )

    def tag(self, config: RunConfig | None) -> str:
        """The tag of the analysis this asks for on a run with ``config``: its directory is
        ``RunLayout.analysis_dir(tag)`` (``""``: the run's default analysis)."""
        paper = match_preset(config) is not None
        return analysis_tag(self.mode, self.scale, paper, **self.overrides)


@dataclass(frozen=True)
class AnalysisSettings:
    """Every choice that changes an analysis number, resolved once per analysis.

    Attributes:
        mode: ``corrected`` or ``faithful``.
        scale: ``paper`` or ``run``.
        window: Half-width ``w`` of the fits and distance matrices.
        lambdas: Rates λ of the ``sgd_lambda_<λ>`` strategies (step ``−λ·δ_B``); empty in
            ``run`` scale unless given, where ``lambda_star_in``/``_out`` compare instead.
        mu: µ of PAL and FBPAL.
        optimizer: The run's optimizer (:class:`Optimizer`).
        typical_step: ``s_typ`` (median ``|s_opt|``) the ``run`` scale was derived from.
        resamples: Bootstrap resamples of each line's full-batch rows
            (:mod:`steplines.analysis.bootstrap`; 0: no intervals).
        level: Level of every interval (0.95).
        overrides: Names of the values the user set (``window``, ``lambdas``, ``mu``,
            ``resamples``, ``level``).
        paper_setting: The run is one of the paper's settings (CIFAR-10, its models, β ∈ {0, 0.9}).
    """

    mode: str
    scale: str
    window: float
    lambdas: tuple[float, ...]
    mu: float
    optimizer: Optimizer
    typical_step: float
    resamples: int = 200
    level: float = 0.95
    overrides: tuple[str, ...] = ()
    paper_setting: bool = False

    @property
    def faithful(self) -> bool:
        """The original code's rules (``mode`` ``faithful``; docs/method.md §9–§10)."""
        return self.mode == "faithful"

    @property
    def momentum(self) -> float:
        """SGD's β (0 for any other optimizer)."""
        return self.optimizer.momentum

    @property
    def tag(self) -> str:
        """``""`` for the run's default analysis, else its directory suffix (``analysis_tag``)."""
        given = {k: getattr(self, k) for k in self.overrides}
        return analysis_tag(self.mode, self.scale, self.paper_setting, **given)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (``settings.json``; NaN → None)."""
        out = asdict(self)
        out["typical_step"] = self.typical_step if math.isfinite(self.typical_step) else None
        out["lambdas"] = list(self.lambdas)
        out["overrides"] = list(self.overrides)
        out["tag"] = self.tag
        return out


def _line0_spacing(positions: np.ndarray) -> float:
    """Median spacing of line 0's positions within its inner half (NaN if undefined)."""
    p = positions[0]
    p = np.unique(p[np.isfinite(p)])
    if p.size < 2:
        return float("nan")
    inner = p[np.abs(p) <= 0.5 * np.max(np.abs(p))]
    d = np.diff(inner if inner.size >= 2 else p)
    d = d[d > 1e-12 * max(1.0, float(np.max(np.abs(p))))]
    return float(np.median(d)) if d.size else float("nan")


def resolve_settings(
    config: RunConfig | None,
    request: AnalysisRequest,
    *,
    s_opt: np.ndarray,
    positions: np.ndarray,
    direction_norm: np.ndarray,
    grad_norm: np.ndarray,
) -> AnalysisSettings:
    """Resolve mode, scale, window, rates and µ of one analysis (see the module docstring).

    Args:
        config: the run's configuration (None without a ``config.toml``).
        request: What the user asked for (checked when it was made).
        s_opt: float ``[T]`` full-batch minima of the analysed lines.
        positions: float ``[T, K]`` positions (line 0's grid spacing bounds ``w`` from below).
        direction_norm, grad_norm: float ``[T]`` (β inference when the config is silent).
    """
    paper_setting = match_preset(config) is not None
    model = config.problem.model if config is not None else ""
    mode = request.mode
    scale = request.scale or default_scale(mode, paper_setting)
    opt = optimizer_of(config, direction_norm, grad_norm)
    s_typ = typical_step(s_opt)
    if scale == "paper":
        w = PAPER_WINDOW_MOMENTUM if opt.momentum > 0 else PAPER_WINDOW
        m = PAPER_MU
        lams: tuple[float, ...] = (
            (0.07,) if ("mobilenet" in model.lower() and opt.momentum > 0) else (0.05,)
        )
    else:
        h = _line0_spacing(positions)
        w = 2.0 * s_typ
        if math.isfinite(h) and not w >= 4.0 * h:
            w = 4.0 * h
        m = s_typ if math.isfinite(s_typ) else 4.0 * h
        lams = ()
    r = request
    return AnalysisSettings(
        mode=mode,
        scale=scale,
        window=float(r.window) if r.window is not None else float(w),
        lambdas=r.lambdas if r.lambdas is not None else lams,
        mu=float(r.mu) if r.mu is not None else float(m),
        optimizer=opt,
        typical_step=s_typ,
        resamples=int(r.resamples) if r.resamples is not None else 200,
        level=float(r.level) if r.level is not None else 0.95,
        overrides=tuple(r.overrides),
        paper_setting=paper_setting,
    )
