"""Session-wide fixtures: a synthetic MovieLens folder and a tiny randomly initialised chat LLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_CORPUS = [
    "I liked the movie Inception, can you recommend something similar?",
    "Here are some films you might enjoy: Interstellar, Memento, The Prestige.",
    "You might like Toy Story, Finding Nemo or Up because they are animated.",
    "Something darker please, not animated, maybe a thriller from the nineties.",
    "Hello! What kind of movies are you in the mood for today?",
    "Describe the movie: title, year and genres. Comedy Drama Romance Crime Horror Sci-Fi.",
] * 20


@pytest.fixture(scope="session")
def movielens_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic GroupLens-format folder (40 real titles, 120 users)."""
    from tests.synthetic import write_movielens

    return write_movielens(tmp_path_factory.mktemp("ml-synthetic"))


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden 256, head_dim 64) with an offline-trained BPE tokenizer and a chat template.

    initializer_range=0.5 keeps greedy outputs diverse, so equality and "soft tokens change the output"
    tests are discriminating.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llm")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS, trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>", pad_token="<pad>"
    )
    hf_tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    hf_tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.5,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`, or a skip naming what is missing."""
    if not (SHARED_DATA / "ml-latest-small" / "ratings.csv").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only present on the team's machines and CI)")
    return SHARED_DATA
