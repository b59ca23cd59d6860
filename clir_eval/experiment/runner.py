"""``clir-eval run``: a whole study from one config, every step cached by the hash of its inputs.

Order: collections → bitext (leakage-checked) → students → runs (indexes built on first use) →
evaluation, leaderboards, gap analysis, report → sweep plots. Students and runs are cached in
``<cache>/<kind>/<name>-<hash>/`` (:mod:`clir_eval.experiment.cache`); indexes and PSQ tables
record what built them and are reused by every study (see :mod:`clir_eval.retrieval.systems`).
The output directory receives copies of the runs plus the manifest, leaderboards and report, so it
is self-contained and can be archived next to a paper.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clir_eval.collections.records import BitextPair
from clir_eval.experiment import provenance
from clir_eval.experiment.cache import STAMP, StepCache, StepRecord, stable_hash
from clir_eval.experiment.config import START_OPTIONS, ExperimentConfig, StudentSpec
from clir_eval.experiment.schema import to_mapping
from clir_eval.io import atomic_write, safe_filename, sha256_file, sha256_tree, staged_outputs
from clir_eval.models.held import holding

logger = logging.getLogger(__name__)

# Bump when a step's output changes for the same inputs (a fixed bug), so that caches rebuild.
STEP_VERSION = 1
# Loss options added after students were cached whose default trains as before: left out of a student's key while
# at their default, so that adding an option does not discard every trained student. Changing such a default must
# bump STEP_VERSION.
KEYED_WHEN_SET = frozenset({"contrastive_english_through_student", "ot_solver"})
MARGINS_FILE = "margins.tsv"
MANIFEST = "manifest.json"
RUNS_DIR = "runs"
EVALUATION_STAMP = ".evaluation.json"


def distill_key(config: Any) -> dict[str, Any]:
    """A trainer config as it enters a student's cache key: every setting, less ``KEYED_WHEN_SET`` at its default."""
    from clir_eval.distill.losses import LossOptions

    defaults = LossOptions().to_dict()
    mapping = to_mapping(config)
    mapping["loss"] = {name: value for name, value in mapping["loss"].items()
                       if not (name in KEYED_WHEN_SET and value == defaults[name])}
    return mapping


def steps_cache_root() -> Path:
    """Where step outputs are cached across studies (``$CLIR_EVAL_CACHE/steps``; sweeps share indexes)."""
    from clir_eval.models.cache import model_cache_dir

    return model_cache_dir().parent / "steps"


@dataclass
class StudyResult:
    """Where a study left its outputs and what it did."""

    output_dir: Path
    manifest: Path
    report: Path
    leaderboards: dict[str, str] = field(default_factory=dict)  # "collection/lang" -> Markdown
    steps: list[StepRecord] = field(default_factory=list)
    evaluation_cached: bool = False
    seconds: float = 0.0

    @property
    def computed_steps(self) -> int:
        return sum(not record.cached for record in self.steps) + (not self.evaluation_cached)


# Queries per encoder batch in a study. 64 (the `clir-eval search` default) was tried in the default study from a
# cold cache: its dense runs took 303 s against 267 s at 32 in the previous cold run, and 2 of 1,327 me5-small sw
# rankings changed (scores move by up to 5e-7; docs/benchmarks.md). 32 keeps the recorded runs byte for byte.
STUDY_QUERY_BATCH = 32


def pairs_sha256(pairs: list[BitextPair]) -> str:
    """Content hash of bitext pairs, in training order."""
    return stable_hash([list(pair) for pair in pairs], length=64)


