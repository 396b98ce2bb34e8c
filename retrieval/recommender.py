"""Recommenders with an implicit-like interface; everything in and out is catalogue ids, never rows.

`recommend(item_ids, k, exclude, restrict_to, weights)` takes a history (a user's or a chat session's items),
folds it in and returns `(ids [<=k] int64, scores [<=k] float32)`, best first. Training is
`retrieval.train.train_retrieval`; here live serving, persistence and the popularity baseline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from retrieval.catalogue import Catalogue
from retrieval.config import RetrievalConfig
from retrieval.errors import ArtifactMismatchError
from retrieval.index import BruteForceIndex, FaissIndex, VectorIndex, make_index
from retrieval.models import Bags, RetrievalModel, build_model
from retrieval.storage import write_atomic

FORMAT_VERSION = 1


class Recommender(ABC):
    """The interface every recommender answers (implicit's RecommenderBase, catalogue ids throughout)."""

    catalogue: Catalogue

    @abstractmethod
    def recommend(
        self,
        item_ids: Sequence[int],
        k: int = 10,
        exclude: Collection[int] = (),
        restrict_to: Collection[int] | None = None,
        weights: Sequence[float] | None = None,
        filter_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, scores) for the history `item_ids` (weights: 1 liked, < 0 disliked), never recommending
        `exclude` (nor the history itself when `filter_history`), only among `restrict_to` when given."""

    @abstractmethod
    def similar_items(self, item_id: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, scores) most similar to `item_id`, itself excluded."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the recommender into `directory`, atomically (the folder is complete or untouched)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, catalogue: Catalogue) -> Recommender:
        """Read what `save` wrote; ArtifactMismatchError when it does not fit `catalogue`."""

    def _excluded(self, item_ids: Sequence[int], exclude: Collection[int], filter_history: bool) -> set[int]:
        """Validated ids never to recommend (UnknownItemError for an id outside the catalogue)."""
        self.catalogue.rows(list(exclude))
        excluded = {int(i) for i in exclude}
        if filter_history:
            excluded.update(int(i) for i in item_ids)
        return excluded


class PopularityRecommender(Recommender):
    """Scores every item by its number of training positives, whatever the history."""

    def __init__(self, catalogue: Catalogue, counts: np.ndarray):
        if len(counts) != len(catalogue):
            raise ValueError(f"counts has {len(counts)} entries for {len(catalogue)} catalogue items")
        self.catalogue = catalogue
        self.counts = np.asarray(counts, dtype=np.float32)

    def recommend(
        self,
        item_ids: Sequence[int],
        k: int = 10,
        exclude: Collection[int] = (),
        restrict_to: Collection[int] | None = None,
        weights: Sequence[float] | None = None,
        filter_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        self.catalogue.rows(item_ids)
        rows = self.catalogue.rows(list(restrict_to)) if restrict_to is not None else np.arange(len(self.catalogue))
        return _exact_top_k(
            self.catalogue.ids[rows], self.counts[rows], k, self._excluded(item_ids, exclude, filter_history)
        )

    def similar_items(self, item_id: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The most popular other items (popularity knows no similarity)."""
        return self.recommend([item_id], k)

    def save(self, directory: Path) -> None:
        files = {
            "config.json": json.dumps({"kind": "popularity", "format_version": FORMAT_VERSION}).encode(),
            "model.safetensors": save_safetensors(
                {"counts": torch.from_numpy(self.counts), "item_ids": torch.from_numpy(self.catalogue.ids)}
            ),
        }
        _write_directory(Path(directory), files)

    @classmethod
    def load(cls, directory: Path, catalogue: Catalogue) -> PopularityRecommender:
        tensors = _read_tensors(Path(directory) / "model.safetensors")
        _check_ids(tensors, catalogue, Path(directory))
        return cls(catalogue, tensors["counts"].numpy())


class TwoTowerRecommender(Recommender):
    """Serves a trained `BagOfItemsTwoTower` (or MF) through a FAISS inner-product index over item vectors.

    A history is folded in to a session vector (no retraining); an empty history (or one whose weights cancel)
    has no direction, so it falls back to the training popularity ranking.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        model: RetrievalModel,
        config: RetrievalConfig,
        popularity: np.ndarray,
        index: VectorIndex | None = None,
    ):
        n_rows = model.item_vectors().shape[0]
        if n_rows != len(catalogue):
            raise ArtifactMismatchError(f"model has {n_rows} item rows, the catalogue {len(catalogue)} movies")
        self.catalogue, self.model, self.config = catalogue, model.eval(), config
        self.popularity = PopularityRecommender(catalogue, popularity)
        self._items = model.item_vectors().detach().numpy().astype(np.float32).copy()
        if index is None:
            index = make_index()
            index.build(self._items, catalogue.ids)
        self.index = index

    def item_embeddings(self) -> np.ndarray:
        """`[n_items, d]` item-tower vectors, row r = `catalogue.movies[r]` (a copy)."""
        return self._items.copy()

    def fold_in(self, item_ids: Sequence[int], weights: Sequence[float] | None = None) -> np.ndarray:
        """`[d]` session vector of a history; negative weights (dislikes) push it away from those items."""
        rows = self.catalogue.rows(item_ids)
        w = np.ones(len(rows), np.float32) if weights is None else np.asarray(weights, np.float32)
        if w.shape != rows.shape:
            raise ValueError(f"weights has {w.size} values for {len(rows)} items; give one per item or none")
        with torch.no_grad():
            return self.model.fold_in(Bags.pack([rows], [w]))[0].numpy()

    def recommend(
        self,
        item_ids: Sequence[int],
        k: int = 10,
        exclude: Collection[int] = (),
        restrict_to: Collection[int] | None = None,
        weights: Sequence[float] | None = None,
        filter_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        query = self.fold_in(item_ids, weights)
        if not np.any(query):
            return self.popularity.recommend(item_ids, k, exclude, restrict_to, None, filter_history)
        excluded = self._excluded(item_ids, exclude, filter_history)
        if restrict_to is not None:
            rows = self.catalogue.rows(list(restrict_to))
            return _exact_top_k(self.catalogue.ids[rows], self._items[rows] @ query, k, excluded)
        ids, scores = self.index.search(query[None, :], k, [excluded])
        found = ids[0] >= 0
        return ids[0][found], scores[0][found]

    def similar_items(self, item_id: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine similarity of item-tower vectors (exact; inner product would favour large norms)."""
        _check_k(k)
        unit = self._items / np.maximum(np.linalg.norm(self._items, axis=1, keepdims=True), 1e-12)
        scores = unit @ unit[self.catalogue.row(item_id)]
        return _exact_top_k(self.catalogue.ids, scores, k, {int(item_id)})

    def save(self, directory: Path) -> None:
        tensors = {f"model.{name}": t.detach().contiguous() for name, t in self.model.state_dict().items()}
        tensors["item_ids"] = torch.from_numpy(self.catalogue.ids)
        tensors["popularity"] = torch.from_numpy(self.popularity.counts)
        n_users = self.model.users.num_embeddings if self.model.kind == "mf" else 0
        meta = {
            "kind": "two_tower_recommender",
            "format_version": FORMAT_VERSION,
            "model": self.model.kind,
            "n_items": len(self.catalogue),
            "n_users": n_users,
            "config": self.config.model_dump(mode="json"),
        }
        files = {
            "config.json": json.dumps(meta, indent=2).encode(),
            "model.safetensors": save_safetensors(tensors),
            "items.faiss" if isinstance(self.index, FaissIndex) else "items.npz": self.index.to_bytes(),
        }
        _write_directory(Path(directory), files)

    @classmethod
    def load(cls, directory: Path, catalogue: Catalogue) -> TwoTowerRecommender:
        directory = Path(directory)
        try:
            meta = json.loads((directory / "config.json").read_text())
            config = RetrievalConfig.model_validate(meta["config"])
            n_items, n_users = int(meta["n_items"]), int(meta["n_users"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactMismatchError(
                f"{directory / 'config.json'}: unreadable ({exc}); re-save the recommender"
            ) from None
        if n_items != len(catalogue):
            raise ArtifactMismatchError(
                f"{directory} was trained on {n_items} items but the catalogue has {len(catalogue)}; "
                "load it with the catalogue of the data set it was trained on"
            )
        tensors = _read_tensors(directory / "model.safetensors")
        _check_ids(tensors, catalogue, directory)
        model = build_model(config, n_items, n_users)
        state = {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}
        expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        found = {name: tuple(t.shape) for name, t in state.items()}
        if expected != found:
            wrong = sorted(set(expected.items()) ^ set(found.items()))
            raise ArtifactMismatchError(
                f"{directory / 'model.safetensors'}: tensors {wrong} do not match config.json "
                f"(expected {expected}); re-save the recommender"
            )
        model.load_state_dict(state)
        index = _load_index(directory)
        if index is not None and len(index) != n_items:
            raise ArtifactMismatchError(f"{directory}: index holds {len(index)} vectors for {n_items} items; re-save")
        return cls(catalogue, model, config, tensors["popularity"].numpy(), index)


def _load_index(directory: Path) -> VectorIndex | None:
    """The saved index, or None (rebuilt from the item table) when there is none or faiss is missing here."""
    if (directory / "items.npz").is_file():
        return BruteForceIndex.load(directory / "items.npz")
    if (directory / "items.faiss").is_file():
        try:
            return FaissIndex.load(directory / "items.faiss")
        except ImportError:
            return None
    return None


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _exact_top_k(ids: np.ndarray, scores: np.ndarray, k: int, excluded: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of given (ids, scores) after dropping `excluded`, best first, ties by catalogue order."""
    keep = ~np.isin(ids, np.fromiter(excluded, np.int64, len(excluded)))
    ids, scores = ids[keep], np.asarray(scores, np.float32)[keep]
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


def _check_ids(tensors: dict[str, torch.Tensor], catalogue: Catalogue, directory: Path) -> None:
    saved = tensors.get("item_ids")
    if saved is None or len(saved) != len(catalogue) or not np.array_equal(saved.numpy(), catalogue.ids):
        n_saved = "no" if saved is None else len(saved)
        raise ArtifactMismatchError(
            f"{directory}: saved item ids ({n_saved} items) differ from the catalogue's ({len(catalogue)} items); "
            "load it with the catalogue it was trained with"
        )


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(path.read_bytes())
    except (OSError, SafetensorError) as exc:
        raise ArtifactMismatchError(f"{path}: unreadable ({exc}); re-save the recommender") from None


def _write_directory(directory: Path, files: dict[str, bytes]) -> None:
    """Write `files` into a fresh sibling folder, then swap it in for `directory` (old copy removed last)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.new."))
    try:
        for name, data in files.items():
            write_atomic(staging / name, data)
        previous = directory.parent / f".{directory.name}.old"
        shutil.rmtree(previous, ignore_errors=True)
        if directory.exists():
            os.replace(directory, previous)
        os.replace(staging, directory)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
