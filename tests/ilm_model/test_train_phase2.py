import numpy as np
import pytest
import torch

from ilm_model.configuration import Phase2Config
from ilm_model.errors import ILMError
from ilm_model.interactions import Interactions
from ilm_model.modeling import ItemLanguageModel
from ilm_model.prompting import ItemPrompt, PrefixCache
from ilm_model.tasks import build_task_mix
from ilm_model.train_phase2 import answer_log_probs, answer_loss, train_phase2
from ilm_model.training_history import TrainingHistory

INSTRUCTIONS = (
    "Describe this movie: {item}", "I liked {item} and {item}. Next?", "{item}, {item}, {item}: one like these"
)


def _bodies(llm, tok, soft_per_prompt, with_head):
    prompts = [ItemPrompt.build(tok, i) for i in INSTRUCTIONS]
    return prompts, [p.embed_body(llm, s, with_head=with_head)[0] for p, s in zip(prompts, soft_per_prompt)]


def test_answer_loss_of_mixed_prompts_matches_unpadded_brute_force(tiny_llm):
    """Brute force: each full sequence alone through the LLM, cross-entropy at its answer positions only."""
    llm, tok = tiny_llm
    torch.manual_seed(0)
    soft = [torch.randn(1, 4 * n, 256) for n in (1, 2, 3)]
    prompts, bodies = _bodies(llm, tok, soft, with_head=True)
    answers = [p.answer_ids(tok, a, 40) for p, a in zip(prompts, ("Heat (1995). Genres: Action", "Up (2009)", "Alien"))]
    terms = []
    with torch.no_grad():
        for body, answer in zip(bodies, answers):
            embeds = torch.cat([body, llm.get_input_embeddings()(torch.tensor(answer))])[None]
            logits = llm(inputs_embeds=embeds).logits[0]
            start = len(body)
            terms += [-torch.log_softmax(logits[start + i - 1], -1)[t] for i, t in enumerate(answer)]
        torch.testing.assert_close(answer_loss(llm, bodies, answers), torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)
        per_row = answer_log_probs(llm, bodies, answers).per_row()
        lengths = np.cumsum([0] + [len(a) for a in answers])
        expected = [-torch.stack(terms[lengths[b] : lengths[b + 1]]).mean() for b in range(3)]
        torch.testing.assert_close(per_row, torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_prefix_cache_gives_the_same_loss_and_gradient(tiny_llm):
    llm, tok = tiny_llm
    soft = [torch.randn(1, 4 * n, 256, requires_grad=True) for n in (1, 2, 3)]
    prompts, full = _bodies(llm, tok, soft, with_head=True)
    _, bodies = _bodies(llm, tok, soft, with_head=False)
    answers = [p.answer_ids(tok, a, 40) for p, a in zip(prompts, ("Up (2009). Genres: Drama", "Heat", "Alien (1979)"))]
    plain = answer_loss(llm, full, answers)
    grads_plain = torch.autograd.grad(plain, soft)
    cache = PrefixCache(llm, prompts[0].head_ids)
    assert all(p.head_ids == prompts[0].head_ids for p in prompts)
    cached = answer_loss(llm, bodies, answers, cache)
    grads_cached = torch.autograd.grad(cached, soft)
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_cached, grads_plain):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-3)  # fp32 sums in another order


def _interactions():
    return Interactions([np.arange(0, 12), np.arange(12, 30), np.array([3, 7, 21, 25, 33])])


@pytest.mark.parametrize("cache_prefix", [True, False])
def test_trains_encoder_on_the_mix_and_leaves_llm_bit_identical(
    tiny_config, tiny_llm, catalogue, cf_embeddings, cache_prefix
):
    llm, tok = tiny_llm
    torch.manual_seed(0)
    model = ItemLanguageModel.from_config(tiny_config)
    llm_before = {k: v.clone() for k, v in llm.state_dict().items()}
    ilm_before = {k: v.clone() for k, v in model.state_dict().items()}
    history = TrainingHistory()
    config = Phase2Config(
        steps=3, batch_size=4, learning_rate=1e-3, warmup_steps=1, cache_prefix=cache_prefix,
        next_item_weight=1.0, conversation_weight=1.0, history_length=2,
    )
    tasks = build_task_mix(catalogue, config, np.arange(40), _interactions(), seed=0)
    seen = train_phase2(model, llm, tok, tasks, torch.from_numpy(cf_embeddings), config, history, progress=False)
    llm_after = llm.state_dict()
    assert llm_before.keys() == llm_after.keys()
    assert all(torch.equal(llm_before[k], llm_after[k]) for k in llm_before)
    assert all(not p.requires_grad for p in llm.parameters())
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], ilm_before[k])}
    assert "adaptor.weight" in changed and "qformer.query_tokens" in changed
    assert any(k.startswith("qformer.encoder.encoder.layer.0.crossattention") for k in changed)
    assert not any(k.startswith(("item_projection", "text_projection", "itg_head", "itm_head")) for k in changed)
    assert [r["step"] for r in history.phase("phase2")] == [0, 1, 2]
    assert sorted(seen) == list(seen) and set(seen) <= set(range(40))


def test_a_bfloat16_llm_trains_the_float32_encoder(tiny_config, tiny_llm_dir, catalogue, cf_embeddings, tmp_path):
    from ilm_model.llm_loading import load_frozen_llm

    llm, tok = load_frozen_llm(str(tiny_llm_dir), tmp_path, dtype="bfloat16")
    torch.manual_seed(0)
    model = ItemLanguageModel.from_config(tiny_config)
    before = model.adaptor.weight.detach().clone()
    config = Phase2Config(steps=2, batch_size=4, learning_rate=1e-3, warmup_steps=1)
    tasks = build_task_mix(catalogue, config, np.arange(40), None, seed=0)
    history = TrainingHistory()
    train_phase2(model, llm, tok, tasks, torch.from_numpy(cf_embeddings), config, history, progress=False)
    assert model.adaptor.weight.dtype == torch.float32 and not torch.equal(model.adaptor.weight, before)
    assert all(np.isfinite(r["loss"]) for r in history.phase("phase2"))


def test_refuses_an_unfrozen_llm(tiny_config, tiny_llm_dir, catalogue, cf_embeddings):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    model = ItemLanguageModel.from_config(tiny_config)
    tasks = build_task_mix(catalogue, Phase2Config(), np.arange(4), None, seed=0)
    with pytest.raises(ILMError, match="frozen"):
        train_phase2(
            model, llm, AutoTokenizer.from_pretrained(tiny_llm_dir), tasks, torch.zeros(40, 16),
            Phase2Config(steps=1), TrainingHistory(), progress=False,
        )
