import numpy as np
import pytest
import torch

from ilm_model.evaluation import genre_f1, itc_recall_at_k, score_descriptions
from ilm_model.modeling import ItemLanguageModel
from ilm_model.objectives import max_query_similarity
from retrieval.catalogue import Movie


def test_genre_f1():
    assert genre_f1(["Drama", "Crime"], ["Crime", "Drama"]) == 1.0
    assert genre_f1(["Drama"], ["Crime", "Drama"]) == pytest.approx(2 / 3)
    assert genre_f1([], ["(no genres listed)"]) == 1.0
    assert genre_f1(["Horror"], ["Comedy"]) == 0.0
    assert genre_f1(["drama", "CRIME"], ["Crime", "Drama"]) == 1.0


def test_score_descriptions():
    movies = [
        Movie(item_id=1, title="Heat", year=1995, genres=("Action", "Crime")),
        Movie(item_id=2, title="Up", year=2009, genres=("Animation",)),
    ]
    generated = ["Heat (1995). Genres: Action, Crime", "Cars (2006). Genres: Animation, Comedy"]
    scores = score_descriptions(generated, movies)
    assert scores.title_accuracy == 0.5
    assert scores.genre_f1 == pytest.approx((1.0 + 2 / 3) / 2)
    loose = score_descriptions(["Title: heat  (1995)\nGenres: action", "up (2009) is lovely"], movies)
    assert loose.title_accuracy == 1.0 and loose.genre_f1 == pytest.approx((2 / 3 + 0.0) / 2)


@torch.no_grad()
def test_itc_recall_matches_brute_force_ranking(tiny_config):
    torch.manual_seed(0)
    model = ItemLanguageModel.from_config(tiny_config).eval()
    cf = torch.randn(30, 16)
    texts = [f"movie number {i}" for i in range(6)]
    targets = np.array([0, 5, 9, 12, 20, 29])
    features = model.represent_items(cf).itc_features
    scores = max_query_similarity(features, model.encode_text(texts)).t()  # [texts, items]
    for k in (1, 5, 15):
        expected = np.mean([int(targets[j]) in scores[j].argsort(descending=True)[:k].tolist() for j in range(6)])
        assert itc_recall_at_k(model, texts, targets, features, k, batch_size=4) == pytest.approx(expected)
    assert itc_recall_at_k(model, texts, targets, features, 30) == 1.0


def test_candidate_scores_match_full_sequence_brute_force(tiny_llm):
    from ilm_model.evaluation import recall_at_k, score_candidates
    from ilm_model.prompting import ItemPrompt

    llm, tok = tiny_llm
    prompt = ItemPrompt.build(tok, "I liked {item} and {item}. Next?")
    torch.manual_seed(0)
    blocks = [torch.randn(3, 256), torch.randn(5, 256)]  # slots may differ in length (text-only titles)
    answers = [prompt.answer_ids(tok, t, 20) for t in ("Heat (1995)", "Up", "Alien (1979)")]
    scores = score_candidates(llm, prompt, blocks, answers, chunk=2)
    body = prompt.embed_blocks(llm, blocks)
    expected = []
    with torch.no_grad():
        for ids in answers:
            embeds = torch.cat([body, llm.get_input_embeddings()(torch.tensor(ids))])[None]
            logp = torch.log_softmax(llm(inputs_embeds=embeds).logits[0], -1)
            expected.append(torch.stack([logp[len(body) + i - 1, t] for i, t in enumerate(ids)]).mean())
    torch.testing.assert_close(scores, torch.stack(expected), atol=1e-5, rtol=1e-5)
    ranked = torch.tensor([0.1, 0.5, 0.3, 0.9])
    assert recall_at_k(ranked, 2, 2) == 0.0 and recall_at_k(ranked, 2, 3) == 1.0 and recall_at_k(ranked, 0, 10) == 1.0
