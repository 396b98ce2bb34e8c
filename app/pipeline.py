"""Train-or-load every artefact the service needs, cached under a fingerprint of the data and the settings.

Layout of one run's folder (`<cache>/artifacts/<dataset>-<fingerprint>/`):
`catalogue.json`, `retrieval/` (recommender + FAISS index), `ilm/` (Q-Former + adaptor, soft-token table),
`metrics.json`, `report.md` and PNG plots. Each stage writes its `DONE` marker last, so an interrupted run
resumes at the first unfinished stage. Retrieval training also checkpoints every epoch into
`retrieval_checkpoint/` and ILM training every `ILM_CHECKPOINT_EVERY` steps into `ilm_checkpoint/` (each removed
once its stage is done), so an interrupted training resumes at its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from app.paths import inside
from app.settings import Settings
from ilm_model.llm_loading import load_frozen_llm
from ilm_model.modeling import ItemLanguageModel
from ilm_model.soft_tokens import SoftTokenTable
from ilm_model.train import train_ilm
from retrieval.catalogue import Catalogue
from retrieval.data import MovieLensData, load_movielens
from retrieval.device import resolve_device
from retrieval.recommender import TwoTowerRecommender
from retrieval.storage import write_atomic
from retrieval.train import plot_history, train_retrieval

log = logging.getLogger(__name__)

ARTEFACT_FORMAT = 1
DONE = "DONE"
ILM_CHECKPOINT_EVERY = 50  # a default-size checkpoint (368 MiB) takes seconds to write: benchmarks/ilm_checkpoint.py


@dataclass
class Artefacts:
    """Everything `serving` needs, plus the metrics that produced it."""

    directory: Path
    catalogue: Catalogue
    recommender: TwoTowerRecommender
    ilm: ItemLanguageModel | None  # None only from `load_trained(..., need_ilm=False)`
    soft_tokens: SoftTokenTable | None
    llm: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    metrics: dict[str, Any]


def fingerprint(settings: Settings, data: MovieLensData) -> str:
    """Short hash of everything that changes the trained artefacts."""
    content = int(pd.util.hash_pandas_object(data.ratings, index=False).sum())
    key = {
        "format": ARTEFACT_FORMAT,
        "dataset": data.name,
        "ratings": [len(data.ratings), content],
        "items": len(data.catalogue),
        "retrieval": settings.retrieval.model_dump(mode="json"),
        "ilm": settings.ilm.model_dump(mode="json"),
        "llm": settings.llm,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def load_data(settings: Settings) -> MovieLensData:
    """The MovieLens data the settings name (a given folder, the download cache, or the bundled ML-100K)."""
    return load_movielens(
        settings.data.dataset, path=settings.data.path, cache_dir=settings.cache, download=settings.data.download
    )


@dataclass
class RetrievalArtefacts:
    """The retrieval stage alone: what `ilmrec train retrieval` produces and the ILM stage builds on."""

    directory: Path
    data: MovieLensData
    recommender: TwoTowerRecommender
    metrics: dict[str, Any]


def prepare_retrieval(settings: Settings, progress: bool = True) -> RetrievalArtefacts:
    """Load the data, then load the cached retrieval stage or train it."""
    data = load_data(settings)
    log.info("data: %s (%d ratings, %d movies)", data.source, len(data.ratings), len(data.catalogue))
    root = inside(settings.cache, "artifacts", f"{data.name}-{fingerprint(settings, data)}")
    root.mkdir(parents=True, exist_ok=True)
    data.catalogue.save(root / "catalogue.json")
    metrics = _read_metrics(root)

    retrieval_dir = root / "retrieval"
    if (retrieval_dir / DONE).is_file():
        recommender = _load_retrieval(retrieval_dir, data.catalogue)
    else:
        started = time.perf_counter()
        checkpoints = root / "retrieval_checkpoint"  # same folder, same fingerprint: always this run's own
        result = train_retrieval(
            data, settings.retrieval, progress=progress, checkpoint_dir=checkpoints, resume=True,
            device=resolve_device(settings.device),
        )
        recommender = result.recommender
        recommender.save(retrieval_dir)
        plot_history(result.history, root / "retrieval_training.png")
        metrics["retrieval"] = {
            "model": {name: m.model_dump() for name, m in result.metrics.items()},
            "popularity": {name: m.model_dump() for name, m in result.popularity_metrics.items()},
            "best_epoch": result.best_epoch,
            "seconds": round(time.perf_counter() - started, 1),
        }
        _write_metrics(root, metrics)
        write_atomic(retrieval_dir / DONE, b"")
        shutil.rmtree(checkpoints, ignore_errors=True)
    return RetrievalArtefacts(root, data, recommender, metrics)


def prepare(settings: Settings, progress: bool = True) -> Artefacts:
    """Load or train the retrieval stage, then the ILM stage on its item embeddings; return what serving needs."""
    stage = prepare_retrieval(settings, progress)
    root, data, recommender, metrics = stage.directory, stage.data, stage.recommender, stage.metrics
    llm, tokenizer = load_frozen_llm(settings.llm, settings.cache)
    ilm_dir = root / "ilm"
    if (ilm_dir / DONE).is_file():
        ilm, soft_tokens = _load_ilm(ilm_dir)
    else:
        started = time.perf_counter()
        checkpoints = root / "ilm_checkpoint"  # same folder, same fingerprint: always this run's own
        device = resolve_device(settings.device)
        # serving reads the CPU float32 LLM; a GPU or another dtype trains with a second copy of it
        elsewhere = device.type != "cpu" or settings.llm_dtype != "float32"
        train_llm = load_frozen_llm(settings.llm, settings.cache, settings.llm_dtype, device)[0] if elsewhere else llm
        result = train_ilm(
            data.catalogue, recommender.item_embeddings(), train_llm, tokenizer, settings.ilm, progress,
            checkpoint_dir=checkpoints, resume=True, checkpoint_every=ILM_CHECKPOINT_EVERY, device=device,
        )
        result.save(ilm_dir)
        ilm, soft_tokens = _load_ilm(ilm_dir) if elsewhere else (result.model, result.soft_tokens)
        metrics["ilm"] = {**result.metrics, "seconds": round(time.perf_counter() - started, 1)}
        _write_metrics(root, metrics)
        write_atomic(ilm_dir / DONE, b"")
        shutil.rmtree(checkpoints, ignore_errors=True)

    return Artefacts(root, data.catalogue, recommender, ilm, soft_tokens, llm, tokenizer, metrics)


def load_trained(root: Path, settings: Settings, need_ilm: bool = True) -> Artefacts:
    """The artefacts of a finished run folder, whatever its fingerprint (e.g. trained by an older version
    whose settings schema differed); only the LLM comes from `settings`. FileNotFoundError says what is missing.

    `need_ilm=False` also accepts a folder whose ILM stage is unfinished (`ilm` and `soft_tokens` are then
    None): enough for what needs only retrieval and the LLM, e.g. the retrieval and text-llm eval systems.
    """
    root = Path(root).expanduser()
    stages = ("retrieval", "ilm") if need_ilm else ("retrieval",)
    unfinished = [stage for stage in stages if not (root / stage / DONE).is_file()]
    if not (root / "catalogue.json").is_file() or unfinished:
        raise FileNotFoundError(
            f"{root} is not a finished artefact folder (missing {', '.join(unfinished) or 'catalogue.json'}): "
            "point at <cache>/artifacts/<dataset>-<fingerprint>/ after `ilmrec train` has finished"
        )
    catalogue = Catalogue.load(root / "catalogue.json")
    recommender = _load_retrieval(root / "retrieval", catalogue)
    ilm, soft_tokens = _load_ilm(root / "ilm") if (root / "ilm" / DONE).is_file() else (None, None)
    llm, tokenizer = load_frozen_llm(settings.llm, settings.cache)
    return Artefacts(root, catalogue, recommender, ilm, soft_tokens, llm, tokenizer, _read_metrics(root))


def _load_retrieval(directory: Path, catalogue: Catalogue) -> TwoTowerRecommender:
    recommender = TwoTowerRecommender.load(directory, catalogue)
    log.info("retrieval: loaded %s", directory)
    return recommender


def _load_ilm(directory: Path) -> tuple[ItemLanguageModel, SoftTokenTable]:
    ilm = ItemLanguageModel.from_pretrained(directory / "model")
    soft_tokens = SoftTokenTable.load(directory / "soft_tokens.safetensors")
    log.info("ilm: loaded %s", directory)
    return ilm, soft_tokens


def _read_metrics(root: Path) -> dict[str, Any]:
    path = root / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_metrics(root: Path, metrics: dict[str, Any]) -> None:
    write_atomic(root / "metrics.json", json.dumps(metrics, indent=2).encode())
