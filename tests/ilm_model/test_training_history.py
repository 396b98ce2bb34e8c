import json

from ilm_model.training_history import TrainingHistory


def test_log_save_and_plot(tmp_path):
    history = TrainingHistory()
    for step in range(30):
        history.log("phase1", step, loss=5.0 - 0.1 * step, loss_itc=2.0, lr=1e-4)
    for step in range(5):
        history.log("phase2", step, loss=3.0 - 0.2 * step, lr=1e-4)
    assert len(history.phase("phase2")) == 5
    history.save(tmp_path / "history.json")
    assert json.loads((tmp_path / "history.json").read_text())[0] == {
        "phase": "phase1", "step": 0, "loss": 5.0, "loss_itc": 2.0, "lr": 1e-4
    }
    history.plot(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_trailing_mean_by_hand():
    import numpy as np

    from ilm_model.training_history import trailing_mean

    assert trailing_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
