import numpy as np
import pytest

from retrieval.config import RetrievalConfig
from retrieval.data import load_movielens
from retrieval.errors import ModelFitError
from retrieval.recommender import TwoTowerRecommender
from retrieval.train import plot_history, train_retrieval

FAST = {
    "epochs": 25,
    "batch_users": 16,
    "num_negatives": 16,
    "embedding_dim": 16,
    "learning_rate": 0.05,
    "patience": 25,
}


@pytest.fixture(scope="module")
def synthetic(movielens_dir):
    return load_movielens("ml-latest-small", path=movielens_dir)


@pytest.fixture(scope="module")
def trained(synthetic):
    return train_retrieval(synthetic, RetrievalConfig(heldout_user_fraction=0.2, **FAST), progress=False)


def test_learns_the_cluster_structure_and_beats_popularity(trained):
    ndcg, popularity = trained.metrics["ndcg@100"], trained.popularity_metrics["ndcg@100"]
    assert ndcg.n_users == popularity.n_users == 24
    assert ndcg.mean > popularity.mean + 0.1
    assert trained.metrics["recall@20"].mean > trained.popularity_metrics["recall@20"].mean
    assert set(trained.metrics) == {"recall@20", "recall@50", "ndcg@100"}


def test_history_and_best_epoch(trained):
    assert [r.epoch for r in trained.history] == list(range(1, len(trained.history) + 1))
    assert all(np.isfinite(r.loss) and r.validation_ndcg is not None for r in trained.history)
    best = max(trained.history, key=lambda r: r.validation_ndcg)
    assert trained.best_epoch == best.epoch
    assert trained.history[-1].loss < trained.history[0].loss


def test_returns_a_working_recommender(trained, synthetic):
    recommender = trained.recommender
    assert isinstance(recommender, TwoTowerRecommender)
    # Toy Story, Finding Nemo, Monsters Inc. (animation cluster): the top answers stay in that cluster (ids 1-10).
    ids, _ = recommender.recommend([1, 2, 3], k=3)
    assert set(ids.tolist()) <= set(range(1, 11))


def test_is_deterministic(synthetic, trained):
    again = train_retrieval(synthetic, RetrievalConfig(heldout_user_fraction=0.2, **FAST), progress=False)
    assert again.metrics == trained.metrics
    assert [r.loss for r in again.history] == [r.loss for r in trained.history]


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss": "warp", "rank_estimator": "smoothed"},
        {"loss": "softmax", "sampling": "popularity"},
        {"loss": "bpr", "split": "temporal"},
        {"model": "mf"},
    ],
)
def test_other_losses_models_and_splits_train(synthetic, overrides):
    config = RetrievalConfig(**{**FAST, "epochs": 3, **overrides})
    result = train_retrieval(synthetic, config, progress=False)
    assert len(result.history) == 3 and 0.0 <= result.metrics["ndcg@100"].mean <= 1.0


def test_early_stopping(synthetic):
    result = train_retrieval(
        synthetic, RetrievalConfig(**{**FAST, "epochs": 50, "patience": 2, "learning_rate": 1e-6}), progress=False
    )
    assert len(result.history) < 50


def test_divergence_raises(synthetic):
    with pytest.raises(ModelFitError, match="learning_rate"):
        train_retrieval(synthetic, RetrievalConfig(**{**FAST, "epochs": 5, "learning_rate": 1e30}), progress=False)


def test_plot_history_writes_a_png(trained, tmp_path):
    plot_history(trained.history, tmp_path / "plots" / "history.png")
    assert (tmp_path / "plots" / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_ml_latest_small_beats_popularity(shared_data):
    data = load_movielens("ml-latest-small", path=shared_data / "ml-latest-small")
    assert data.ratings["user_id"].nunique() == 610
    assert len(data.catalogue) == 9742
    assert len(data.ratings) == 100836
    # validation NDCG dips below popularity for the first ~10 epochs (the model unlearns its random start)
    result = train_retrieval(data, RetrievalConfig(epochs=30), progress=False)
    for name in ("ndcg@100", "recall@20"):
        assert result.metrics[name].mean > result.popularity_metrics[name].mean + result.popularity_metrics[name].stderr
