"""Worker processes that share a line's positions give the one-process engine's numbers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steplines.config import EngineConfig, MeasureConfig
from steplines.engine.common import LinePolicy
from steplines.engine.factory import make_engine
from steplines.engine.fast import FastEvaluator
from steplines.engine.reference import reference_losses
from steplines.engine.workers import WorkerError, WorkerPool

from cases import digits_line

POSITIONS = np.linspace(-0.5, 0.5, 7)


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


@pytest.fixture(scope="module")
def line():
    return digits_line((16, 16, 16, 5), first_seed=0)


def test_pool_equals_one_process_and_reference(line) -> None:
    """Positions cut into contiguous chunks, one per worker; columns come back in order."""
    model, theta, d, bufs, batches = line
    pool = WorkerPool(FastEvaluator(model, LinePolicy(), loss_fn, 48), 2)
    try:
        got = pool(theta, d, bufs, POSITIONS, batches)
        assert pool.started
        again = pool(theta, d, bufs, POSITIONS[::-1].copy(), batches)  # workers are reused
    finally:
        pool.close()
    assert not pool.started
    with torch.inference_mode():
        torch.set_num_threads(1)
        try:
            one = FastEvaluator(model, LinePolicy(), loss_fn, 48)(
                theta, d, bufs, POSITIONS, batches
            )
        finally:
            torch.set_num_threads(2)
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, LinePolicy(), loss_fn)
    assert torch.equal(got, one)  # the same engine on one thread, bit for bit
    assert torch.equal(again, got.flip(1))
    assert (got - ref).abs().max().item() <= 1e-5


def test_small_lines_and_unpicklable_engines_stay_in_process(line, caplog) -> None:
    model, theta, d, bufs, batches = line
    small = WorkerPool(FastEvaluator(model, LinePolicy(), loss_fn), 2, min_flop=1e15)
    small(theta, d, bufs, POSITIONS, batches)
    assert not small.started  # below min_flop: no processes

    def local_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # not picklable
        return F.cross_entropy(logits, y, reduction="none")

    pool = WorkerPool(FastEvaluator(model, LinePolicy(), local_loss), 2)
    with caplog.at_level(logging.WARNING, logger="steplines"):
        got = pool(theta, d, bufs, POSITIONS, batches)
    assert not pool.started and "cannot be pickled" in caplog.text
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, LinePolicy(), loss_fn)
    assert (got - ref).abs().max().item() <= 1e-5


def test_a_dead_worker_is_one_clear_error(line) -> None:
    model, theta, d, bufs, batches = line
    pool = WorkerPool(FastEvaluator(model, LinePolicy(), loss_fn), 2)
    try:
        pool(theta, d, bufs, POSITIONS, batches)
        pool._procs[1].kill()
        pool._procs[1].wait()
        with pytest.raises(WorkerError, match=r"worker process died.*rerun"):
            pool(theta, d, bufs, POSITIONS, batches)
        assert not pool.started
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("workers", "workers_ok", "threads", "pool"),
    [
        ("auto", True, 2, True),  # steplines run/measure on 2 cores
        ("auto", False, 2, False),  # LineProbe in a user's script
        ("auto", True, 1, False),  # one CPU thread
        (1, True, 2, False),
        (2, False, 1, True),  # an explicit number always
    ],
)
def test_worker_choice(line, workers, workers_ok: bool, threads: int, pool: bool) -> None:
    model = line[0]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ev = make_engine(
            EngineConfig.from_measure(MeasureConfig(workers=workers)),
            model,
            loss_fn,
            torch.device("cpu"),
            policy=LinePolicy(),
            workers_ok=workers_ok,
        )
    finally:
        torch.set_num_threads(before)
    assert isinstance(ev, WorkerPool) is pool
    assert not getattr(ev, "started", False)  # nothing is spawned before a big enough line


def test_workers_config_is_validated() -> None:
    with pytest.raises(ValueError, match="workers"):
        MeasureConfig(workers=0)
    with pytest.raises(ValueError, match="workers"):
        MeasureConfig(workers="many")


def test_a_worker_whose_parent_is_gone_exits_without_a_traceback() -> None:
    """The parent was killed while the worker computed: its reply meets a closed pipe
    (BrokenPipeError), and the worker returns quietly instead of printing a traceback."""
    import os
    import pickle
    from multiprocessing.connection import Connection

    from steplines.engine.workers import _Link, _serve

    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    os.close(from_worker_r)  # the parent is gone: nobody reads the reply
    parent = Connection(to_worker_w, readable=False)
    parent.send(pickle.dumps("not an evaluator"))  # calling it fails: an error reply is sent
    parent.send((None, None, None, None, None))
    parent.close()
    _serve(_Link(to_worker_r, from_worker_w))  # before the fix: BrokenPipeError


def test_a_worker_closed_before_its_engine_arrives_exits_quietly() -> None:
    """Ctrl-C while the workers start: the pool closes them with None before it sent the
    engine; the worker returns instead of unpickling None (a traceback on the user's screen)."""
    import os
    from multiprocessing.connection import Connection

    from steplines.engine.workers import _Link, _serve

    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    parent = Connection(to_worker_w, readable=False)
    parent.send(None)
    parent.close()
    _serve(_Link(to_worker_r, from_worker_w))  # before the fix: TypeError from pickle.loads
    os.close(from_worker_r)
