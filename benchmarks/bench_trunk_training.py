"""Three students trained on the same pairs, with and without a computation shared between them, side by side in one
run; same weights checked.

    python benchmarks/bench_trunk_training.py --pairs 320 --freeze-layers 6 --threads 2
    python benchmarks/bench_trunk_training.py --pairs 320 --freeze-layers 6 --threads 2 --share teacher

``--share trunk`` (the default): each student running its frozen lower layers at every step, against one frozen
trunk computed once and shared (``share_trunk``). ``--share teacher``: with the trunk shared in both, each student
running the frozen teacher over every batch, against the teacher's states of each batch kept for the next student
(:class:`clir_eval.distill.data.SharedTeacher`, off when the process's trunk cache has no room).

The students are the default study's three methods (KD with English through the student, KD + OT,
contrastive) from one start (me5-small + a least-squares map fitted on the same pairs), on LAFAND sw pairs.
Each configuration trains the three students in a row in a fresh process state (the shared trunk's memo and the
trunk cache are cleared first), timed from the first ``distill()`` call to the end of the third, loading and saving
included, as in a study. The weights of each sharing student are compared with its twin trained without sharing.
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    import torch

    import clir_eval.distill.data as data
    from clir_eval.collections.bitext import load_bitext
    from clir_eval.distill.trainer import DistillConfig, distill
    from clir_eval.models import trunk
    from clir_eval.models.sentence import SentenceEncoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", default="me5-small")
    parser.add_argument("--teacher", default="minilm-l6")
    parser.add_argument("--pairs", type=int, default=320)
    parser.add_argument("--freeze-layers", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--share", choices=("trunk", "teacher"), default="trunk")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pairs = load_bitext("lafand", "sw", "train")[: args.pairs]
    methods = {"kd": {"kd_english_through_student": True}, "kd+ot": {"kd_english_through_student": True},
               "contrastive": {}}
    cache = trunk.trunk_cache()
    budget = cache.max_bytes
    seconds, weights = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for share in (False, True, False, True):  # alternating, so that load from other processes hits both
            data._SHARED.clear()
            cache.clear()
            cache.resize(budget if share or args.share == "trunk" else 0)
            start = time.perf_counter()
            for method, loss in methods.items():
                config = DistillConfig(method=method, student=args.student, teacher=args.teacher, lr=2e-5,
                                       freeze_layers=args.freeze_layers, share_trunk=share or args.share == "teacher",
                                       loss=loss, projection_fit_pairs=args.pairs)
                out = distill(config, pairs, [], f"{tmp}/{method}-{share}", show_progress=False).student_dir
                weights[(method, share)] = SentenceEncoder.from_pretrained(str(out)).state_dict()
            seconds.setdefault(share, []).append(time.perf_counter() - start)
    cache.resize(budget)
    separate, shared = min(seconds[False]), min(seconds[True])
    print(f"three students, {len(pairs)} pairs each, lower {args.freeze_layers} layers frozen, {args.threads} threads "
          f"(best of 2): separate {separate:.1f} s, shared {args.share} {shared:.1f} s -> {shared / separate:.2f}x")
    for method in methods:
        a, b = weights[(method, False)], weights[(method, True)]
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        print(f"{method}: max |weight difference| shared vs separate {diff:.2e}")


if __name__ == "__main__":
    main()
