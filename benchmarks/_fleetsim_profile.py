"""Sampling the control plane with py-spy while a benchmark runs (``--profile DIR``).

Theory of operation: :func:`profiled` starts one ``py-spy record`` (raw,
collapsed stacks, 200 Hz, non-blocking) per process of the server's session,
stops them with SIGINT when the block ends and prints the functions with the
most samples, inclusive and self, to stderr. py-spy is found beside the
running interpreter or on ``PATH`` (``pip install py-spy``). Samples count
time on a thread's stack, not CPU time alone: a thread waiting inside C code
(SQLite's busy handler, ``epoll``) is sampled too.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from benchmarks._fleetsim_stack import Stack


def say(message: str) -> None:
    print(f"[profile] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def profiled(stack: Stack, out: Path | None, label: str) -> Iterator[None]:
    """py-spy record every control-plane process while the block runs (if ``out`` is set)."""
    if out is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    beside = Path(sys.executable).with_name("py-spy")
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        sys.exit("--profile needs py-spy: pip install py-spy")
    spies = []
    for pid in stack.server_pids():
        path = out / f"{label}-{pid}.txt"
        argv = [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
        argv += ["--output", str(path), "--nonblocking"]
        quiet = subprocess.DEVNULL
        spies.append((subprocess.Popen(argv, stdout=quiet, stderr=quiet), path))
    try:
        yield
    finally:
        for proc, _ in spies:
            proc.send_signal(signal.SIGINT)
        for proc, _ in spies:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        summarize_profiles([p for _, p in spies])


def summarize_profiles(paths: list[Path], top: int = 25) -> None:
    """Print the functions with the most samples (self and inclusive) of py-spy's raw output."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            samples = int(count)
            frames = stack.split(";")
            total += samples
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + samples
            own[frames[-1]] = own.get(frames[-1], 0) + samples
    if not total:
        say("no profile samples")
        return
    say(f"profile: {total} samples in {', '.join(str(p) for p in paths)}")
    for title, table in (("inclusive", inclusive), ("self", own)):
        say(f"top {top} by {title} samples:")
        for frame, samples in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            say(f"  {samples / total:6.1%}  {frame[:160]}")


__all__ = ["profiled", "summarize_profiles"]
