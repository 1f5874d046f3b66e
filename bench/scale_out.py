"""Speed-up of job-array shards and the overhead of the Ray path, on this machine.

Records one trajectory (demo problem, ``cpu_threads = 1`` so that several processes can share
the cores with bitwise-identical numerics), then measures copies of it four ways and checks that
all stores are identical:

1. in-process, one shard;
2. two shards side by side (``steplines measure RUN --shard i/2``, two processes);
3. Ray, a local cluster with 1 CPU (tasks one after another): the overhead per segment is
   (time − in-process time) / segments;
4. Ray, a local cluster with 2 CPUs.

    python bench/scale_out.py [--steps 24] [--every 4]
"""

from __future__ import annotations

import argparse
import shutil
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
train_size = 1024
val_size = 512
[train]
lr = 1.0
steps = {steps}
checkpoint_every = {every}
cpu_threads = 1
[measure]
interval = 1.0
resolution = 0.02
max_passes = 5
"""


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "steplines.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(p.stderr.read())


def ray_measure(run: Path, cpus: int) -> None:
    code = (
        "from pathlib import Path; from steplines.rundir import RunDir; "
        "from steplines.distributed.ray_backend import measure_with_ray; "
        f"rd = RunDir.open(Path({str(run)!r})); "
        f"measure_with_ray(rd, rd.trajectory.segments(rd.config.train.steps, "
        f"rd.config.train.checkpoint_every), progress=False, num_cpus={cpus})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def same(a: Path, b: Path) -> bool:
    return not differing_arrays(a / "lines.zarr", b / "lines.zarr")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--every", type=int, default=4)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="steplines-scale-"))
    cfg = root / "cfg.toml"
    cfg.write_text(CONFIG.format(steps=args.steps, every=args.every))
    base = root / "base"
    wait(cli("train", "--config", str(cfg), "--out", str(base), "--quiet"))
    segments = -(-args.steps // args.every)
    rows = []

    def fresh(name: str) -> Path:
        dst = root / name
        shutil.copytree(base, dst)
        return dst

    one = fresh("one")
    t0 = time.perf_counter()
    wait(cli("measure", str(one), "--quiet"))
    t_one = time.perf_counter() - t0
    rows.append(("1 process (1 thread)", t_one, True))

    two = fresh("two")
    t0 = time.perf_counter()
    wait(*(cli("measure", str(two), "--shard", f"{i}/2", "--quiet") for i in range(2)))
    rows.append(("2 shards (1 thread each)", time.perf_counter() - t0, same(one, two)))

    for cpus in (1, 2):
        r = fresh(f"ray{cpus}")
        t0 = time.perf_counter()
        ray_measure(r, cpus)
        rows.append((f"Ray, local cluster, {cpus} CPU", time.perf_counter() - t0, same(one, r)))

    print(
        f"{args.steps} lines in {segments} segments of {args.every}; digits demo problem; "
        "times include process start-up"
    )
    print(f"{'variant':<30} {'seconds':>8} {'speed-up':>9} {'identical':>10}")
    for name, sec, ok in rows:
        print(f"{name:<30} {sec:>8.1f} {t_one / sec:>9.2f} {ok!s:>10}")
    ray1 = rows[2][1]
    print(f"Ray overhead per segment (1 CPU vs 1 process): {(ray1 - t_one) / segments:.2f} s")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
