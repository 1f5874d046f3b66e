"""Kill storm: SIGKILL `run`, `measure --shard` and Ray workers at random moments, many times.

After every storm the same command is rerun to completion and the store is compared with an
uninterrupted run of the same configuration (every array, bit for bit). Prints how many kills
each storm survived. Reproducible: the kill times come from ``--seed``.

    python bench/kill_storm.py --kills 20 --seed 1
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steplines.store import differing_arrays

CONFIG = """
[problem]
dataset = "digits"
model = "digits-resnet"
train_size = 256
val_size = 64
batch_size = 64
[train]
lr = 1.0
steps = 16
checkpoint_every = 4
[measure]
interval = 0.5
resolution = 0.05
max_passes = 2
"""


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "steplines.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def identical(a: Path, b: Path) -> bool:
    return not differing_arrays(a / "lines.zarr", b / "lines.zarr")


def storm(
    start,
    rng: random.Random,
    kills: int,
    window: tuple[float, float],
    victims,
) -> int:
    """Start processes with ``start()``, SIGKILL victims at random moments; return the kills.

    ``victims(procs)`` lists the pids to strike. For ``run`` and shards these are the processes
    themselves (all of them are killed, like a crashed job); for Ray they are the workers
    running a segment, and the driver is left to retry and finish.
    """
    done = 0
    while done < kills:
        procs = start()
        time.sleep(rng.uniform(*window))
        targets = victims(procs)
        while not targets and any(p.poll() is None for p in procs):
            time.sleep(0.2)  # e.g. Ray still starting: wait for a worker to strike
            targets = victims(procs)
        if not targets:  # the work finished before we struck: the storm is over
            for p in procs:
                p.wait()
            break
        for pid in targets if victims is _alive else [rng.choice(targets)]:
            os.kill(pid, signal.SIGKILL)
            done += 1
        for p in procs:
            p.wait()
    return done


def _alive(procs: list[subprocess.Popen]) -> list[int]:
    return [p.pid for p in procs if p.poll() is None]


def _ray_workers(procs: list[subprocess.Popen]) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", "ray::measure_segment_task"], capture_output=True, text=True
    ).stdout.split()
    return [int(p) for p in out] if any(p.poll() is None for p in procs) else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="kills per storm")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ray", action="store_true", help="also storm Ray workers")
    ap.add_argument("--only-ray", action="store_true", help="storm Ray workers only")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="steplines-storm-"))
    cfg = root / "cfg.toml"
    cfg.write_text(CONFIG)
    ref = root / "ref"
    assert cli("run", "--config", str(cfg), "--out", str(ref), "--quiet", "--no-report").wait() == 0
    results = []

    run = root / "run"
    if args.only_ray:
        args.ray, args.kills_local = True, 0
    else:
        args.kills_local = args.kills
    n = storm(
        lambda: [cli("run", "--config", str(cfg), "--out", str(run), "--quiet", "--no-report")],
        rng,
        args.kills_local,
        (0.3, 4.0),
        _alive,
    )
    assert cli("run", "--config", str(cfg), "--out", str(run), "--quiet", "--no-report").wait() == 0
    results.append(("steplines run", n, identical(ref, run)))

    shards = root / "shards"
    assert cli("train", "--config", str(cfg), "--out", str(shards), "--quiet").wait() == 0
    n = storm(
        lambda: [cli("measure", str(shards), "--shard", f"{i}/2", "--quiet") for i in range(2)],
        rng,
        args.kills_local,
        (0.3, 4.0),
        _alive,
    )
    assert cli("measure", str(shards), "--quiet").wait() == 0
    results.append(("measure --shard i/2 (2 processes)", n, identical(ref, shards)))

    if args.ray:
        ray_run = root / "ray"
        assert cli("train", "--config", str(cfg), "--out", str(ray_run), "--quiet").wait() == 0
        n = storm(
            lambda: [cli("measure", str(ray_run), "--engine", "ray", "--quiet")],
            rng,
            args.kills,
            (1.0, 3.0),
            _ray_workers,
        )
        assert cli("measure", str(ray_run), "--quiet").wait() == 0
        results.append(("Ray worker", n, identical(ref, ray_run)))

    print(f"{'storm':<36} {'kills':>6} {'identical to uninterrupted':>27}")
    for name, kills, ok in results:
        print(f"{name:<36} {kills:>6} {ok!s:>27}")
    shutil.rmtree(root)
    if not all(ok for *_, ok in results):
        raise SystemExit("a store differs from the uninterrupted run")


if __name__ == "__main__":
    main()
