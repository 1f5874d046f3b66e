"""Trajectory files: checkpoints every C steps and per-segment step records.

Layout of ``RUN/trajectory/``::

    checkpoint_0000000.pt    state at step 0 (model, optimizer, scheduler)
    steps_0000000.npz        records of steps [0, C)
    checkpoint_0000100.pt    state at step C, written after the records of [0, C)
    eval_0000100.json        eval-mode loss/accuracy (train and validation) at step C
                             (read without torch: ``RunLayout.eval_paths``)
    meta.json                the run's CPU thread count (``RunLayout.trajectory_meta_path``)
    ...
    diverged.json            present when training stopped on a non-finite loss

A segment [c, c+C) is complete when its records and the checkpoint at its end exist. Every file
is written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_atomic
from ..errors import RunDirError
from ..store.run import eval_file
from .loop import StepRecord

_SCALARS = (
    "aug_seed",
    "dropout_seed",
    "batch_loss",
    "lr",
    "s_update",
    "direction_norm",
    "grad_norm",
    "directional_derivative",
)

_RENAMED = {"update_norm": "direction_norm"}
"""Columns written under an older name (records files of steplines before the line store's
schema 3): read under the current one."""


class TrajectoryDir:
    """Reads and writes one run's trajectory directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def checkpoint_path(self, t: int) -> Path:
        """File of the state at step t."""
        return self.path / f"checkpoint_{t:07d}.pt"

    def records_path(self, c: int) -> Path:
        """File of the records of the segment starting at step c."""
        return self.path / f"steps_{c:07d}.npz"

    def save_checkpoint(self, t: int, state: dict[str, Any]) -> None:
        """Write the state at step t atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.checkpoint_path(t), lambda f: torch.save(state, f))

    def _damaged(self, path: Path, err: BaseException) -> RunDirError:
        run = shlex.quote(str(self.path.parent))
        return RunDirError(
            f"{path} is damaged ({type(err).__name__}); delete it and record it again with: "
            f"steplines train --config {run}/config.toml --out {run} (the lines measured "
            "before are kept)"
        )

    def load_checkpoint(self, t: int, device: torch.device) -> dict[str, Any]:
        """Read the state at step t onto ``device``.

        Raises:
            RunDirError: the file is missing or damaged (one line naming it and the fix).
        """
        path = self.checkpoint_path(t)
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as err:  # truncated zip, bad pickle, missing file
            raise self._damaged(path, err) from None
        if not isinstance(state, dict) or "model" not in state:
            raise self._damaged(path, ValueError("not a checkpoint"))
        return state

    def save_records(self, c: int, records: list[StepRecord]) -> None:
        """Write the records of segment c atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        arrays = {"rows": np.stack([r.rows for r in records])}
        for name in _SCALARS:
            arrays[name] = np.array([getattr(r, name) for r in records])
        write_atomic(self.records_path(c), lambda f: np.savez(f, **arrays))

    def load_records(self, c: int) -> list[StepRecord]:
        """Read the records of segment c.

        Raises:
            RunDirError: the file is missing or damaged (one line naming it and the fix).
        """
        path = self.records_path(c)
        try:
            with np.load(path) as z:
                cols = {_RENAMED.get(k, k): z[k] for k in z.files}
            n = len(cols["rows"])
            if any(len(cols[k]) != n for k in _SCALARS):
                raise ValueError("columns of different lengths")
        except Exception as err:  # truncated zip, bad header, missing column
            raise self._damaged(path, err) from None
        return [
            StepRecord(
                rows=cols["rows"][i],
                **{k: (int if k.endswith("seed") else float)(cols[k][i]) for k in _SCALARS},
            )
            for i in range(len(cols["rows"]))
        ]

    def segments(self, steps: int, every: int) -> list[tuple[int, int]]:
        """``[(start, end), ...]`` segments of a ``steps``-step trajectory."""
        return [(c, min(c + every, steps)) for c in range(0, steps, every)]

    def completed_steps(self, steps: int, every: int) -> int:
        """Number of leading steps whose segments are complete (records + end checkpoint)."""
        done = 0
        for c, end in self.segments(steps, every):
            if not (self.records_path(c).exists() and self.checkpoint_path(end).exists()):
                break
            done = end
        return done

    def save_eval(self, t: int, metrics: dict[str, float]) -> None:
        """Write eval-mode metrics of the state at step t (``eval_<t>.json``; no torch to read)."""
        self.path.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"step": t, **metrics}).encode()
        write_atomic(self.path / eval_file(t), payload)

    def save_divergence(self, step: int, message: str) -> None:
        """Record that training stopped at ``step``."""
        payload = json.dumps({"step": step, "message": message}).encode()
        write_atomic(self.path / "diverged.json", payload)

    def divergence(self) -> dict[str, Any] | None:
        """``{"step", "message"}`` when training diverged, else None."""
        p = self.path / "diverged.json"
        if not p.exists():
            return None
        try:
            record = json.loads(p.read_text())
            return {"step": int(record["step"]), "message": str(record["message"])}
        except (OSError, ValueError, TypeError, KeyError):
            raise RunDirError(
                f"{p} is damaged; delete it and rerun the same command to train again from the "
                "last checkpoint (training stops at the divergence again)"
            ) from None

    def recorded_steps(self, steps: int, every: int) -> int:
        """Steps with records: the complete segments plus a diverged partial segment."""
        done = self.completed_steps(steps, every)
        if done < steps and self.records_path(done).exists():
            done += len(self.load_records(done))
        return done
