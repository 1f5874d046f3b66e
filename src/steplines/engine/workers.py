"""Use every CPU core: split a line's positions over single-threaded worker processes.

A line's positions are independent — ``ℓ_i(s_k)`` depends only on ``θ_t + s_k·d_t`` and the
fixed batches — so ``W`` processes that each evaluate a contiguous share of the positions with
the same :class:`~steplines.engine.fast.FastEvaluator` produce exactly the columns one
process would, and :class:`WorkerPool` concatenates them. One thread per process, not ``W``
OpenMP threads in one process: on the 2-core CPU two single-threaded processes evaluated
ResNet-20 lines 1.10× faster than two threads (1,902 vs 1,736 evals/s, quiet machine) and kept
their speed when another process took a core, where a 2-thread OpenMP team collapsed to
5–20 % (its barriers wait on the descheduled thread; BENCHMARKS.md).

The workers are fresh interpreters (``python -m steplines.engine.workers``: no OpenMP state
inherited through ``fork``, and never a re-import of the caller's ``__main__``), each in its
own session, so that the terminal's Ctrl-C reaches only the parent, which stops them. They
start on the first line that is worth it and receive θ_t, d_t, the buffers and (once per
line) the batches as arrays through their stdin/stdout pipes. Every decision that depends on
the number of positions (channels-last, ``torch.compile``) is taken once in the parent, so
that the workers run exactly the engine one process would run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import SteplinesError
from .common import EvalBatch
from .fast import FastEvaluator

log = logging.getLogger("steplines")

WORKERS_MIN_FLOP = 1e10
"""``workers = "auto"`` starts worker processes for lines whose pass costs at least this many
FLOP (the demo's lines: 3.6·10¹⁰; ResNet-20's: 6.9·10¹³): starting a worker (a fresh
interpreter importing torch) takes a few seconds, so smaller lines — the tests' — stay in one
process."""


class WorkerError(SteplinesError, RuntimeError):
    """A worker process failed or died; the lines measured before are kept (the CLI says so
    in one line)."""


def _arrays(tensors: Sequence[Tensor]) -> list[np.ndarray]:
    return [t.detach().cpu().numpy() for t in tensors]


def _tensors(arrays: Sequence[np.ndarray]) -> list[Tensor]:
    return [torch.from_numpy(a) for a in arrays]


class _Link:
    """Both ends of a worker's pipes (its stdin and stdout) as one duplex connection."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.reader = Connection(read_fd, writable=False)
        self.writer = Connection(write_fd, readable=False)

    def send(self, obj: object) -> None:
        self.writer.send(obj)

    def recv(self) -> Any:
        return self.reader.recv()

    def shut(self) -> None:
        for c in (self.reader, self.writer):
            with contextlib.suppress(OSError):
                c.close()


def _serve(link: _Link) -> None:
    """Worker main loop: build the engine once (the first message), then evaluate the
    positions it is sent until it reads None or its parent is gone.

    A message is ``(θ, d, buffers, positions, batches)`` as NumPy arrays (pickled by value
    through the pipe: a few syscalls, where torch's shared-memory tensors cost a file
    descriptor hand-over per tensor, ~90 ms per message for the digits network); ``batches``
    is None when they are the previous message's (the passes of one line).
    """
    torch.set_num_threads(1)
    try:
        first = link.recv()
    except (EOFError, OSError):
        return
    if first is None:  # closed before it was sent its engine (Ctrl-C while starting)
        return
    ev: FastEvaluator = pickle.loads(first)
    batches: list[EvalBatch] = []
    while True:
        try:
            msg = link.recv()
        except (EOFError, OSError):  # the parent is gone (killed): nothing left to do
            return
        if msg is None:
            return
        theta, direction, buffers, positions, sent = msg
        if sent is not None:
            batches = [EvalBatch(torch.from_numpy(x), torch.from_numpy(y), s) for x, y, s in sent]
        try:
            out = ev(_tensors(theta), _tensors(direction), _tensors(buffers), positions, batches)
        except Exception as err:  # reported to the parent, which raises it as one line
            reply: tuple = ("error", f"{type(err).__name__}: {err}")
        else:
            reply = ("ok", out.numpy())
        try:
            link.send(reply)
        except OSError:  # BrokenPipeError: the parent is gone (killed): exit without a word
            return


def _worker_main() -> None:
    """``python -m steplines.engine.workers``: serve on stdin/stdout; fd 1 then points at
    stderr, so that nothing printed can corrupt the protocol."""
    out = os.dup(1)
    os.dup2(2, 1)
    _serve(_Link(0, out))


