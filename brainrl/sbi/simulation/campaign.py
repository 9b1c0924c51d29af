"""Simulation campaigns: θ, topic → headlines → speech → brain map → projected sequence, in shards.

Every item is a pure function of (seed, index) and the simulator, shards are written to a temporary
folder and renamed into place (atomic), and a restart skips the shards that exist, so a campaign
killed at any point resumes with nothing lost or duplicated. Under ``accelerate launch``/``torchrun``
rank r (``RANK``/``WORLD_SIZE``) writes shards r, r + W, …; rank 0 merges them at the end.

Layout of ``out_dir``::

    campaign.json            config, its fingerprint, generator and pipeline provenance
    projection/              fixed standardisation + PCA basis (fitted on shard 0's frames)
    shards/shard-00000/      a `datasets` dataset per shard + brainrl_shard.json (ids, failures)
    dataset/                 the merged dataset;  merge.json: counts and every failed id with its reason
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from brainrl.brain.base import BrainMap, Failed
from brainrl.configs import load_yaml
from brainrl.provenance import content_hash, versions
from brainrl.sbi.simulation.generators import ChatGenerator, GeneratorConfig
from brainrl.sbi.simulation.parse import block_text
from brainrl.sbi.simulation.prior import PARAM_NAMES, theta_for_index
from brainrl.sbi.simulation.projection import T_MAX, Projection, fit_projection
from brainrl.sbi.simulation.simulator import HeadlineRequest, HeadlineWriter
from brainrl.sbi.simulation.topics import TOPICS, topic_for_index

log = logging.getLogger(__name__)

SHARD_META = "brainrl_shard.json"
PENDING_ROWS = "rows.json"  # a parked shard's rows (without coefficients), beside its raw maps
SBI_PACKAGES = ("brainrl", "numpy", "torch", "transformers", "datasets", "bayesflow", "keras")


@dataclass
class ProjectionConfig:
    """The stored projection: k PCA components per frame, sequences padded/truncated to t_max."""

    k: int = 64
    t_max: int = T_MAX
    max_fit_frames: int = 20000
    #: another campaign's ``projection/`` folder to reuse instead of fitting one on shard 0, so that
    #: campaigns can be fitted together and evaluated across (``brainrl sbi fit --data A --data B``)
    projection_from: str | None = None


@dataclass
class WriterConfig:
    max_attempts: int = 4
    min_words: int = 8
    max_words: int = 24
    feedback: bool = True
    mode: str = "block"  # or "per_headline" (five one-line requests per item; for small local models)
    few_shot: bool = False  # per_headline: θ in words after worked examples (HeadlineWriter.few_shot)
    cleaning: str = "strict"  # or "lenient" (per_headline; brainrl.sbi.simulation.parse.clean_headline)


@dataclass
class CampaignConfig:
    """One simulation campaign (a recipe ``recipes/campaign_*.yaml`` maps onto this)."""

    out_dir: str = "runs/campaign"
    n_items: int = 100
    name: str = "campaign"
    split: str = "train"
    seed: int = 0
    shard_size: int = 50
    batch_size: int = 10  # items per generator / brain pipeline call
    topics: list[str] = field(default_factory=lambda: list(TOPICS))
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    pipeline: dict[str, Any] = field(default_factory=dict)  # brainrl.brain.pipeline.PipelineConfig fields
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    merge_wait_s: float = 3600.0  # how long rank 0 waits for the other ranks' shards before merging

    def __post_init__(self) -> None:
        if self.n_items < 1 or self.shard_size < 1 or self.batch_size < 1:
            raise ValueError("n_items, shard_size and batch_size must all be >= 1.")
        if not self.topics:
            raise ValueError("topics is empty; list at least one topic.")

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_items / self.shard_size)

    def shard_ids(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.n_items))

    def fingerprint(self) -> str:
        """What fixes the items: everything except where they go and how the work is scheduled."""
        data = asdict(self)
        # n_items: a finished campaign can grow in place (``Campaign._check_or_write_manifest``); batch_size:
        # every generator's replies are a function of (request, seed), whatever shares a batch
        return content_hash(self._fingerprint_data(), 16)

    def _fingerprint_data(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("out_dir", "merge_wait_s", "batch_size", "n_items"):
            data.pop(key)
        if data["projection"].get("projection_from") is None:
            data["projection"].pop("projection_from")  # fingerprints of campaigns made before the field
        return data

    def legacy_fingerprints(self) -> set[str]:
        """Fingerprints this config had in earlier versions, so their campaigns resume: with n_items in
        the fingerprint, and (local generator) with batch_size, when that generator seeded each forward
        batch from its first request."""
        data = self._fingerprint_data()
        legacy = {content_hash({**data, "n_items": self.n_items}, 16)}
        if self.generator.name == "local":
            legacy.add(content_hash({**data, "batch_size": self.batch_size}, 16))
        return legacy



def save_quietly(dataset, path: Path) -> None:
    """``dataset.save_to_disk`` without datasets' "Saving the dataset" bar per shard (the campaign's own
    bar counts items)."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    was_enabled = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        dataset.save_to_disk(str(path))
    finally:
        if was_enabled:
            enable_progress_bar()

