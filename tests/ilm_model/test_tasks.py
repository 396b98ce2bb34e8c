import numpy as np
import pytest
import torch

from ilm_model.configuration import Phase2Config
from ilm_model.interactions import Interactions
from ilm_model.item_text import describe
from ilm_model.tasks import (
    TaskMix,
    build_task_mix,
    conversation_examples,
    describe_examples,
    history_placeholder,
    next_item_examples,
)


def test_history_placeholder():
    assert history_placeholder(1) == "{item}"
    assert history_placeholder(2) == "{item} and {item}"
    assert history_placeholder(3) == "{item}, {item} and {item}"
    with pytest.raises(ValueError):
        history_placeholder(0)


def test_describe_examples(catalogue):
    (example,) = describe_examples(catalogue, [3], "Describe this movie: {item}")
    assert example.items == (3,) and example.target == 3 and example.answer == describe(catalogue.movies[3])


def test_next_item_examples_are_history_windows_of_allowed_items(catalogue):
    history = np.array([0, 1, 2, 3, 4, 5])
    allowed = np.ones(40, dtype=bool)
    allowed[2] = False
    examples = next_item_examples(
        catalogue, Interactions([history]), allowed, "I liked {history}.", 2, 10, np.random.default_rng(0)
    )
    kept = [0, 1, 3, 4, 5]  # row 2 is held out, so it appears nowhere
    expected = [((kept[t - 2], kept[t - 1]), kept[t]) for t in range(2, len(kept))]
    assert [(e.items, e.target) for e in examples] == expected
    assert all(e.instruction == "I liked {item} and {item}." for e in examples)
    assert examples[0].answer == catalogue.movies[3].display_title


def test_conversation_examples_constrain_by_a_genre_of_a_later_item(catalogue):
    history = np.arange(10)
    examples = conversation_examples(
        catalogue, Interactions([history]), np.ones(40, bool), "I loved {history}. A {genre} one?", 8,
        np.random.default_rng(0),
    )
    assert examples
    for e in examples:
        a, b = e.items
        assert b == a + 1 and e.target > b  # two consecutive likes, then a later item
        genre = e.instruction.split("A ")[1].split(" one?")[0]
        assert genre in catalogue.movies[e.target].genres
        assert e.instruction.startswith("I loved {item} and {item}.")


def test_mix_follows_the_weights_and_refuses_empty_kinds(catalogue):
    config = Phase2Config(describe_weight=1.0, next_item_weight=3.0)
    mix = build_task_mix(catalogue, config, np.arange(40), Interactions([np.arange(40)]), seed=0)
    kinds = [e.kind for e in mix.sample(2000, torch.Generator().manual_seed(0))]
    assert abs(kinds.count("next_item") / 2000 - 0.75) < 0.04 and "conversation" not in kinds
    with pytest.raises(ValueError, match="no examples"):
        build_task_mix(catalogue, config, np.arange(40), None, seed=0)
    with pytest.raises(ValueError, match="no examples"):
        TaskMix({"describe": []}, {"describe": 1.0})


def test_held_out_rows_appear_in_no_example(catalogue):
    config = Phase2Config(next_item_weight=1.0, conversation_weight=1.0)
    train = np.arange(0, 40, 2)
    mix = build_task_mix(catalogue, config, train, Interactions([np.arange(40), np.arange(39, -1, -1)]), seed=0)
    rows = {r for pool in mix.pools.values() for e in pool for r in (*e.items, e.target)}
    assert rows <= set(train.tolist())