def _start_worker() -> tuple[subprocess.Popen, _Link]:
    """A worker process in its own session: the terminal's Ctrl-C (sent to the foreground
    process group) reaches only the parent, which stops the workers; a worker whose parent
    died reads EOF and exits. It imports ``steplines`` as a module, never the caller's
    ``__main__``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "steplines.engine.workers"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    link = _Link(os.dup(proc.stdout.fileno()), os.dup(proc.stdin.fileno()))
    proc.stdin.close()
    proc.stdout.close()
    return proc, link


class WorkerPool:
    """Evaluate a line's positions on ``workers`` single-threaded processes.

    Same call signature and numbers as the wrapped :class:`FastEvaluator` with one thread:
    positions ``[K]`` are cut into ``workers`` contiguous chunks (``np.array_split``), chunk w
    is evaluated by worker w, and the ``[rows, K_w]`` results are concatenated column-wise.

    Args:
        engine: the configured engine; it stays usable in-process (sizing, and lines below
            ``min_flop``), and a copy of it, with its layout and compile decisions fixed,
            runs in each worker.
        workers: number of processes (≥ 2).
        min_flop: start the workers only for passes of at least this many FLOP; smaller ones
            run in-process (with the caller's threads).
    """

    def __init__(self, engine: FastEvaluator, workers: int, min_flop: float = 0.0) -> None:
        if workers < 2:
            raise ValueError(f"a worker pool needs at least 2 workers, got {workers}")
        self.engine = engine
        self.workers = workers
        self.min_flop = min_flop
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        self._batches: list[EvalBatch] = []
        self._busy = False

    @property
    def started(self) -> bool:
        """Whether the worker processes are running."""
        return bool(self._procs)

    def _start(self, batches: Sequence[EvalBatch], n_positions: int) -> bool:
        """Start the workers with a copy of the engine whose decisions are fixed; False when
        the engine cannot be sent to another process (then it runs in-process)."""
        # the budget bounds all workers' calls together
        twin = self.engine.frozen(batches, n_positions, processes=self.workers)
        try:
            payload = pickle.dumps(twin)
        except Exception as err:  # a user's lambda loss or unpicklable module
            log.warning("evaluating in one process: the engine cannot be pickled (%s)", err)
            self.min_flop = float("inf")
            return False
        for _ in range(self.workers):
            proc, link = _start_worker()
            self._procs.append(proc)
            self._conns.append(link)
        try:
            for link in self._conns:
                link.send(payload)
        except OSError as err:
            self.close()
            raise WorkerError(f"an engine worker process did not start ({err})") from err
        return True

    def _worth_it(self, batches: Sequence[EvalBatch], n_positions: int) -> bool:
        if self.started:
            return True
        if not batches or batches[0].x.device.type != "cpu" or n_positions < self.workers:
            return False
        rows = sum(b.y.shape[0] for b in batches)
        flop = self.engine.profile(batches[0].x)[0] * rows * n_positions
        return flop >= self.min_flop and self._start(batches, n_positions)

    def __call__(
        self,
        theta: Sequence[Tensor],
        direction: Sequence[Tensor],
        buffers: Sequence[Tensor],
        positions: np.ndarray,
        batches: Sequence[EvalBatch],
    ) -> Tensor:
        """Per-sample losses ``[rows, K]`` (as :func:`~.reference.reference_losses`)."""
        if len(positions) < self.workers or not self._worth_it(batches, len(positions)):
            return self.engine(theta, direction, buffers, positions, batches)
        anchor = (_arrays(theta), _arrays(direction), _arrays(buffers))
        same = len(batches) == len(self._batches) and all(
            a is b for a, b in zip(batches, self._batches)
        )
        sent = None if same else [(*_arrays([b.x, b.y]), b.dropout_seed) for b in batches]
        self._batches = list(batches)  # held, so that identity means "the same batches"
        chunks = np.array_split(np.asarray(positions), self.workers)
        try:
            self._busy = True
            for conn, chunk in zip(self._conns, chunks):
                conn.send((*anchor, chunk, sent))
            replies = [conn.recv() for conn in self._conns]
            self._busy = False
        except (EOFError, OSError, BrokenPipeError) as err:
            codes = [p.poll() for p in self._procs]
            self.close()
            raise WorkerError(
                f"an engine worker process died (exit codes {codes}); measured lines are "
                "kept — rerun to measure the rest"
            ) from err
        errors = [msg for kind, msg in replies if kind == "error"]
        if errors:
            raise WorkerError(f"engine worker failed: {errors[0]}")
        out = torch.cat([torch.from_numpy(a) for _, a in replies], dim=1)
        return out.to(theta[0].device)

    def close(self) -> None:
        """Stop the workers (idempotent): idle ones finish, busy ones (an interrupted call:
        Ctrl-C, an error in the parent) are killed at once rather than finishing a line."""
        for link in self._conns:
            with contextlib.suppress(OSError):
                link.send(None)
        for proc in self._procs:
            if self._busy:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for link in self._conns:
            link.shut()
        self._conns, self._procs, self._batches = [], [], []
        self._busy = False

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


if __name__ == "__main__":
    _worker_main()
