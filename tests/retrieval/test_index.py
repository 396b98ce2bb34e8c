import numpy as np
import pytest

from retrieval.errors import ArtifactMismatchError
from retrieval.index import BruteForceIndex, FaissIndex, make_index

INDEXES = [BruteForceIndex, FaissIndex]


def _data(n: int, d: int, q: int, seed: int):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    ids = rng.choice(10 * n, size=n, replace=False).astype(np.int64) + 1000
    queries = rng.normal(size=(q, d)).astype(np.float32)
    return vectors, ids, queries


def _argsort_top(vectors, ids, queries, k, exclude=None):
    scores = queries @ vectors.T
    out = []
    for q in range(len(queries)):
        order = [i for i in np.argsort(-scores[q], kind="stable") if exclude is None or ids[i] not in exclude[q]]
        out.append((ids[order[:k]], scores[q, order[:k]]))
    return out


@pytest.mark.parametrize("cls", INDEXES)
@pytest.mark.parametrize("n, d, k, q", [(50, 8, 1, 3), (200, 16, 10, 5), (1000, 32, 100, 4), (7, 4, 7, 2)])
def test_top_k_equals_numpy_argsort(cls, n, d, k, q):
    vectors, ids, queries = _data(n, d, q, seed=n + k)
    index = cls()
    index.build(vectors, ids)
    got_ids, got_scores = index.search(queries, k)
    for row, (ids_ref, scores_ref) in enumerate(_argsort_top(vectors, ids, queries, k)):
        assert got_ids[row].tolist() == ids_ref.tolist()
        assert np.allclose(got_scores[row], scores_ref, atol=1e-4)


@pytest.mark.parametrize("cls", INDEXES)
def test_exclusions_stay_exact_when_many_are_excluded(cls):
    vectors, ids, queries = _data(300, 16, 3, seed=1)
    index = cls()
    index.build(vectors, ids)
    top = index.search(queries, 60)[0]
    exclude = [set(top[0][:50].tolist()), set(), set(ids[::2].tolist())]  # the 50 best; nothing; half the index
    got_ids, got_scores = index.search(queries, 10, exclude=exclude)
    for row, (ids_ref, scores_ref) in enumerate(_argsort_top(vectors, ids, queries, 10, exclude)):
        assert got_ids[row].tolist() == ids_ref.tolist()
        assert not set(got_ids[row].tolist()) & exclude[row]
        assert np.allclose(got_scores[row], scores_ref, atol=1e-4)


@pytest.mark.parametrize("cls", INDEXES)
def test_pads_when_fewer_than_k_remain(cls):
    vectors, ids, queries = _data(5, 4, 1, seed=2)
    index = cls()
    index.build(vectors, ids)
    got_ids, got_scores = index.search(queries, 8, exclude=[{int(ids[0])}])
    assert (got_ids[0] >= 0).sum() == 4 and got_ids[0][4:].tolist() == [-1] * 4
    assert np.isneginf(got_scores[0][4:]).all()


@pytest.mark.parametrize("cls", INDEXES)
def test_save_load_round_trip(cls, tmp_path):
    vectors, ids, queries = _data(120, 8, 4, seed=3)
    index = cls()
    index.build(vectors, ids)
    index.save(tmp_path / "index.bin")
    loaded = cls.load(tmp_path / "index.bin")
    assert len(loaded) == 120
    for a, b in zip(index.search(queries, 15), loaded.search(queries, 15), strict=True):
        assert np.array_equal(a, b)


def test_load_rejects_a_foreign_file(tmp_path):
    (tmp_path / "junk").write_bytes(b"not an index at all")
    with pytest.raises(ArtifactMismatchError, match="re-save"):
        FaissIndex.load(tmp_path / "junk")
    with pytest.raises(ArtifactMismatchError, match="re-save"):
        BruteForceIndex.load(tmp_path / "junk")


def test_rejects_misuse():
    index = BruteForceIndex()
    with pytest.raises(ValueError, match="unique"):
        index.build(np.zeros((2, 3)), np.array([1, 1]))
    index.build(np.eye(3), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="one per query"):
        index.search(np.eye(3), 2, exclude=[{1}])
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.eye(3), 0)


def test_factory_prefers_faiss():
    assert isinstance(make_index(), FaissIndex)
    assert isinstance(make_index(prefer_faiss=False), BruteForceIndex)
