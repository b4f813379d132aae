"""Numbered step lines for the sensor model's jobs (build and retrain).

Theory of operation: a job knows how many steps it has; each
:meth:`Narrative.step` call prints ``[n/steps] title`` and the first line
beside it, further lines indented under it. Output is plain text (no markup,
no highlighting), so a log file reads the same as a terminal.
"""

from __future__ import annotations

from rich.console import Console


class Narrative:
    """Numbered step lines; plain text, so logs read the same as a terminal."""

    def __init__(self, console: Console, steps: int) -> None:
        self.console = console
        self.steps = steps
        self.current = 0

    def step(self, title: str, *lines: str) -> None:
        self.current += 1
        head = f"[{self.current}/{self.steps}] {title:<9}"
        self.console.print(f"{head} {lines[0] if lines else ''}", markup=False, highlight=False)
        for line in lines[1:]:
            self.console.print(f"{'':<{len(head)}} {line}", markup=False, highlight=False)


__all__ = ["Narrative"]
