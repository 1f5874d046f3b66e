"""Kill storm: SIGKILL every command at random moments, many times; then disk full and damage.

1. Storms. `run`, `measure --shard i/2` (two processes), `measure` with worker processes,
   `measure --redo`, `analyze`, `report` and `export`, each SIGKILLed at random moments
   (``--kills`` per storm), then the same command is rerun to completion and its result is
   compared with an uninterrupted run of the same configuration: the line store and the
   noisy-direction store array by array, bit for bit; the analysis tables file by file (the
   .npz arrays by array); the exported file byte for byte. No temporary file may be left.
   With ``--ray``, Ray workers too.
2. Disk full (``--disk-full``, needs root for a small tmpfs): `measure`, `analyze` and `export`
   on a copy of the run in a tmpfs with a few KB free: one line and exit 2, no traceback, then
   the tmpfs is enlarged and the same command rerun: identical to the uninterrupted run.
3. Damage (``--chunks``): one chunk of every array of ``lines.zarr`` and ``directions.zarr``,
   flipped, then deleted: `verify` must report it (exit 1), the repair it prints is run, then
   `verify` must say OK and both stores must equal the uninterrupted run's.

Prints how many faults each part survived. Reproducible: kill times and chunks come from
``--seed``.

    python bench/kill_storm.py --kills 8 --seed 1 --steps 8 --disk-full --chunks
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

import numpy as np

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
steps = {steps}
checkpoint_every = 4
[measure]
interval = 0.5
resolution = 0.05
max_passes = 2
noisy_every = 4
noisy_directions = 2
workers = {workers}
"""


def cli(*args: str, stderr: int | None = subprocess.DEVNULL, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "steplines.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        **kw,
    )


def _zarr_arrays(path: Path) -> dict:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(arr[...]) for name, arr in g.arrays()}


def identical(a: Path, b: Path) -> bool:
    """Both stores of runs ``a`` and ``b`` hold the same arrays, bit for bit."""
    if differing_arrays(a / "lines.zarr", b / "lines.zarr"):
        return False
    da, db = a / "directions.zarr", b / "directions.zarr"
    if da.exists() != db.exists():
        return False
    if da.exists():
        xa, xb = _zarr_arrays(da), _zarr_arrays(db)
        if xa.keys() != xb.keys():
            return False
        return all(np.array_equal(xa[k], xb[k], equal_nan=xa[k].dtype.kind == "f") for k in xa)
    return True


def same_analysis(a: Path, b: Path) -> bool:
    """The analysis tables of runs ``a`` and ``b`` are identical (.npz: array by array); an
    analysis with non-default settings lives in ``analysis-<tag>/``."""

    def tables(run: Path) -> list[Path]:  # a report beside them is not a table
        return sorted(p for p in run.glob("analysis*/*.*") if not p.name.startswith("report."))

    fa, fb = tables(a), tables(b)
    if [p.relative_to(a) for p in fa] != [p.relative_to(b) for p in fb] or not fa:
        return False
    for pa, pb in zip(fa, fb):
        if pa.suffix == ".npz":
            with np.load(pa) as xa, np.load(pb) as xb:
                if sorted(xa) != sorted(xb) or not all(
                    np.array_equal(xa[k], xb[k], equal_nan=xa[k].dtype.kind == "f") for k in xa
                ):
                    return False
        elif pa.read_bytes() != pb.read_bytes():
            return False
    return True


def same_export(a: Path, b: Path) -> bool:
    """Two netCDF exports hold the same data and attributes (but the source path)."""
    import xarray as xr

    with xr.open_dataset(a, engine="scipy") as x, xr.open_dataset(b, engine="scipy") as y:
        x.attrs.pop("source", None)
        y.attrs.pop("source", None)
        return bool(x.identical(y))


def leftovers(run: Path) -> list[Path]:
    """Temporary files or directories of steplines left anywhere in ``run``."""
    return [p for p in run.rglob(".*") if "tmp" in p.name or ".old-" in p.name]


PARTIALS: list[int] = []  # zarr's own *.partial chunk files found after each storm


def count_partials(run: Path) -> None:
    PARTIALS.append(sum(1 for _ in run.rglob("*.partial")))


