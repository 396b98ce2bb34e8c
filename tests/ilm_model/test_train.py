import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ilm_model.modeling import ItemLanguageModel
from ilm_model.soft_tokens import SoftTokenTable
from ilm_model.train import heldout_split, train_ilm
from tests.interrupt import kill_when_hanging


def test_heldout_split_is_disjoint_and_capped():
    train, heldout = heldout_split(40, 300, seed=0)
    assert len(heldout) == 8  # at most a fifth
    assert not set(train) & set(heldout) and len(train) + len(heldout) == 40


def test_train_ilm_end_to_end(tiny_config, tiny_llm, catalogue, cf_embeddings, tmp_path):
    llm, tok = tiny_llm
    llm_before = {k: v.clone() for k, v in llm.state_dict().items()}
    result = train_ilm(catalogue, cf_embeddings, llm, tok, tiny_config, progress=False)
    assert all(torch.equal(v, llm.state_dict()[k]) for k, v in llm_before.items())

    assert np.array_equal(result.soft_tokens.item_ids, catalogue.ids)
    assert result.soft_tokens.tokens.shape == (40, 4, 256)
    with torch.no_grad():
        expected = result.model.soft_tokens(torch.from_numpy(cf_embeddings[:1]))
    torch.testing.assert_close(result.soft_tokens.lookup([catalogue.ids[0]]), expected)

    m = result.metrics
    for key in (
        "itc_recall@10_heldout", "itc_recall@10_heldout_after_phase1", "itc_recall@10_chance",
        "title_accuracy_trained", "genre_f1_trained", "title_accuracy_heldout", "genre_f1_heldout",
        "phase1_seconds", "phase2_seconds", "total_seconds",
    ):
        assert key in m, key
    assert 0 <= m["itc_recall@10_heldout"] <= 1 and m["itc_recall@10_chance"] == pytest.approx(10 / 40)
    assert m["n_heldout"] == 8
    assert len(result.history.phase("phase1")) == 4 and len(result.history.phase("phase2")) == 3
    assert {e["split"] for e in result.examples} == {"trained", "heldout"}
    heldout_ids = {e["item_id"] for e in result.examples if e["split"] == "heldout"}
    trained_ids = {e["item_id"] for e in result.examples if e["split"] == "trained"}
    assert not heldout_ids & trained_ids

    result.save(tmp_path / "ilm")
    names = {p.name for p in (tmp_path / "ilm").iterdir()}
    assert names == {"model", "soft_tokens.safetensors", "history.json", "loss_curves.png", "metrics.json"}
    assert (tmp_path / "ilm" / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "ilm" / "metrics.json").read_text())["metrics"] == pytest.approx(m)
    reloaded = ItemLanguageModel.from_pretrained(tmp_path / "ilm" / "model", llm_hidden_size=256)
    table = SoftTokenTable.load(tmp_path / "ilm" / "soft_tokens.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(reloaded.soft_tokens(torch.from_numpy(cf_embeddings[:1])), table.lookup([10]))


def test_train_ilm_checks_alignment(tiny_config, tiny_llm, catalogue, cf_embeddings):
    llm, tok = tiny_llm
    with pytest.raises(ValueError, match="n_items=40"):
        train_ilm(catalogue, cf_embeddings[:10], llm, tok, tiny_config, progress=False)
    wrong = tiny_config.model_copy(update={"llm_hidden_size": 999})
    with pytest.raises(ValueError, match="llm_hidden_size"):
        train_ilm(catalogue, cf_embeddings, llm, tok, wrong, progress=False)


def test_train_ilm_with_iic_and_uic_uses_training_items_only(tiny_config, tiny_llm, catalogue, cf_embeddings):
    from ilm_model.interactions import Interactions
    from ilm_model.train import phase1_pair_inputs

    histories = [np.arange(0, 20), np.arange(20, 40), np.array([5, 3, 30])]
    interactions = Interactions(histories, np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32))
    config = tiny_config.model_copy(
        update={
            "phase1": tiny_config.phase1.model_copy(update={"iic_weight": 1.0, "uic_weight": 1.0}),
            "phase2": tiny_config.phase2.model_copy(update={"next_item_weight": 1.0, "conversation_weight": 1.0}),
        }
    )
    train_rows, heldout = heldout_split(40, 8, 0)
    inputs = phase1_pair_inputs(config, interactions, 40, train_rows)
    # brute force: consecutive pairs among training rows, as positions into train_rows
    pos = {int(r): p for p, r in enumerate(train_rows)}
    expected = [(pos[h[t]], pos[h[t + 1]]) for h in histories for t in range(len(h) - 1)
                if h[t] in pos and h[t + 1] in pos]
    assert [tuple(p) for p in inputs["item_pairs"].tolist()] == expected
    assert all(train_rows[i] not in heldout for _, i in inputs["user_pairs"].tolist())
    llm, tok = tiny_llm
    result = train_ilm(catalogue, cf_embeddings, llm, tok, config, progress=False, interactions=interactions)
    assert {"loss_iic", "loss_uic"} <= result.history.phase("phase1")[0].keys()
    with pytest.raises(ValueError, match="need interactions"):
        train_ilm(catalogue, cf_embeddings, llm, tok, config, progress=False)


