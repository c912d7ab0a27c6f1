"""Atomic writes: a directory or file appears complete at its final path, or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from minimind.errors import MiniMindError


@contextmanager
def atomic_directory(path: str | Path, marker: str) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces `path` (an existing directory is
    moved aside first and deleted after), on error it is removed and `path` is left as it was.

    Only an empty directory, or one holding the file `marker` (one this code wrote), is ever replaced: anything
    else at `path` is an error, so a mistyped --out cannot delete the user's files."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or (path / marker).is_file())):
        raise MiniMindError(f"{path}: exists and is not a directory this command wrote (no {marker}); "
                            "choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        _apply_umask(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, old / path.name)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _apply_umask(directory: Path) -> None:
    """mkdtemp makes a private directory; give it (and its files) the permissions a plain mkdir would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for file in directory.iterdir():
        os.chmod(file, (0o777 if file.is_dir() else 0o666) & ~umask)
