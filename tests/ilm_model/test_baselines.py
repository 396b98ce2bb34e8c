import numpy as np
import torch

from ilm_model.baselines import CFAdaptorBaseline, title_blocks
from ilm_model.configuration import Phase2Config
from ilm_model.tasks import build_task_mix
from ilm_model.train_phase2 import train_phase2
from ilm_model.training_history import TrainingHistory


def test_cf_adaptor_is_an_mlp_reshaped_into_k_tokens():
    torch.manual_seed(0)
    model = CFAdaptorBaseline(16, num_tokens=3, llm_hidden_size=8, hidden_size=10)
    cf = torch.randn(2, 16)
    first, _, second = model.adaptor
    expected = (second(torch.nn.functional.gelu(first(cf)))).view(2, 3, 8)
    torch.testing.assert_close(model.soft_tokens(cf), expected)
    torch.testing.assert_close(model.represent_soft_tokens(cf, batch_size=1), expected)


def test_cf_adaptor_trains_in_phase2_like_the_ilm(tiny_llm, catalogue, cf_embeddings):
    llm, tok = tiny_llm
    torch.manual_seed(0)
    model = CFAdaptorBaseline(16, num_tokens=4, llm_hidden_size=256)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    llm_before = {k: v.clone() for k, v in llm.state_dict().items()}
    config = Phase2Config(steps=2, batch_size=4, warmup_steps=1)
    tasks = build_task_mix(catalogue, config, np.arange(40), None, seed=0)
    train_phase2(model, llm, tok, tasks, torch.from_numpy(cf_embeddings), config, TrainingHistory(), progress=False)
    assert all(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, llm.state_dict()[k]) for k, v in llm_before.items())


def test_title_blocks_are_the_embedded_titles(tiny_llm, catalogue):
    llm, tok = tiny_llm
    movies = catalogue.movies[:2]
    blocks = title_blocks(llm, tok, movies)
    for block, movie in zip(blocks, movies):
        ids = tok(movie.display_title, add_special_tokens=False)["input_ids"]
        assert torch.equal(block, llm.get_input_embeddings().weight[ids])
