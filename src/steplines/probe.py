"""Measure lines inside your own training loop: :class:`LineProbe`.

The probe writes the same run directory as ``steplines run`` (``config.toml``,
``provenance.json``, ``lines.zarr``), so ``steplines analyze`` and ``steplines report`` work
unchanged. For a scheduled step t it snapshots θ_t (and the buffers) when the ``with`` block
opens, takes the mini-batch gradient g_t at the moment ``optimizer.step()`` is called (a step
pre-hook), and, when the block closes, reads the update *as applied*,

    u_t = θ_{t+1} − θ_t,   d_t = u_t/‖u_t‖,   s_update = ‖u_t‖,

for any optimizer (Adam, AdamW, weight decay, schedules, parameter groups), and measures the
line θ_t + s·d_t with the same engine as ``steplines run``::

    probe = LineProbe("runs/mine", model, loss_fn, train=(x, y), val=(x_val, y_val),
                      batch_size=128, steps=n_steps, optimizer=opt, schedule="log:50")
    for t, (x, y) in enumerate(batches):
        with probe.step(t, x, y) as line:
            opt.zero_grad()
            loss = loss_fn(model(x), y).mean()
            loss.backward()
            opt.step()
            line.loss = loss          # optional: the batch loss as training saw it
        scheduler.step()

Training is left untouched: the engine evaluates a private copy of the model under a forked
RNG, so the trajectory is the same, bit for bit on CPU, with and without the probe. The probe
resumes: reopened on the same directory with the same settings it skips finished lines.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .config import MeasureConfig, RunConfig, validate_config
from .engine.common import EvalBatch, trainable_parameters
from .engine.precision import check_precision
from .errors import ConfigError
from .live import LineProgress, LiveLog, record_summary
from .locks import train_lock
from .measure import LineBatches, LineMeasurer, backfill_live, open_or_create_store
from .problems.problem import LossFn, Problem, check_problem, to_device
from .rundir import RunDir
from .schedule import Schedule, schedule_mask
from .seeding import derive_seed
from .store import LineStore
from .trajectory.loop import LineAnchor, StepRecord, gradients, update_line

__all__ = ["LineProbe", "ProbeStep", "Schedule", "schedule_mask"]


@dataclass
class ProbeStep:
    """The handle of one ``with probe.step(...)`` block.

    Attributes:
        t: the step index.
        active: whether this step's line is measured (scheduled and not yet done).
        loss: set it to the batch loss the training computed (optional); otherwise the store
            gets the direction batch's mean loss at s = 0 as measured by the engine.
        record: the store record after the block closed (None when inactive).
    """

    t: int
    active: bool
    loss: Tensor | float | None = None
    record: Any = None
    _theta: list[Tensor] = field(default_factory=list, repr=False)
    _buffers: list[Tensor] = field(default_factory=list, repr=False)
    _grads: list[Tensor] | None = field(default=None, repr=False)
    _lr: float = math.nan
    _steps_seen: int = 0


class LineProbe:
    """Measure the update-step lines of your own training loop into a steplines run directory.

    Give the data either as tensors (``train``, ``val``, ``loss_fn``, ``batch_size``) or as a
    :class:`~steplines.problems.problem.Problem` (``problem=``, e.g. the one ``steplines run``
    uses, to get identical lines).

    Args:
        run_dir: the run directory to write (created, or reopened with the same settings).
        model: the model being trained (never modified by the probe).
        loss_fn: per-sample loss ``(output, targets) → [n]`` (``reduction="none"``).
        train: ``(inputs [N, ...], targets [N, ...])``: the full batch each line is measured on.
        val: the validation set, or None.
        batch_size: B, the BatchNorm evaluation batch size (use the training batch size).
        steps: T, the number of training steps (the store holds one slot per step).
        optimizer: the optimizer; the probe hooks its ``step`` to read g_t exactly there, and
            records its lr (group 0), momentum and class. Without it, g_t is read when the
            block closes and lr is NaN.
        schedule: which steps get a line (:func:`schedule_mask`).
        measure: measurement settings (a ``[measure]`` table as a dict, or a
            :class:`~steplines.config.MeasureConfig`); default: the symmetric grid ±0.5 in
            steps of 0.01 with enlargement, and the whole (fixed) training set as full batch.
        seed: seed of the probe's own random choices (full-batch order in ``epoch`` mode,
            dropout masks of the evaluation batches).
        problem: instead of the tensors: a problem (its data, loss and batch size).
        config: instead of ``measure``/``seed``: a whole :class:`~steplines.config.RunConfig`
            (e.g. the one of a ``steplines run``, for identical lines).
        progress: show a progress bar over the scheduled lines on stderr (ETA from the
            measured seconds of the recent lines, i.e. the measuring time left, not your
            training's; the postfix shows the last line's s_opt, s_update/s_opt, l(0) and
            fit error). Every measured line's summary also goes to ``RUN/live.jsonl``
            (:mod:`steplines.live`), whatever this setting.

    Raises:
        ConfigError: missing or inconsistent data, a loss without per-sample reduction, or a
            bad schedule or measure setting (one line each).
        RunDirError: ``run_dir`` holds a run with other settings.
    """

    def __init__(
        self,
        run_dir: str | Path,
        model: nn.Module,
        loss_fn: LossFn | None = None,
        *,
        train: tuple[Tensor, Tensor] | None = None,
        val: tuple[Tensor, Tensor] | None = None,
        batch_size: int | None = None,
        steps: int,
        optimizer: torch.optim.Optimizer | None = None,
        schedule: Schedule = "all",
        measure: dict[str, Any] | MeasureConfig | None = None,
        seed: int = 0,
        problem: Problem | None = None,
        config: RunConfig | None = None,
        progress: bool = True,
    ) -> None:
        if problem is None:
            if train is None or loss_fn is None or batch_size is None:
                raise ConfigError(
                    "LineProbe needs train=(inputs, targets), loss_fn and batch_size, or a problem="
                )
            # the check builds "the model" from this factory: a copy, never the user's own
            problem = Problem.from_tensors(
                train, val, lambda: copy.deepcopy(model), loss_fn, batch_size
            )
        self.problem = check_problem(problem, "LineProbe")
        self.model = model
        self.optimizer = optimizer
        params = [p for _, p in trainable_parameters(model)]
        if not params:
            raise ConfigError("LineProbe: the model has no trainable parameters")
        self.params = params
        self.device, self.dtype = params[0].device, params[0].dtype
        self.mask, schedule_text = schedule_mask(schedule, steps)
        self.config = config or self._config(steps, measure, seed, schedule_text)
        if self.config.train.steps != steps:
            raise ConfigError(
                f"LineProbe: steps={steps} but config.train.steps is {self.config.train.steps}"
            )
        check_precision(self.config.measure.precision, self.device)
        self.run = RunDir.prepare(Path(run_dir), self.config)
        self.run.write_provenance(self.device)
        with train_lock(self.run.path):
            self.store: LineStore = open_or_create_store(self.run, self.problem)
        self._done = self.store.done()
        self.batches = LineBatches(self.problem, self.config, self.device, self.dtype)
        self.measurer = LineMeasurer(
            self.config.measure,
            model,
            self.problem.loss_fn,
            self.device,
            self.problem.batch_size,
            record_path=self.run.layout.precision_checks_path,
        )
        self._current: ProbeStep | None = None
        self.live = LiveLog(self.run.path)
        backfill_live(self.live, self.store, [(0, steps)], self._done)  # killed after a write
        todo = int(np.count_nonzero(self.mask & ~self._done))
        self.progress = LineProgress(todo, "lines", progress)
        self._hook = (
            optimizer.register_step_pre_hook(self._before_optimizer_step)
            if optimizer is not None
            else None
        )

    def _config(
        self,
        steps: int,
        measure: dict[str, Any] | MeasureConfig | None,
        seed: int,
        schedule: str,
    ) -> RunConfig:
        m = measure.model_dump() if isinstance(measure, MeasureConfig) else dict(measure or {})
        m = {"grid": "symmetric", "interval": 0.5, "resolution": 0.01, "full_batch": "fixed", **m}
        train: dict[str, Any] = {
            "steps": steps,
            "seed": seed,
            "checkpoint_every": min(steps, 100),
        }
        opt = self.optimizer
        if opt is not None:
            group = opt.param_groups[0]
            name = type(opt).__name__
            if getattr(torch.optim, name, None) is type(opt):
                train["optimizer"] = name
            if isinstance(group.get("lr"), (int, float)) and group["lr"] > 0:
                train["lr"] = float(group["lr"])
            momentum = group.get("momentum", group.get("betas", (0.0,))[0])
            train["momentum"] = float(momentum) if 0 <= float(momentum) < 1 else 0.0
            train["weight_decay"] = float(group.get("weight_decay", 0.0))
        probe = {
            "model": type(self.model).__name__,
            "optimizer": type(opt).__name__ if opt is not None else "",
            "schedule": schedule,
            "data": self.problem.name,
        }
        data = {
            "problem": {
                "dataset": "custom",
                "model": "custom",
                "batch_size": self.problem.batch_size,
                "train_size": len(self.problem.train),
                **({"val_size": len(self.problem.val)} if len(self.problem.val) else {}),
            },
            "train": train,
            "measure": m,
            "probe": probe,
        }
        return validate_config(data, "LineProbe settings")

    # -- the loop's side --------------------------------------------------------------------
    def due(self, t: int) -> bool:
        """Whether step t's line is scheduled and not yet measured."""
        return 0 <= t < self.mask.size and bool(self.mask[t]) and not bool(self._done[t])

    def step(
        self,
        t: int,
        x: Tensor,
        y: Tensor,
        *,
        rows: np.ndarray | None = None,
        dropout_seed: int | None = None,
    ) -> _StepContext:
        """The ``with`` block around one training step (forward, backward, optimizer step).

        Args:
            t: the step index (0-based, < ``steps``).
            x, y: the mini-batch of this step (the direction batch of line t).
            rows: the batch's row ids in the training set (stored; default −1).
            dropout_seed: the seed of the direction batch's dropout mask on the line; pass the
                seed your forward used to measure with the same mask (default: derived).
        """
        return _StepContext(self, t, x, y, rows, dropout_seed)

    def close(self) -> None:
        """Remove the optimizer hook and stop the engine's worker processes, if any (the
        store is always consistent on disk)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.measurer.close()
        self.progress.close()
        self.live.close()

    def __enter__(self) -> LineProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------
    def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        cur = self._current
        if cur is None or not cur.active:
            return
        cur._steps_seen += 1
        cur._grads = gradients(self.params)

    def _open(self, t: int) -> ProbeStep:
        if self._current is not None:
            raise ConfigError("LineProbe: probe.step blocks cannot be nested")
        cur = ProbeStep(t, self.due(t))
        if cur.active:
            cur._theta = [p.detach().clone() for p in self.params]
            cur._buffers = [b.detach().clone() for b in self.model.buffers()]
            if self.optimizer is not None:
                cur._lr = float(self.optimizer.param_groups[0]["lr"])
        self._current = cur
        return cur

    def _close(
        self,
        cur: ProbeStep,
        x: Tensor,
        y: Tensor,
        rows: np.ndarray | None,
        dropout_seed: int | None,
    ) -> None:
        self._current = None
        if not cur.active:
            return
        if cur._steps_seen > 1:
            raise ConfigError(
                f"LineProbe: optimizer.step() ran {cur._steps_seen} times in the block of step "
                f"{cur.t}; put exactly one step in each probe.step block"
            )
        grads = cur._grads if cur._grads is not None else gradients(self.params)
        direction, norm, slope, grad_norm = update_line(cur._theta, self.params, grads)
        n = int(y.shape[0])
        rows_ = np.full(n, -1, np.int64) if rows is None else np.asarray(rows, np.int64)
        seed = (
            derive_seed(self.config.train.seed, "dropout", cur.t)
            if dropout_seed is None
            else int(dropout_seed)
        )
        loss = float(cur.loss.detach()) if isinstance(cur.loss, Tensor) else cur.loss
        record = StepRecord(
            rows=rows_,
            aug_seed=-1,
            dropout_seed=seed,
            batch_loss=math.nan if loss is None else float(loss),
            lr=cur._lr,
            s_update=norm,
            direction_norm=norm / cur._lr if cur._lr > 0 else math.nan,
            grad_norm=grad_norm,
            directional_derivative=slope,
        )
        anchor = LineAnchor(cur.t, cur._theta, direction, cur._buffers, record)
        train, val, train_rows = self.batches.full_and_val(cur.t)
        batch = EvalBatch(to_device(x.detach(), self.device, self.dtype), y.to(self.device), seed)
        start = time.perf_counter()
        line = self.measurer(anchor, train, val, batch, train_rows)
        seconds = time.perf_counter() - start
        if not math.isfinite(line.batch_loss):  # the engine's l_B(0) in float64
            zero = int(np.flatnonzero(line.positions == 0.0)[0])
            l_b = float(line.direction_losses[:, zero].astype(np.float64).mean())
            line = dataclasses.replace(line, batch_loss=l_b)
        self.store.write_line(cur.t, line)
        self._done[cur.t] = True
        cur.record = line
        summary = record_summary(cur.t, line, seconds)
        self.live.append(summary)  # after the store: a line in live.jsonl is a done line
        self.progress.update(seconds, summary)


class _StepContext:
    """Context manager returned by :meth:`LineProbe.step`."""

    def __init__(
        self,
        probe: LineProbe,
        t: int,
        x: Tensor,
        y: Tensor,
        rows: np.ndarray | None,
        dropout_seed: int | None,
    ) -> None:
        self.probe, self.t, self.x, self.y = probe, t, x, y
        self.rows, self.dropout_seed = rows, dropout_seed
        self.handle: ProbeStep | None = None

    def __enter__(self) -> ProbeStep:
        self.handle = self.probe._open(self.t)
        return self.handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.handle is not None
        if exc_type is not None:  # the training step failed: measure nothing
            self.probe._current = None
            return
        self.probe._close(self.handle, self.x, self.y, self.rows, self.dropout_seed)
