"""Batch, chapter 5: output locks. One ``O_EXCL`` lock file per output while a job writes it, with a
heartbeat, so that overlapping runs (or a rerun after a crash) never write one output twice at once."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

DEFAULT_STALE_LOCK_SECONDS = 3600.0   # a lock whose heartbeat is older than this is stale
HEARTBEAT_SECONDS = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class OutputLock:
    """An ``O_EXCL`` lock file ``<output>.lock`` held while one job writes ``<output>``.

    The file holds ``{"pid", "host", "token", "started"}``; its mtime is a heartbeat (refreshed
    during training). A lock is stale when its process is dead (same host), when its heartbeat is
    older than ``stale_seconds``, or when it carries the same ``token`` (a previous attempt of this
    very task whose worker died); a stale lock is taken over.
    """

    def __init__(self, output: Path, token: str, stale_seconds: float = DEFAULT_STALE_LOCK_SECONDS):
        self.path = Path(str(output) + ".lock")
        self.token = token
        self.stale_seconds = stale_seconds
        self.held = False
        self._last_beat = 0.0

    def _stale(self) -> bool:
        try:
            st = self.path.stat()
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            data = {}
            try:
                st = self.path.stat()
            except OSError:
                return True
        if time.time() - st.st_mtime > self.stale_seconds:
            return True
        if data.get("token") == self.token:
            return True
        if data.get("host") == socket.gethostname() and isinstance(data.get("pid"), int):
            return not _pid_alive(data["pid"])
        # unreadable (being written right now) or another host: trust the heartbeat only
        return False

    def acquire(self) -> bool:
        """True when the lock is ours; False when a live process holds it."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._stale():
                    return False
                # move the stale lock aside (one taker wins the rename), then retry the O_EXCL create
                aside = Path(f"{self.path}.stale-{uuid.uuid4().hex[:8]}")
                with contextlib.suppress(OSError):
                    os.rename(self.path, aside)
                    aside.unlink()
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token, "started": time.time()}
            os.write(fd, json.dumps(info).encode())
            os.close(fd)
            self.held = True
            self._last_beat = time.time()
            return True
        return False

    def heartbeat(self) -> None:
        now = time.time()
        if self.held and now - self._last_beat >= HEARTBEAT_SECONDS:
            self._last_beat = now
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.held = False


def remove_stale_temps(output: Path) -> int:
    """Remove temporary files a killed writer left next to ``output`` (``atomic_output`` names them
    ``.<name>.<random>.tmp...``). Call only while holding the output's lock."""
    n = 0
    for p in output.parent.glob(f".{output.name}.*.tmp*"):
        with contextlib.suppress(OSError):
            if p.is_dir():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
            n += 1
    return n
