import pytest
import torch

from ilm_model.qformer import QFormer, joint_attention_mask
from tests.ilm_model.conftest import CF_DIM, tiny_qformer


def _allowed(mask):
    return mask[:, 0] == 0


def test_masks_match_hand_written_patterns():
    text_mask = torch.tensor([[1, 1, 0]])  # 2 queries (q0 q1), text t0 t1, t2 = padding
    expected = {
        # rows/cols: q0 q1 t0 t1 t2
        "unimodal": [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0]],
        "causal": [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]],
        "bidirectional": [[1, 1, 1, 1, 0]] * 5,
    }
    for kind, pattern in expected.items():
        mask = joint_attention_mask(2, text_mask, kind)
        assert mask.shape == (1, 1, 5, 5)
        assert torch.equal(_allowed(mask)[0], torch.tensor(pattern, dtype=torch.bool)), kind
        assert torch.isfinite(mask).all()  # a large finite constant, never -inf
    with pytest.raises(ValueError, match="unknown attention kind"):
        joint_attention_mask(2, text_mask, "sideways")


def _model():
    torch.manual_seed(0)
    return QFormer(tiny_qformer()).eval()


def test_output_shapes():
    q = _model()
    cf, ids = torch.randn(3, CF_DIM), torch.randint(1000, 2000, (3, 7))
    assert q(cf_embeddings=cf).query_states.shape == (3, 4, 32)
    assert q(cf_embeddings=cf).text_states is None
    assert q(input_ids=ids).text_states.shape == (3, 7, 32)
    assert q(input_ids=ids).query_states is None
    joint = q(cf, ids, attention="causal")
    assert joint.query_states.shape == (3, 4, 32) and joint.text_states.shape == (3, 7, 32)
    assert q.cf_tokens(cf).shape == (3, 2, 24)
    with pytest.raises(ValueError):
        q()


@torch.no_grad()
def test_masks_control_information_flow():
    q = _model()
    cf, ids = torch.randn(2, CF_DIM), torch.randint(1000, 2000, (2, 6))
    alone_q = q(cf_embeddings=cf).query_states
    alone_t = q(input_ids=ids).text_states
    uni = q(cf, ids, attention="unimodal")
    causal = q(cf, ids, attention="causal")
    both = q(cf, ids, attention="bidirectional")
    # unimodal = the two streams encoded separately; causal queries never see the text
    torch.testing.assert_close(uni.query_states, alone_q)
    torch.testing.assert_close(uni.text_states, alone_t)
    torch.testing.assert_close(causal.query_states, alone_q)
    assert not torch.allclose(both.query_states, alone_q)
    # causal text: token t does not depend on later tokens; it does depend on the item
    changed = ids.clone()
    changed[:, 4:] = 1500
    torch.testing.assert_close(q(cf, changed, attention="causal").text_states[:, :4], causal.text_states[:, :4])
    assert not torch.allclose(q(cf + 1, ids, attention="causal").text_states, causal.text_states)
    # padding is invisible: padded positions do not change the real ones
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 3)], 1).long()
    torch.testing.assert_close(q(cf, padded, mask, attention="bidirectional").query_states, both.query_states)


@pytest.mark.slow
@torch.no_grad()
def test_minilm_weights_are_copied_and_text_branch_equals_minilm():
    """With MiniLM copied in, the text-only pass is all-MiniLM-L6-v2's BertModel (loads offline in ~1 s)."""
    from transformers import BertModel

    from ilm_model import text_encoder
    from ilm_model.configuration import QFormerConfig

    q = QFormer(QFormerConfig(cf_embedding_size=CF_DIM)).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    copied = q.load_text_encoder(text_encoder.load_state_dict())
    assert copied == 4 + 6 * 22  # embeddings (word, position, 2 norm) + per layer: attention 10, two FFN copies 12
    after = q.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert len(changed) == copied
    assert not any("crossattention" in k for k in changed)
    layer3 = "encoder.encoder.layer.3."
    assert torch.equal(after[layer3 + "output_query.dense.weight"], after[layer3 + "output.dense.weight"])

    tok = text_encoder.load_tokenizer()
    batch = tok(["Toy Story (1995). Genres: Adventure", "Heat (1995)"], padding=True, return_tensors="pt")
    bert = BertModel.from_pretrained(text_encoder.minilm_dir()).eval()
    reference = bert(**batch).last_hidden_state
    ours = q(input_ids=batch["input_ids"], text_attention_mask=batch["attention_mask"]).text_states
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours[real], reference[real], atol=1e-4, rtol=1e-4)