class StudyRunner:
    """Runs one :class:`ExperimentConfig`; ``command`` is recorded as the command that made the study."""

    def __init__(self, config: ExperimentConfig, cache_root: Path | None = None, command: str = "") -> None:
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.cache_root = Path(cache_root) if cache_root is not None else steps_cache_root()
        self.cache = StepCache(self.cache_root)
        self.command = command
        self.collections: dict[str, Any] = {}
        self._model_hashes: dict[str, str] = {}
        self._english: dict[tuple, list[str]] = {}
        # A study's start and students read the same bitext (train and dev) and search one index set per
        # collection: each is loaded, leakage-checked or hashed once.
        self._bitext: dict[tuple, list[BitextPair]] = {}
        self._index_dirs: dict[str, Any] = {}

    # -- inputs ---------------------------------------------------------------------------------
    def load_collections(self) -> None:
        from clir_eval.collections.registry import load_collection

        for ref in self.config.collections:
            collection = load_collection(ref.name)
            missing = [lang for lang in ref.languages if lang not in collection.languages_in(ref.split)]
            if missing:
                raise ValueError(
                    f"collection {ref.name!r} split {ref.split!r} has no topics in {missing}; "
                    f"languages: {', '.join(collection.languages_in(ref.split))}"
                )
            self.collections[ref.name] = collection
            # Every run's data hash now, before any training: a file it cannot read fails here, not after an hour.
            for lang in ref.languages:
                self.data_sha256(collection, lang, ref.split)

    @staticmethod
    def _sha256(path: Path) -> str:
        # A corpus may be a directory of parts (lafand-x); sha256_file remembers each file while it is unchanged.
        return sha256_tree(path)

    def data_sha256(self, collection: Any, lang: str, split: str) -> str:
        """One hash over what a run of ``collection``/``lang`` reads: corpus, topics (and oracle topics), qrels."""
        paths = [collection.corpus_path, collection.topics_path(lang, split), collection.qrels_path(split)]
        if collection.oracle_lang and collection.oracle_lang in collection.languages_in(split):
            paths.append(collection.topics_path(collection.oracle_lang, split))
        return stable_hash([self._sha256(Path(p)) for p in paths], length=64)

    def bitext(self, sources: tuple[str, ...], languages: tuple[str, ...], split: str,
               max_pairs: int | None, min_margin: float | None = None, backbone: str = "") -> list[BitextPair]:
        """Pairs of ``split`` per language from the first source that has it, leakage-checked against every
        test topic of the study's collections.

        A budget (``max_pairs``) is a seeded random sample per language, not the first lines, so that it
        does not depend on the order of the bitext file. With ``min_margin``, pairs that ``backbone`` scores
        below that ratio margin are dropped and the budget is filled from further pairs
        (:func:`clir_eval.distill.filtering.filtered_sample`; a cached step per language).
        """
        from clir_eval.collections.bitext import bitext_languages, load_bitext, sample_pairs, sample_seed
        from clir_eval.collections.leakage import evaluation_topics, guard_bitext

        key = (tuple(sources), tuple(languages), split, max_pairs, min_margin, backbone if min_margin else "")
        if key in self._bitext:
            return list(self._bitext[key])
        pairs: list[BitextPair] = []
        for lang in languages:
            source = next((s for s in sources if split in bitext_languages(s).get(lang, ())), None)
            if source is None:
                raise ValueError(f"no bitext source among {list(sources)} has a {split!r} split for {lang!r}")
            chosen = load_bitext(source, lang, split)
            seed = sample_seed(self.config.seed, lang, split)
            if min_margin is not None:
                chosen = self.filtered_bitext(chosen, lang, split, max_pairs, min_margin, backbone, seed)
            else:
                chosen = sample_pairs(chosen, max_pairs, seed)
            pairs.extend(chosen)
        report = guard_bitext(pairs, evaluation_topics(self.collections.values(), split="test"), self.config.leakage)
        self._bitext[key] = list(report.pairs)
        return list(report.pairs)

    def filtered_bitext(self, pairs: list[BitextPair], lang: str, split: str, budget: int | None, min_margin: float,
                        backbone: str, seed: str) -> list[BitextPair]:
        """The margin-filtered sample of one language's pairs (cached step ``bitext/<lang>-<split>-margin``).

        The step keeps every scored pair's margin in ``margins.tsv`` (pair id, margin, kept), so what was dropped
        can be read.
        """
        from clir_eval.distill.filtering import MARGIN_NEIGHBOURS, filtered_sample

        inputs = {"version": STEP_VERSION, "backbone": backbone, "lang": lang, "split": split, "budget": budget,
                  "min_margin": min_margin, "neighbours": MARGIN_NEIGHBOURS, "seed": seed,
                  "pairs_sha256": pairs_sha256(pairs)}

        def build(out: Path) -> None:
            from clir_eval.models.sentence import SentenceEncoder

            encoder = SentenceEncoder.from_pretrained(backbone)
            kept, scores = filtered_sample(pairs, budget, min_margin, encoder.encode, seed)
            kept_ids = {p.pair_id for p in kept}
            with atomic_write(out / MARGINS_FILE) as handle:
                handle.write("pair_id\tmargin\tkept\n")
                handle.writelines(f"{pid}\t{score:.6f}\t{int(pid in kept_ids)}\n" for pid, score in scores.items())
            logger.info("bitext %s %s: kept %d of %d pairs scored (margin >= %g under %s)", lang, split,
                        len(kept), len(scores), min_margin, backbone)

        step = self.cache.run("bitext", f"{lang}-{split}-margin", inputs, build)
        by_id = {p.pair_id: p for p in pairs}
        rows = [line.split("\t") for line in (step / MARGINS_FILE).read_text(encoding="utf-8").splitlines()[1:]]
        return [by_id[pid] for pid, _, kept in rows if kept == "1"]

    def english_text(self, sources: tuple[str, ...], count: int) -> list[str]:
        """``count`` English sentences for the initial map (:func:`clir_eval.collections.english.english_pool`)."""
        from clir_eval.collections.english import english_pool

        key = (tuple(sources), count)
        if key not in self._english:
            self._english[key] = english_pool(sources, count, seed=self.config.seed,
                                              test_collections=self.collections.values(),
                                              allow_leakage=self.config.leakage == "allow")
        return self._english[key]

    def spec_bitext(self, spec: StudentSpec) -> list[BitextPair]:
        """A student's bitext pairs: its budget, filtered when it sets ``min_margin``."""
        return self.bitext(spec.bitext, spec.languages, "train", spec.max_pairs, spec.min_margin, spec.backbone)

    def training_pairs(self, spec: StudentSpec) -> list[BitextPair]:
        """A student's training pairs: its bitext, then ``english_pairs`` English -> English pairs of English
        sentences outside the test collections and outside the bitext's own English sides (fewer when the
        sources hold fewer)."""
        pairs = self.spec_bitext(spec)
        if not spec.english_pairs:
            return pairs
        taken = {pair.target for pair in pairs}
        pool = self.english_text(spec.bitext, spec.english_pairs + len(taken))
        english = [text for text in pool if text not in taken][: spec.english_pairs]
        if len(english) < spec.english_pairs:
            logger.warning("student %s: english_pairs=%d but the sources hold %d more English sentences", spec.name,
                           spec.english_pairs, len(english))
        return pairs + [BitextPair(text, text, "en", "en", f"english-{i}") for i, text in enumerate(english)]

    def distill_config(self, spec: StudentSpec, start: Path | None = None) -> Any:
        """The trainer's config of a student; it trains from ``start`` (its saved untrained student) when given."""
        from clir_eval.distill.trainer import DistillConfig
        from clir_eval.experiment.schema import from_mapping

        settings = {"seed": self.config.seed, **spec.options, "method": spec.method, "student": spec.backbone,
                    "teacher": self.config.teacher}
        if start is not None:
            settings["student"] = str(start)
        return from_mapping(DistillConfig, settings, where=f"students[{spec.name}]")

    # -- steps ----------------------------------------------------------------------------------
    def start(self, name: str, spec: StudentSpec) -> Path:
        """The untrained student of ``spec`` (cached; shared by the students of one start): backbone + initial map."""
        from clir_eval.distill.trainer import save_start

        config = self.distill_config(spec)
        train = self.spec_bitext(spec)[: config.projection_fit_pairs]
        english = self.english_text(spec.bitext, config.projection_fit_english)
        inputs = {"version": STEP_VERSION, "student": config.student, "teacher": config.teacher,
                  "options": {k: getattr(config, k) for k in START_OPTIONS}, "fit_sha256": pairs_sha256(train),
                  "english_sha256": stable_hash(english, length=64), "english": len(english)}
        logger.info("%s: %s + least-squares map on %d pairs and %d English sentences", name, config.student,
                    len(train), len(english))
        return self.cache.run("students", name, inputs, lambda out: save_start(config, train, english, out))

    def student(self, spec: StudentSpec, start: Path | None = None) -> Path:
        """Distil one student (cached) from ``start`` (its untrained student, if it has one); returns its directory."""
        from clir_eval.distill.trainer import distill

        train = self.training_pairs(spec)
        dev = self.bitext(spec.bitext, spec.languages, "dev", self.config.dev_pairs)
        config = self.distill_config(spec, start)
        inputs = {"version": STEP_VERSION, "distill": distill_key(config), "train_sha256": pairs_sha256(train),
                  "dev_sha256": pairs_sha256(dev), "train_pairs": len(train), "dev_pairs": len(dev)}
        english = len(train) - len(self.spec_bitext(spec))
        logger.info("student %s: %s on %d %s pairs%s (%d dev)", spec.name, spec.method, len(train) - english,
                    "+".join(spec.languages), f" and {english} English -> English" if english else "", len(dev))

        # Checkpoints live at a path keyed like the step (the step's own directory is temporary until complete), so
        # that a rerun after a crash or kill resumes from them; the cache removes them once the step is complete.
        checkpoints = self.cache.work_dir("students", spec.name, inputs)

        def build(out: Path) -> None:
            distill(config, train, dev, out, resume=True, checkpoint_dir=checkpoints)

        return self.cache.run("students", spec.name, inputs, build)

    def students(self) -> dict[str, Path]:
        """Every untrained and trained student of the study, by system name (starts first)."""
        found: dict[str, Path] = {}
        start_of: dict[str, Path] = {}
        for name, specs in self.config.starts.items():
            found[name] = self.start(name, specs[0])
            start_of.update({spec.name: found[name] for spec in specs})
        for spec in self.config.all_students:
            found[spec.name] = self.student(spec, start_of.get(spec.name))
        return found

    def system_options(self, students: dict[str, Path]) -> Any:
        from clir_eval.experiment.schema import from_mapping
        from clir_eval.retrieval.dense import DenseIndexConfig
        from clir_eval.retrieval.fusion import FusionConfig
        from clir_eval.retrieval.systems import SystemOptions

        hybrid = dict(self.config.hybrid)
        for part in ("sparse", "dense"):  # a student may be named by its config name
            if hybrid.get(part) in students:
                hybrid[part] = f"student:{students[hybrid[part]]}"
        # Components are fused at the study's depth, so the study's own component runs can be fused as they are.
        hybrid.setdefault("depth", self.config.hits)
        fusion = from_mapping(FusionConfig, hybrid, where="hybrid")
        dense_index = from_mapping(DenseIndexConfig, self.config.dense_index, where="dense_index")
        return SystemOptions(teacher=self.config.teacher, psq_bitext=tuple(map(tuple, self.config.psq_bitext)),
                             psq_leakage=self.config.leakage, fusion=fusion, dense_index=dense_index,
                             query_batch_size=STUDY_QUERY_BATCH, show_progress=True)

    def system_spec(self, system: str, students: dict[str, Path]) -> tuple[str, str]:
        """``(system name for tables and files, spec for the retrieval registry)``."""
        kind, colon, argument = system.partition(":")
        if kind == "student" and argument in students:
            return argument, f"student:{students[argument]}"
        from clir_eval.retrieval.systems import system_name

        return system_name(system), system

    def index_dirs(self, collection: Any) -> Any:
        """Where ``collection``'s indexes live in the step cache (:class:`clir_eval.retrieval.systems.IndexDirs`)."""
        from clir_eval.retrieval.systems import IndexDirs, index_key

        if collection.name not in self._index_dirs:  # index_key hashes the corpus
            per_collection = IndexDirs.under(self.cache_root / "indexes" / index_key(collection))
            # PSQ tables are shared by collections: eflomal has no seed, so one table per bitext keeps runs
            # comparable.
            self._index_dirs[collection.name] = IndexDirs(per_collection.lucene, per_collection.dense,
                                                          self.cache_root / "indexes" / "psq")
        return self._index_dirs[collection.name]

    def search(self, collection: Any, lang: str, split: str, system: str, spec: str, options: Any,
               done: dict[str, Path]) -> Path:
        """One run (cached); returns the cached run file. ``done`` maps specs to this language's finished runs."""
        from clir_eval.retrieval.systems import run_system

        parts = [options.fusion.sparse, options.fusion.dense]
        if spec == "hybrid" and all(part in done for part in parts) and options.fusion.depth <= self.config.hits:
            return self.fuse(collection, lang, system, [done[part] for part in parts], options.fusion)

        indexes = self.index_dirs(collection)
        name, inputs = self.run_step(collection, lang, split, system, spec, options)
        step = self.cache.run(
            "runs", name, inputs,
            lambda out: run_system(spec, collection, lang, split, indexes=indexes, out_path=out / "run.trec",
                                   hits=self.config.hits, tag=system, options=options),
        )
        return step / "run.trec"

    def run_step(self, collection: Any, lang: str, split: str, system: str, spec: str,
                 options: Any) -> tuple[str, dict[str, Any]]:
        """``(step name, inputs)`` of a search's cached step (the fused hybrid has its own, :meth:`fuse`)."""
        from clir_eval.retrieval.systems import parse_system

        settings = to_mapping(options)
        if spec != "hybrid":
            settings.pop("fusion")  # only the hybrid reads it: a new hybrid component must not redo every run
            if parse_system(spec).family != "dense":
                settings.pop("dense_index")  # nor does BM25 read the Faiss index: another one must not redo it
        if "dense_index" in settings:
            settings["dense_index"] = options.dense_index.run_settings()
        common = {"version": STEP_VERSION, "spec": spec, "collection": collection.name, "split": split,
                  "hits": self.config.hits, "options": settings, "tag": system}
        if parse_system(spec).upper_bound and collection.oracle_lang:
            # An oracle searches with the human English topics: a language adds only its qids, so languages
            # with the same qids (every NTREX language) share one run instead of encoding the same English again.
            paths = [collection.corpus_path, collection.topics_path(collection.oracle_lang, split),
                     collection.qrels_path(split)]
            qids = sorted(topic.qid for topic in collection.topics(lang, split))
            data = stable_hash([*(self._sha256(Path(p)) for p in paths), qids], length=64)
            return f"{collection.name}-{system}", {**common, "lang": None, "data": data}
        data = self.data_sha256(collection, lang, split)
        return f"{collection.name}-{lang}-{system}", {**common, "lang": lang, "data": data}

    def pending_query_models(self, students: dict[str, Path], options: Any) -> list[str]:
        """The query encoders of the dense runs this study still has to compute, in the order it runs them."""
        from clir_eval.retrieval.systems import query_model

        models: list[str] = []
        for ref in self.config.collections:
            collection = self.collections[ref.name]
            for lang in ref.languages:
                for system in self.config.systems_on(lang):
                    name, spec = self.system_spec(system, students)
                    model = query_model(spec, options)
                    if model is None or model in models:
                        continue
                    step = self.cache.path_for("runs", *self.run_step(collection, lang, ref.split, name, spec, options))
                    if not (step / STAMP).is_file():
                        models.append(model)
        return models

    def fuse(self, collection: Any, lang: str, system: str, runs: list[Path], fusion: Any) -> Path:
        """The hybrid system from the study's own component runs (no second encoding of the queries): the
        same file :func:`clir_eval.retrieval.systems.run_system` writes, components being at ``fusion.depth``."""
        from clir_eval.retrieval.fusion import fuse
        from clir_eval.retrieval.runs import read_run_file, write_run

        inputs = {"version": STEP_VERSION, "fusion": to_mapping(fusion), "hits": self.config.hits,
                  "components": [self._sha256(run) for run in runs], "tag": system}

        def build(out: Path) -> None:
            fused = fuse([read_run_file(run).run for run in runs], fusion)
            write_run(out / "run.trec", {qid: hits[: self.config.hits] for qid, hits in fused.items()}, tag=system,
                      depth=self.config.hits)

        return self.cache.run("runs", f"{collection.name}-{lang}-{system}", inputs, build) / "run.trec"

    # -- the study ------------------------------------------------------------------------------
    def run(self) -> StudyResult:
        started = time.perf_counter()
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        from clir_eval.io import check_output_path

        # load_config checked output_dir already; a config built in code reaches here unchecked.
        check_output_path(self.output_dir, directory=True)
        check_output_path(self.cache_root, directory=True)
        if self.config.threads:
            import torch

            torch.set_num_threads(self.config.threads)
        self.load_collections()
        students = self.students()
        options = self.system_options(students)

        runs_root = self.output_dir / RUNS_DIR
        # The query encoders stay loaded across languages (models.held): loaded once, and alive together from the
        # first language on, which is what lets them share their common layers (models.trunk).
        with holding(self.pending_query_models(students, options)):
            entries = self._search_all(students, options, runs_root)

        manifest = self._manifest(entries, created, students)
        manifest_path = self.output_dir / MANIFEST
        _write_json(manifest_path, manifest)
        report_path, leaderboards, evaluation_cached = self.evaluate(manifest)

        manifest["steps"] = [vars(record) for record in self.cache.records]
        manifest["evaluation_cached"] = evaluation_cached
        manifest["seconds"] = round(time.perf_counter() - started, 1)
        manifest["peak_memory_mib"] = provenance.peak_memory_mib()
        manifest["hardware"] = provenance.hardware()
        _write_json(manifest_path, manifest)
        return StudyResult(self.output_dir, manifest_path, report_path, leaderboards, list(self.cache.records),
                           evaluation_cached, manifest["seconds"])

    def _search_all(self, students: dict[str, Path], options: Any, runs_root: Path) -> list[dict[str, Any]]:
        """Every run of the study, copied under ``runs_root``; returns their manifest entries."""
        entries = []
        for ref in self.config.collections:
            collection = self.collections[ref.name]
            qrels_copy = runs_root / collection.name / f"qrels.{ref.split}.txt"
            _copy(collection.qrels_path(ref.split), qrels_copy)
            for lang in ref.languages:
                if not collection.parallel_topics:
                    # Each language its own queries: its table is evaluated on its own qids' judgements only.
                    qrels_copy = runs_root / collection.name / lang / f"qrels.{ref.split}.txt"
                    _write_qrels(collection.qrels(ref.split, lang), qrels_copy)
                done: dict[str, Path] = {}
                # hybrid last: it fuses the runs of its components when the study has them
                for system in sorted(self.config.systems_on(lang), key=lambda s: s == "hybrid"):
                    name, spec = self.system_spec(system, students)
                    cached_run = self.search(collection, lang, ref.split, name, spec, options, done)
                    done[spec] = cached_run
                    target = runs_root / collection.name / lang / f"{name}.run"
                    _copy(cached_run, target)
                    entries.append(self._run_entry(target, collection, lang, ref.split, name, spec, qrels_copy))

        return entries

    def _run_entry(self, path: Path, collection: Any, lang: str, split: str, name: str, spec: str,
                   qrels: Path) -> dict[str, Any]:
        from clir_eval.retrieval.dense import model_fingerprint

        kind, _, argument = spec.partition(":")
        model = {"teacher": self.config.teacher, "oracle-dense": self.config.teacher, "me5-small": "me5-small",
                 "student": argument}.get(kind, "")
        if model and model not in self._model_hashes:  # one hash per model, not per run (a model is ~0.5 GB)
            from clir_eval.models.registry import resolve_model

            self._model_hashes[model] = model_fingerprint(str(Path(resolve_model(model).local_path()))) or ""
        model_sha = self._model_hashes.get(model, "")
        command = (f"clir-eval search --system {spec} --collection {collection.name} --lang {lang} "
                   f"--split {split} --hits {self.config.hits}")
        return {"path": str(path.relative_to(self.output_dir)), "collection": collection.name, "lang": lang,
                "system": name, "qrels": str(qrels.relative_to(self.output_dir)), "tag": name,
                "command": command, "model": model, "model_sha256": model_sha,
                "data_sha256": self.data_sha256(collection, lang, split), "config": {"spec": spec}}

    def _manifest(self, entries: list[dict[str, Any]], created: str, students: dict[str, Path]) -> dict[str, Any]:
        config = self.config
        groups = {lang: self.collections[ref.name].language_group(lang)
                  for ref in config.collections for lang in ref.languages}
        oracle = "oracle-dense" if "oracle-dense" in config.all_systems else None
        student_info = {}
        for name, path in students.items():
            args = path / "training_args.json"
            student_info[name] = {"path": str(path),
                                  "training_args": json.loads(args.read_text()) if args.is_file() else None}
        return {
            "title": f"clir-eval study: {config.name}",
            "created": created,
            "git_commit": provenance.git_commit(),
            "command": self.command or "clir-eval run",
            "metrics": list(config.evaluation.metrics),
            # Every trained student is tested against its start, whether or not the config lists it.
            "baselines": list(config.evaluation.baselines) + [name for name in config.starts
                                                              if name not in config.evaluation.baselines],
            "oracle": oracle,
            "upper_bounds": [system for system in config.all_systems if _is_upper_bound(system)],
            "language_groups": groups,
            # every setting of the protocol but the metrics and baselines, which have their own keys above
            "significance": {f.name: getattr(config.evaluation, f.name) for f in fields(config.evaluation)
                             if f.name not in ("metrics", "baselines", "trend")},
            "trend": to_mapping(config.evaluation.trend) if config.evaluation.trend else None,
            "seeds": {"study": config.seed, "significance": config.evaluation.seed},
            "config": config.to_dict(),
            "versions": provenance.package_versions(),
            "students": student_info,
            "runs": entries,
        }

    def evaluate(self, manifest: dict[str, Any]) -> tuple[Path, dict[str, str], bool]:
        """Leaderboards, gap analysis and the report; skipped when runs and settings are unchanged."""
        from clir_eval.evaluation.manifest import read_results
        from clir_eval.evaluation.report import build_report, write_report

        out = self.output_dir
        report_path = out / "report.html"
        key = stable_hash({"runs": [(e["path"], self._sha256(out / e["path"])) for e in manifest["runs"]],
                           "settings": {k: manifest[k] for k in
                                        ("metrics", "baselines", "oracle", "language_groups", "significance",
                                         "trend")},
                           "sweep": to_mapping(self.config.sweep) if self.config.sweep else None,
                           "version": STEP_VERSION}, length=64)
        stamp = out / EVALUATION_STAMP
        if stamp.is_file() and report_path.is_file():
            saved = json.loads(stamp.read_text(encoding="utf-8"))
            if saved.get("key") == key:
                logger.info("cached: evaluation (runs and settings unchanged)")
                return report_path, saved.get("leaderboards", {}), True

        report = build_report(read_results(out))
        leaderboards = {}
        for table in report.tables:
            table.leaderboard.save(out / "leaderboards", stem=safe_filename(f"{table.collection}-{table.lang}"))
            leaderboards[f"{table.collection}/{table.lang}"] = table.leaderboard.to_markdown()
        self._gaps(report, out / "gaps")
        if self.config.sweep:
            self._sweep(report, out / "sweep")
        if self.config.evaluation.trend is not None:
            self._trend(out / "trend")
        write_report(report, report_path)
        _write_json(stamp, {"key": key, "leaderboards": leaderboards})
        return report_path, leaderboards, False

    def _trend(self, out_dir: Path) -> None:
        """``evaluation.trend``: as ``clir-eval trend`` writes it, from the study's own runs."""
        from clir_eval.evaluation.manifest import read_results
        from clir_eval.evaluation.plots import save_figure, trend_figure
        from clir_eval.evaluation.trend import TrendConfig, trend_from_results

        spec, evaluation = self.config.evaluation.trend, self.config.evaluation
        config = TrendConfig(test=evaluation.test, correction=evaluation.correction, alpha=evaluation.alpha,
                             seed=evaluation.seed, n_resamples=evaluation.n_resamples)
        results = read_results(self.output_dir)
        common = dict(start=spec.start, methods=spec.methods, contrasts=spec.contrasts, metric=spec.metric,
                      collection=spec.collection, config=config, trec_eval_version=evaluation.trec_eval)
        # the zero-shot languages have their own analysis
        analyses = {"trend": trend_from_results(results, languages=spec.trained_languages(self.config.collections),
                                                **common)}
        if spec.zero_shot:
            analyses["zero-shot"] = trend_from_results(results, languages=list(spec.zero_shot), via=spec.zero_shot,
                                                       **common)
        with staged_outputs(out_dir) as stage:
            for stem, analysis in analyses.items():
                analysis.save(stage, stem=stem)
                save_figure(trend_figure(analysis), stage / stem)

    def _gaps(self, report: Any, out_dir: Path) -> None:
        from clir_eval.evaluation.plots import gap_figure, save_figure

        out_dir.mkdir(parents=True, exist_ok=True)
        for collection, gap in report.gaps.items():
            with atomic_write(out_dir / f"{safe_filename(collection)}.csv") as handle:
                gap.to_dataframe().to_csv(handle, float_format="%.6g")
            save_figure(gap_figure(gap), out_dir / safe_filename(collection))

    def _sweep(self, report: Any, out_dir: Path) -> None:
        import pandas as pd

        from clir_eval.experiment.sweeps import student_axes, sweep_table, write_sweep_analysis

        rows = []
        for table in report.tables:
            group = report.language_groups.get(table.collection, {}).get(table.lang, "unspecified")
            for system, means in table.result.means.items():
                for metric, value in means.items():
                    rows.append((system, table.collection, table.lang, group, metric, value))
        results = pd.DataFrame(rows, columns=["system", "collection", "lang", "group", "metric", "value"])
        students = self.config.all_students[len(self.config.students):]
        sweep_rows = sweep_table(results, student_axes(students, self.config.sweep))
        write_sweep_analysis(sweep_rows, list(self.config.sweep.axes), self.config.evaluation.metrics[0], out_dir)


def _is_upper_bound(system: str) -> bool:
    from clir_eval.retrieval.systems import SystemSpec

    return SystemSpec.parse(system).upper_bound


def _copy(source: Path, target: Path) -> None:
    """Copy unless ``target`` already holds the same bytes (a rerun rewrites nothing)."""
    source, target = Path(source), Path(target)
    if target.is_file() and target.stat().st_size == source.stat().st_size and \
            sha256_file(target) == sha256_file(source):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, mode="wb") as handle, source.open("rb") as src:
        shutil.copyfileobj(src, handle)


def _write_qrels(qrels: list, target: Path) -> None:
    """Write ``qrels`` unless ``target`` already holds exactly them (a rerun rewrites nothing)."""
    from clir_eval.collections.writers import write_qrels

    text = "".join(f"{q.qid} 0 {q.docid} {int(q.relevance)}\n" for q in qrels)
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    write_qrels(target, qrels)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def run_study(config: ExperimentConfig, cache_root: Path | None = None, command: str = "") -> StudyResult:
    """Run ``config`` end to end; a second call with nothing changed recomputes nothing."""
    return StudyRunner(config, cache_root, command).run()
