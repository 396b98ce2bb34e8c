"""Two gloo replicas of ILM training (torch.multiprocessing, file rendezvous) against one process: the synthetic
MovieLens, a two-tower recommender trained on it for 3 epochs, the tiny LLM and a tiny Q-Former without dropout
(so that one process and two replicas take the same steps up to float noise)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from ilm_model.configuration import ILMConfig
from ilm_model.item_text import describe
from ilm_model.modeling import ItemLanguageModel
from ilm_model.tasks import build_task_mix
from ilm_model.train_distributed import main
from ilm_model.train_phase1 import train_phase1
from ilm_model.train_phase2 import train_phase2
from ilm_model.training_history import TrainingHistory
from retrieval.distributed import Replicas
from tests.ilm_model.conftest import tiny_qformer

ARTEFACTS = {"model", "soft_tokens.safetensors", "history.json", "loss_curves.png", "metrics.json"}
# every objective and its sharding: ITC / IIC over gathered features, ITG by tokens, ITM on 3 items (2 + 1),
# phase 2 on 5 examples (3 + 2). Phase 2's small learning rate: through the random tiny LLM (loss ~23) it is so
# ill-conditioned that at 1e-3 one process on 1 vs 2 threads already gives step-1 gradients 29% apart.
CONFIG = ILMConfig(
    qformer=tiny_qformer(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    llm_hidden_size=256,
    phase1={"steps": 4, "batch_size": 8, "warmup_steps": 1, "itm_weight": 1.0, "itm_items": 3,
            "iic_weight": 1.0, "pair_batch_size": 6, "learning_rate": 3e-3},
    phase2={"steps": 3, "batch_size": 5, "warmup_steps": 1, "learning_rate": 1e-5},
    evaluation={"heldout_items": 8, "generation_items": 2, "max_new_tokens": 4, "recall_after_phase1": True},
)


def _replica(rank: int, world: int, argv: list[str], probe: str) -> None:
    """One replica of `main(argv)` that also records, in `probe/`, its trained weights, whether the LLM stayed
    frozen and bit-identical, and which files it wrote."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), GLOO_SOCKET_IFNAME="lo")
    import ilm_model.train_distributed as entry
    import retrieval.checkpoint_io as checkpoint_io

    probe, writes = Path(probe), []
    train_ilm, save, write_checkpoint = entry.train_ilm, entry.ILMTrainResult.save, checkpoint_io.write_checkpoint

    def observed_train(catalogue, cf, llm, *args, **kwargs):
        before = {name: t.clone() for name, t in llm.state_dict().items()}
        result = train_ilm(catalogue, cf, llm, *args, **kwargs)
        frozen = not any(p.requires_grad for p in llm.parameters()) and all(
            torch.equal(t, llm.state_dict()[name]) for name, t in before.items()
        )
        save_file({k: v.clone() for k, v in result.model.state_dict().items()}, probe / f"weights-{rank}.safetensors")
        (probe / f"llm-{rank}.json").write_text(json.dumps({"frozen": frozen}))
        return result

    entry.train_ilm = observed_train
    entry.ILMTrainResult.save = lambda self, directory: writes.append("result") or save(self, directory)
    checkpoint_io.write_checkpoint = lambda *a: writes.append("checkpoint") or write_checkpoint(*a)
    status = main(argv)
    (probe / f"writes-{rank}.json").write_text(json.dumps(writes))
    if status != 0:
        raise SystemExit(f"replica {rank} failed")


@pytest.fixture(scope="module")
def setup(movielens_dir, tiny_llm_dir, tmp_path_factory):
    """(root, argv builder): a trained recommender, the config file and the tiny LLM."""
    from retrieval.train_distributed import main as train_retrieval

    root = tmp_path_factory.mktemp("ilm-ddp")
    retrieval = ["--data-path", str(movielens_dir), "--out", str(root / "retrieval"), "--threads", "1"]
    retrieval += [x for s in ("epochs=3", "embedding_dim=16", "heldout_user_fraction=0.2") for x in ("--set", s)]
    assert train_retrieval(retrieval) == 0
    (root / "config.json").write_text(CONFIG.model_dump_json())

    def argv(out, *extra):
        return ["--data-path", str(movielens_dir), "--recommender", str(root / "retrieval" / "recommender"),
                "--llm", str(tiny_llm_dir), "--cache", str(root / "cache"), "--config", str(root / "config.json"),
                "--out", str(root / out), "--threads", "1", *extra]

    return root, argv


@pytest.fixture(scope="module")
def runs(setup):
    root, argv = setup
    assert main(argv("one")) == 0
    probe = root / "probe"
    probe.mkdir()
    two = argv("two", "--init-method", f"file://{root / 'rendezvous'}", "--checkpoint-dir", str(root / "checkpoints"))
    mp.start_processes(_replica, args=(2, two, str(probe)), nprocs=2, join=True, start_method="spawn")
    reports = [json.loads((root / name / "metrics.json").read_text()) for name in ("one", "two")]
    return root, reports


