"""The ILM benchmark's verdicts and tables from hand-made results (no training)."""

from benchmarks import ilm


def _results():
    out = {}
    for v in ilm.variants(ablation_phase2=False):
        r = {"phase1_seconds": 1.0, "itc_recall@10_after_phase1": 0.1}
        if v.phase2:
            r |= {"next_item_recall@10": 0.3, "next_item_recall@10_stderr": 0.05, "title_accuracy": 0.2,
                  "genre_f1": 0.4, "itc_recall@10": 0.2, "example": "a -> b"}
        out[v.name] = r
    out["Baseline: text-only prompts (titles)"]["next_item_recall@10"] = 0.35
    out[ilm.WITH_IIC]["itc_recall@10_after_phase1"] = 0.15
    return out


def test_variants_cover_the_issue():
    names = [v.name for v in ilm.variants(False)]
    assert len(names) == len(set(names)) == 14
    assert sum(n.startswith("Baseline") for n in names) == 3
    assert {v.k for v in ilm.variants(False)} == set(ilm.K_VALUES)
    ablations = [v for v in ilm.variants(False) if not v.phase2]
    assert all(v.phase2 for v in ilm.variants(True))
    assert {tuple(v.losses) for v in ablations if v.k == 8} == {
        tuple(x for x in ilm.LOSSES if x != drop) for drop in ilm.LOSSES
    }


def test_targets_say_held_or_missed_by_how_much():
    cost = [
        {"prompt": "text descriptions", "tokens": 500, "ttft_seconds": 1.0},
        {"prompt": "soft tokens K=4", "tokens": 100, "ttft_seconds": 0.4},
        {"prompt": "soft tokens K=8", "tokens": 250, "ttft_seconds": 0.6},
    ]
    lines = ilm.targets(_results(), cost)
    assert ("ILM beats Baseline: text-only prompts (titles) on next_item_recall@10: MISSED (0.300 vs 0.350, -0.050)"
            in lines)
    assert "ILM beats Baseline: MLP adaptor on CF (CoLLM-style) on genre_f1: MISSED (0.400 vs 0.400, +0.000)" in lines
    assert ("IIC improves over ITC+ITG+ITM alone on itc_recall@10_after_phase1: met (0.150 vs 0.100, +0.050)"
            in lines)
    assert ("IIC improves the full ILM over the ILM without IIC on itc_recall@10_after_phase1: MISSED "
            "(0.100 vs 0.100, +0.000)" in lines)
    assert any(line.startswith("soft tokens K=4 vs text descriptions: prompt 5.00x shorter (target >= 4x: met), "
                               "first token 2.50x faster (target >= 2x: met)") for line in lines)
    assert any("prompt 2.00x shorter (target >= 4x: MISSED), first token 1.67x faster (target >= 2x: MISSED)" in line
               for line in lines)


def test_table_marks_unmeasured_cells():
    table = ilm.table(_results())
    assert "| ablation: K=1 | n/a | n/a | n/a | 0.100 | n/a | 1 | 0 |" in table
    assert table.count("\n") == 2 + 13


def test_k_choice_and_ablation_scope_follow_the_phase_2_results():
    results = _results()
    assert ilm.k_choice(results) is None, "only K=8 ran phase 2"
    assert ilm.ablation_scope(results).startswith("Loss and K ablations are scored after phase 1 only")
    results["ablation: K=1"] |= {"next_item_recall@10": 0.2, "genre_f1": 0.5}
    results["ablation: K=4"] |= {"next_item_recall@10": 0.3, "genre_f1": 0.45}
    assert ilm.k_choice(results) == (
        "K by next-item R@10 / genre F1 after phase 2: K=1 0.200 / 0.500, K=4 0.300 / 0.450, K=8 0.300 / 0.400; "
        "best K=4"
    )
    assert ilm.ablation_scope(results).startswith("Ablations with phase 2 and the LLM metrics too: K=1, K=4;")
