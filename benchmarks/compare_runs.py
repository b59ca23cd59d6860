"""Do two directories of TREC runs rank the same? For settings that change scores only in the last bits.

    python benchmarks/compare_runs.py OLD_DIR NEW_DIR [--glob '*/*/*.run']

For every run file present in both: whether each query's ranked docids are identical, and the largest score
difference. A setting that changes the vectors by ~1e-7 (a larger query batch) is acceptable when every
ranking is unchanged: then every rank-based metric is too.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from clir_eval.retrieval.runs import read_run, sort_hits

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--glob", default="**/*.run")
    args = parser.parse_args()

    old_files = {p.relative_to(args.old): p for p in args.old.glob(args.glob)}
    new_files = {p.relative_to(args.new): p for p in args.new.glob(args.glob)}
    common = sorted(set(old_files) & set(new_files))
    changed = 0
    for name in common:
        old, new = read_run(old_files[name]), read_run(new_files[name])
        queries = sorted(set(old) | set(new))
        reordered = [q for q in queries if [d for d, _ in sort_hits(old.get(q, {}))]
                     != [d for d, _ in sort_hits(new.get(q, {}))]]
        diffs = [abs(old[q][d] - new[q][d]) for q in queries if q in old and q in new
                 for d in old[q] if d in new[q]]
        changed += bool(reordered)
        print(f"{name}: {len(queries)} queries, {len(reordered)} ranked differently, "
              f"max |score difference| {max(diffs, default=0.0):.2e}")
    print(f"{len(common)} runs compared, {changed} with a different ranking "
          f"({len(set(old_files) ^ set(new_files))} present on one side only)")


if __name__ == "__main__":
    main()
