"""Reports of an evaluation run: Markdown, self-contained HTML, JSON of every figure, PNG plots, console table.

The headline setting is the published one: condition `rec`, items mentioned earlier excluded, targets
outside the catalogue dropped. Published zero-shot numbers (He et al., CIKM 2023, full ReDial test split and
INSPIRED test split) are printed beside ours; ours use ML-latest-small as the catalogue and, for ReDial,
`test-dev` (about half the test split), so they are comparable in setting, not identical in data.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path

from typing import Any

from pydantic import BaseModel
from rich.table import Table

from app.evaluation.metrics import MeanStderr
from app.evaluation.replay import CONDITIONS, MODES, EvaluationResult, SystemSummary
from retrieval.storage import write_atomic

HEADLINE_MODE = "seen_excluded"
HEADLINE_CONDITION = "rec"
REFERENCE_SOURCE = "He et al., Large Language Models as Zero-Shot Conversational Recommenders, CIKM 2023"


class Reference(BaseModel):
    """A published zero-shot result (condition rec, seen excluded, out-of-catalogue dropped)."""

    model: str
    dataset: str
    recall: dict[int, float]
    source: str = REFERENCE_SOURCE


REFERENCES = [
    Reference(model="GPT-4", dataset="redial", recall={1: 0.050, 5: 0.140, 10: 0.201, 20: 0.267}),
    Reference(model="GPT-3.5-turbo", dataset="redial", recall={10: 0.183}),
    Reference(model="Vicuna-13B", dataset="redial", recall={10: 0.120}),
    Reference(model="GPT-4", dataset="inspired", recall={10: 0.185}),
]


class ReportFiles(BaseModel):
    markdown: Path
    html: Path
    json_path: Path
    plots: list[Path]


def write_report(result: EvaluationResult, out_dir: Path) -> ReportFiles:
    """Write `report.md`, `report.html` (plots inlined), `results.json` and the PNG plots into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for dataset in result.datasets:
        plots.append(_plot_recall_curves(result, dataset.name, out_dir / f"recall_curves_{dataset.name}.png"))
        plots.append(_plot_conditions(result, dataset.name, out_dir / f"conditions_{dataset.name}.png"))
    sections = _sections(result)
    markdown = out_dir / "report.md"
    write_atomic(markdown, _markdown(sections, plots).encode())
    html_path = out_dir / "report.html"
    write_atomic(html_path, _html(sections, plots).encode())
    json_path = out_dir / "results.json"
    write_atomic(json_path, result.model_dump_json(indent=1).encode())
    return ReportFiles(markdown=markdown, html=html_path, json_path=json_path, plots=plots)


def format_table(result: EvaluationResult) -> Table:
    """Headline figures (condition rec, seen excluded) per dataset and system, published ones marked *."""
    ks = result.k_list
    table = Table(title=f"rec, seen excluded, seed {result.seed} (* published)", caption=None)
    for column in ["system", "rows", *(f"R@{k}" for k in ks), "NDCG@10", "repeat", "OOC", "p50 ms"]:
        table.add_column(column, justify="left" if column == "system" else "right", no_wrap=True)
    blank = [""] * (len(ks) + 5)
    for dataset in result.datasets:
        table.add_row(f"[bold]{dataset.name}[/]", *blank)
        for s in (x for x in result.summaries if x.dataset == dataset.name):
            cell = s.metrics[HEADLINE_MODE][HEADLINE_CONDITION]
            table.add_row(
                s.system, str(cell.n), *(_num(cell.values[f"recall@{k}"].mean) for k in ks),
                _num(_get(s, "ndcg@10")), _num(s.repeat_share.mean if s.repeat_share.n else None),
                _num(s.out_of_catalogue_name_share), _num(s.latency_p50_ms, 1),
            )
        for ref in (r for r in REFERENCES if r.dataset == dataset.name):
            table.add_row(f"{ref.model}*", "", *(_num(ref.recall.get(k)) for k in ks), "", "", "", "")
    return table


# ---- sections shared by Markdown and HTML -------------------------------------------------------------


class _Section(BaseModel):
    title: str
    text: str = ""
    headers: list[str] = []
    rows: list[list[str]] = []


