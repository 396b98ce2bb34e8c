import pytest

from app.errors import SettingsError, describe_user_error, is_user_error
from app.paths import existing_file, inside, output_file, output_folder, user_path


def test_user_paths_expand_home_and_become_absolute(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert user_path("~/data") == tmp_path.resolve() / "data"
    assert user_path("a/../b") == tmp_path.resolve() / "b"


def test_inside_keeps_derived_names_in_the_root(tmp_path):
    assert inside(tmp_path, "artifacts", "ml-100k-abc") == tmp_path.resolve() / "artifacts" / "ml-100k-abc"


@pytest.mark.parametrize("names", [("..", "elsewhere"), ("artifacts", "../../etc"), ("/etc/passwd",)])
def test_inside_refuses_traversal_and_absolute_names(tmp_path, names):
    with pytest.raises(SettingsError, match=f"refusing to write .*outside {tmp_path.resolve()}") as caught:
        inside(tmp_path / "cache", *names)
    assert is_user_error(caught.value) and "\n" not in describe_user_error(caught.value)


def test_inside_refuses_a_symlink_pointing_out(tmp_path):
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    cache.mkdir()
    outside.mkdir()
    (cache / "logs").symlink_to(outside)
    with pytest.raises(SettingsError, match=f"resolves to {outside.resolve()}/sessions.jsonl"):
        inside(cache, "logs", "sessions.jsonl")
    (cache / "inner").mkdir()
    (cache / "alias").symlink_to(cache / "inner")
    assert inside(cache, "alias", "x") == (cache / "inner" / "x").resolve()  # a link within the root is fine


def test_a_symlinked_root_is_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert inside(tmp_path / "link", "artifacts") == (tmp_path / "real" / "artifacts").resolve()


def test_existing_file_names_the_flag(tmp_path):
    (tmp_path / "f.jsonl").write_text("")
    assert existing_file(tmp_path / "f.jsonl", "--log") == (tmp_path / "f.jsonl").resolve()
    with pytest.raises(FileNotFoundError, match=r"^--log .*missing.jsonl does not exist$"):
        existing_file(tmp_path / "missing.jsonl", "--log")
    with pytest.raises(FileNotFoundError, match=r"^--redial .* is a folder; give the file itself$"):
        existing_file(tmp_path, "--redial")


def test_output_paths_must_be_of_the_right_kind(tmp_path):
    (tmp_path / "file").write_text("")
    assert output_folder(tmp_path / "new") == (tmp_path / "new").resolve()
    assert output_file(tmp_path / "new.jsonl") == (tmp_path / "new.jsonl").resolve()
    with pytest.raises(ValueError, match="is a file; give a folder"):
        output_folder(tmp_path / "file")
    with pytest.raises(ValueError, match="is a folder; give a file path"):
        output_file(tmp_path)