def load_campaign_config(path: str | Path) -> CampaignConfig:
    return load_yaml(CampaignConfig, path, where="CampaignConfig")


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (accelerate/torchrun set RANK, WORLD_SIZE)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not within WORLD_SIZE={world}.")
    return rank, world


@dataclass
class CampaignResult:
    out_dir: Path
    shards_written: list[int]
    shards_skipped: list[int]
    n_failed: int
    dataset_dir: Path | None
    seconds: float


def shard_dir(out_dir: Path, shard: int) -> Path:
    return out_dir / "shards" / f"shard-{shard:05d}"


def _features(t_max: int, k: int):
    from datasets import Array2D, Features, Sequence as HFSequence, Value

    return Features({
        "id": Value("int64"), "split": Value("string"), "topic": Value("string"), "generator": Value("string"),
        "theta": HFSequence(Value("float32"), length=len(PARAM_NAMES)),
        "headlines": HFSequence(Value("string")), "text": Value("string"),
        "coeffs": Array2D(shape=(t_max, k), dtype="float32"),
        "n_frames": Value("int32"), "n_frames_total": Value("int32"),
    })


def generator_label(identity: dict[str, Any]) -> str:
    return f"{identity.get('backend', '?')}:{identity.get('model', '?')}"


class Campaign:
    """Runs (or resumes) one campaign for this rank. Pass ``generator``/``pipeline`` to inject
    ready-made ones (tests, notebooks); otherwise they are built from the config."""

    def __init__(self, config: CampaignConfig, *, generator: ChatGenerator | None = None, pipeline: Any = None,
                 rank: int | None = None, world_size: int | None = None):
        self.config = config
        self.out_dir = Path(config.out_dir)
        env_rank, env_world = dist_rank_world()
        self.rank = env_rank if rank is None else rank
        self.world_size = env_world if world_size is None else world_size
        self._generator, self._pipeline = generator, pipeline
        self.projection: Projection | None = None
        #: the fingerprint recorded in campaign.json (set when the manifest is checked or written)
        self.fingerprint: str = config.fingerprint()

    # -- lazily built parts -------------------------------------------------------------------
    @property
    def generator(self) -> ChatGenerator:
        if self._generator is None:
            self._generator = self.config.generator.build()
        return self._generator

    @property
    def pipeline(self):
        if self._pipeline is None:
            from brainrl.brain.pipeline import BrainPipeline, PipelineConfig

            self._pipeline = BrainPipeline(PipelineConfig(**self.config.pipeline))
        return self._pipeline

    # -- bookkeeping ----------------------------------------------------------------------------
    def _check_or_write_manifest(self) -> None:
        path = self.out_dir / "campaign.json"
        fingerprint = self.config.fingerprint()
        self.fingerprint = fingerprint
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("fingerprint") in self.config.legacy_fingerprints():
                self.fingerprint = old["fingerprint"]  # made before n_items left the fingerprint: resumes, as it was
            elif old.get("fingerprint") != fingerprint:
                diffs = [k for k, v in asdict(self.config).items() if old.get("config", {}).get(k) != v
                         and k not in ("out_dir", "merge_wait_s", "batch_size", "n_items")]
                raise ValueError(f"{self.out_dir} holds a different campaign (fields differ: "
                                 f"{', '.join(diffs) or 'none by name: made by another brainrl version'}); "
                                 "use a new out_dir or the original recipe to resume.")
            old_n = int(old.get("config", {}).get("n_items", self.config.n_items))
            if self.config.n_items < old_n:
                raise ValueError(f"{self.out_dir} holds {old_n} items; n_items={self.config.n_items} would shrink it. "
                                 f"Use n_items >= {old_n} (growing is allowed) or a new out_dir.")
            if self.config.n_items > old_n and self.rank == 0:
                if old_n % self.config.shard_size:
                    raise ValueError(f"{self.out_dir}'s last shard is partial ({old_n} items, shard_size "
                                     f"{self.config.shard_size}); it can only grow from a multiple of shard_size.")
                old["config"]["n_items"] = self.config.n_items
                old.setdefault("grown", []).append({"from": old_n, "to": self.config.n_items,
                                                    "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(old, indent=2, default=str))
                tmp.replace(path)
                log.info("growing %s from %d to %d items", self.out_dir, old_n, self.config.n_items)
            return
        if self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        manifest = {"fingerprint": fingerprint, "config": asdict(self.config), "param_names": list(PARAM_NAMES),
                    "generator": self.generator.identity(), "pipeline": self._describe_pipeline(),
                    "versions": versions(SBI_PACKAGES), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        tmp.replace(path)

    def _describe_pipeline(self) -> dict[str, Any]:
        describe = getattr(self.pipeline, "describe", None)
        return describe() if callable(describe) else {"pipeline": repr(self.pipeline)}

    def completed_shards(self) -> list[int]:
        return [s for s in range(self.config.n_shards) if (shard_dir(self.out_dir, s) / SHARD_META).is_file()]

    def _seen_headlines(self, seen: set[str] | None = None, loaded: set[int] | None = None) -> set[str]:
        """Headlines of every finished shard (and of other ranks' shards waiting for the projection), added to
        ``seen``; ``loaded`` remembers which shards were read, so a rank refreshes cheaply before each shard
        and sees what the other ranks wrote since it started."""
        from datasets import load_from_disk

        seen = set() if seen is None else seen
        loaded = set() if loaded is None else loaded
        for s in self.completed_shards():
            if s not in loaded:
                for block in load_from_disk(str(shard_dir(self.out_dir, s)))["headlines"]:
                    seen.update(block)
                loaded.add(s)
        for s, folder in self.pending_shards().items():
            if -1 - s not in loaded and (folder / PENDING_ROWS).is_file():
                for row in json.loads((folder / PENDING_ROWS).read_text()):
                    seen.update(row["headlines"])
                loaded.add(-1 - s)
        return seen

    def pending_shards(self) -> dict[int, Path]:
        """Simulated shards waiting for the projection basis (complete when their marker exists)."""
        out = {}
        for folder in (self.out_dir / "shards").glob(".pending-shard-*"):
            if (folder / SHARD_META).is_file():
                out[int(folder.name.rsplit("-", 1)[1])] = folder
        return out

    def _projection_ready(self, shard: int) -> bool:
        """Whether this rank can project now without waiting: a basis on disk or to copy, or shard 0 (which
        fits it) in hand."""
        return (self.projection is not None or (self.out_dir / "projection" / "projection.npz").is_file()
                or bool(self.config.projection.projection_from) or shard == 0)

    def _get_projection(self, shard: int, maps: Sequence[BrainMap]) -> Projection:
        folder = self.out_dir / "projection"
        if self.projection is not None:
            return self.projection
        if (folder / "projection.npz").is_file():
            self.projection = Projection.load(folder)
        elif self.config.projection.projection_from:
            source = Projection.load(self.config.projection.projection_from)
            cfg = self.config.projection
            if (source.k, source.t_max) != (cfg.k, cfg.t_max):
                raise ValueError(f"projection_from {cfg.projection_from} has k={source.k}, t_max={source.t_max}; this "
                                 f"recipe asks for k={cfg.k}, t_max={cfg.t_max}. Make them equal.")
            self.projection = source
            if self.rank == 0:
                source.save(folder)
        elif shard == 0:
            cfg = self.config.projection
            if not maps:
                raise RuntimeError("shard 0 produced no brain maps to fit the projection on; see its failures.")
            frames = np.concatenate([m.data[: cfg.t_max] for m in maps])
            self.projection = fit_projection(frames, cfg.k, cfg.t_max, cfg.max_fit_frames, seed=self.config.seed)
            self.projection.save(folder)
            log.info("fitted projection on %d frames: %s", frames.shape[0], self.projection.describe())
        else:  # another rank owns shard 0: ``run`` parks shards as pending instead of calling this
            raise RuntimeError(f"no projection basis in {folder} yet (rank 0 fits it on shard 0).")
        return self.projection

    def park_shard(self, shard: int, rows: list[dict[str, Any]], maps: Sequence[BrainMap],
                   failures: list[dict[str, Any]]) -> Path:
        """Keep a simulated shard on disk until the projection exists (rows as JSON, raw maps as .npy),
        so a rank other than 0 goes on with its next shard instead of waiting for rank 0's basis."""
        final = self.out_dir / "shards" / f".pending-shard-{shard:05d}"
        tmp = final.parent / f".tmp-pending-{shard:05d}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for i, brain_map in enumerate(maps):
            np.save(tmp / f"map-{i:05d}.npy", np.asarray(brain_map.data, np.float32))
        (tmp / PENDING_ROWS).write_text(json.dumps([{**r, "theta": [float(x) for x in r["theta"]]} for r in rows]))
        (tmp / SHARD_META).write_text(json.dumps({"shard": shard, "failures": failures, "rank": self.rank}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        log.info("shard %d simulated; parked until the projection basis exists (rank 0 fits it on shard 0)", shard)
        return final

    def flush_pending(self) -> list[int]:
        """Project and write every parked shard (any rank's) once the basis exists; returns the shards written.
        A shard is claimed by renaming its folder, so two ranks never write the same one."""
        if not (self.out_dir / "projection" / "projection.npz").is_file() and self.projection is None:
            return []
        done = []
        for shard, folder in sorted(self.pending_shards().items()):
            claimed = folder.parent / f".flushing-shard-{shard:05d}-rank{self.rank}"
            try:
                os.rename(folder, claimed)
            except OSError:
                continue  # another rank claimed it first
            rows = json.loads((claimed / PENDING_ROWS).read_text())
            for row in rows:
                row["theta"] = np.asarray(row["theta"], np.float32)
            maps = [BrainMap(np.load(claimed / f"map-{i:05d}.npy")) for i in range(len(rows))]
            failures = json.loads((claimed / SHARD_META).read_text())["failures"]
            self.write_shard(shard, rows, maps, failures)
            shutil.rmtree(claimed)
            done.append(shard)
            log.info("shard %d: projected and written from its parked maps", shard)
        return done

    # -- the work -----------------------------------------------------------------------------
    def simulate_shard(self, shard: int, seen: set[str], on_batch: Callable[[int], None] | None = None):
        """Simulate one shard's items: (rows, raw maps, failures)."""
        return self.simulate_items(list(self.config.shard_ids(shard)), seen, on_batch)

    def simulate_items(self, ids: Sequence[int], seen: set[str], on_batch: Callable[[int], None] | None = None):
        """Simulate the given item ids: (rows, raw maps, failures)."""
        cfg = self.config
        writer = HeadlineWriter(self.generator, **asdict(cfg.writer))
        label = generator_label(self.generator.identity())
        ids = list(ids)
        rows: list[dict[str, Any]] = []
        maps: list[BrainMap] = []
        failures: list[dict[str, Any]] = []
        for start in range(0, len(ids), cfg.batch_size):
            batch = ids[start:start + cfg.batch_size]
            requests = [HeadlineRequest(i, theta_for_index(cfg.seed, i), topic_for_index(i, tuple(cfg.topics)))
                        for i in batch]
            blocks = writer.write(requests, cfg.seed, seen)
            good = [(r, b) for r, b in zip(requests, blocks) if not isinstance(b, Failed)]
            failures += [{"id": r.index, "stage": "generator", "reason": b.reason}
                         for r, b in zip(requests, blocks) if isinstance(b, Failed)]
            texts = [block_text(b) for _, b in good]
            predictions = self.pipeline(texts) if texts else []
            for (request, block), text, pred in zip(good, texts, predictions):
                if not isinstance(pred, BrainMap):
                    reason = pred.reason if isinstance(pred, Failed) else f"unexpected {type(pred).__name__}"
                    failures.append({"id": request.index, "stage": "brain", "reason": reason})
                    log.warning("item %d: brain pipeline failed: %s", request.index, reason)
                    continue
                rows.append({"id": request.index, "split": cfg.split, "topic": request.topic, "generator": label,
                             "theta": request.theta.astype(np.float32), "headlines": block, "text": text})
                maps.append(pred)
            if on_batch is not None:
                on_batch(batch[-1])
        return rows, maps, failures

    def write_shard(self, shard: int, rows: list[dict[str, Any]], maps: Sequence[BrainMap],
                    failures: list[dict[str, Any]]) -> Path:
        """Project the maps and write the shard atomically (temp folder, then rename)."""

        projection = self._get_projection(shard, maps)
        for row, brain_map in zip(rows, maps):
            row["coeffs"], row["n_frames"], row["n_frames_total"] = projection.project_frames(brain_map.data)
        meta = {"shard": shard, "ids": [r["id"] for r in rows], "failures": failures, "seed": self.config.seed,
                "campaign_fingerprint": self.fingerprint, "projection": projection.fingerprint(),
                "rank": self.rank, "world_size": self.world_size, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
        return self._save_shard(shard, rows, meta)

    def _save_shard(self, shard: int, rows: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
        from datasets import Dataset, DatasetInfo

        projection = self._get_projection(shard, [])
        columns = {name: [row[name] for row in rows] for name in _features(projection.t_max, projection.k)}
        features = _features(projection.t_max, projection.k)
        info = DatasetInfo(description=json.dumps({"campaign": self.config.name, "shard": shard}), features=features)
        dataset = Dataset.from_dict(columns, features=features, info=info)
        final = shard_dir(self.out_dir, shard)
        tmp = final.parent / f".tmp-{final.name}"
        if tmp.exists():
            shutil.rmtree(tmp)  # a half-written shard of an earlier, killed run (only this rank writes it)
        save_quietly(dataset, tmp)
        (tmp / SHARD_META).write_text(json.dumps(meta, indent=1))
        old = final.parent / f".old-{final.name}"
        if final.exists():  # a repaired shard: a kill in between leaves no marker, so a rerun redoes the shard
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
        return final

    def run(self, *, merge: bool = True, on_batch: Callable[[int], None] | None = None) -> CampaignResult:
        started = time.time()
        self._check_or_write_manifest()
        (self.out_dir / "shards").mkdir(parents=True, exist_ok=True)
        loaded: set[int] = set()
        seen = self._seen_headlines(loaded=loaded)
        mine = [s for s in range(self.config.n_shards) if s % self.world_size == self.rank]
        written, skipped, n_failed = [], [], 0
        for shard in mine:
            written += self.flush_pending()
            if shard in set(self.completed_shards()) | set(self.pending_shards()):
                skipped.append(shard)
                continue
            self._seen_headlines(seen, loaded)  # what other ranks wrote meanwhile: fewer cross-rank repeats
            rows, maps, failures = self.simulate_shard(shard, seen, on_batch)
            n_failed += len(failures)
            if self._projection_ready(shard):
                self.write_shard(shard, rows, maps, failures)
                written.append(shard)
                log.info("shard %d: %d items written, %d failed", shard, len(rows), len(failures))
            else:
                self.park_shard(shard, rows, maps, failures)
        written += self.flush_pending()
        dataset_dir = None
        if merge and self.rank == 0:
            self._wait_for_all_shards()
            self.repair_cross_rank_repeats()
            dataset_dir = merge_shards(self.out_dir)
        elif self.pending_shards():
            log.info("rank %d done; its parked shards %s are projected by rank 0 (or any rank) once the basis exists",
                     self.rank, sorted(self.pending_shards()))
        return CampaignResult(self.out_dir, sorted(set(written)), skipped, n_failed, dataset_dir, time.time() - started)

    def _wait_for_all_shards(self) -> None:
        deadline = time.time() + self.config.merge_wait_s
        while len(self.completed_shards()) < self.config.n_shards:
            self.flush_pending()  # other ranks' shards parked before the basis existed
            if len(self.completed_shards()) == self.config.n_shards:
                break
            if time.time() > deadline:
                missing = sorted(set(range(self.config.n_shards)) - set(self.completed_shards()))
                raise TimeoutError(f"shards {missing[:10]} are still missing; rerun the campaign to finish them.")
            time.sleep(2.0)

    def repair_cross_rank_repeats(self) -> list[int]:
        """Ranks running at once cannot see each other's newest headlines, so a block may repeat a headline of
        an earlier shard. Each such item (the later one in id order) is simulated again, avoiding every
        headline of the split, and its shard rewritten in place (recorded under ``repaired`` in the shard's
        marker), so the merge drops nothing. Returns the repaired ids."""
        from datasets import load_from_disk

        seen_by: dict[str, int] = {}
        repeats: dict[int, list[int]] = {}  # shard -> item ids to redo
        blocks: dict[int, list[str]] = {}
        for s in range(self.config.n_shards):
            part = load_from_disk(str(shard_dir(self.out_dir, s)))
            for item_id, block in zip(part["id"], part["headlines"]):
                blocks[item_id] = list(block)
                if any(h in seen_by for h in block):
                    repeats.setdefault(s, []).append(item_id)
                else:
                    seen_by.update({h: item_id for h in block})
        repaired = []
        for s, ids in sorted(repeats.items()):
            seen = {h for i, block in blocks.items() if i not in ids for h in block}
            rows, maps, failures = self.simulate_items(ids, seen)
            for row in rows:
                blocks[row["id"]] = list(row["headlines"])
            self._rewrite_items(s, rows, maps, failures)
            repaired += ids
            log.warning("shard %d: items %s repeated headlines of other ranks' shards; simulated again", s, ids)
        return repaired

    def _rewrite_items(self, shard: int, rows: list[dict[str, Any]], maps: Sequence[BrainMap],
                       failures: list[dict[str, Any]]) -> None:
        """Replace some items of a finished shard (atomically, as ``write_shard``)."""
        from datasets import load_from_disk

        folder = shard_dir(self.out_dir, shard)
        meta = json.loads((folder / SHARD_META).read_text())
        redone = {r["id"] for r in rows} | {f["id"] for f in failures}
        old = load_from_disk(str(folder))
        keep = [{k: (np.asarray(v) if k == "coeffs" else v) for k, v in row.items()}
                for row in old if row["id"] not in redone]
        projection = self._get_projection(shard, maps)
        for row, brain_map in zip(rows, maps):
            row["coeffs"], row["n_frames"], row["n_frames_total"] = projection.project_frames(brain_map.data)
        merged = sorted(keep + rows, key=lambda r: r["id"])
        records = meta.get("repaired", []) + [{"id": i, "why": "headline repeated across ranks"} for i in sorted(redone)]
        self._save_shard(shard, merged, {**meta, "ids": [r["id"] for r in merged],
                                         "failures": meta["failures"] + failures, "repaired": records})


def truncate_campaign(out_dir: str | Path, n_items: int, why: str = "stopped by hand") -> None:
    """Make a campaign stopped early a finished campaign of its first ``n_items`` items (a multiple of
    shard_size whose shards are all complete), recorded under ``truncated`` in campaign.json; it can
    grow again later (rerun the recipe with a larger n_items)."""
    out_dir = Path(out_dir)
    path = out_dir / "campaign.json"
    manifest = json.loads(path.read_text())
    old_n, shard_size = int(manifest["config"]["n_items"]), int(manifest["config"]["shard_size"])
    if n_items >= old_n:
        return
    if n_items < 1 or n_items % shard_size:
        raise ValueError(f"truncate to a positive multiple of shard_size ({shard_size}); got {n_items}.")
    missing = [s for s in range(n_items // shard_size) if not (shard_dir(out_dir, s) / SHARD_META).is_file()]
    if missing:
        raise ValueError(f"shards {missing[:10]} of the first {n_items} items are not finished; truncate to fewer "
                         "items or rerun the campaign.")
    manifest["config"]["n_items"] = n_items
    manifest.setdefault("truncated", []).append({"from": old_n, "to": n_items, "why": why,
                                                  "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(path)
    log.info("campaign %s truncated from %d to %d items", out_dir, old_n, n_items)


def merge_shards(out_dir: str | Path) -> Path:
    """Concatenate all shards in index order into ``out_dir/dataset`` (atomically) and write merge.json.

    Checks that no id appears twice and that headlines are unique across the split; a block that
    repeats a headline of an earlier shard (possible only across ranks) is dropped with its reason.
    """
    from datasets import concatenate_datasets, load_from_disk

    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / "campaign.json").read_text())
    n_items = manifest["config"]["n_items"]
    shard_size = manifest["config"]["shard_size"]
    n_shards = math.ceil(n_items / shard_size)
    projection = Projection.load(out_dir / "projection").fingerprint()
    parts, failures, seen_ids, seen_headlines = [], [], set(), set()
    for s in range(n_shards):
        folder = shard_dir(out_dir, s)
        if not (folder / SHARD_META).is_file():
            raise FileNotFoundError(f"shard {s} is missing ({folder}); rerun the campaign to finish it before merging.")
        meta = json.loads((folder / SHARD_META).read_text())
        if meta.get("campaign_fingerprint") not in (None, manifest["fingerprint"]):
            raise ValueError(f"shard {s} was written by another campaign (fingerprint {meta['campaign_fingerprint']}, "
                             f"campaign.json says {manifest['fingerprint']}); delete {folder} and rerun to redo it.")
        if meta.get("projection") not in (None, projection):
            raise ValueError(f"shard {s} was projected with another basis ({meta['projection']}, the campaign's is "
                             f"{projection}); its coefficients are not comparable. Delete {folder} and rerun.")
        failures += meta["failures"]
        part = load_from_disk(str(folder))
        keep = []
        for row_index, (item_id, block) in enumerate(zip(part["id"], part["headlines"])):
            if item_id in seen_ids:
                raise ValueError(f"item id {item_id} appears in more than one shard; the campaign folder is corrupt.")
            seen_ids.add(item_id)
            repeated = [h for h in block if h in seen_headlines]
            if repeated:
                failures.append({"id": item_id, "stage": "merge", "reason": f"headline repeated across ranks: {repeated[0]!r}"})
                continue
            seen_headlines.update(block)
            keep.append(row_index)
        parts.append(part.select(keep) if len(keep) < len(part) else part)
    merged = concatenate_datasets(parts) if parts else None
    final, tmp = out_dir / "dataset", out_dir / ".tmp-dataset"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_quietly(merged, tmp)
    old = out_dir / ".old-dataset"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    summary = {"n_items": n_items, "n_rows": len(merged), "n_failed": len(failures),
               "failures": sorted(failures, key=lambda f: f["id"]), "shards": n_shards,
               "merged": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out_dir / "merge.json").write_text(json.dumps(summary, indent=1))
    return final


def combine_campaign_arrays(campaign_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Several campaigns' arrays as one training set (the paper's "Both" model): rows concatenated, a
    ``source`` column (campaign index) so each campaign keeps its own id-based split, ``manifests`` in
    order. All campaigns must share one projection (simulate the others with ``projection_from``)."""
    if not campaign_dirs:
        raise ValueError("no campaign folders given.")
    parts = [load_campaign_arrays(d) for d in campaign_dirs]
    if len(parts) == 1:
        return {**parts[0], "source": np.zeros(len(parts[0]["ids"]), dtype=int), "manifests": [parts[0]["manifest"]]}
    first = parts[0]["projection"]
    for d, part in zip(campaign_dirs[1:], parts[1:]):
        if part["projection"].fingerprint() != first.fingerprint():
            raise ValueError(f"campaign {d} has its own projection ({part['projection'].fingerprint()}), not "
                             f"{campaign_dirs[0]}'s ({first.fingerprint()}); one posterior needs one basis. Simulate it "
                             f"with `projection_from: {Path(campaign_dirs[0]) / 'projection'}` in its recipe.")
        if part["coeffs"].shape[1:] != parts[0]["coeffs"].shape[1:]:
            raise ValueError(f"campaign {d} stores coefficients {part['coeffs'].shape[1:]}, not "
                             f"{parts[0]['coeffs'].shape[1:]}.")
    out: dict[str, Any] = {key: np.concatenate([p[key] for p in parts]) for key in ("coeffs", "mask", "theta", "ids")}
    for key in ("topics", "headlines", "generator", "texts"):
        out[key] = [x for p in parts for x in p[key]]
    out["source"] = np.concatenate([np.full(len(p["ids"]), i, dtype=int) for i, p in enumerate(parts)])
    out["projection"], out["manifest"] = first, parts[0]["manifest"]
    out["manifests"] = [p["manifest"] for p in parts]
    return out


def load_campaign_arrays(campaign_dir: str | Path) -> dict[str, Any]:
    """The merged dataset as arrays for fitting: coeffs (n, t_max, k), mask (n, t_max), theta (n, 6), ids,
    topics, headlines, plus the projection and the manifest."""
    from datasets import load_from_disk

    campaign_dir = Path(campaign_dir)
    folder = campaign_dir / "dataset"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; run `brainrl simulate` to the end (it merges the shards).")
    dataset = load_from_disk(str(folder)).with_format("numpy")
    coeffs = np.asarray(dataset["coeffs"], dtype=np.float32)
    n_frames = np.asarray(dataset["n_frames"])
    t_max = coeffs.shape[1]
    mask = (np.arange(t_max)[None, :] < n_frames[:, None]).astype(np.float32)
    return {"coeffs": coeffs, "mask": mask, "theta": np.asarray(dataset["theta"], dtype=np.float32),
            "ids": np.asarray(dataset["id"]), "topics": list(dataset["topic"]),
            "headlines": [list(h) for h in dataset["headlines"]], "generator": list(dataset["generator"]),
            "texts": list(dataset["text"]),
            "projection": Projection.load(campaign_dir / "projection"),
            "manifest": json.loads((campaign_dir / "campaign.json").read_text())}
