"""Write outputs atomically: never a half-written file, never an overwrite without ``force``.

    with atomic_output("out.nii.gz", force=False) as tmp:   # tmp: a path in the same folder
        write_something(tmp)
    # on success tmp is fsync'ed and renamed over the target; on any error it is removed.

Works for files and for folders (a DICOM series): a folder target is replaced whole.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import RunError, UsageError


def check_writable(target: str | os.PathLike, force: bool) -> Path:
    """Fail early (before any work) when the target exists and ``force`` is not set, or when its folder
    does not exist or cannot be written (a probe file is created and removed there)."""
    target = Path(target)
    if target.exists() and not force:
        raise UsageError(f"{target} exists; use -f/--force to overwrite")
    parent = target.parent if str(target.parent) else Path(".")
    probe_folder(parent, target)
    return target


def probe_folder(folder: Path, target: Path) -> None:
    """Create and remove a probe file in ``folder`` (permission bits alone do not tell: read-only
    mounts, ACLs, /proc, quotas); a failure names ``target``, the user's path, not the probe's."""
    if not folder.exists():
        raise UsageError(f"cannot write {target}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise UsageError(f"cannot write {target}: {folder} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".inrv-probe-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise UsageError(f"cannot write {target}: {e.strerror or e} (in {folder})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, *, force: bool = False, folder: bool = False) -> Iterator[Path]:
    target = check_writable(target, force)
    parent = target.parent if str(target.parent) else Path(".")
    # keep the target's suffixes (.nii.gz ...) on the temporary name: writers choose format by suffix
    suffix = "".join(target.suffixes) if not folder else ""
    try:
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + suffix, dir=parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as e:    # name the user's path, not the hidden temporary one
        raise RunError(f"cannot write {target}: {e.strerror or e}") from None
    try:
        yield tmp
        _set_default_mode(tmp, folder)  # mkstemp/mkdtemp make 0600/0700; give the umask's usual mode
        if not folder:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if folder and target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            os.rmdir(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as e:
        _remove(tmp)
        if e.errno == errno.ENOSPC:
            raise RunError(f"disk full writing {target}: free some space and run again") from None
        raise RunError(f"cannot write {target}: {e.strerror or e}") from None   # never the temporary name
    except BaseException:
        _remove(tmp)
        raise


def _set_default_mode(p: Path, folder: bool) -> None:
    """chmod ``p`` to what ``open()``/``mkdir()`` would have given (0666/0777 minus the umask)."""
    mask = _umask()
    with contextlib.suppress(OSError):
        os.chmod(p, (0o777 if folder else 0o666) & ~mask)


def _umask() -> int:
    # Linux shows the umask in /proc (no global change, so safe beside threads); elsewhere set and restore
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(p: Path) -> None:
    with contextlib.suppress(OSError):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
