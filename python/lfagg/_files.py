"""Files written atomically: a write that is interrupted leaves the previous file or none."""
from __future__ import annotations

import contextlib
import os
import secrets
import stat


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block
    ends without an exception, deleted otherwise. The file gets the permissions of one
    that open() creates (the umask's), or those of the file it replaces. ValueError when
    ``path`` is a directory."""
    path = os.fsdecode(path)
    if os.path.isdir(path):  # os.replace would fail naming the temporary file
        raise ValueError(f"{path}: a directory; give the path of a file to write")
    tmp = _create_beside(path)
    try:
        if os.path.exists(path):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _create_beside(path: str) -> str:
    """A new, empty hidden file in path's folder, created as open() creates files (mode
    0o666 less the umask, which the kernel applies: reading the umask would mean setting
    it, for every thread of the process)."""
    folder, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:  # name the user's file, not the temporary one
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None


def within(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, their links resolved."""
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def replaced_input(out, inputs):
    """The first of the paths ``inputs`` (None ones skipped) that writing ``out`` would
    replace: ``out`` itself, or a folder ``out`` that holds it; None when there is none."""
    return next((source for source in inputs if source is not None and within(source, out)), None)
