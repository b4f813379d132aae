"""One agent per data directory: an advisory ``flock`` on ``state/agent.lock``.

Theory of operation. ``fleet-agent run`` holds an exclusive lock on the data
directory's lock file for its whole life; ``fleet-agent enroll`` takes it
briefly. A second daemon, or an enrollment while the daemon runs, fails at
once with :class:`~agent.errors.StateError` instead of two processes writing
the same journal. The kernel drops the lock when the process dies, even by
``kill -9``, so a crash never leaves a stale lock behind. The file holds the
holder's pid, for humans.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from agent.errors import StateError

LOCK_FILE = Path("state") / "agent.lock"


class DataDirLock:
    def __init__(self, data_dir: Path, *, blocking: bool = False, purpose: str = "run") -> None:
        self.path = data_dir / LOCK_FILE
        self.blocking, self.purpose = blocking, purpose
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            holder = self.path.read_text().strip() or "another process"
            raise StateError(
                f"cannot {self.purpose}: an agent (pid {holder}) is using "
                f"{self.path.parent.parent}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.release()


__all__ = ["LOCK_FILE", "DataDirLock"]
