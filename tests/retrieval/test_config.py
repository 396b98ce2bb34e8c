import pytest
from pydantic import ValidationError

from retrieval.config import RetrievalConfig


def test_defaults_are_the_documented_method():
    config = RetrievalConfig()
    assert config.model == "two_tower"
    assert config.loss == "lambdarank"
    assert config.rank_estimator in ("scaled", "smoothed", "posterior")  # a corrected estimator
    assert config.positive_threshold == 3.5
    assert config.ndcg_k == 100 and config.recall_ks == (20, 50)


def test_every_field_is_documented():
    undocumented = [name for name, field in RetrievalConfig.model_fields.items() if not field.description]
    assert undocumented == []


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"loss": "bpr", "lambdarank_cutoff": 10}, "lambdarank_cutoff"),
        ({"loss": "warp", "lambdarank_cutoff": 10}, "lambdarank_cutoff"),
        ({"model": "mf", "user_projection": True}, "user_projection"),
        ({"recall_ks": ()}, "recall_ks"),
        ({"recall_ks": (0, 20)}, "recall_ks"),
    ],
)
def test_cross_field_rules(fields, fragment):
    with pytest.raises(ValidationError, match=fragment):
        RetrievalConfig(**fields)


def test_rejects_unknown_and_out_of_range_fields():
    with pytest.raises(ValidationError, match="extra"):
        RetrievalConfig(learning_rat=0.1)
    with pytest.raises(ValidationError):
        RetrievalConfig(fold_in_fraction=1.0)
    with pytest.raises(ValidationError):
        RetrievalConfig(rank_estimator="exact")


def test_round_trips_through_json():
    config = RetrievalConfig(loss="warp", rank_estimator="smoothed", recall_ks=(10,))
    assert RetrievalConfig.model_validate_json(config.model_dump_json()) == config
