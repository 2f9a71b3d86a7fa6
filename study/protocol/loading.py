"""Reading a study file (YAML) and validating it: validate_study_file, load_study, cli_validate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from study import instruments as ins
from study.errors import Problem, UserError
from study.protocol.checks import cross_check, design_warnings, manifest_problems
from study.protocol.schema import Study
from study.protocol.translations import translation_warnings
from study.protocol.wording import (
    _adapter,
    _inner_model,
    _list_model,
    _plain,
    _valid_or_none,
)

ManifestLoader = Callable[[Path], tuple[list[Any], list[Problem]]]


# ---------------------------------------------------------------------------------------------
# Reading and validating a file.

class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses repeated keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice in the same mapping", mark)
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> tuple[Any, bytes | None, list[Problem]]:
    name = path.name
    if not path.exists():
        return None, None, [Problem(str(path), "file not found")]
    if path.is_dir():
        return None, None, [Problem(str(path), "is a folder, not a study file")]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, raw, [Problem(name, f"is not UTF-8 text (bad byte at position {exc.start})")]
    if not text.strip():
        return None, raw, [Problem(name, "the file is empty; a study file needs at least `title` and `consent`")]
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name} line {mark.line + 1}, column {mark.column + 1}" if mark else name
        what = (exc.problem or "cannot be read") + (f" ({exc.context})" if exc.context else "")
        return None, raw, [Problem(where, f"YAML syntax error: {what}")]
    except yaml.YAMLError as exc:
        return None, raw, [Problem(name, f"YAML syntax error: {exc}")]
    except RecursionError:
        # PyYAML recurses once per level of nesting: thousands of `[` exhaust the stack.
        return None, raw, [Problem(name, "lists or mappings are nested too deeply to read")]
    except ValueError as exc:
        # A constructor refused a value: an integer of thousands of digits, a date like 2026-13-45.
        return None, raw, [Problem(name, f"a value cannot be read: {str(exc)[:200]}")]
    if data is None:
        return None, raw, [Problem(name, "the file holds only comments; a study file needs at least `title` and `consent`")]
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a single piece of text"}.get(type(data), f"a {type(data).__name__}")
        return None, raw, [Problem(name, f"must be a mapping of settings (key: value lines), but it is {kind}")]
    return data, raw, []


def _validated_sections(data: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Each top-level setting validated on its own, salvaging what validates.

    Returns the sections and the names of those only partly valid: invalid list entries are
    None (so indexes still match the file) and invalid settings inside a section fall back to
    their defaults. Settings that cannot be salvaged are left out.
    """
    sections: dict[str, Any] = {}
    partial: set[str] = set()
    for name, field in Study.model_fields.items():
        if name not in data:
            if not field.is_required():
                sections[name] = field.get_default(call_default_factory=True)
            continue
        raw = data[name]
        try:
            sections[name] = _adapter(field).validate_python(raw)
            continue
        except ValidationError:
            pass
        element = _list_model(field.annotation)
        section = _inner_model(field.annotation)
        if element is not None and isinstance(raw, list):
            sections[name] = [_valid_or_none(element, x) for x in raw]
            partial.add(name)
        elif isinstance(section, type) and issubclass(section, BaseModel) and isinstance(raw, dict):
            values: dict[str, Any] = {}
            for key, sub in section.model_fields.items():
                if key not in raw:
                    continue
                try:
                    values[key] = _adapter(sub).validate_python(raw[key])
                except ValidationError:
                    sub_element = _list_model(sub.annotation)
                    if sub_element is not None and isinstance(raw[key], list):
                        values[key] = [_valid_or_none(sub_element, x) for x in raw[key]]
                    elif sub.is_required():
                        break
            else:
                sections[name] = section.model_construct(**values)
                partial.add(name)
    return sections, partial


