"""Helpers for the tests: the tiny digits configuration, the CLI in a subprocess or in this
process, and store comparison.

Test modules import these from here (``from support import ...``), never from ``conftest``:
pytest imports every ``conftest.py`` under the module name ``conftest``, so a second one in a
subfolder would shadow the first for ``from conftest import``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

TINY = """
[problem]
dataset = "digits"
model = "digits-resnet"
train_size = 256
val_size = 64
batch_size = 64

[train]
lr = 1.0
steps = {steps}
checkpoint_every = 4
cpu_threads = 1

[measure]
grid = "paper"
interval = 0.5
resolution = 0.1
max_passes = 2
"""

CLI = [sys.executable, "-m", "steplines.cli"]


def steplines(
    *args: str, check: bool = False, timeout: float = 300, report: bool = False
) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (as a user would); ``run`` skips the report unless asked."""
    if args and args[0] == "run" and not report:
        args = (*args, "--no-report")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"steplines {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def cli(*args: str, check: bool = False, report: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI in this process (click's test runner): the same commands, options, output
    and exit codes as :func:`steplines`, without a new interpreter importing torch (seconds
    per call). For commands whose subject is not the process itself (signals, locks, imports);
    the torch thread count a run sets is restored afterwards."""
    import torch
    from click.testing import CliRunner

    from steplines.cli.main import main

    if args and args[0] == "run" and not report:
        args = (*args, "--no-report")
    threads = torch.get_num_threads()
    try:
        res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    out = subprocess.CompletedProcess(["steplines", *args], res.exit_code, res.stdout, res.stderr)
    if check and out.returncode != 0:
        raise AssertionError(f"steplines {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a shared (session) run directory, to change or measure further."""
    shutil.copytree(src, dst)
    return dst


def assert_same_store(a: Path, b: Path) -> None:
    """The line stores of run directories ``a`` and ``b`` are identical, array by array."""
    from steplines.store import differing_arrays

    assert differing_arrays(a / "lines.zarr", b / "lines.zarr") == []


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), from /proc: only the
    test's own processes, never another user's of the same name."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "(name) "
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier}
        found.extend(sorted(frontier))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def lines_done(run: Path) -> int:
    """Finished lines of a run another process is writing (0 while there is no store yet)."""
    from steplines.store import LineStore

    try:
        return int(LineStore.open(run / "lines.zarr").done().sum())
    except Exception:  # not created yet, or caught mid-write: look again later
        return 0


def wait_for_lines(run: Path, n: int, procs: list[subprocess.Popen], timeout: float = 120) -> int:
    """Wait until ``run`` has at least ``n`` finished lines (or every process has ended)."""
    import time

    deadline = time.monotonic() + timeout
    done = lines_done(run)
    while done < n and time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
        done = lines_done(run)
    return done


def overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of texts (and images) of ``fig`` whose drawn extents intersect, and any that
    leave the page."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    page = fig.bbox
    boxes = [(t.get_text()[:30], t.get_window_extent(renderer)) for t in fig.texts if t.get_text()]
    boxes += [(f"axes {i}", ax.get_window_extent(renderer)) for i, ax in enumerate(fig.axes)]
    out = []
    for i, (a, ba) in enumerate(boxes):
        if not (page.x0 <= ba.x0 and ba.x1 <= page.x1 and page.y0 <= ba.y0 and ba.y1 <= page.y1):
            out.append((a, "off the page"))
        for b, bb in boxes[i + 1 :]:
            if ba.overlaps(bb) and ba.intersection(ba, bb).width > 0.5:
                inter = ba.intersection(ba, bb)
                if inter.height > 0.5:
                    out.append((a, b))
    return out
