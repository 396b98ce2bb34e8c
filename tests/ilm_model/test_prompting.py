import pytest
import torch

from ilm_model.errors import ILMError
from ilm_model.prompting import ItemPrompt, PrefixCache, generate_from_soft_tokens


def test_prompt_is_split_around_the_placeholder(tiny_llm):
    _, tok = tiny_llm
    prompt = ItemPrompt.build(tok, "Describe this movie: {item}", system_prompt="Be brief.")
    expected_prefix = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nDescribe this movie: "
    assert tok.decode(prompt.prefix_ids) == expected_prefix
    assert tok.decode(prompt.suffix_ids) == "<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.answer_end == "<|im_end|>"
    ids = prompt.answer_ids(tok, "Up (2009)", max_tokens=50)
    assert tok.decode(ids) == "Up (2009)<|im_end|>"
    assert len(prompt.answer_ids(tok, "Up (2009)", max_tokens=2)) == 2
    with pytest.raises(ILMError, match="at least once"):
        ItemPrompt.build(tok, "no placeholder")


def test_several_slots_are_embedded_in_order(tiny_llm):
    llm, tok = tiny_llm
    prompt = ItemPrompt.build(tok, "I liked {item} and {item}.", system_prompt="Be brief.")
    assert prompt.num_slots == 2
    assert tok.decode(prompt.head_ids) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    assert [tok.decode(p) for p in prompt.pieces] == ["I liked ", " and ", ".<|im_end|>\n<|im_start|>assistant\n"]
    soft = torch.randn(1, 6, 256)
    table = llm.get_input_embeddings().weight
    embeds = prompt.embed(llm, soft)[0]
    expected = torch.cat([table[prompt.head_ids + prompt.pieces[0]], soft[0, :3], table[prompt.pieces[1]], soft[0, 3:],
                          table[prompt.pieces[2]]])
    assert torch.equal(embeds, expected)
    assert torch.equal(prompt.embed_body(llm, soft, with_head=False)[0], expected[len(prompt.head_ids):])
    assert prompt.text_length == len(expected) - 6
    with pytest.raises(ILMError, match="split evenly"):
        prompt.embed(llm, torch.randn(1, 5, 256))


def test_soft_tokens_are_spliced_between_prefix_and_suffix(tiny_llm):
    llm, tok = tiny_llm
    prompt = ItemPrompt.build(tok, "Describe this movie: {item}")
    soft = torch.randn(2, 3, 256)
    embeds = prompt.embed(llm, soft)
    p, s = len(prompt.prefix_ids), len(prompt.suffix_ids)
    assert embeds.shape == (2, p + 3 + s, 256)
    assert torch.equal(embeds[:, p : p + 3], soft)
    table = llm.get_input_embeddings().weight
    assert torch.equal(embeds[1, :p], table[prompt.prefix_ids])
    assert torch.equal(embeds[0, p + 3 :], table[prompt.suffix_ids])


def test_prefix_cache_is_reusable(tiny_llm):
    llm, tok = tiny_llm
    prompt = ItemPrompt.build(tok, "Describe this movie: {item}")
    cache = PrefixCache(llm, prompt.prefix_ids)
    first = cache.for_batch(2)
    llm(inputs_embeds=torch.randn(2, 3, 256), attention_mask=torch.ones(2, cache.length + 3, dtype=torch.long), **first)
    second = next(v for k, v in cache.for_batch(2).items() if k != "use_cache")
    assert second.get_seq_length() == cache.length  # the first batch's extension did not leak into the template


def test_generation_depends_on_the_soft_tokens(tiny_llm):
    llm, tok = tiny_llm
    prompt = ItemPrompt.build(tok, "Describe this movie: {item}")
    torch.manual_seed(0)
    soft = torch.randn(2, 3, 256)
    out = generate_from_soft_tokens(llm, tok, prompt, soft, max_new_tokens=5)
    assert len(out) == 2 and out[0] != out[1]
    assert generate_from_soft_tokens(llm, tok, prompt, soft, max_new_tokens=5) == out  # greedy: deterministic


def test_left_padded_batch_generation_equals_one_by_one(tiny_llm):
    from ilm_model.prompting import generate_from_bodies

    llm, tok = tiny_llm
    prompt = ItemPrompt.build(tok, "Describe this movie: {item}")
    torch.manual_seed(1)
    bodies = [prompt.embed_blocks(llm, [torch.randn(n, 256)]) for n in (2, 6)]
    batched = generate_from_bodies(llm, tok, bodies, max_new_tokens=5)
    assert batched == [generate_from_bodies(llm, tok, [b], max_new_tokens=5)[0] for b in bodies]
