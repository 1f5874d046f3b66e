"""Live per-line metrics: ``RUN/live.jsonl``, the progress bar's postfix and ETA, TensorBoard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from steplines import LineProbe
from steplines.analysis.lines import load_summary
from steplines.analysis.strategies import line_quantities
from steplines.live import LineProgress, LiveLog, line_summary, read_live
from steplines.store import LineStore

from support import TINY, cli


def _raw_steps(path: Path) -> list[int]:
    """Every whole record's t in file order (duplicates kept)."""
    return [json.loads(raw)["t"] for raw in path.read_text().splitlines() if raw.endswith("}")]


def test_run_writes_one_live_record_per_line_matching_the_analysis(
    tiny_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    res = cli("run", "--config", str(tiny_config), "--out", str(out), check=True)
    records = read_live(out)
    assert [r["t"] for r in records] == list(range(10))
    assert _raw_steps(out / "live.jsonl") == list(range(10))  # one record per line
    store = LineStore.open(out / "lines.zarr")
    q = line_quantities(load_summary(store))
    summary = store.read_summary()
    for i, r in enumerate(records):
        assert r["s_opt"] == q["s_opt"][i] and r["l_opt"] == q["l_min"][i]
        assert r["l0"] == q["l0"][i]
        assert r["s_update"] == summary["s_update"][i]
        assert r["ratio"] == pytest.approx(r["s_update"] / r["s_opt"], rel=1e-12)
        assert r["lambda_opt"] == pytest.approx(r["s_opt"] / summary["direction_norm"][i])
        assert r["fit2_mae"] >= 0 and 0 <= r["fit2_rel"] < 1
        assert r["seconds"] > 0
        assert r["est_curvature"] == summary["est_curvature"][i]
    assert records[0]["est_sample_grad_sq"] is not None  # noise_scale_every = 10: line 0 only
    assert records[1]["est_sample_grad_sq"] is None  # NaN is written as null
    # the progress bar's postfix shows the last line's summary and an ETA
    assert "s_opt=" in res.stderr and "upd/opt=" in res.stderr and "eta=" in res.stderr


def test_live_line_summary_of_a_parabola() -> None:
    s = np.linspace(-1, 1, 41)
    line = 2.0 * (s - 0.5) ** 2 + 1.0
    r = line_summary(3, s, line, {"s_update": 1.0, "direction_norm": 2.0, "grad_norm": 4.0})
    assert r["t"] == 3 and r["s_opt"] == pytest.approx(0.5) and r["l_opt"] == pytest.approx(1.0)
    assert r["l0"] == pytest.approx(1.5) and r["l_update"] == pytest.approx(1.5)
    assert r["ratio"] == pytest.approx(2.0)
    assert r["lambda_opt"] == pytest.approx(0.25) and r["lambda_g"] == pytest.approx(0.125)
    assert r["fit2_mae"] == pytest.approx(0.0, abs=1e-12)  # an exact parabola
    assert r["est_curvature"] is None and r["seconds"] is None
    bent = line_summary(0, s, np.abs(s - 0.5), {"s_update": 1.0})
    assert bent["fit2_mae"] > 0.01  # |s - 0.5| is no parabola


def test_torn_record_is_ignored_and_the_next_starts_on_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    log = LiveLog(tmp_path, tensorboard=False)
    log.append({"t": 0, "s_opt": 0.5})
    log.append({"t": 1, "s_opt": 0.25})
    with open(path, "ab") as f:
        f.write(b'{"t": 2, "s_o')  # a torn last record
    assert [r["t"] for r in read_live(path)] == [0, 1]
    log = LiveLog(tmp_path, tensorboard=False)  # a resumed writer
    log.append({"t": 2, "s_opt": 0.125})
    log.append({"t": 1, "s_opt": 0.75})  # a line measured again: the last record wins
    records = read_live(tmp_path)
    assert [r["t"] for r in records] == [0, 1, 2]
    assert records[1]["s_opt"] == 0.75 and records[2]["s_opt"] == 0.125
    assert read_live(tmp_path / "nothing") == []


def test_eta_comes_from_recent_line_times_not_from_the_first() -> None:
    bar = LineProgress(total=20, desc="x", enabled=False, window=4)
    bar.update(300.0)  # a slow first line (worker start, compilation)
    assert bar.eta() == pytest.approx(19 * 300.0)
    for _ in range(3):
        bar.update(2.0)
    assert bar.per_line() == pytest.approx(2.0) and bar.eta() == pytest.approx(16 * 2.0)
    for _ in range(5):
        bar.update(1.0)
    assert bar.per_line() == pytest.approx(1.0)  # the last 4 lines only


def test_sigkill_leaves_a_readable_live_file_and_resume_adds_no_duplicates(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY.format(steps=16))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "steplines.cli", "run", "--config", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--quiet", "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_live(out)) < 3 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    records = read_live(out)
    assert 3 <= len(records) < 16
    done = LineStore.open(out / "lines.zarr").done()
    assert all(done[r["t"]] for r in records)  # a record only for a line the store has
    cli("run", "--config", str(cfg), "--out", str(out), "--quiet", check=True)  # resume
    assert [r["t"] for r in read_live(out)] == list(range(16))
    assert sorted(_raw_steps(out / "live.jsonl")) == list(range(16))  # no duplicates


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


def _probe(
    tmp_path: Path, x: torch.Tensor, y: torch.Tensor, model: nn.Module, opt, progress: bool
) -> LineProbe:
    return LineProbe(
        tmp_path / "run",
        model,
        _ce,
        train=(x, y),
        batch_size=16,
        steps=6,
        optimizer=opt,
        schedule="every:2",
        measure={"interval": 0.5, "resolution": 0.05, "max_passes": 2},
        progress=progress,
    )


@pytest.mark.parametrize("progress", [True, False])
def test_probe_shows_progress_and_writes_live_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], progress: bool
) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    model = _Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    probe = _probe(tmp_path, x, y, model, opt, progress)
    for t in range(6):
        xb, yb = x[16 * (t % 4) : 16 * (t % 4 + 1)], y[16 * (t % 4) : 16 * (t % 4 + 1)]
        with probe.step(t, xb, yb):
            opt.zero_grad()
            _ce(model(xb), yb).mean().backward()
            opt.step()
    probe.close()
    records = read_live(tmp_path / "run")
    assert [r["t"] for r in records] == [0, 2, 4]
    assert all(r["seconds"] > 0 and r["s_opt"] is not None for r in records)
    err = capsys.readouterr().err
    assert ("3/3" in err and "s_opt=" in err and "eta=" in err) == progress
    if not progress:
        assert err == ""
        # a probe reopened after a kill between a store write and its record fills it in
        (tmp_path / "run" / "live.jsonl").unlink()
        _probe(tmp_path, x, y, model, opt, progress).close()
        back = read_live(tmp_path / "run")
        assert [r["t"] for r in back] == [0, 2, 4] and all(r["seconds"] is None for r in back)
        assert [r["s_opt"] for r in back] == [r["s_opt"] for r in records]


def test_tensorboard_scalars_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = LiveLog(tmp_path)
    s = np.linspace(-1, 1, 21)
    for t in range(3):
        log.append(line_summary(t, s, (s - 0.1 * (t + 1)) ** 2, {"s_update": 0.5}, 1.0))
    log.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("line/s_opt")
    assert [e.step for e in events] == [0, 1, 2]
    assert [e.value for e in events] == pytest.approx([0.1, 0.2, 0.3])


def test_live_and_export_do_not_import_torch() -> None:
    code = (
        "import sys, steplines.live, steplines.export; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
