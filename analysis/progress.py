"""Plain-text progress on stderr for long CLI computations (power simulation, bootstrap).

tqdm is not a dependency of the project, and one rewritten line is all these need: on a
terminal a bar rewritten with \\r, in a log file or CI output one line per tenth.
"""

from __future__ import annotations

import sys


class ProgressBar:
    """progress(done, total, detail) -> one bar on stderr, e.g.
    'bootstrap [#####.....]  50% (100/200 samples, valence)'."""

    def __init__(self, label: str, unit: str, stream=None, width: int = 30):
        self.label, self.unit = label, unit
        self.stream, self.width, self.last = stream or sys.stderr, width, -1

    def __call__(self, done: int, total: int, detail: object = "") -> None:
        pct = int(100 * done / total) if total else 100
        extra = f", {detail}" if detail != "" else ""
        if pct == self.last and done != total:
            return
        if not getattr(self.stream, "isatty", lambda: False)():
            # A log file or CI output cannot rewrite a line: one line per tenth, not per percent.
            if pct // 10 == self.last // 10 and done != total:
                return
            self.last = pct
            self.stream.write(f"{self.label} {pct:3d}% ({done}/{total} {self.unit}{extra})\n")
            self.stream.flush()
            return
        self.last = pct
        fill = int(self.width * done / total) if total else self.width
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (self.width - fill)}] {pct:3d}% "
                          f"({done}/{total} {self.unit}{extra})")
        if done == total:
            self.stream.write("\n")
            self.last = -1  # the next run (another outcome) starts a new bar
        self.stream.flush()
