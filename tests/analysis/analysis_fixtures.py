"""Synthetic line stores with exactly parabolic per-sample lines, for the analysis tests.

Every per-sample line is ``ℓ_i(s) = a_i s² + b_i s + c_i``, so every mean line is a parabola
with the mean coefficients, and the direction batch's exact slope at 0 is ``mean(b_B)``.
Only numpy, the store and ``engine.positions`` (numpy-only) are used.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from steplines.engine.positions import first_pass
from steplines.store import LineRecord, LineStore
from steplines.store.schema import ARRAYS, ESTIMATOR_ARRAYS


@dataclass
class Parabolas:
    """Per-sample coefficients of one line."""

    train: np.ndarray  # [N, 3] columns a, b, c
    direction: np.ndarray  # [B, 3]
    val: np.ndarray  # [M, 3]


def coefficients(t: int, n: int, m: int, b: int) -> Parabolas:
    """Deterministic per-sample coefficients: a ∈ [2, 4], slope b < 0, offset c ∈ [0.5, 1.5]."""
    rng = np.random.default_rng(100 + t)

    def draw(rows: int, slope: float) -> np.ndarray:
        a = rng.uniform(2.0, 4.0, rows)
        bb = slope + rng.normal(0.0, 0.3, rows)
        c = rng.uniform(0.5, 1.5, rows)
        return np.stack([a, bb, c], axis=1)

    base = -0.4 - 0.05 * (t % 3)
    return Parabolas(train=draw(n, base), direction=draw(b, 1.5 * base), val=draw(m, base))


def evaluate(coef: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``[R, k]`` values ``a s² + b s + c`` in float64."""
    a, b, c = coef[:, 0:1], coef[:, 1:2], coef[:, 2:3]
    return a * s[None, :] ** 2 + b * s[None, :] + c


def make_run(
    run_dir: Path,
    *,
    n_lines: int = 6,
    n: int = 48,
    m: int = 4,
    b: int = 16,
    lr: float = 0.1,
    momentum: float = 0.0,
    skip: tuple[int, ...] = (),
    grid: str = "paper",
    interval: float = 0.5,
    resolution: float = 0.006,
    write_config: bool = True,
) -> Path:
    """Create ``run_dir`` with ``lines.zarr`` (+ ``config.toml``); lines in ``skip`` stay undone.

    The direction of line ``t`` is taken as the negative direction-batch gradient scaled so
    that ``s_update = lr·‖m_t‖``; for β = 0 ``‖m_t‖ = ‖g_t‖ = −mean(b_B)``. For β > 0 the
    direction norm is a made-up ``1.5·‖g_t‖`` (enough to exercise the momentum code paths).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    k_max = first_pass(grid, interval, resolution, 0.3).size + 1
    store = LineStore.create(
        run_dir / "lines.zarr",
        n_lines=n_lines,
        n_train=n,
        n_val=m,
        n_direction=b,
        n_positions=k_max,
        val_indices=np.arange(m),
        lines_per_chunk=n_lines,
        attrs={},
    )
    for t in range(n_lines):
        if t in skip:
            continue
        store.write_line(t, make_record(t, n, m, b, lr, momentum, grid, interval, resolution))
    if write_config:
        (run_dir / "config.toml").write_text(
            f"[problem]\nbatch_size = {b}\n\n[train]\nlr = {lr}\nmomentum = {momentum}\n\n"
            f'[measure]\ngrid = "{grid}"\ninterval = {interval}\nresolution = {resolution}\n'
        )
    return run_dir


def make_record(
    t: int,
    n: int,
    m: int,
    b: int,
    lr: float = 0.1,
    momentum: float = 0.0,
    grid: str = "paper",
    interval: float = 0.5,
    resolution: float = 0.006,
) -> LineRecord:
    """One parabolic line record (see :func:`make_run`)."""
    coef = coefficients(t, n, m, b)
    delta = float(coef.direction[:, 1].mean()) if b else -0.5
    grad_norm = -delta
    direction_norm = grad_norm if momentum == 0 else 1.5 * grad_norm
    s_update = lr * direction_norm
    pos = first_pass(grid, interval, resolution, s_update)
    rng = np.random.default_rng(7 + t)
    return LineRecord(
        positions=pos,
        train_losses=evaluate(coef.train, pos).astype(np.float32),
        val_losses=evaluate(coef.val, pos).astype(np.float32),
        direction_losses=evaluate(coef.direction, pos).astype(np.float32),
        train_indices=rng.permutation(10 * n)[:n],
        direction_indices=rng.permutation(10 * n)[:b],
        s_update=s_update,
        direction_norm=direction_norm,
        grad_norm=grad_norm,
        directional_derivative=delta,
        lr=lr,
        batch_loss=float(coef.direction[:, 2].mean()),
        n_passes=3 * pos.size,
    )


def with_exact_inputs(run: Path, n: int = 48, m: int = 4, b: int = 16) -> None:
    """Rewrite every line with the closed-form estimator inputs of its parabolic l_B."""
    store = LineStore.open(run / "lines.zarr", mode="r+")
    for t in np.flatnonzero(store.done()):
        rec = make_record(int(t), n, m, b)
        a_b, b_b = coefficients(int(t), n, m, b).direction[:, :2].mean(0)
        store.write_line(
            int(t),
            dataclasses.replace(
                rec,
                est_slope_update=b_b + 2 * a_b * rec.s_update,
                est_curvature=2 * a_b,
                est_sample_grad_sq=5.0,
                est_batch_grad_sq=1.0,
            ),
        )


def make_version_1(store_path: Path) -> None:
    """Turn a store into what steplines wrote before schema version 2 (no ``est_*`` arrays,
    ``direction_norm`` under its old name ``update_norm``, no schema-4 ``record_checksum``)."""
    for name in (*ESTIMATOR_ARRAYS, "record_checksum"):
        if (store_path / name).exists():
            shutil.rmtree(store_path / name)
    for spec in ARRAYS:
        if spec.name_in(1) != spec.name:
            (store_path / spec.name).rename(store_path / spec.name_in(1))
    zarr.open_group(store_path, mode="r+").attrs["schema_version"] = 1
