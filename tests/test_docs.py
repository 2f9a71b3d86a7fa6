"""Docs drift: every CLI command is in the README, and the README's links point at real files."""

from __future__ import annotations

import re
from pathlib import Path

from cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_cli_command_is_in_the_readme():
    missing = [name for name in COMMANDS if f"kuleshov {name}" not in README]
    assert not missing, f"commands not shown in README.md: {missing}"


def test_readme_links_to_files_that_exist():
    links = re.findall(r"\]\(([^)#:]+)\)", README)
    assert links, "the README links to its docs"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_readme_quick_start_commands_are_make_targets():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no '{target}' target"
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