def storm(
    start,
    rng: random.Random,
    kills: int,
    window: tuple[float, float],
    victims,
    repeat: bool = False,
) -> int:
    """Start processes with ``start()``, SIGKILL victims at random moments; return the kills.

    ``victims(procs)`` lists the pids to strike. For ``run`` and shards these are the processes
    themselves (all of them are killed, like a crashed job); for Ray they are the workers
    running a segment, and the driver is left to retry and finish. A round whose work finished
    before the strike ends the storm, unless ``repeat`` (commands that redo their whole work
    each time: --redo, analyze, report, export), which start again (at most 4 × ``kills``
    rounds).
    """
    done = rounds = 0
    while done < kills and rounds < 4 * kills:
        rounds += 1
        procs = start()
        time.sleep(rng.uniform(*window))
        targets = victims(procs)
        while not targets and any(p.poll() is None for p in procs):
            time.sleep(0.2)  # e.g. Ray still starting: wait for a worker to strike
            targets = victims(procs)
        if not targets:  # the work finished before we struck
            for p in procs:
                p.wait()
            if repeat:
                continue
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


def _sh(*args: str) -> tuple[int, str]:
    """Run the CLI to completion: ``(exit code, stderr)``."""
    p = cli(*args, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate()
    return p.returncode, err


def _copy(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def storms(args, rng: random.Random, root: Path, cfg: Path, ref: Path, results: list) -> None:
    """Part 1: SIGKILL each command at random moments, rerun it, compare."""
    k = args.kills
    only = set(args.only.split(",")) if args.only else None

    def want(name: str) -> bool:
        return only is None or name in only

    if want("run"):
        _run_storm(args, rng, root, cfg, ref, results)
    if want("shards"):
        _shards_storm(args, rng, root, cfg, ref, results)
    if want("workers"):
        _workers_storm(args, rng, root, cfg, ref, results)
    if want("redo"):
        _redo_storm(args, rng, root, cfg, ref, results)
    analysed = _copy(ref, root / "analysed")
    assert cli("analyze", str(analysed), "--resamples", "20").wait() == 0  # the uninterrupted one
    for name, argv, window in (
        ("analyze", ["analyze", "--resamples", "20"], (1.0, 6.0)),
        ("report", ["report", "--resamples", "20"], (1.0, 12.0)),
    ):
        if not want(name):
            continue
        target = _copy(ref, root / name)
        shutil.rmtree(target / "analysis", ignore_errors=True)
        n = storm(
            lambda a=argv, t=target: [cli(a[0], str(t), *a[1:])], rng, k, window, _alive, True
        )
        assert cli(argv[0], str(target), *argv[1:]).wait() == 0
        ok = same_analysis(analysed, target) and not leftovers(target)
        if name == "report":
            ok = ok and any(target.glob("**/report.html")) and any(target.glob("**/report.pdf"))
        results.append((name, n, ok))
    if want("export"):
        _export_storm(args, rng, root, ref, results)


def _run_storm(args, rng: random.Random, root: Path, cfg: Path, ref: Path, results: list) -> None:
    k = args.kills
    run = root / "run"
    n = storm(
        lambda: [cli("run", "--config", str(cfg), "--out", str(run), "--quiet", "--no-report")],
        rng,
        k,
        (0.5, 10.0),
        _alive,
    )
    assert cli("run", "--config", str(cfg), "--out", str(run), "--quiet", "--no-report").wait() == 0
    results.append(("steplines run", n, identical(ref, run) and not leftovers(run)))
    count_partials(run)


def _shards_storm(args, rng: random.Random, root: Path, cfg: Path, ref: Path, results) -> None:
    k = args.kills

    shards = root / "shards"
    assert cli("train", "--config", str(cfg), "--out", str(shards), "--quiet").wait() == 0
    n = storm(
        lambda: [cli("measure", str(shards), "--shard", f"{i}/2", "--quiet") for i in range(2)],
        rng,
        k,
        (0.5, 8.0),
        _alive,
    )
    assert cli("measure", str(shards), "--quiet").wait() == 0
    results.append(("measure --shard i/2 (2 processes)", n, identical(ref, shards)))
    count_partials(shards)


def _workers_storm(args, rng: random.Random, root: Path, cfg: Path, ref: Path, results) -> None:
    k = args.kills

    workers = root / "workers"  # measure.workers = 2: the parent is killed, its workers exit
    wcfg = root / "workers.toml"
    wcfg.write_text(CONFIG.format(steps=args.steps, workers=2))
    assert cli("train", "--config", str(wcfg), "--out", str(workers), "--quiet").wait() == 0
    n = storm(lambda: [cli("measure", str(workers), "--quiet")], rng, k, (1.0, 8.0), _alive)
    assert cli("measure", str(workers), "--quiet").wait() == 0
    results.append(("measure, 2 worker processes", n, identical(ref, workers)))
    count_partials(workers)


def _redo_storm(args, rng: random.Random, root: Path, cfg: Path, ref: Path, results) -> None:
    k = args.kills

    redo = _copy(ref, root / "redo")
    lines = f"1-{args.steps - 2}"
    n = storm(
        lambda: [cli("measure", str(redo), "--redo", lines, "--quiet")],
        rng,
        k,
        (1.0, 8.0),
        _alive,
        repeat=True,
    )
    assert cli("measure", str(redo), "--redo", lines, "--quiet").wait() == 0
    results.append((f"measure --redo {lines}", n, identical(ref, redo)))
    count_partials(redo)


def _export_storm(args, rng: random.Random, root: Path, ref: Path, results: list) -> None:
    k = args.kills
    exported = ref / "export" / "lines-samples.nc"
    assert cli("export", str(ref), "--to", "netcdf").wait() == 0
    target = _copy(ref, root / "export")
    shutil.rmtree(target / "export")
    n = storm(
        lambda: [cli("export", str(target), "--to", "netcdf")], rng, k, (0.5, 4.0), _alive, True
    )
    assert cli("export", str(target), "--to", "netcdf").wait() == 0
    got = target / "export" / "lines-samples.nc"
    ok = same_export(got, exported) and not leftovers(target)
    results.append(("export --to netcdf", n, ok))


def disk_full(root: Path, ref: Path, trained: Path, results: list) -> None:
    """Part 2: each command on a nearly full tmpfs, then with room again."""
    for name, src, argv in (
        ("measure", trained, ["measure", "{run}", "--quiet"]),
        ("analyze", ref, ["analyze", "{run}", "--resamples", "20"]),
        ("export", ref, ["export", "{run}", "--to", "netcdf"]),
    ):
        mnt = root / f"tmpfs-{name}"
        mnt.mkdir()
        used = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        size = (used * 2 + 4 * 2**20) // 2**12 * 2**12  # data blocks + metadata: tuned below
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]
        ).returncode:
            results.append((f"disk full during {name}: no tmpfs (needs root)", 0, None))
            continue
        try:
            run = _copy(src, mnt / "run")
            if name != "measure":
                shutil.rmtree(run / "analysis", ignore_errors=True)
                shutil.rmtree(run / "export", ignore_errors=True)
            # fill the rest, leaving 16 KB
            free = shutil.disk_usage(mnt).free
            (mnt / "filler").write_bytes(b"\0" * max(free - 16 * 2**10, 0))
            code, err = _sh(*[a.format(run=run) for a in argv])
            one_line = code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
            (mnt / "filler").unlink()
            subprocess.run(["mount", "-o", "remount,size=512m", str(mnt)], check=True)
            again, _ = _sh(*[a.format(run=run) for a in argv])
            if name == "measure":
                same = identical(ref, run)
            elif name == "analyze":
                same = same_analysis(root / "analysed", run)
            else:
                same = same_export(
                    run / "export" / "lines-samples.nc", ref / "export" / "lines-samples.nc"
                )
            ok = one_line and again == 0 and same and not leftovers(run)
            if not ok:
                print(f"disk full during {name}: rc {code}, {err.strip()!r}, rerun rc {again}")
            results.append((f"disk full during {name}", 1, ok))
        finally:
            subprocess.run(["umount", str(mnt)])


