"""One line from its anchor and batches to a store record: :class:`LineMeasurer`.

The record holds the per-sample losses ℓ_i(θ_t + s_k·d_t) of the full batch, the validation
set and the direction batch at the positions s_k (:func:`~steplines.engine.line.measure_line`),
the step's scalars (s_update = ‖u_t‖, ‖u_t‖/λ_t, ‖g_t‖, g_t·d_t, λ_t, the batch loss) and the
cheap estimators' inputs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import EngineConfig, MeasureConfig
from ..engine.common import EvalBatch, LinePolicy, LossFn
from ..engine.estimators import EstimatorInputs, LineEstimator
from ..engine.factory import make_engine
from ..engine.line import Evaluate, GridSpec, LineSamples, measure_line
from ..engine.precision import check_precision, compare_lines
from ..store import LineRecord
from ..trajectory.loop import LineAnchor


def line_record(
    samples: LineSamples,
    anchor: LineAnchor,
    train_rows: np.ndarray,
    estimates: EstimatorInputs | None = None,
) -> LineRecord:
    """Pack a measured line as its store record (losses float32, positions float64).

    Args:
        samples: the per-sample losses at the line's positions (columns sorted by s).
        anchor: θ_t, d_t and step t's record (s_update, norms, λ_t, batch loss, rows).
        train_rows: the full batch's training rows, in the order of ``samples.train``.
        estimates: the cheap estimators' inputs (NaN when None).
    """
    r = anchor.record
    e = estimates or EstimatorInputs()
    return LineRecord(
        positions=samples.positions.astype(np.float64),
        train_losses=samples.train.astype(np.float32),
        val_losses=samples.val.astype(np.float32),
        direction_losses=samples.direction.astype(np.float32),
        train_indices=train_rows.astype(np.int64),
        direction_indices=r.rows.astype(np.int64),
        s_update=r.s_update,
        direction_norm=r.direction_norm,
        grad_norm=r.grad_norm,
        directional_derivative=r.directional_derivative,
        lr=r.lr,
        batch_loss=r.batch_loss,
        n_passes=samples.n_passes,
        est_slope_update=e.slope_update,
        est_curvature=e.curvature,
        est_sample_grad_sq=e.sample_grad_sq,
        est_batch_grad_sq=e.batch_grad_sq,
    )


class LineMeasurer:
    """Measures one line from its anchor and batches and packs it as a store record.

    The one path from an anchor to a :class:`~steplines.store.LineRecord`, shared by the
    segment loop of :func:`~steplines.measure.segments.measure_lines` and by
    :class:`steplines.probe.LineProbe`, so that both write identical lines.

    With ``m.estimators`` it also computes the line's estimator inputs
    (:class:`~steplines.engine.estimators.LineEstimator`, on its own model copy, after the
    engine's measurement, which it does not change): per-sample gradients on every
    ``m.noise_scale_every``-th line (``t ≡ 0``).

    With ``m.precision`` other than fp32 and a ``record_path``, the first line it measures
    and every ``m.precision_check_every``-th after it are evaluated a second time, at the same
    positions on the same batches, by an fp32 fast engine (eager: one call every 50 lines
    would not repay a compilation); :func:`~steplines.engine.precision.compare_lines` of the
    two is appended to ``record_path`` as one JSON line (``{"t", "precision", ...}``).

    Args:
        m: the measurement configuration: what is measured (grid, policies, precision,
            estimators) and, as its :class:`~steplines.config.EngineConfig`, how (engine, call
            size, compile, memory, workers, precision checks).
        model: the network; the engine works on a private copy and never changes it.
        loss_fn: per-sample loss.
        device: where to measure.
        batch_size: B, the BatchNorm evaluation batch size (the engines read it off the
            batches).
        record_path: where the precision checks go (``RUN/precision_checks.jsonl``); None =
            no checks.
        workers_ok: ``m.workers = "auto"`` may start worker processes (the CLI's loop; a
            user's training loop, where LineProbe runs, keeps its own thread settings).

    Raises:
        ConfigError: ``m.precision`` cannot run on ``device`` (tf32 on CPU).
    """

    def __init__(
        self,
        m: MeasureConfig,
        model: nn.Module,
        loss_fn: LossFn,
        device: torch.device,
        batch_size: int,
        record_path: Path | None = None,
        *,
        workers_ok: bool = False,
    ) -> None:
        del batch_size  # the batches say it
        check_precision(m.precision, device)
        engine, policy = EngineConfig.from_measure(m), LinePolicy(m.batchnorm, m.dropout)
        self.spec = GridSpec(m.grid, m.interval, m.resolution, m.max_passes)
        self.evaluate = make_engine(
            engine,
            model,
            loss_fn,
            device,
            policy=policy,
            precision=m.precision,
            workers_ok=workers_ok,
        )
        self.precision, self.check_every = m.precision, engine.precision_check_every
        self.record_path = record_path if m.precision != "fp32" else None
        self.fp32: Evaluate | None = None
        if self.record_path is not None:
            fp32 = dataclasses.replace(engine, compile="off", workers=1)
            self.fp32 = make_engine(fp32, model, loss_fn, device, policy=policy)
        self.measured = 0
        self.estimator = LineEstimator(model, loss_fn, policy) if m.estimators else None
        self.noise_scale_every = m.noise_scale_every

    def __call__(
        self,
        anchor: LineAnchor,
        train: list[EvalBatch],
        val: list[EvalBatch],
        direction: EvalBatch,
        train_rows: np.ndarray,
    ) -> LineRecord:
        """Measure line ``anchor.t`` on the given batches; return its store record."""
        samples = measure_line(
            self.evaluate,
            anchor.theta,
            anchor.direction,
            anchor.buffers,
            anchor.record.s_update,
            train,
            val,
            direction,
            self.spec,
        )
        if self.fp32 is not None and self.measured % self.check_every == 0:
            self._check_precision(anchor, samples, [*train, *val, direction])
        self.measured += 1
        estimates = None
        if self.estimator is not None:
            every = self.noise_scale_every
            estimates = self.estimator(
                anchor.theta,
                anchor.direction,
                anchor.buffers,
                anchor.record.s_update,
                direction,
                per_sample=every > 0 and anchor.t % every == 0,
            )
        return line_record(samples, anchor, train_rows, estimates)

    def close(self) -> None:
        """Stop the engine's worker processes, if any (idempotent)."""
        close = getattr(self.evaluate, "close", None)
        if close is not None:
            close()

    def _check_precision(
        self, anchor: LineAnchor, samples: LineSamples, batches: list[EvalBatch]
    ) -> None:
        """Measure the line again in fp32 and append the difference to ``record_path``."""
        assert self.fp32 is not None and self.record_path is not None
        ref = self.fp32(anchor.theta, anchor.direction, anchor.buffers, samples.positions, batches)
        losses = np.concatenate([samples.train, samples.val, samples.direction])
        diff = compare_lines(
            samples.positions, losses, ref.detach().cpu().numpy(), samples.train.shape[0]
        )
        line = json.dumps({"t": anchor.t, "precision": self.precision, **diff}) + "\n"
        # append mode, one write per record: lines of concurrent shards do not interleave
        with open(self.record_path, "a", encoding="utf-8") as f:
            f.write(line)
