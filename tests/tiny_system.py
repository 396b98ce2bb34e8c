"""The tiny test system, outside pytest too (the soak benchmark serves it): a random chat LLM, the synthetic
catalogue, a briefly trained two-tower recommender and random soft tokens."""

from __future__ import annotations

from pathlib import Path

SOFT_TOKENS_PER_ITEM = 4

_CORPUS = [
    "I liked the movie Inception, can you recommend something similar?",
    "Here are some films you might enjoy: Interstellar, Memento, The Prestige.",
    "You might like Toy Story, Finding Nemo or Up because they are animated.",
    "Something darker please, not animated, maybe a thriller from the nineties.",
    "Hello! What kind of movies are you in the mood for today?",
    "Describe the movie: title, year and genres. Comedy Drama Romance Crime Horror Sci-Fi.",
] * 20


def write_tiny_llm(out: Path) -> Path:
    """Write a 2-layer Llama (hidden 256, head_dim 64) with an offline-trained BPE tokenizer and a chat template
    into `out`; returns `out`.

    initializer_range=0.5 keeps greedy outputs diverse, so equality and "soft tokens change the output"
    tests are discriminating.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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


def usual_scale_llm(tokenizer, hidden_size: int = 64):
    """A 2-layer random Llama over `tokenizer` initialised at the usual scale (std 0.02), float32, eval mode:
    unlike the tiny LLM (std 0.5), its attention is spread out and its logits are smooth in its inputs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def train_tiny_recommender(movielens):
    """A two-tower recommender trained for a few seconds on the synthetic ratings."""
    from retrieval.config import RetrievalConfig
    from retrieval.train import train_retrieval

    config = RetrievalConfig(epochs=15, embedding_dim=16, num_negatives=16)
    return train_retrieval(movielens, config, progress=False).recommender


def random_soft_tokens(catalogue, hidden_size: int):
    """Random soft tokens `[n_items, K, hidden_size]` at the scale of the tiny LLM's input embeddings."""
    import torch

    from ilm_model.soft_tokens import SoftTokenTable

    generator = torch.Generator().manual_seed(0)
    tokens = 0.5 * torch.randn(len(catalogue), SOFT_TOKENS_PER_ITEM, hidden_size, generator=generator)
    return SoftTokenTable(catalogue.ids, tokens)


def write_tiny_system(out: Path) -> Path:
    """Everything `tests.serving.api_process` serves, under `out`: movielens/, llm/, recommender/ and
    soft_tokens.safetensors; returns `out`."""
    from retrieval.data import load_movielens
    from tests.synthetic import write_movielens

    movielens = load_movielens("ml-latest-small", path=write_movielens(out / "movielens"), download=False)
    write_tiny_llm(out / "llm")
    train_tiny_recommender(movielens).save(out / "recommender")
    random_soft_tokens(movielens.catalogue, 256).save(out / "soft_tokens.safetensors")
    return out
