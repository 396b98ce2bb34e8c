"""The main job end to end on synthetic data and a tiny LLM: train, cache, reload, answer a chat turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.commands import build_service
from app.errors import SettingsError
from app.pipeline import load_trained, prepare, prepare_retrieval
from serving.api.protocol import ChatMessage

def test_prepare_trains_then_reloads_from_cache(tiny_settings):
    first = prepare(tiny_settings, progress=False)
    assert (first.directory / "retrieval" / "DONE").is_file()
    assert (first.directory / "ilm" / "DONE").is_file()
    assert (first.directory / "retrieval_training.png").stat().st_size > 0
    retrieval = first.metrics["retrieval"]
    assert set(retrieval) >= {"model", "popularity", "seconds"}
    assert len(first.soft_tokens.lookup([int(first.catalogue.ids[0])])[0]) == 2  # K soft tokens per item

    second = prepare(tiny_settings, progress=False)
    assert second.directory == first.directory
    assert second.metrics == first.metrics
    ids = [int(i) for i in first.catalogue.ids[:5]]
    assert (second.recommender.recommend(ids[:2], k=5)[0] == first.recommender.recommend(ids[:2], k=5)[0]).all()


def test_served_turn_recommends_catalogue_movies(tiny_settings):
    artefacts = prepare(tiny_settings, progress=False)
    service = build_service(tiny_settings, artefacts)
    turn = service.chat(None, [ChatMessage(role="user", content="I loved Toy Story and Finding Nemo")])
    assert turn.recommendations
    assert all(rec.item_id in artefacts.catalogue for rec in turn.recommendations)
    mentioned = {1, 2}  # Toy Story, Finding Nemo in the synthetic catalogue
    assert not mentioned & {rec.item_id for rec in turn.recommendations}


def test_load_trained_reads_a_finished_folder_whatever_its_fingerprint(tiny_settings, tmp_path):
    trained = prepare(tiny_settings, progress=False)
    loaded = load_trained(trained.directory, tiny_settings)
    assert loaded.directory == trained.directory and loaded.metrics == trained.metrics
    assert list(loaded.catalogue.ids) == list(trained.catalogue.ids)
    ids = [int(i) for i in trained.catalogue.ids[:2]]
    assert (loaded.recommender.recommend(ids, k=5)[0] == trained.recommender.recommend(ids, k=5)[0]).all()
    with pytest.raises(FileNotFoundError, match="not a finished artefact folder"):
        load_trained(tmp_path, tiny_settings)
    retrieval_only = prepare_retrieval(tiny_settings.model_copy(update={"cache_dir": tmp_path / "c"}), progress=False)
    with pytest.raises(FileNotFoundError, match="missing ilm"):
        load_trained(retrieval_only.directory, tiny_settings)
    partial = load_trained(retrieval_only.directory, tiny_settings, need_ilm=False)
    assert partial.ilm is None and partial.soft_tokens is None and partial.recommender is not None


def test_changed_settings_train_into_a_new_folder(tiny_settings):
    first = prepare(tiny_settings, progress=False)
    changed = tiny_settings.model_copy(update={"retrieval": tiny_settings.retrieval.model_copy(update={"epochs": 2})})
    assert prepare(changed, progress=False).directory != first.directory


def test_retrieval_stage_alone_then_ilm_reuses_it(tiny_settings, tmp_path):
    settings = tiny_settings.model_copy(update={"cache_dir": tmp_path})
    stage = prepare_retrieval(settings, progress=False)
    assert (stage.directory / "retrieval" / "DONE").is_file()
    assert not (stage.directory / "ilm").exists()
    assert stage.metrics["retrieval"]["model"]

    artefacts = prepare(settings, progress=False)
    assert artefacts.directory == stage.directory
    assert artefacts.metrics["retrieval"] == stage.metrics["retrieval"]  # loaded, not retrained
    assert (artefacts.directory / "ilm" / "DONE").is_file()


def _interrupted_then_resumed(monkeypatch, caplog, stage, settings, module, name, interrupt, logger):
    """Run `stage(settings)` with `module.name` replaced by `interrupt` (which raises KeyboardInterrupt), then
    again with the real one; the second run's result, and the log of `logger` during it."""
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args, **kwargs: interrupt(real, *args, **kwargs))
    with pytest.raises(KeyboardInterrupt):
        stage(settings, progress=False)
    monkeypatch.setattr(module, name, real)
    with caplog.at_level("INFO", logger=logger):
        return stage(settings, progress=False), caplog.text


def test_interrupted_retrieval_training_resumes_from_its_checkpoint(tiny_settings, tmp_path, monkeypatch, caplog):
    import retrieval.train

    settings = tiny_settings.model_copy(update={"cache_dir": tmp_path / "interrupted"})
    calls = []

    def interrupt_in_epoch_two(real_loss, *args, **kwargs):
        if list(settings.cache.glob("artifacts/*/retrieval_checkpoint/checkpoint.safetensors")):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    resumed, log = _interrupted_then_resumed(
        monkeypatch, caplog, prepare_retrieval, settings, retrieval.train, "_loss", interrupt_in_epoch_two,
        "retrieval.train",
    )
    assert "retrieval training resumed from epoch 1" in log
    assert not (resumed.directory / "retrieval_checkpoint").exists()
    clean = tiny_settings.model_copy(update={"cache_dir": tmp_path / "clean"})
    uninterrupted = prepare_retrieval(clean, progress=False)
    assert resumed.metrics["retrieval"]["model"] == uninterrupted.metrics["retrieval"]["model"]


def test_interrupted_ilm_training_resumes_from_its_checkpoint(tiny_settings, tmp_path, monkeypatch, caplog):
    import ilm_model.train_phase2

    settings = tiny_settings.model_copy(update={"cache_dir": tmp_path / "interrupted"})

    def interrupt_in_phase_two(real_loss, *args, **kwargs):
        assert list(settings.cache.glob("artifacts/*/ilm_checkpoint/checkpoint.safetensors"))  # phase 1's last
        raise KeyboardInterrupt

    resumed, log = _interrupted_then_resumed(
        monkeypatch, caplog, prepare, settings, ilm_model.train_phase2, "answer_loss", interrupt_in_phase_two,
        "ilm_model.train_checkpoint",
    )
    assert "ILM training resumed at phase1 step 4" in log
    assert not (resumed.directory / "ilm_checkpoint").exists()
    uninterrupted = prepare(tiny_settings.model_copy(update={"cache_dir": tmp_path / "clean"}), progress=False)
    untimed = [{k: v for k, v in run.metrics["ilm"].items() if not k.endswith("seconds")}
               for run in (resumed, uninterrupted)]
    assert untimed[0] == untimed[1]


def test_artefacts_are_never_written_through_a_symlink_out_of_the_cache(tiny_settings, tmp_path):
    cache, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    cache.mkdir()
    elsewhere.mkdir()
    (cache / "artifacts").symlink_to(elsewhere)
    with pytest.raises(SettingsError, match=f"refusing to write .*outside {cache.resolve()}"):
        prepare_retrieval(tiny_settings.model_copy(update={"cache_dir": cache}), progress=False)
    assert list(elsewhere.iterdir()) == []
