import json

import numpy as np
import pytest
import torch

from retrieval.catalogue import Catalogue, Movie
from retrieval.config import RetrievalConfig
from retrieval.errors import ArtifactMismatchError, UnknownItemError
from retrieval.index import BruteForceIndex
from retrieval.models import BagOfItemsTwoTower, MatrixFactorization
from retrieval.recommender import PopularityRecommender, Recommender, TwoTowerRecommender

N_ITEMS = 30


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue(Movie(item_id=100 + 3 * i, title=f"Movie {i}", year=1990 + i) for i in range(N_ITEMS))


def _popularity() -> np.ndarray:
    return np.arange(N_ITEMS, dtype=np.float32)[::-1].copy()  # item row 0 is the most popular


def _two_tower(catalogue: Catalogue, projection: bool = False) -> TwoTowerRecommender:
    torch.manual_seed(0)
    config = RetrievalConfig(embedding_dim=6, user_projection=projection)
    model = BagOfItemsTwoTower(N_ITEMS, 6, projection=projection, init_std=1.0)
    return TwoTowerRecommender(catalogue, model, config, _popularity())


class RecommenderContract:
    """Every recommender answers these; a subclass supplies `make`."""

    def make(self, catalogue: Catalogue) -> Recommender:
        raise NotImplementedError

    def test_recommend_returns_sorted_catalogue_ids(self, catalogue):
        ids, scores = self.make(catalogue).recommend([103, 106], k=5)
        assert len(ids) == len(scores) == 5 and ids.dtype == np.int64
        assert set(ids.tolist()) <= set(catalogue.ids.tolist())
        assert np.all(np.diff(scores) <= 0)

    def test_recommend_filters_history_and_exclusions(self, catalogue):
        recommender = self.make(catalogue)
        ids, _ = recommender.recommend([103, 106], k=N_ITEMS, exclude=[100, 109])
        assert not {100, 103, 106, 109} & set(ids.tolist())
        assert len(ids) == N_ITEMS - 4
        kept, _ = recommender.recommend([103], k=N_ITEMS, filter_history=False)
        assert 103 in kept.tolist()

    def test_restrict_to(self, catalogue):
        allowed = [112, 115, 118, 103]
        ids, _ = self.make(catalogue).recommend([103], k=10, restrict_to=allowed)
        assert sorted(ids.tolist()) == [112, 115, 118]

    def test_unknown_ids_raise(self, catalogue):
        recommender = self.make(catalogue)
        for call in (
            lambda: recommender.recommend([101], k=3),
            lambda: recommender.recommend([100], k=3, exclude=[7]),
            lambda: recommender.recommend([100], k=3, restrict_to=[7]),
            lambda: recommender.similar_items(7, k=3),
        ):
            with pytest.raises(UnknownItemError):
                call()
        with pytest.raises(KeyError):  # also the builtin a caller would expect
            recommender.recommend([101], k=3)
        with pytest.raises(ValueError, match="k must be"):
            recommender.recommend([100], k=0)

    def test_similar_items_excludes_itself(self, catalogue):
        ids, _ = self.make(catalogue).similar_items(100, k=4)
        assert len(ids) == 4 and 100 not in ids.tolist()

    def test_save_load_round_trip(self, catalogue, tmp_path):
        recommender = self.make(catalogue)
        recommender.save(tmp_path / "rec")
        loaded = type(recommender).load(tmp_path / "rec", catalogue)
        for a, b in zip(recommender.recommend([103, 121], k=7), loaded.recommend([103, 121], k=7), strict=True):
            assert np.allclose(a, b)
        recommender.save(tmp_path / "rec")  # overwriting an existing save works and leaves no debris
        assert [p.name for p in tmp_path.iterdir()] == ["rec"]

    def test_load_with_another_catalogue_says_what_mismatches(self, catalogue, tmp_path):
        self.make(catalogue).save(tmp_path / "rec")
        other = Catalogue(Movie(item_id=i, title=f"x{i}") for i in range(N_ITEMS))
        with pytest.raises(ArtifactMismatchError, match="catalogue"):
            type(self.make(catalogue)).load(tmp_path / "rec", other)


