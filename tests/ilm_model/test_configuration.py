import pytest
from pydantic import ValidationError

from ilm_model.configuration import EvaluationConfig, ILMConfig, Phase1Config, Phase2Config, QFormerConfig


def test_defaults_are_minilm_sized_and_valid():
    cfg = ILMConfig()
    assert cfg.qformer.text_encoder == "all-MiniLM-L6-v2"
    assert (cfg.qformer.hidden_size, cfg.qformer.num_hidden_layers, cfg.qformer.num_attention_heads) == (384, 6, 12)
    assert cfg.qformer.num_query_tokens == 8
    assert cfg.qformer.cf_embedding_size is None and cfg.llm_hidden_size is None


def test_every_field_is_documented():
    for model in (QFormerConfig, Phase1Config, Phase2Config, EvaluationConfig, ILMConfig):
        undocumented = [name for name, f in model.model_fields.items() if not f.description]
        assert not undocumented, f"{model.__name__}: {undocumented}"


def test_minilm_text_encoder_requires_its_sizes():
    with pytest.raises(ValidationError, match="text_encoder=None"):
        QFormerConfig(hidden_size=256, num_attention_heads=8)
    QFormerConfig(text_encoder=None, hidden_size=256, num_attention_heads=8)
    QFormerConfig(num_hidden_layers=2)  # fewer layers than MiniLM is fine: the first ones are copied


def test_heads_must_divide_width():
    with pytest.raises(ValidationError, match="multiple"):
        QFormerConfig(text_encoder=None, hidden_size=30, num_attention_heads=4)


def test_for_data_fills_sizes_and_refuses_clashes():
    cfg = ILMConfig().for_data(cf_embedding_size=64, llm_hidden_size=576)
    assert cfg.qformer.cf_embedding_size == 64 and cfg.llm_hidden_size == 576
    assert cfg.for_data(64, 576) == cfg
    with pytest.raises(ValueError, match="llm_hidden_size"):
        cfg.for_data(64, 896)


def test_phase_validators():
    with pytest.raises(ValidationError, match="at least one"):
        Phase1Config(itc_weight=0, itg_weight=0, itm_weight=0)
    assert Phase1Config(itc_weight=0, itg_weight=0, iic_weight=1).iic_weight == 1
    with pytest.raises(ValidationError, match=r"\{item\}"):
        Phase2Config(instruction="Describe this movie")
    with pytest.raises(ValidationError, match=r"\{history\}"):
        Phase2Config(next_item_instruction="What next?")
    with pytest.raises(ValidationError, match=r"\{genre\}"):
        Phase2Config(conversation_instruction="I loved {history}.")
    with pytest.raises(ValidationError, match="at least one"):
        Phase2Config(describe_weight=0)
    with pytest.raises(ValidationError):
        ILMConfig(unknown_field=1)


def test_json_round_trip():
    cfg = ILMConfig().for_data(32, 256)
    assert ILMConfig.model_validate_json(cfg.model_dump_json()) == cfg