def _parse(data: dict[str, Any], label: str) -> tuple[Study | None, list[Problem]]:
    try:
        study = Study.model_validate(data, context={"skip_cross_checks": True})
        sections, partial = dict(study), set()
    except ValidationError as exc:
        study = None
        sections, partial = _validated_sections(data)
        problems = [Problem(f"{label}: {p}", m) for p, m in (_plain(e) for e in exc.errors(include_url=False))]
    else:
        problems = []
    problems += [Problem(f"{label}: {p}", m) for p, m in cross_check(sections, partial)]
    return (study if not problems else None), _dedupe(problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _default_manifest_loader() -> ManifestLoader | None:
    try:
        from study.stimuli import load_manifest
    except ImportError:
        return None
    return load_manifest


def validate_study_file(path: str | Path, check_media: bool = False,
                        manifest_loader: ManifestLoader | None = None) -> list[Problem]:
    """Every problem with a study file and its manifest, errors and warnings, all at once."""
    return _validate(Path(path), check_media, manifest_loader)[1]


def _validate(path: Path, check_media: bool, manifest_loader: ManifestLoader | None,
              ) -> tuple[Study | None, list[Problem], list[Any] | None]:
    data, raw, problems = _read_yaml(path)
    if problems:
        return None, problems, None
    study, problems = _parse(data, path.name)
    if study is None:
        return None, problems, None
    study._source_path = path.resolve()
    study._source_bytes = raw
    problems += design_warnings(study, path.name)
    problems += translation_warnings(study, path.name)
    loader = manifest_loader or _default_manifest_loader()
    stimuli = None
    manifest = study.manifest_path
    if not manifest.is_file():
        problems.append(Problem(f"{path.name}: stimuli.manifest", f"manifest file not found: {manifest}"))
    elif loader is None:
        problems.append(Problem(f"{path.name}: stimuli.manifest",
                                "manifest not checked (study.stimuli is not available)", "warning"))
    else:
        try:
            stimuli, found = loader(manifest)
        except UserError as exc:
            stimuli, found = None, exc.problems or [Problem(str(manifest), str(exc.args[0]))]
        problems += found
        if stimuli is not None and not any(p.severity == "error" for p in found):
            problems += manifest_problems(study, stimuli, path.name)
        if check_media:
            try:
                from study.stimuli import check_manifest
            except ImportError:
                problems.append(Problem(str(manifest), "media not checked (study.stimuli is not available)", "warning"))
            else:
                _, media = check_manifest(manifest, hash=False)
                problems += [p for p in media if p not in found]
    return study, _dedupe(problems), stimuli


def load_study(path: str | Path, manifest_loader: ManifestLoader | None = None,
               check_manifest: bool = True) -> Study:
    """The study in a file; UserError with every problem if it has errors (warnings are allowed)."""
    path = Path(path)
    if check_manifest:
        study, problems, _ = _validate(path, False, manifest_loader)
    else:
        data, raw, problems = _read_yaml(path)
        study = None
        if not problems:
            study, problems = _parse(data, path.name)
            if study is not None:
                study._source_path, study._source_bytes = path.resolve(), raw
    errors = [p for p in problems if p.severity == "error"]
    if errors or study is None:
        raise UserError(f"{path} is not a valid study file ({len(errors)} problem{'s' if len(errors) != 1 else ''})",
                        errors)
    return study


def cli_validate(args: Any) -> int:
    """`kuleshov validate STUDY.yaml [--no-check-media]`: OK with a summary, or every problem; 0 or 1.

    Every clip is probed (codecs, duration) unless --no-check-media; --check-media, the old way
    to ask for probing, is still accepted and changes nothing.
    """
    path = Path(args.study_file)
    # Probing is the default: a study whose clips no browser can play should not pass validate.
    study, problems, stimuli = _validate(path, not getattr(args, "no_check_media", False), None)
    if getattr(args, "no_check_media", False):
        problems.append(Problem(f"{path.name}: stimuli.manifest", "media not probed (--no-check-media): "
                                "codecs, durations and readability of the clip files were not checked", "warning"))
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(f"{'warning' if p.severity == 'warning' else 'error'}: {p}")
    if errors or study is None:
        print(f"{path}: {len(errors)} problem{'s' if len(errors) != 1 else ''} found")
        return 1
    per_clip = ins.items_for(study, "per_clip")
    if stimuli is not None:
        main = [s for s in stimuli if s.id != study.stimuli.practice]
        n_pairs = len({s.pair_id for s in main if getattr(s, "pair_id", None)})
        clips = f"{len(main)} clips, {n_pairs} pairs" + (", 1 practice" if study.stimuli.practice else "")
    else:
        clips = "manifest not checked"
    shown = study.design.clips_per_participant or "all"
    print(f"OK: {study.title} ({clips}; {shown} per participant; {len(per_clip)} items per clip; "
          f"conditions {', '.join(study.design.label_conditions)}; languages {', '.join(study.languages)})")
    return 0
