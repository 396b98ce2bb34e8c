"""benchmarks/retrieval.py end to end on the synthetic data set, with a tiny grid."""

import json

import pytest

from benchmarks.retrieval import full_grid, main


@pytest.fixture(scope="module")
def report(movielens_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    (root / "ml-latest-small").symlink_to(movielens_dir)  # --data-path folders are named after their data set
    out = root / "results"
    argv = ["--dataset", "ml-latest-small", "--data-path", str(root / "ml-latest-small"), "--negatives", "4", "16"]
    argv += ["--epochs", "2", "--patience", "1", "--lightfm-epochs", "2", "--threads", "1", "--out", str(out)]
    argv += ["--learning-rates", "0.02", "0.1", "--tune-m", "4", "--tune-epochs", "1"]
    assert main(argv) == 0
    return out, json.loads((out / "retrieval.json").read_text())


def test_every_method_is_run_on_the_same_test_users(report):
    _, result = report
    dataset, _ = result["datasets"]
    assert dataset["name"] == "ml-latest-small" and dataset["split"] == "strong" and dataset["n_items"] == 40
    assert dataset["popularity_reproduced"] is True
    ours = [(r["loss"], r["estimator"], r["m"]) for r in dataset["rows"] if r["method"] == "ours"]
    assert len(ours) == (2 * 4 + 2) * 2 and ("lambdarank", "posterior", 16) in ours and ("bpr", None, 4) in ours
    methods = {r["method"] for r in dataset["rows"]} | set(dataset["skipped"])
    assert methods == {"ours", "popularity", "EASE", "implicit ALS", "implicit BPR", "LightFM WARP"}
    assert {r["test"]["ndcg@100"]["n_users"] for r in dataset["rows"]} == {dataset["n_test_users"]}


def test_report_files(report):
    out, result = report
    markdown = (out / "retrieval.md").read_text()
    assert markdown.startswith("# Retrieval benchmark") and result["command"] in markdown
    assert markdown.count("### Targets") == 1 and "## ml-latest-small, temporal leave-last-out" in markdown
    assert "### Targets" in markdown and "corrections vs `sampled`" in markdown and "| EASE (l2=" in markdown
    assert (out / "retrieval_ndcg_vs_negatives.png").read_bytes()[:4] == b"\x89PNG"


def test_temporal_split_reruns_the_best_corrected_lambdarank_and_its_sampled_twin(report):
    _, result = report
    strong, temporal = result["datasets"]
    assert temporal["split"] == "temporal" and temporal["popularity_reproduced"] is True
    corrected = [r for r in strong["rows"] if r["loss"] == "lambdarank" and r["estimator"] != "sampled"]
    best = max(corrected, key=lambda r: r["validation_ndcg"])
    ours = [(r["loss"], r["estimator"], r["m"]) for r in temporal["rows"] if r["method"] == "ours"]
    assert ours == [("lambdarank", "sampled", best["m"]), ("lambdarank", best["estimator"], best["m"])]


def test_grid_runs_m_major_so_a_time_budget_cuts_whole_m_values():
    grid = full_grid([16, 4])
    assert len(grid) == 20 and {m for _, _, m in grid[:10]} == {16} and {m for _, _, m in grid[10:]} == {4}
    assert grid[:5] == [("lambdarank", e, 16) for e in ("sampled", "scaled", "smoothed", "posterior")] + [
        ("warp", "sampled", 16)
    ]
    assert grid[8:10] == [("softmax", None, 16), ("bpr", None, 16)]


def test_each_loss_picks_its_learning_rate_on_validation_and_the_temporal_split_reuses_it(report):
    out, result = report
    strong, temporal = result["datasets"]
    assert len(strong["tuning"]) == 4 * 2 and temporal["tuning"] == []
    for loss, lr in strong["learning_rates"].items():
        tried = [r for r in strong["tuning"] if r["loss"] == loss]
        assert {r["estimator"] for r in tried} <= {"sampled", None} and {r["m"] for r in tried} == {4}
        assert lr == max(tried, key=lambda r: r["validation_ndcg"])["params"]["learning_rate"]
        assert {r["params"]["learning_rate"] for r in strong["rows"] if r["loss"] == loss} == {lr}
    assert temporal["learning_rates"] == strong["learning_rates"]
    assert "Learning-rate tuning" in (out / "retrieval.md").read_text()


def test_rerender_writes_the_report_again_from_the_json(report):
    out, result = report
    (out / "retrieval.md").unlink()
    assert main(["--rerender", "--out", str(out)]) == 0
    markdown = (out / "retrieval.md").read_text()
    assert result["command"] in markdown and "What this run tried for them: a learning rate per loss" in markdown
