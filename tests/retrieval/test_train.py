import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from retrieval import checkpoint
from retrieval.checkpoint import CHECKPOINT_FILE, CheckpointMeta
from retrieval.config import RetrievalConfig
from retrieval.data import load_movielens
from retrieval.errors import CheckpointError, ModelFitError
from retrieval.recommender import TwoTowerRecommender
from retrieval.train import plot_history, train_retrieval
from tests.interrupt import kill_when_hanging

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


# A child process: trains FAST (8 epochs, one torch thread) with checkpoints in argv[2] and resume=True, writes
# its result to argv[3]. With argv[4] = N it instead hangs in the N-th batch after the first checkpoint appeared
# (mid-epoch: earlier batches of that epoch already moved the weights) and writes argv[3] as the signal.
CHILD = """
import json, logging, sys, time
from pathlib import Path
import torch
import retrieval.train as train
from retrieval.checkpoint import CHECKPOINT_FILE
from retrieval.config import RetrievalConfig
from retrieval.data import load_movielens

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
torch.set_num_threads(1)
data_dir, checkpoints, out, hang_after = sys.argv[1:5]
checkpoints = Path(checkpoints) if checkpoints != "-" else None
if hang_after != "-":
    calls, real_loss = [], train._loss

    def loss(*args, **kwargs):
        if (checkpoints / CHECKPOINT_FILE).exists():
            calls.append(1)
            if len(calls) == int(hang_after):
                Path(out).write_text("hanging")
                time.sleep(600)
        return real_loss(*args, **kwargs)

    train._loss = loss
config = RetrievalConfig(**json.loads(sys.argv[5]))
result = train.train_retrieval(
    load_movielens("ml-latest-small", path=data_dir), config, progress=False, checkpoint_dir=checkpoints,
    resume=True,
)
Path(out).write_text(json.dumps({
    "metrics": {name: m.model_dump() for name, m in result.metrics.items()},
    "losses": [r.loss for r in result.history],
    "best_epoch": result.best_epoch,
}))
"""


def _child(movielens_dir, checkpoints, out, hang_after="-"):
    config = json.dumps({**FAST, "epochs": 8, "heldout_user_fraction": 0.2})
    args = [sys.executable, "-c", CHILD, str(movielens_dir), str(checkpoints or "-"), str(out), hang_after, config]
    return subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(movielens_dir, tmp_path):
    reference = _child(movielens_dir, None, tmp_path / "reference.json")
    checkpoints = tmp_path / "checkpoints"
    killed = _child(movielens_dir, checkpoints, tmp_path / "signal", hang_after="10")
    kill_when_hanging(killed, tmp_path / "signal")
    with safe_open(str(checkpoints / CHECKPOINT_FILE), framework="pt") as file:
        interrupted_at = CheckpointMeta.model_validate_json(file.metadata()[checkpoint._META_KEY]).progress.epoch
    assert 1 <= interrupted_at < 8

    resumed = _child(movielens_dir, checkpoints, tmp_path / "resumed.json")
    resumed_log = resumed.communicate(timeout=300)[1]
    reference.communicate(timeout=300)
    assert resumed.returncode == reference.returncode == 0
    assert f"retrieval training resumed from epoch {interrupted_at}" in resumed_log
    expected, got = (json.loads((tmp_path / name).read_text()) for name in ("reference.json", "resumed.json"))
    # bit-identical on CPU: the weights, Adam moments and all three RNG streams are restored exactly
    assert got == expected


def test_checkpoints_of_another_config_are_refused(synthetic, tmp_path):
    config = RetrievalConfig(**{**FAST, "epochs": 1})
    train_retrieval(synthetic, config, progress=False, checkpoint_dir=tmp_path)
    other = config.model_copy(update={"learning_rate": 0.01})
    with pytest.raises(CheckpointError, match=r"another config \(learning_rate 0.05 -> 0.01\)"):
        train_retrieval(synthetic, other, progress=False, checkpoint_dir=tmp_path, resume=True)
    # without resume the old checkpoint is simply replaced
    train_retrieval(synthetic, other, progress=False, checkpoint_dir=tmp_path)
    train_retrieval(synthetic, other, progress=False, checkpoint_dir=tmp_path, resume=True)


def test_resuming_a_finished_run_trains_no_more(synthetic, tmp_path):
    config = RetrievalConfig(**{**FAST, "epochs": 3})
    first = train_retrieval(synthetic, config, progress=False, checkpoint_dir=tmp_path, checkpoint_every=2)
    again = train_retrieval(synthetic, config, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert again.history == first.history
    assert again.metrics == first.metrics


@pytest.mark.parametrize("overrides", [{"model": "mf"}, {"loss": "softmax", "sampling": "popularity", "eval_every": 2}])
def test_interrupted_in_process_then_resumed_equals_uninterrupted(synthetic, tmp_path, monkeypatch, caplog, overrides):
    import retrieval.train

    config = RetrievalConfig(**{**FAST, "epochs": 5, **overrides})
    expected = train_retrieval(synthetic, config, progress=False)
    real_loss, calls = retrieval.train._loss, []

    def interrupt(*args, **kwargs):
        if (tmp_path / CHECKPOINT_FILE).exists():
            calls.append(1)
            if len(calls) == 9:
                raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(retrieval.train, "_loss", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_retrieval(synthetic, config, progress=False, checkpoint_dir=tmp_path, checkpoint_every=2)
    monkeypatch.setattr(retrieval.train, "_loss", real_loss)
    with caplog.at_level("INFO", logger="retrieval.train"):
        resumed = train_retrieval(synthetic, config, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert "resumed from epoch 2" in caplog.text
    assert [r.loss for r in resumed.history] == [r.loss for r in expected.history]
    assert resumed.metrics == expected.metrics and resumed.best_epoch == expected.best_epoch