def _chunk_files(array: Path) -> list[Path]:
    return (
        sorted(p for p in (array / "c").rglob("*") if p.is_file()) if (array / "c").exists() else []
    )


def chunk_faults(rng: random.Random, root: Path, ref: Path, results: list) -> None:
    """Part 3: flip, then delete, one chunk of every array; verify, repair, verify, compare."""
    import shlex

    from click.testing import CliRunner

    from steplines.cli.main import main as steplines

    def call(argv: list[str]) -> tuple[int, str]:
        res = CliRunner().invoke(steplines, argv)
        return res.exit_code, res.output

    survived = total = unchanged = 0
    failures = []
    for store in ("lines.zarr", "directions.zarr"):
        for array in sorted(p for p in (ref / store).iterdir() if p.is_dir()):
            for fault in ("flip", "delete"):
                chunks = _chunk_files(array)
                if not chunks:
                    continue
                total += 1
                run = _copy(ref, root / "damaged")
                # a chunk of the last lines (or noisy position): the repair re-measures the
                # last segment only
                last = max(int(c.relative_to(array / "c").parts[0].split(".")[0]) for c in chunks)
                chunks = [c for c in chunks if c.relative_to(array / "c").parts[0] == str(last)]
                rel = rng.choice(chunks).relative_to(ref)
                path = run / rel
                if fault == "flip":
                    data = bytearray(path.read_bytes())
                    data[rng.randrange(len(data))] ^= 0xFF
                    path.write_bytes(bytes(data))
                else:
                    path.unlink()
                code, out = call(["verify", str(run), "--no-replay"])
                if code == 0 and identical(ref, run):
                    survived += 1  # a flip that decodes to the same values: nothing to find
                    unchanged += 1
                    continue
                repairs = [
                    line.split(": ", 1)[1]
                    for line in out.splitlines()
                    if line.startswith(
                        ("re-measure with:", "measure the missing lines with:", "rewrite")
                    )
                ]
                for command in repairs:
                    call(shlex.split(command)[1:])
                code2, _ = call(["verify", str(run), "--no-replay"])
                if code == 1 and code2 == 0 and identical(ref, run):
                    survived += 1
                else:
                    failures.append(f"{fault} {rel}: verify rc {code}, after repair rc {code2}")
    for f in failures:
        print("  not survived:", f)
    results.append(("damaged chunks (flip + delete, every array)", total, survived == total))
    results.append(("  found by verify, repaired bit for bit", survived - unchanged, None))
    results.append(("  flips that changed no value", unchanged, None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=8, help="kills per storm")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="lines of the run (segments of 4)")
    ap.add_argument("--ray", action="store_true", help="also storm Ray workers")
    ap.add_argument("--only-ray", action="store_true", help="storm Ray workers only")
    ap.add_argument("--disk-full", action="store_true", help="part 2 (root: mounts a tmpfs)")
    ap.add_argument("--chunks", action="store_true", help="part 3: damaged chunks")
    ap.add_argument("--no-storms", action="store_true", help="skip part 1")
    ap.add_argument(
        "--only", default="", help="part 1: these storms (run,shards,workers,redo,analyze,...)"
    )
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="steplines-storm-"))
    cfg = root / "cfg.toml"
    cfg.write_text(CONFIG.format(steps=args.steps, workers=1))
    ref = root / "ref"
    start = time.perf_counter()
    assert cli("run", "--config", str(cfg), "--out", str(ref), "--quiet", "--no-report").wait() == 0
    results: list = []

    if not (args.only_ray or args.no_storms):
        storms(args, rng, root, cfg, ref, results)
    if args.ray or args.only_ray:
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
    if args.disk_full:
        trained = root / "trained"
        assert cli("train", "--config", str(cfg), "--out", str(trained), "--quiet").wait() == 0
        if not (ref / "export" / "lines-samples.nc").exists():
            assert cli("export", str(ref), "--to", "netcdf").wait() == 0
        if not (root / "analysed").exists():
            _copy(ref, root / "analysed")
            assert cli("analyze", str(root / "analysed"), "--resamples", "20").wait() == 0
        disk_full(root, ref, trained, results)
    if args.chunks:
        chunk_faults(rng, root, ref, results)

    print(f"{'fault':<46} {'count':>6} {'survived, identical':>20}")
    for name, count, ok in results:
        shown = "" if ok is None else str(ok)
        print(f"{name:<46} {count:>6} {shown:>20}")
    kills = sum(c for name, c, _ in results if not name.startswith(("disk", "damaged", " ")))
    print(f"SIGKILLs: {kills}; zarr *.partial files left in the stores: {sum(PARTIALS)}")
    print(f"wall {time.perf_counter() - start:.0f} s")
    shutil.rmtree(root)
    if not all(ok is not False for *_, ok in results):
        raise SystemExit("a fault was not survived")


if __name__ == "__main__":
    main()
