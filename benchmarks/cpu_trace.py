"""Where a study's cores sit idle: run a command, sample the machine's CPU use, and attribute it to the study's steps.

    python benchmarks/cpu_trace.py -- clir-eval run
    python benchmarks/cpu_trace.py --interval 0.5 -- clir-eval run configs/dev/recipe-round24.yaml

The command's output passes through unchanged. Every ``--interval`` seconds the busy share of all cores is read from
``/proc/stat`` (Linux only); a line with ``running: <step>`` (the runner's log) starts a new step. At the end it
prints, per step, its seconds, the mean number of busy cores and the idle core-seconds, then the totals. A step that
keeps one of two cores idle is a candidate for running beside another; a study whose steps all sit near the core
count is compute-bound. The machine's other load counts as busy: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time

STEP = re.compile(r"running: (\S+)")


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot (``/proc/stat``'s first line; iowait counts as idle)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to trace after --")
    cores = os.cpu_count() or 1
    samples: list[tuple[float, float]] = []  # (time, busy cores over the interval before it)
    done = threading.Event()

    def sample() -> None:
        busy, total = _cpu_times()
        while not done.wait(args.interval):
            now_busy, now_total = _cpu_times()
            share = (now_busy - busy) / max(now_total - total, 1)
            samples.append((time.monotonic(), share * cores))
            busy, total = now_busy, now_total

    steps: list[tuple[float, str]] = [(time.monotonic(), "(start)")]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in process.stdout:
        sys.stdout.write(line)
        found = STEP.search(line)
        if found:
            steps.append((time.monotonic(), found.group(1)))
    code = process.wait()
    done.set()
    sampler.join()
    steps.append((time.monotonic(), "(end)"))

    print(f"\n{'step':44s} {'seconds':>8s} {'busy cores':>10s} {'idle core-s':>11s}")
    idle_total = 0.0
    for (begin, name), (end, _) in zip(steps, steps[1:]):
        inside = [busy for at, busy in samples if begin < at <= end]
        if not inside:
            continue
        idle = sum(cores - busy for busy in inside) * args.interval
        idle_total += idle
        print(f"{name:44s} {end - begin:8.1f} {sum(inside) / len(inside):10.2f} {idle:11.0f}")
    mean = sum(busy for _, busy in samples) / max(len(samples), 1)
    print(f"{'total':44s} {steps[-1][0] - steps[0][0]:8.1f} {mean:10.2f} {idle_total:11.0f}  ({cores} cores)")
    sys.exit(code)


if __name__ == "__main__":
    main()
