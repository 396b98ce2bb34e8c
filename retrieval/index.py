"""Maximum inner-product top-k over item vectors keyed by catalogue ids: brute-force and FAISS twins.

Both answer `search(queries [Q, d], k, exclude) -> (ids [Q, k], scores [Q, k])`, best first. A row has fewer
than k real answers only when the index minus its exclusions is smaller than k; the rest is padded with
id -1 and score -inf.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from retrieval.errors import ArtifactMismatchError
from retrieval.storage import write_atomic

Exclusions = Sequence[Collection[int]] | None


class VectorIndex(ABC):
    """Inner-product index over `[n, d]` vectors whose rows are named by int64 ids."""

    @abstractmethod
    def build(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Index `vectors [n, d]` under `ids [n]` (replacing what was indexed)."""

    @abstractmethod
    def _top(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered top-k: (ids [Q, k], scores [Q, k]), padded with -1 / -inf."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The index serialised (what `save` writes)."""

    def save(self, path: Path) -> None:
        """Write the index to one file, atomically."""
        write_atomic(path, self.to_bytes())

    def search(self, queries: np.ndarray, k: int, exclude: Exclusions = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids and inner products per query, skipping `exclude[q]` (ids) for query q.

        Over-fetches k + max_q |exclude[q]| and filters, so the answer stays exact however many are excluded.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(queries)} queries; give one per query")
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        ids, scores = self._top(queries, min(k + extra, len(self)) if len(self) else k)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for q in range(len(queries)):
            keep = ids[q] >= 0
            if exclude is not None and len(exclude[q]):
                keep &= ~np.isin(ids[q], np.fromiter(exclude[q], np.int64))
            found = ids[q][keep][:k]
            out_ids[q, : len(found)] = found
            out_scores[q, : len(found)] = scores[q][keep][:k]
        return out_ids, out_scores


class BruteForceIndex(VectorIndex):
    """Exact top-k by one matrix product and argpartition (numpy only)."""

    def __init__(self) -> None:
        self.vectors = np.zeros((0, 0), np.float32)
        self.ids = np.zeros(0, np.int64)

    def build(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.vectors, self.ids = _checked(vectors, ids)

    def __len__(self) -> int:
        return len(self.ids)

    def _top(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self.vectors.T
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take] if take else np.zeros((len(queries), 0), int)
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        ids = np.full((len(queries), k), -1, np.int64)
        values = np.full((len(queries), k), -np.inf, np.float32)
        ids[:, :take] = self.ids[top]
        values[:, :take] = np.take_along_axis(scores, top, axis=1)
        return ids, values

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, vectors=self.vectors, ids=self.ids)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> BruteForceIndex:
        index = cls()
        try:
            with np.load(path) as arrays:
                index.build(arrays["vectors"], arrays["ids"])
        except (ValueError, KeyError) as exc:
            raise ArtifactMismatchError(f"{path}: not a saved BruteForceIndex ({exc}); re-save it") from None
        return index


class FaissIndex(VectorIndex):
    """FAISS `IndexIDMap2(IndexFlatIP)`: exact inner product, ids are catalogue ids."""

    def __init__(self) -> None:
        faiss = _faiss()
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(1))

    def build(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        faiss = _faiss()
        vectors, ids = _checked(vectors, ids)
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        self._index.add_with_ids(vectors, ids)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def _top(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have width {queries.shape[1]}, the index {self.dim}")
        scores, ids = self._index.search(queries, k)
        return ids.astype(np.int64), np.where(ids >= 0, scores, -np.inf).astype(np.float32)

    def to_bytes(self) -> bytes:
        return _faiss().serialize_index(self._index).tobytes()

    @classmethod
    def load(cls, path: Path) -> FaissIndex:
        faiss = _faiss()
        index = cls()
        try:
            index._index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
        except RuntimeError as exc:
            raise ArtifactMismatchError(f"{path}: not a FAISS index ({str(exc).splitlines()[0]}); re-save it") from None
        return index


def make_index(prefer_faiss: bool = True) -> VectorIndex:
    """FaissIndex when faiss is importable (and preferred), else BruteForceIndex."""
    if prefer_faiss:
        try:
            _faiss()
            return FaissIndex()
        except ImportError:
            pass
    return BruteForceIndex()


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("FaissIndex needs faiss: pip install faiss-cpu") from None
    return faiss


def _checked(vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise ValueError(f"need vectors [n, d] and ids [n]; got {vectors.shape} and {ids.shape}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique")
    return vectors, ids
