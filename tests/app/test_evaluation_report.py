"""Report files: Markdown, self-contained HTML, results.json with every figure, PNG plots, console table."""

from __future__ import annotations

import base64

from rich.console import Console

from app.evaluation.importers import EvalTurn, Utterance
from app.evaluation.replay import EvaluationResult, run_evaluation
from app.evaluation.report import REFERENCES, format_table, write_report
from app.evaluation.systems import System, SystemOutput
from retrieval.catalogue import Catalogue, Movie

CATALOGUE = Catalogue(Movie(item_id=i, title=f"Movie {i}", year=2000) for i in range(1, 61))


class Fixed(System):
    def __init__(self, name: str, ids: list[int]):
        self.name, self.ids = name, ids

    def recommend(self, context, k):
        return SystemOutput(item_ids=self.ids[:k])


def _result() -> EvaluationResult:
    turns = [
        EvalTurn(dataset="redial", dialogue_id="d", turn_id=str(i), context=[Utterance(role="user", text="hi")],
                 targets=[i + 2], mentioned=[1])
        for i in range(1, 6)
    ]
    systems = [Fixed("first", list(range(1, 61))), Fixed("reversed", list(range(60, 0, -1)))]
    return run_evaluation(turns, systems, CATALOGUE, seed=3, progress=False)


def test_report_files(tmp_path):
    result = _result()
    files = write_report(result, tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["conditions_redial.png", "recall_curves_redial.png", "report.html", "report.md", "results.json"]
    for plot in files.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    markdown = files.markdown.read_text()
    # targets 3..7 ranked among [2..60] after excluding movie 1: ranks 2..6 -> R@5 = 4/5, R@1 = 0
    assert "| first | 5 | 5 | 0.000 ± 0.000 | 0.800 ± 0.200 | 1.000 ± 0.000 |" in markdown  # system, turns, rows
    assert "| GPT-4 (published, full test split) |  |  | 0.050 | 0.140 | 0.201 | 0.267 |" in markdown
    assert "sampled turns" not in markdown
    assert "| first | seen excluded | dis | 0 | n/a |" in markdown, "a condition without rows has no figures"
    assert "![recall_curves_redial](recall_curves_redial.png)" in markdown

    page = files.html.read_text()
    encoded = base64.b64encode(files.plots[0].read_bytes()).decode()
    assert f"data:image/png;base64,{encoded}" in page
    assert "<td>first</td>" in page and "src=\"http" not in page

    back = EvaluationResult.model_validate_json(files.json_path.read_text())
    assert back.summaries == result.summaries
    assert back.rows == result.rows
    assert back.summary("first", "redial").value("recall@5").mean == 0.8


def test_console_table_has_ours_and_the_references():
    console = Console(width=200, record=True)
    console.print(format_table(_result()))
    text = console.export_text()
    assert "first" in text and "reversed" in text
    assert "GPT-4*" in text and "0.267" in text and "Vicuna-13B*" in text
    assert {r.model for r in REFERENCES if r.dataset == "inspired"} == {"GPT-4"}


def test_sampled_systems_get_a_same_turns_table(tmp_path):
    turns = [
        EvalTurn(dataset="redial", dialogue_id="d", turn_id=str(i), context=[Utterance(role="user", text="hi")],
                 targets=[i + 2], mentioned=[1])
        for i in range(1, 6)
    ]
    systems = [Fixed("first", list(range(1, 61))), Fixed("slow", list(range(1, 61)))]
    only = {"slow": {("redial", "d", "1"), ("redial", "d", "2")}}
    result = run_evaluation(turns, systems, CATALOGUE, seed=3, progress=False, only=only)
    markdown = write_report(result, tmp_path / "out").markdown.read_text()
    assert "| first | 5 | 5 | 0.000 ± 0.000 | 0.800 ± 0.200 |" in markdown
    assert "| slow | 2 | 2 | 0.000 ± 0.000 | 1.000 ± 0.000 |" in markdown  # targets 3, 4 at ranks 2, 3
    assert "## redial: every system on the same 2 sampled turns (rec, seen excluded)" in markdown
    assert "| first | 2 | 2 | 0.000 ± 0.000 | 1.000 ± 0.000 |" in markdown
