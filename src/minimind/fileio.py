"""Atomic writes: a directory or file appears complete at its final path, or not at all; and reading an input
file (an image, a clip) whole, with a size limit and errors that name it."""

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
    """Yield a temporary sibling directory to fill; on success it replaces `path` (`replace_directory`), on error
    it is removed and `path` is left as it was."""
    path = check_replaceable(path, marker)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(path: str | Path, marker: str) -> Path:
    """`path`, with its parent created, once it is known to be absent, empty, or a directory holding the file
    `marker` (one this code wrote): anything else is an error, so a mistyped --out cannot delete the user's files."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or (path / marker).is_file())):
        raise MiniMindError(f"{path}: exists and is not a directory this command wrote (no {marker}); "
                            "choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def replace_directory(tmp: Path, path: Path) -> None:
    """Rename the finished sibling directory `tmp` to `path`; an existing `path` is moved aside first and deleted
    after, so a reader sees the old directory or the new one, never a mixture."""
    _apply_umask(tmp)
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.rename(path, old / path.name)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _apply_umask(directory: Path) -> None:
    """mkdtemp makes a private directory; give it (and its files) the permissions a plain mkdir would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for file in directory.iterdir():
        os.chmod(file, (0o777 if file.is_dir() else 0o666) & ~umask)


def read_input(source: str | Path | bytes, where: str, kind: str, limit: int) -> bytes:
    """A path's bytes (or the bytes given), at most `limit` of them; a MiniMindError "where: kind file … not found /
    unreadable / over the limit" otherwise."""
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise MiniMindError(f"{where}: {kind} file {source} not found") from None
        except OSError as e:
            raise MiniMindError(f"{where}: {kind} file {source} unreadable ({e.strerror or e})") from None
    if len(data) > limit:
        raise MiniMindError(f"{where}: the {kind} is {len(data):,} bytes; the limit is {limit:,}")
    return data


def decode_base64(data: str, where: str, kind: str, limit: int) -> bytes:
    """Base64 text, bare or as a `data:…;base64,` URL → at most `limit` bytes; a MiniMindError naming `where`."""
    import base64
    import binascii

    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if not header.endswith(";base64"):
            raise MiniMindError(f"{where}: a data: URL must be base64 (data:{kind}/…;base64,…)")
    if len(data) > limit * 4 // 3 + 4:
        raise MiniMindError(f"{where}: the {kind} is over the limit of {limit:,} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MiniMindError(f"{where}: not valid base64 ({e})") from None
