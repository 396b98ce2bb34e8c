"""Two gloo replicas (torch.multiprocessing, file rendezvous) against one process, on the synthetic data."""

import json
import os

import pytest
import torch.multiprocessing as mp

from retrieval.recommender import TwoTowerRecommender
from retrieval.train_distributed import main, parse_overrides

SETTINGS = ["heldout_user_fraction=0.2", "epochs=20", "patience=20", "num_negatives=16", "embedding_dim=16"]
SETTINGS += ["learning_rate=0.05", "batch_users=15"]  # 15: the last batch of each epoch is shorter than 2 users


def _replica(rank: int, world: int, argv: list[str]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), GLOO_SOCKET_IFNAME="lo")
    if main(argv) != 0:
        raise SystemExit(f"replica {rank} failed")


def _argv(movielens_dir, out, extra=()):
    argv = ["--data-path", str(movielens_dir), "--out", str(out), "--threads", "1"]
    return argv + [x for s in [*SETTINGS, *extra] for x in ("--set", s)]


@pytest.fixture(scope="module")
def runs(movielens_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    assert main(_argv(movielens_dir, root / "one")) == 0
    argv = [*_argv(movielens_dir, root / "two"), "--init-method", f"file://{root / 'rendezvous'}",
            "--checkpoint-dir", str(root / "checkpoints")]
    mp.start_processes(_replica, args=(2, argv), nprocs=2, join=True, start_method="spawn")
    return [json.loads((root / name / "metrics.json").read_text()) for name in ("one", "two")], root


def test_two_replicas_match_one_process(runs):
    (one, two), _ = runs
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for name in ("ndcg@100", "recall@20", "recall@50"):
        assert two["metrics"][name]["mean"] == pytest.approx(one["metrics"][name]["mean"], abs=0.01)
    assert [r["loss"] for r in two["history"]] == pytest.approx([r["loss"] for r in one["history"]], rel=1e-3)
    # and both really learnt: well above popularity on the same 24 test users
    assert two["metrics"]["ndcg@100"]["n_users"] == 24
    assert two["metrics"]["ndcg@100"]["mean"] > two["popularity_metrics"]["ndcg@100"]["mean"] + 0.1


def test_rank_zero_saves_a_loadable_recommender(runs, movielens_dir):
    _, root = runs
    from retrieval.data import load_movielens

    catalogue = load_movielens("ml-latest-small", path=movielens_dir).catalogue
    recommender = TwoTowerRecommender.load(root / "two" / "recommender", catalogue)
    ids, _ = recommender.recommend([1, 2, 3], k=3)
    assert set(ids.tolist()) <= set(range(1, 11))  # the animation cluster
    assert not [p.name for p in (root / "two").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_the_two_replica_checkpoint_resumes_in_one_process(runs, movielens_dir, caplog):
    (_, two), root = runs
    with caplog.at_level("INFO", logger="retrieval.train"):
        argv = [*_argv(movielens_dir, root / "resumed"), "--checkpoint-dir", str(root / "checkpoints")]
        assert main(argv) == 0
    assert f"resumed from epoch {len(two['history'])}" in caplog.text
    resumed = json.loads((root / "resumed" / "metrics.json").read_text())
    assert resumed["metrics"] == two["metrics"] and resumed["history"] == two["history"]


def test_bad_override_is_a_one_line_error(movielens_dir, tmp_path, capsys):
    assert main(["--data-path", str(movielens_dir), "--out", str(tmp_path), "--set", "num_negatives"]) == 2
    assert "expected field=value" in capsys.readouterr().err


def test_bad_device_is_a_one_line_error(movielens_dir, tmp_path, capsys):
    assert main(["--data-path", str(movielens_dir), "--out", str(tmp_path), "--device", "gpu"]) == 2
    assert capsys.readouterr().err.strip() == "error: --device: device must be auto, cpu, cuda or cuda:N; got 'gpu'"


def test_overrides_parse_as_json_where_they_can():
    config = parse_overrides(["loss=warp", "num_negatives=64", "lambdarank_cutoff=null", "recall_ks=[10, 20]"])
    assert (config.loss, config.num_negatives, config.lambdarank_cutoff) == ("warp", 64, None)
    assert config.recall_ks == (10, 20)
