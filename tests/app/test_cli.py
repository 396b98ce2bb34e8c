"""The `ilmrec` command line: parsing, help, config show, one-line errors."""

import json

import pytest

from app.cli import build_parser, main


@pytest.mark.parametrize(
    "command", [["run"], ["serve"], ["train"], ["chat"], ["data"], ["eval"], ["config", "show"]]
)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    assert "--data-path" in capsys.readouterr().out


def test_config_show_prints_effective_settings(capsys):
    assert main(["config", "show", "--llm", "my/model", "--dataset", "ml-100k"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["llm"] == "my/model"
    assert shown["data"]["dataset"] == "ml-100k"


def test_bad_data_path_is_one_line_error(tmp_path, capsys):
    code = main(["train", "--data-path", str(tmp_path / "missing"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert "Traceback" not in err


def test_serve_takes_one_of_api_only_and_ui_only(capsys):
    parser = build_parser()
    assert parser.parse_args(["serve", "--api-only"]).parts == ("api",)
    assert parser.parse_args(["serve", "--ui-only"]).parts == ("ui",)
    assert parser.parse_args(["serve"]).parts is None
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--api-only", "--ui-only"])
    assert "not allowed with" in capsys.readouterr().err


def test_data_prints_statistics(movielens_dir, tmp_path, capsys):
    assert main(["data", "--data-path", str(movielens_dir), "--cache-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "MovieLens ml-latest-small" in shown and "120" in shown  # 120 synthetic users
    assert "40 in the catalogue" in shown and "Comedy" in shown


def test_train_takes_the_last_stage(capsys):
    parser = build_parser()
    assert parser.parse_args(["train"]).stage == "ilm"
    assert parser.parse_args(["train", "retrieval"]).stage == "retrieval"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "phase3"])
    assert "invalid choice" in capsys.readouterr().err


def test_train_retrieval_prints_its_metrics_only(movielens_dir, tmp_path, capsys):
    code = main(["train", "retrieval", "--data-path", str(movielens_dir), "--cache-dir", str(tmp_path),
                 "--llm", "unused/never-loaded"])
    assert code == 0
    shown = capsys.readouterr().out
    assert "Retrieval, held-out users" in shown and "popularity" in shown
    assert "ILM (Q-Former" not in shown


def test_malformed_yaml_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("retrieval: [1,2\n")
    assert main(["config", "show", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert str(config) in err.replace("\n", "") and "line 2: not valid YAML" in " ".join(err.split())


def test_invalid_settings_are_one_line_naming_the_field(monkeypatch, capsys):
    monkeypatch.setenv("ILMREC_SERVER__PORT", "abc")
    assert main(["config", "show"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "server.port:" in err and "_Settings" not in err and "errors.pydantic.dev" not in err


def test_the_ilm_metrics_are_shown_with_what_they_measure():
    from rich.console import Console

    from app.commands import ilm_table

    metrics = {"itc_recall@10_heldout": 0.0067, "itc_recall@10_chance": 0.001, "title_accuracy_heldout": 0.0,
               "genre_f1_heldout": 0.4153, "phase1_seconds": 127.1, "phase2_seconds": 288.6, "n_items": 9742}
    console = Console(width=200, record=True)
    console.print(ilm_table(metrics))
    text = console.export_text()
    assert "0.0067" in text and "chance" in text and "0.4153" in text
    assert "near 0 for SmolLM2-135M" in text and "phase 1 127 s, phase 2 289 s" in text
    assert "n_items" not in text