def _sections(result: EvaluationResult) -> list[_Section]:
    ks = result.k_list
    sections = [
        _Section(
            title="Setup",
            text=(
                f"Seed {result.seed}; k = {', '.join(map(str, ks))}. One row per (recommendation turn, target); "
                "condition `rec`: target not mentioned earlier in the dialogue, `dis`: mentioned earlier. "
                "`seen excluded` removes every movie mentioned earlier from the predictions (the published "
                "setting; `dis` targets then cannot be found), `seen kept` scores the list as returned. "
                "Targets outside the catalogue are dropped from scoring and counted under coverage. "
                "Values are mean ± standard error over rows."
            ),
        ),
        _Section(
            title="Datasets",
            headers=["dataset", "turns", "turns with targets", "rows", "rec rows", "dis rows", "target occurrences", "coverage"],
            rows=[
                [d.name, str(d.turns), str(d.turns_with_targets), str(d.rows), str(d.rows_rec), str(d.rows_dis),
                 str(d.targets), f"{d.coverage:.3f}"]
                for d in result.datasets
            ],
        ),
    ]
    if result.linking:
        sections.append(
            _Section(
                title="Entity linking (whole files)",
                headers=["dataset", "target match rate", "targets linked", "entity match rate", "mentions linked", "most frequent unmatched"],
                rows=[
                    [s.dataset, f"{s.match_rate:.3f}", f"{s.target_occurrences_linked}/{s.target_occurrences}",
                     f"{s.entity_match_rate:.3f}", f"{s.mention_entities_linked}/{s.mention_entities}",
                     "; ".join(s.unmatched_examples[:8])]
                    for s in result.linking
                ],
            )
        )
    metric_headers = [*(f"R@{k}" for k in ks), "NDCG@10", "MRR@10"]
    for dataset in result.datasets:
        summaries = [s for s in result.summaries if s.dataset == dataset.name]
        rows = [[s.system, str(s.turns), *_metric_cells_with_n(s, ks)] for s in summaries]
        rows += [
            [f"{ref.model} (published, full test split)", "", "", *(_num(ref.recall.get(k)) for k in ks), "", ""]
            for ref in REFERENCES if ref.dataset == dataset.name
        ]
        sections.append(
            _Section(title=f"{dataset.name}: condition rec, seen excluded", headers=["system", "turns", "rows", *metric_headers], rows=rows)
        )
        common = [s for s in result.common_summaries if s.dataset == dataset.name]
        if common:
            sections.append(
                _Section(
                    title=f"{dataset.name}: every system on the same {common[0].turns} sampled turns (rec, seen excluded)",
                    text="Some systems replayed only a sample of the turns; here all are scored on those turns alone.",
                    headers=["system", "turns", "rows", *metric_headers],
                    rows=[[s.system, str(s.turns), *_metric_cells_with_n(s, ks)] for s in common],
                )
            )
        other = [
            [s.system, mode.replace("_", " "), condition, str(s.metrics[mode][condition].n), *_metric_cells(s, ks, mode, condition)]
            for s in summaries for mode in MODES for condition in CONDITIONS
            if (mode, condition) != (HEADLINE_MODE, HEADLINE_CONDITION)
        ]
        sections.append(
            _Section(title=f"{dataset.name}: other conditions", headers=["system", "mode", "condition", "rows", *metric_headers], rows=other)
        )
        sections.append(
            _Section(
                title=f"{dataset.name}: behaviour per turn",
                headers=["system", "turns", "failed", f"repeat share @{result.repeat_k}",
                         f"constraint violations @{result.repeat_k} (turns with constraints)", "named titles",
                         "out-of-catalogue names", "out-of-catalogue ids", "latency p50 ms", "latency p95 ms"],
                rows=[
                    [s.system, str(s.turns), str(s.failed_turns), _pm(s.repeat_share) if s.repeat_share.n else "n/a",
                     f"{s.constraint_violations} ({s.constrained_turns})", str(s.named_titles), _share(s.unresolved_titles, s.named_titles), str(s.out_of_catalogue_ids),
                     _num(s.latency_p50_ms, 1), _num(s.latency_p95_ms, 1)]
                    for s in summaries
                ],
            )
        )
    sections.append(
        _Section(
            title="Systems",
            headers=["system", "configuration"],
            rows=[[str(d.get("name")), json.dumps({k: v for k, v in d.items() if k != "name"})] for d in result.systems],
        )
    )
    if result.malformed:
        sections.append(
            _Section(
                title="Skipped input lines",
                headers=["file", "count", "lines (first 20)"],
                rows=[[f, str(len(m)), ", ".join(f"{x.line} ({x.reason})" for x in m[:20])] for f, m in result.malformed.items()],
            )
        )
    notes = [*result.notes, f"Published references: {REFERENCE_SOURCE}."]
    sections.append(_Section(title="Notes", text="\n".join(f"- {n}" for n in notes)))
    return sections