def test_train_ilm_with_item_metadata_logs_the_match_rate(tiny_config, tiny_llm, catalogue, cf_embeddings, tmp_path,
                                                          monkeypatch):
    import sqlite3

    from ilm_model import train as train_module

    from ilm_model.item_text import describe

    movie = catalogue.movies[heldout_split(40, 8, 0)[0][0]]  # a phase-1 training item
    db = tmp_path / "movies.db"
    with sqlite3.connect(db) as c:
        c.execute('CREATE TABLE omdb ("Title" TEXT, "Year" INTEGER, "Director" TEXT, "Cast" TEXT)')
        c.execute("INSERT INTO omdb VALUES (?, ?, 'Jane Doe', 'Tom Hanks, Tim Allen')", (movie.title, movie.year))
    monkeypatch.setattr(train_module, "movies_db", lambda: db)
    seen = []
    real = train_module.train_phase1
    def spy(model, texts, *args, **kwargs):
        seen.extend(texts)
        return real(model, texts, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_phase1", spy)
    config = tiny_config.model_copy(update={"phase1": tiny_config.phase1.model_copy(update={"item_metadata": True})})
    llm, tok = tiny_llm
    result = train_ilm(catalogue, cf_embeddings, llm, tok, config, progress=False)
    assert result.metrics["item_metadata_match_rate"] == pytest.approx(1 / 40)
    assert f"{describe(movie)}. Director: Jane Doe. Cast: Tom Hanks, Tim Allen" in seen


CHILD = r"""
import json, logging, sys, time
from pathlib import Path

import numpy as np
import torch

import ilm_model.train_phase1 as phase1
import ilm_model.train_phase2 as phase2
from ilm_model.configuration import ILMConfig
from ilm_model.llm_loading import load_frozen_llm
from ilm_model.train import train_ilm
from retrieval.catalogue import Catalogue, Movie
from tests.synthetic import MOVIES

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
torch.set_num_threads(1)
llm_dir, checkpoints, out, hang_in, config = sys.argv[1:6]
checkpoints = Path(checkpoints) if checkpoints != "-" else None
if hang_in != "-":
    module, name = (phase1, "phase1_losses") if hang_in == "phase1" else (phase2, "answer_loss")
    real, calls = getattr(module, name), []

    def hang(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # step 4 of the phase: its checkpoint after step 3 is on disk
            Path(out).write_text("hanging")
            time.sleep(600)
        return real(*args, **kwargs)

    setattr(module, name, hang)
catalogue = Catalogue(
    Movie(item_id=10 * (i + 1), title=t, year=y, genres=tuple(g.split("|"))) for i, (t, y, g) in enumerate(MOVIES)
)
cf = np.random.default_rng(0).normal(size=(len(catalogue), 16)).astype(np.float32)
llm, tokenizer = load_frozen_llm(llm_dir, Path(out).parent / "llm-cache")
result = train_ilm(
    catalogue, cf, llm, tokenizer, ILMConfig.model_validate_json(config), progress=False,
    checkpoint_dir=checkpoints, resume=True, checkpoint_every=3,
)
result.soft_tokens.save(Path(out + ".soft_tokens.safetensors"))
Path(out).write_text(json.dumps({
    "metrics": {k: v for k, v in result.metrics.items() if not k.endswith("_seconds")},
    "history": result.history.records,
    "examples": result.examples,
}))
"""


def _child(llm_dir, checkpoints, out, hang_in="-"):
    from ilm_model.configuration import ILMConfig
    from tests.ilm_model.conftest import tiny_qformer

    config = ILMConfig(
        qformer=tiny_qformer(),
        llm_hidden_size=256,
        phase1={"steps": 8, "batch_size": 8, "warmup_steps": 1, "itm_weight": 1.0},
        phase2={"steps": 7, "batch_size": 4, "warmup_steps": 1, "learning_rate": 1e-3},
        evaluation={"heldout_items": 8, "generation_items": 3, "max_new_tokens": 6, "recall_after_phase1": True},
    )
    args = [sys.executable, "-c", CHILD, str(llm_dir), str(checkpoints or "-"), str(out), hang_in,
            config.model_dump_json()]
    return subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def uninterrupted(tiny_llm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "result.json"
    child = _child(tiny_llm_dir, None, out)
    assert child.wait(timeout=300) == 0, child.stderr.read()
    return out


def _read(out):
    from safetensors.torch import load_file

    return json.loads(out.read_text()), load_file(f"{out}.soft_tokens.safetensors")


@pytest.mark.parametrize("phase", ["phase1", "phase2"])
def test_a_run_killed_mid_phase_resumes_to_the_uninterrupted_result(phase, tiny_llm_dir, uninterrupted, tmp_path):
    from safetensors import safe_open

    from ilm_model.train_checkpoint import CHECKPOINT_FILE, ILMCheckpointMeta

    checkpoints = tmp_path / "checkpoints"
    killed = _child(tiny_llm_dir, checkpoints, tmp_path / "signal", hang_in=phase)
    kill_when_hanging(killed, tmp_path / "signal")
    with safe_open(str(checkpoints / CHECKPOINT_FILE), framework="pt") as file:
        meta = ILMCheckpointMeta.model_validate_json(file.metadata()[ILMCheckpointMeta.META_KEY])
    assert (meta.phase, meta.step) == (phase, 3)

    resumed = _child(tiny_llm_dir, checkpoints, tmp_path / "resumed.json")
    log = resumed.communicate(timeout=300)[1]
    assert resumed.returncode == 0, log
    assert f"ILM training resumed at {phase} step 3" in log
    (expected, expected_tokens), (got, got_tokens) = _read(uninterrupted), _read(tmp_path / "resumed.json")
    # bit-identical on CPU: weights, AdamW, the schedule, the samplers and every RNG stream are restored exactly
    assert got["history"] == expected["history"]
    assert got["metrics"] == expected["metrics"]
    assert got["examples"] == expected["examples"]
    assert torch.equal(got_tokens["tokens"], expected_tokens["tokens"])
