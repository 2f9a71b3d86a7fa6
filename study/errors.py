"""Errors and problems that are shown to people, never as tracebacks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and a plain sentence saying what."""

    where: str  # e.g. "study.yaml: design.clips_per_participant" or "manifest.csv line 4, column file"
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class UserError(Exception):
    """Bad input from a researcher or participant; the CLI prints it and exits non-zero."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])

    def __str__(self) -> str:
        lines = [self.args[0]] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)
