"""Fingerprints of what the trainer trains: run before and after a change to ``clir_eval/distill/`` and diff.

Seven tiny-model runs that between them use every path of the loop (KD with the shared trunk and English through
the student, KD + OT with checkpoints and dev evaluations, KD + OT on an intermediate layer above a shared trunk,
OT with early stopping, KD + contrastive with drawn negatives over two epochs, gradient accumulation, SGD with a
fitted map). Each prints the SHA-256 of the saved weights, the steps, and the dev history. A refactor that changes
no arithmetic prints the same lines.

    python scripts/trainer_fingerprint.py > before.txt   # on the old code
    python scripts/trainer_fingerprint.py > after.txt    # on the new code
    diff before.txt after.txt
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CASES = {
    "kd-trunk-english": dict(method="kd", freeze_layers=1,
                             loss={"kd_english_through_student": True, "kd_distance": "cosine"}),
    "kd+ot-checkpoints": dict(method="kd+ot", loss={"ot_epsilon": 0.1}, eval_every=2, checkpoint_every=2),
    "ot-early-stop": dict(method="ot", loss={"ot_epsilon": 0.1}, eval_every=1, patience=1, max_steps=8),
    "kd+contrastive-negatives-2ep": dict(method="kd+contrastive", max_steps=0, epochs=2,
                                         loss={"contrastive_negatives": 8, "contrastive_english_through_student": True,
                                               "kd_english_through_student": True}),
    "contrastive-accumulation": dict(method="contrastive", grad_accumulation=2, max_steps=3, freeze_layers=1),
    "kd+ot-layer1-trunk": dict(method="kd+ot", freeze_layers=1, eval_every=3,
                               loss={"ot_epsilon": 0.1, "ot_student_layer": 1, "ot_teacher_layer": 1}),
    "kd-sgd-fitted-map": dict(method="kd", optimizer="sgd", projection_fit_pairs=16, projection_fit_english=10),
}


def main() -> None:
    import torch

    from clir_eval.distill.trainer import DistillConfig, distill
    from tiny_models import make_tiny_bert, word_pairs

    logging.disable(logging.WARNING)
    torch.set_num_threads(1)  # thread count changes float summation order
    train, dev = word_pairs(48, 0), word_pairs(12, 1)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = make_tiny_bert(Path(tmp) / "teacher", hidden_size=32)
        student = make_tiny_bert(Path(tmp) / "student", hidden_size=48, seed=1)
        for name, overrides in CASES.items():
            options = dict(student=str(student), teacher=str(teacher), max_steps=6, batch_size=8, lr=1e-3)
            options.update(overrides)
            out = Path(tmp) / name
            result = distill(DistillConfig(**options), train, dev, out, show_progress=False,
                             english=[p.target for p in dev] * 2)
            digest = hashlib.sha256(b"".join(f.read_bytes() for f in sorted(out.glob("*.safetensors"))))
            print(name, digest.hexdigest()[:16], result.steps, result.stopped_early, json.dumps(result.history))


if __name__ == "__main__":
    main()