def _metric_cells(s: SystemSummary, ks: Sequence[int], mode: str, condition: str) -> list[str]:
    values = s.metrics[mode][condition].values
    return [*(_pm(values[f"recall@{k}"]) for k in ks), _pm(values.get("ndcg@10")), _pm(values.get("mrr@10"))]


def _metric_cells_with_n(s: SystemSummary, ks: Sequence[int]) -> list[str]:
    """The headline setting's row count, then its metric cells."""
    return [str(s.metrics[HEADLINE_MODE][HEADLINE_CONDITION].n), *_metric_cells(s, ks, HEADLINE_MODE, HEADLINE_CONDITION)]


def _get(s: SystemSummary, metric: str) -> float | None:
    value = s.metrics[HEADLINE_MODE][HEADLINE_CONDITION].values.get(metric)
    return value.mean if value is not None else None


def _pm(value: MeanStderr | None) -> str:
    if value is None:
        return ""
    return "n/a" if value.n == 0 else f"{value.mean:.3f} ± {value.stderr:.3f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.1%})" if whole else "n/a (no names)"


def _markdown(sections: list[_Section], plots: list[Path]) -> str:
    lines = ["# ilmrec conversational evaluation", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.headers:
            lines.append("| " + " | ".join(section.headers) + " |")
            lines.append("|" + "|".join("---" for _ in section.headers) + "|")
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in section.rows]
            lines.append("")
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(lines)


def _html(sections: list[_Section], plots: list[Path]) -> str:
    body = ["<h1>ilmrec conversational evaluation</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            body += [f"<p>{html.escape(line)}</p>" for line in section.text.splitlines()]
        if section.headers:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in section.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in section.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    body.append("<h2>Plots</h2>")
    for plot in plots:
        encoded = base64.b64encode(plot.read_bytes()).decode()
        body.append(f'<figure><img alt="{html.escape(plot.stem)}" src="data:image/png;base64,{encoded}"></figure>')
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th:first-child,"
        "td:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>ilmrec evaluation</title><style>{style}</style>'
        f"</head><body>{''.join(body)}</body></html>"
    )


# ---- plots ---------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported lazily: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _plot_recall_curves(result: EvaluationResult, dataset: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for s in (x for x in result.summaries if x.dataset == dataset):
        values = s.metrics[HEADLINE_MODE][HEADLINE_CONDITION].values
        means = [values[f"recall@{k}"].mean for k in result.k_list]
        errors = [values[f"recall@{k}"].stderr for k in result.k_list]
        ax.errorbar(result.k_list, means, yerr=errors, marker="o", capsize=3, label=s.system)
    for ref in (r for r in REFERENCES if r.dataset == dataset):
        ks = sorted(ref.recall)
        ax.plot(ks, [ref.recall[k] for k in ks], linestyle="--", marker="x", label=f"{ref.model} (published)")
    ax.set_xscale("log")
    ax.set_xticks(result.k_list, [str(k) for k in result.k_list])
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k")
    ax.set_title(f"{dataset}: Recall@k (rec, seen excluded)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _plot_conditions(result: EvaluationResult, dataset: str, path: Path) -> Path:
    k = 10 if 10 in result.k_list else result.k_list[-1]
    summaries = [s for s in result.summaries if s.dataset == dataset]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(MODES), figsize=(10, 3.8), sharey=True)
    width = 0.8 / max(len(summaries), 1)
    for ax, mode in zip(axes, MODES):
        for i, s in enumerate(summaries):
            values = [s.metrics[mode][c].values[f"recall@{k}"] for c in CONDITIONS]
            positions = [j + i * width for j in range(len(CONDITIONS))]
            ax.bar(positions, [v.mean for v in values], width, yerr=[v.stderr for v in values], capsize=2, label=s.system)
        ax.set_xticks([j + width * (len(summaries) - 1) / 2 for j in range(len(CONDITIONS))], list(CONDITIONS))
        ax.set_title(mode.replace("_", " "))
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"Recall@{k}")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"{dataset}: Recall@{k} by condition")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