def _history(root, name):
    return json.loads((root / name / "history.json").read_text())


def test_both_replicas_end_with_the_same_weights_and_a_frozen_llm(runs):
    root, _ = runs
    weights = [load_file(root / "probe" / f"weights-{rank}.safetensors") for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert all(json.loads((root / "probe" / f"llm-{rank}.json").read_text())["frozen"] for rank in (0, 1))


def test_rank_zero_alone_writes_one_artefact_set(runs):
    root, (_, two) = runs
    writes = [json.loads((root / "probe" / f"writes-{rank}.json").read_text()) for rank in (0, 1)]
    assert writes[1] == [] and writes[0].count("result") == 1
    assert writes[0].count("checkpoint") == 2  # each phase's last step (every 50 steps otherwise)
    assert {p.name for p in (root / "two").iterdir()} == ARTEFACTS  # no temporaries left
    assert {p.name for p in (root / "checkpoints").iterdir()} == {"checkpoint.safetensors"}
    assert two["metrics"]["world_size"] == 2


def test_two_replicas_take_the_single_process_steps(runs):
    root, (one, two) = runs
    assert one["metrics"]["world_size"] == 1
    history = {name: _history(root, name) for name in ("one", "two")}
    assert [r["phase"] for r in history["two"]] == ["phase1"] * 4 + ["phase2"] * 3
    for mine, single in zip(history["two"], history["one"], strict=True):
        assert mine.keys() == single.keys()
        for key in ("loss", "loss_itc", "loss_itg", "loss_itm", "loss_iic", "temperature"):
            if key in single:
                assert mine[key] == pytest.approx(single[key], rel=1e-5), (mine["phase"], mine["step"], key)
    single = ItemLanguageModel.from_pretrained(root / "one" / "model", llm_hidden_size=256).state_dict()
    replica = load_file(root / "probe" / "weights-0.safetensors")
    # AdamW's first steps are about lr * sign(g): where g is within float noise of 0 (e.g. attention key biases,
    # whose gradient is 0 in exact arithmetic) the weights may end up to ~2 lr apart (measured: 2.0e-5)
    worst = max(float((single[name] - replica[name]).abs().max()) for name in single)
    assert worst < 1e-4
    for name in ("itc_recall@10_heldout", "itc_recall@10_heldout_after_phase1", "n_heldout"):
        assert two["metrics"][name] == pytest.approx(one["metrics"][name], abs=1e-6)


def test_the_two_replica_checkpoint_resumes_in_one_process(runs, setup, caplog):
    root, (_, two) = runs
    _, argv = setup
    with caplog.at_level("INFO", logger="ilm_model.train_checkpoint"):
        assert main(argv("resumed", "--checkpoint-dir", str(root / "checkpoints"))) == 0
    assert "resumed at phase2 step 3" in caplog.text
    assert _history(root, "resumed") == _history(root, "two")
    resumed = json.loads((root / "resumed" / "metrics.json").read_text())
    assert resumed["examples"] == two["examples"]


def test_a_bad_config_is_a_one_line_error(setup, capsys):
    root, argv = setup
    (root / "bad.json").write_text(json.dumps({"phase1": {"steps": -1}}))
    assert main([*argv("bad")[:-2], "--config", str(root / "bad.json")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: --config: phase1.steps: Input should be greater than or equal to 0"


def test_a_bad_device_is_a_one_line_error(setup, capsys):
    _, argv = setup
    assert main([*argv("bad-device"), "--device", "gpu"]) == 2
    assert capsys.readouterr().err.strip() == "error: --device: device must be auto, cpu, cuda or cuda:N; got 'gpu'"


def test_more_replicas_than_rows_is_refused_before_training(tiny_config, tiny_llm, catalogue, cf_embeddings):
    llm, tokenizer = tiny_llm
    model, cf, many = ItemLanguageModel.from_config(tiny_config), torch.from_numpy(cf_embeddings), Replicas(0, 9)
    texts = [describe(movie) for movie in catalogue]
    with pytest.raises(ValueError, match="9 replicas need at least one row each"):  # batch_size 8
        train_phase1(model, texts, cf, tiny_config.phase1, TrainingHistory(), progress=False, replicas=many)
    tasks = build_task_mix(catalogue, tiny_config.phase2, np.arange(len(catalogue)), None, 0)
    with pytest.raises(ValueError, match="phase2.batch_size 4 < 9 replicas"):
        train_phase2(model, llm, tokenizer, tasks, cf, tiny_config.phase2, TrainingHistory(), replicas=many)
