"""Files written whole or not at all, with the permissions a plain ``open`` would give.

Readers of a path see its old content or its new content, never half of either. Where Linux's
``O_TMPFILE`` works, the new content has no name until it is complete, so a process killed
mid-write leaves nothing behind; elsewhere a hidden temporary file beside the target is
removed on any exception, Ctrl-C included (only a hard kill can leave it).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

from avgpool._errors import AvgPoolError

__all__ = ["check_directory", "check_outputs", "check_writable", "read_arrays", "write_atomically"]


def _umask() -> int:
    try:  # Linux says it without changing it (os.umask would, for every thread, for a moment)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(path: Any, *, parents: bool = False) -> None:
    """Raise OSError now if ``path`` could not be written (no such directory, no permission),
    so a command with several outputs can refuse before it writes any of them. With
    ``parents``, directories that do not exist yet are fine if they could be created."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if parents:
        check_directory(directory)
    elif not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: no such directory {directory}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory")
    if not os.path.isdir(directory):
        return  # to be created: nothing in it to refuse
    if not os.access(directory, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise PermissionError(f"{path}: not writable")


def check_directory(path: Any) -> None:
    """Raise OSError now if files could not be written into the directory ``path``: it is not a
    directory, or it is missing and could not be created (``mkdir -p``) where it would be."""
    path = os.fspath(path)
    existing = os.path.abspath(path)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == os.path.abspath(path) else f" (cannot create directories in {existing})"
        raise PermissionError(f"{path}: not writable{where}")


def write_atomically(path: Any, content: bytes | str | Callable[[IO[bytes]], None]) -> None:
    """Replace ``path`` with ``content`` (bytes, text as UTF-8, or a function writing to a
    binary file) atomically; the file's mode is 0o666 less the umask."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    write = content if callable(content) else _writer(content)
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o666)
    except (AttributeError, OSError):  # no O_TMPFILE here, or not on this file system
        _write_named(path, directory, write)
        return
    with os.fdopen(fd, "w+b") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
        # link the finished file under a unique name, then move it over the target
        temp = _link_unnamed(f.fileno(), directory, os.path.basename(path))
        if temp is None:  # the kernel would not link it: write it again under a name
            f.seek(0)
            data = f.read()
            _write_named(path, directory, lambda named: named.write(data))
            return
    try:
        os.replace(temp, path)
    except BaseException:
        _unlink(temp)
        raise


def _link_unnamed(fd: int, directory: str, name: str) -> str | None:
    """Give the O_TMPFILE file ``fd`` a unique hidden name in ``directory`` (linkat, following
    /proc/self/fd, as open(2) documents), or None where that is refused."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, at_symlink_follow = -100, 0x400
    source = f"/proc/self/fd/{fd}".encode()
    for _ in range(100):
        temp = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
        if libc.linkat(at_fdcwd, source, at_fdcwd, os.fsencode(temp), at_symlink_follow) == 0:
            return temp
        if ctypes.get_errno() != errno.EEXIST:
            return None
    return None


def _writer(content: bytes | str) -> Callable[[IO[bytes]], None]:
    data = content.encode() if isinstance(content, str) else content
    return lambda f: f.write(data)


def _write_named(path: str, directory: str, write: Callable[[IO[bytes]], None]) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        _unlink(temp)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_arrays(path: Any, error: type[Exception]) -> dict[str, Any]:
    """The named arrays of an ``.npz`` file, for feeding a model: no pickled objects, numbers
    only (bool, int, float: a complex, text or record array would be cast or refused by the
    model far from the cause), at least one axis each. Anything else raises ``error`` with one
    line naming the file and the array."""
    import numpy as np

    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise error(f"{path}: expected an .npz archive of named arrays, got a single array")
            arrays = {k: data[k] for k in data.files}
    except error:
        raise
    except FileNotFoundError:
        raise error(f"{path}: no such inputs file") from None
    except Exception as exc:  # not a ZIP, a pickled array, a damaged member: numpy's and zipfile's errors
        raise error(f"{path}: cannot read inputs ({type(exc).__name__}: {exc})") from None
    if not arrays:
        raise error(f"{path}: the inputs file holds no arrays")
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise error(
                f"{path}: array {name!r} has dtype {array.dtype}; model inputs must be bool, int or float"
            )
        if array.ndim == 0:
            raise error(f"{path}: array {name!r} is a scalar; model inputs need at least one axis")
    return arrays


def check_outputs(*paths: Any, directories: Any = ()) -> None:
    """Raise before anything is written if any output could not be: `AvgPoolError` when one
    path is given for two outputs, OSError when a file (``paths``) or a folder
    (``directories``) could not be written. None entries are outputs not asked for."""
    files = [os.fspath(p) for p in paths if p]
    folders = [os.fspath(d) for d in directories if d]
    everything = [os.path.abspath(p) for p in (*files, *folders)]
    twice = sorted({p for p in everything if everything.count(p) > 1})
    if twice:
        raise AvgPoolError(f"{twice[0]} is given for two outputs: give each its own path")
    for path in files:
        check_writable(path)
    for folder in folders:
        check_directory(folder)
