"""Benchmark the line engines against the paper's loop (side by side, one run).

The same as ``steplines bench`` (implementation: ``steplines.bench``): one row per variant with
sample-evaluations per second, ratio to the paper's loop with the same cores, the largest |Δ|
of any per-sample loss against the reference engine and the share of this machine's fp32 GEMM
ceiling; ``--json`` prints the rows as JSON records.

    python bench/engine_bench.py --model resnet20 --device cpu --batches 4 --positions 4
"""

from __future__ import annotations

import argparse
import json

from steplines.bench import SHAPES, format_table, run_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20", choices=sorted(SHAPES))
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    ap.add_argument("--batches", type=int, default=4, help="evaluation batches of 128")
    ap.add_argument("--positions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the compiled variants")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    facts, recs = run_bench(
        args.model, args.device, args.batches, args.positions, args.repeat, args.quick
    )
    print(json.dumps(recs, indent=2) if args.json else format_table(facts, recs))


if __name__ == "__main__":
    main()