class TestPopularityRecommender(RecommenderContract):
    def make(self, catalogue):
        return PopularityRecommender(catalogue, _popularity())

    def test_ranks_by_count_whatever_the_history(self, catalogue):
        ids, scores = self.make(catalogue).recommend([187], k=3)
        assert ids.tolist() == [100, 103, 106] and scores.tolist() == [29.0, 28.0, 27.0]


class TestTwoTowerRecommender(RecommenderContract):
    def make(self, catalogue):
        return _two_tower(catalogue)

    def test_recommend_is_brute_force_over_the_session_vector(self, catalogue):
        recommender = self.make(catalogue)
        session = recommender.fold_in([103, 106, 109])
        scores = recommender.item_embeddings() @ session
        order = [r for r in np.argsort(-scores) if catalogue.ids[r] not in (103, 106, 109)][:8]
        ids, got = recommender.recommend([103, 106, 109], k=8)
        assert ids.tolist() == catalogue.ids[order].tolist()
        assert np.allclose(got, scores[order], atol=1e-5)

    def test_fold_in_weights_push_dislikes_away(self, catalogue):
        recommender = self.make(catalogue)
        liked = recommender.fold_in([103, 106])
        disliked = recommender.fold_in([103, 106], weights=[1.0, -1.0])
        q = recommender.item_embeddings()[catalogue.row(106)]
        assert disliked @ q < liked @ q
        assert recommender.fold_in([103]).shape == (6,)
        with pytest.raises(ValueError, match="one per item"):
            recommender.fold_in([103, 106], weights=[1.0])

    def test_empty_history_falls_back_to_popularity(self, catalogue):
        ids, _ = self.make(catalogue).recommend([], k=3)
        assert ids.tolist() == [100, 103, 106]

    def test_item_embeddings_align_with_catalogue(self, catalogue):
        recommender = self.make(catalogue)
        table = recommender.model.item_vectors().detach().numpy()
        assert np.array_equal(recommender.item_embeddings(), table)
        assert recommender.item_embeddings().shape == (N_ITEMS, 6)

    def test_saved_files(self, catalogue, tmp_path):
        self.make(catalogue).save(tmp_path / "rec")
        assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == [
            "config.json",
            "items.faiss",
            "model.safetensors",
        ]
        meta = json.loads((tmp_path / "rec" / "config.json").read_text())
        assert meta["model"] == "two_tower" and meta["n_items"] == N_ITEMS and meta["config"]["embedding_dim"] == 6

    def test_load_rejects_shapes_that_do_not_fit_the_config(self, catalogue, tmp_path):
        self.make(catalogue).save(tmp_path / "rec")
        meta_path = tmp_path / "rec" / "config.json"
        meta = json.loads(meta_path.read_text())
        meta["config"]["embedding_dim"] = 7
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(ArtifactMismatchError, match=r"input_items\.weight"):
            TwoTowerRecommender.load(tmp_path / "rec", catalogue)

    def test_brute_force_index_twin_saves_and_loads(self, catalogue, tmp_path):
        model = BagOfItemsTwoTower(N_ITEMS, 6, init_std=1.0)
        recommender = TwoTowerRecommender(
            catalogue, model, RetrievalConfig(embedding_dim=6), _popularity(), BruteForceIndex()
        )
        recommender.index.build(recommender.item_embeddings(), catalogue.ids)
        recommender.save(tmp_path / "rec")
        loaded = TwoTowerRecommender.load(tmp_path / "rec", catalogue)
        assert isinstance(loaded.index, BruteForceIndex)
        assert np.array_equal(loaded.recommend([100], 5)[0], recommender.recommend([100], 5)[0])

    def test_model_and_catalogue_sizes_must_agree(self, catalogue):
        with pytest.raises(ArtifactMismatchError, match="item rows"):
            TwoTowerRecommender(catalogue, BagOfItemsTwoTower(N_ITEMS + 1, 6), RetrievalConfig(), _popularity())


class TestMatrixFactorizationRecommender(RecommenderContract):
    def make(self, catalogue):
        torch.manual_seed(3)
        config = RetrievalConfig(model="mf", embedding_dim=5)
        model = MatrixFactorization(4, N_ITEMS, 5, init_std=1.0)
        return TwoTowerRecommender(catalogue, model, config, _popularity())
