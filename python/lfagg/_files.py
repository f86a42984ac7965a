"""Files written atomically: a write that is interrupted leaves the previous file or none."""
from __future__ import annotations

import contextlib
import os
import secrets
import stat


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block
    ends without an exception, deleted otherwise. A symbolic link is written through (its
    target replaced, as open() would write it). The file gets the permissions of one that
    open() creates (the umask's), or those of the file it replaces. ValueError when
    ``path`` is empty, a directory or another file that is not a regular one (a device, a
    pipe: renaming over it would replace it); OSError naming ``path`` when it cannot be
    written."""
    given = os.fsdecode(path)
    if not given:
        raise ValueError("the path of the file to write is empty")
    path = os.path.realpath(given)
    if os.path.isdir(path):  # os.replace would fail naming the temporary file
        raise ValueError(f"{given}: a directory; give the path of a file to write")
    refuse_special_file(path, given)
    tmp = _create_beside(path, given)
    try:
        if os.path.exists(path):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as exc:  # a full disk: name the user's file, not the temporary one
            raise OSError(exc.errno, f"cannot write {given}: {exc.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def refuse_special_file(path, shown=None) -> None:
    """ValueError when ``path`` (named ``shown`` in the message, default itself) is a device,
    pipe or socket: writing there, or renaming a file over it, would replace it."""
    if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
        raise ValueError(f"{shown or path}: not a regular file (a device, pipe or socket): give the path of a file "
                         "to write")


def _create_beside(path: str, given: str) -> str:
    """A new, empty hidden file in path's folder, created as open() creates files (mode
    0o666 less the umask, which the kernel applies: reading the umask would mean setting
    it, for every thread of the process); errors name ``given``, the path as the user gave it."""
    folder, name = os.path.split(path)
    while True:  # the name's first 200 characters: a name of up to 255 still leaves room for the suffix
        tmp = os.path.join(folder, f".{name[:200]}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:  # name the user's file, not the temporary one
            raise OSError(exc.errno, f"cannot write {given}: {exc.strerror}") from None


def within(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, their links resolved."""
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def replaced_input(out, inputs):
    """The first of the paths ``inputs`` (None ones skipped) that writing ``out`` would
    replace: ``out`` itself, or a folder ``out`` that holds it; None when there is none."""
    return next((source for source in inputs if source is not None and within(source, out)), None)
