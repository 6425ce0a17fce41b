"""The reader's shuffled epoch, this checkout against an earlier revision, side by side.

Usage: python benchmarks/compare_reader.py SHARDS --baseline REV [--rounds 20] [--verify]

Checks REV out into a temporary git worktree, then runs ``reader_epoch.py`` over SHARDS in fresh
processes, alternating this checkout's imgshard and REV's (``PYTHONPATH`` picks which), so both
see the same machine load. Prints each side's median epoch (wall clock and CPU time) and their
ratios, this checkout over REV: below 1 is faster. With ``--verify`` this checkout's epochs use
``ShardReader(verify=True)`` (REV's never do), which shows what the checksums cost.

SHARDS must be readable by both revisions (build it with the older one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def epoch(package_root: str, shards: str, seed: int, verify: bool) -> dict:
    """One epoch in a fresh process importing imgshard from ``package_root``."""
    argv = [sys.executable, os.path.join(HERE, "reader_epoch.py"), shards, "--seed", str(seed)]
    if verify:
        argv.append("--verify")
    env = dict(os.environ, PYTHONPATH=package_root)
    return json.loads(subprocess.run(argv, env=env, check=True, capture_output=True,
                                     text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shards")
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--verify", action="store_true",
                        help="this checkout reads with ShardReader(verify=True)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgshard-baseline-") as scratch:
        baseline = os.path.join(scratch, "tree")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", baseline,
                        args.baseline], check=True, capture_output=True)
        try:
            runs: dict[str, list[dict]] = {"this": [], "baseline": []}
            for round_ in range(args.rounds):
                sides = [("this", ROOT, args.verify), ("baseline", baseline, False)]
                for name, root, verify in sides if round_ % 2 == 0 else sides[::-1]:
                    runs[name].append(epoch(root, args.shards, round_, verify))
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", baseline],
                           check=False, capture_output=True)
    report(runs, args.baseline)


def report(runs: dict[str, list[dict]], baseline: str) -> None:
    medians = {side: {key: statistics.median(run[key] for run in epochs)
                      for key in ("seconds", "cpu_seconds")}
               for side, epochs in runs.items()}
    for side, label in (("this", "this checkout"), ("baseline", f"baseline {baseline}")):
        print(f"{label:>24}: epoch {medians[side]['seconds']:.3f} s wall, "
              f"{medians[side]['cpu_seconds']:.3f} s CPU (median of {len(runs[side])})")
    for key, label in (("seconds", "wall"), ("cpu_seconds", "CPU")):
        print(f"{'ratio ' + label:>24}: {medians['this'][key] / medians['baseline'][key]:.3f}x")


if __name__ == "__main__":
    main()
