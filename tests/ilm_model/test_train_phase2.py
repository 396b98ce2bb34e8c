import pytest
import torch

from ilm_model.configuration import Phase2Config
from ilm_model.errors import ILMError
from ilm_model.item_text import describe
from ilm_model.modeling import ItemLanguageModel
from ilm_model.prompting import ItemPrompt, PrefixCache
from ilm_model.train_phase2 import answer_loss, train_phase2
from ilm_model.training_history import TrainingHistory


def test_prefix_cache_gives_the_same_loss_and_gradient(tiny_config, tiny_llm):
    llm, tok = tiny_llm
    prompt = ItemPrompt.build(tok, "Describe this movie: {item}")
    answers = [prompt.answer_ids(tok, a, 40) for a in ("Up (2009). Genres: Drama", "Heat (1995)", "Alien (1979)")]
    soft = torch.randn(3, 4, 256, requires_grad=True)
    plain = answer_loss(llm, prompt, soft, answers)
    (grad_plain,) = torch.autograd.grad(plain, soft)
    cached = answer_loss(llm, prompt, soft, answers, PrefixCache(llm, prompt.prefix_ids))
    (grad_cached,) = torch.autograd.grad(cached, soft)
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_cached, grad_plain, atol=1e-5, rtol=1e-4)


def test_answer_loss_counts_answer_tokens_only(tiny_llm):
    """Brute force: the full sequence through the LLM, cross-entropy at the answer positions only."""
    llm, tok = tiny_llm
    prompt = ItemPrompt.build(tok, "Describe this movie: {item}")
    answer = prompt.answer_ids(tok, "Heat (1995)", 40)
    soft = torch.randn(1, 4, 256)
    with torch.no_grad():
        embeds = torch.cat([prompt.embed(llm, soft), llm.get_input_embeddings()(torch.tensor([answer]))], 1)
        logits = llm(inputs_embeds=embeds).logits[0]
        start = embeds.shape[1] - len(answer)
        expected = torch.stack(
            [-torch.log_softmax(logits[start + i - 1], -1)[t] for i, t in enumerate(answer)]
        ).mean()
        torch.testing.assert_close(answer_loss(llm, prompt, soft, [answer]), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache_prefix", [True, False])
def test_trains_qformer_and_adaptor_and_leaves_llm_bit_identical(
    tiny_config, tiny_llm, catalogue, cf_embeddings, cache_prefix
):
    llm, tok = tiny_llm
    torch.manual_seed(0)
    model = ItemLanguageModel.from_config(tiny_config)
    llm_before = {k: v.clone() for k, v in llm.state_dict().items()}
    ilm_before = {k: v.clone() for k, v in model.state_dict().items()}
    history = TrainingHistory()
    config = Phase2Config(steps=3, batch_size=4, learning_rate=1e-3, warmup_steps=1, cache_prefix=cache_prefix)
    seen = train_phase2(
        model, llm, tok, [describe(m) for m in catalogue.movies[:8]], torch.from_numpy(cf_embeddings[:8]), config,
        history, progress=False,
    )
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
    assert len(seen) == 8 and sorted(seen) == list(seen)  # 3 steps of 4 over 8 items: everything seen


def test_refuses_an_unfrozen_llm(tiny_config, tiny_llm_dir, catalogue, cf_embeddings):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    model = ItemLanguageModel.from_config(tiny_config)
    with pytest.raises(ILMError, match="frozen"):
        train_phase2(
            model, llm, AutoTokenizer.from_pretrained(tiny_llm_dir), ["Up (2009)"], torch.zeros(1, 16),
            Phase2Config(steps=1), TrainingHistory(), progress=False,
        )
