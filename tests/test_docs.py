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


def test_settings_doc_is_generated_and_up_to_date():
    from study import config

    doc = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    region = doc.split(config.DOC_START, 1)[1].split(config.DOC_END, 1)[0]
    assert region.strip() == config.settings_markdown().strip(), (
        "docs/settings.md is out of date: run python -m study.config docs/settings.md")
    for s in config.SETTINGS:
        assert s.help.strip(), f"{s.name} has no help text"
    assert "docs/settings.md" in README


def test_every_environment_variable_is_declared_and_read_through_config():
    from study.config import BY_NAME

    sources = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "node_modules" not in p.parts]
    used, direct = set(), []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"\bKULESHOV_[A-Z_]+\b", text))
        if path != ROOT / "study" / "config.py" and re.search(r"os\.(environ\.get|getenv)\(\s*[\"']KULESHOV_|"
                                                              r"os\.environ\[[\"']KULESHOV_[A-Z_]+[\"']\](?!\s*=)", text):
            direct.append(str(path.relative_to(ROOT)))
    assert used - set(BY_NAME) == set(), f"KULESHOV_ variables used but not declared in study/config.py: {used - set(BY_NAME)}"
    assert not direct, f"read the environment through study.config.setting: {direct}"
