"""Paths: those from users resolved and checked; those the product derives kept inside their configured folder.

On its own behalf `ilmrec` writes only under the cache folder (artefacts, checkpoints, the default session
log). `inside` builds such a path from a configured root and derived names and refuses one that would land
elsewhere, through `..` or an absolute name, or a symlink on the way pointing out of the root.
"""

from __future__ import annotations

from pathlib import Path

from app.errors import SettingsError


def user_path(path: Path | str) -> Path:
    """A path as the user meant it: `~` expanded, made absolute, symlinks resolved."""
    return Path(path).expanduser().resolve()


def inside(root: Path, *names: str) -> Path:
    """`root / names...`, resolved; SettingsError when it resolves outside `root` (itself resolved)."""
    base = user_path(root)
    joined = base.joinpath(*names)
    path = joined.resolve()
    if not path.is_relative_to(base):
        raise SettingsError(
            f"refusing to write {joined}: it resolves to {path}, outside {base} (a '..', an absolute name or a "
            "symlink pointing out); remove the link or set cache_dir to the folder you want written"
        )
    return path


def existing_file(path: Path | str, what: str) -> Path:
    """`path` resolved; FileNotFoundError naming `what` (e.g. a CLI flag) when it is missing or not a file."""
    resolved = user_path(path)
    if resolved.is_dir():
        raise FileNotFoundError(f"{what} {path} is a folder; give the file itself")
    if not resolved.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return resolved


def output_folder(path: Path | str) -> Path:
    """`path` resolved, to be written into as a folder; ValueError (for pydantic validators) when it is a file."""
    resolved = user_path(path)
    if resolved.exists() and not resolved.is_dir():
        raise ValueError(f"{path} is a file; give a folder to write into")
    return resolved


def output_file(path: Path | str) -> Path:
    """`path` resolved, to be written as a file; ValueError (for pydantic validators) when it is a folder."""
    resolved = user_path(path)
    if resolved.is_dir():
        raise ValueError(f"{path} is a folder; give a file path")
    return resolved
