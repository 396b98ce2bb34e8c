"""The shared fixtures themselves produce what the other tests assume."""

import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_synthetic_movielens_is_grouplens_format(movielens_dir):
    movies = pd.read_csv(movielens_dir / "movies.csv")
    ratings = pd.read_csv(movielens_dir / "ratings.csv")
    assert list(movies.columns) == ["movieId", "title", "genres"]
    assert list(ratings.columns) == ["userId", "movieId", "rating", "timestamp"]
    assert movies.loc[0, "title"] == "Toy Story (1995)"
    assert ratings["userId"].nunique() == 120


def test_tiny_llm_chats(tiny_llm_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert model.config.hidden_size == 256
