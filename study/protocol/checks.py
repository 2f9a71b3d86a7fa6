"""Checks across settings, and between a study's design and the clips of its manifest."""

from __future__ import annotations

import difflib
import re
from typing import Any

from study import instruments as ins
from study.errors import Problem
from study.protocol.schema import AnalysisPlan, Design, Measures, Study

# ---------------------------------------------------------------------------------------------
# Checks across sections. They take whichever sections validated, so that a type error in one
# section does not hide a contradiction between two others.

def _known_items(entry: Any) -> list[ins.Item]:
    """The items of a measures entry that exist (an unknown id is reported on its own, and must
    not make the entry's other items look unmeasured)."""
    name = ins.entry_name(entry)
    if name not in ins.INSTRUMENTS:
        return []
    instrument = ins.INSTRUMENTS[name]
    own = {it.id for it in instrument.items}
    ids = ins.entry_item_ids(entry)
    return list(instrument.items) if ids is None else [instrument.item(i) for i in dict.fromkeys(ids) if i in own]


def _measured_per_clip(measures: Measures) -> tuple[dict[str, ins.Item], set[str], dict[str, list[str]]]:
    """(items asked after each clip, scales scored, scales not scored -> the items they miss)."""
    items: dict[str, ins.Item] = {}
    declared: dict[str, list[str]] = {}
    for entry in measures.per_clip:
        known = _known_items(entry) if entry is not None else []
        if known:
            items.update({it.id: it for it in known})
            declared.update({sid: sc.items for sid, sc in ins.INSTRUMENTS[ins.entry_name(entry)].scales.items()})
    items.update({c.id: c for c in measures.custom_items if c is not None and c.scope == "per_clip"})
    unscored = {sid: [i for i in members if i not in items] for sid, members in declared.items()}
    unscored = {sid: missing for sid, missing in unscored.items() if missing}
    return items, set(declared) - set(unscored), unscored


def _entry_problems(entry: Any, where: str) -> list[tuple[str, str]]:
    """An instrument choice's item ids: each must be one of the instrument's own, once."""
    ids = ins.entry_item_ids(entry)
    name = ins.entry_name(entry)
    if ids is None or name not in ins.INSTRUMENTS:
        return []
    own = [it.id for it in ins.INSTRUMENTS[name].items]
    out = []
    for j, item_id in enumerate(ids):
        if item_id not in own:
            hint = difflib.get_close_matches(item_id, own, n=1)
            out.append((f"{where}.items[{j}]", f"instrument {name!r} has no item {item_id!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; its items are: {', '.join(own)}"))
        elif ids.index(item_id) != j:
            out.append((f"{where}.items[{j}]", f"item {item_id!r} of instrument {name!r} is listed twice"))
    return out


def cross_check(sections: dict[str, Any], partial: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(field path, message) for contradictions between settings of a parsed study.

    `sections` maps top-level names to validated values; list entries may be None where they
    failed validation (their own errors are reported elsewhere). Sections named in `partial`
    are incomplete, so checks that need all of them are skipped.
    """
    out: list[tuple[str, str]] = []
    known = ", ".join(ins.INSTRUMENTS)
    measures: Measures | None = sections.get("measures")
    if measures is not None:
        for scope in ("session_start", "per_clip", "session_end"):
            entries = getattr(measures, scope)
            ids = [None if e is None else ins.entry_name(e) for e in entries]
            for k, iid in enumerate(ids):
                where = f"measures.{scope}[{k}]"
                if iid is None:
                    continue
                if iid not in ins.INSTRUMENTS:
                    hint = difflib.get_close_matches(iid, list(ins.INSTRUMENTS), n=1)
                    out.append((where, f"unknown instrument {iid!r}"
                                + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; known instruments: {known}"))
                    continue
                want = "per_clip" if scope == "per_clip" else "session"
                if ins.INSTRUMENTS[iid].scope != want:
                    out.append((where, f"instrument {iid!r} is asked "
                                + ("once per session" if want == "per_clip" else "after each clip")
                                + f", so it cannot be listed under {scope}"))
                if iid == "demographics":
                    out.append((where, "demographic questions are chosen with the top-level `demographics` list"))
                if ids.index(iid) != k:
                    out.append((where, f"instrument {iid!r} is listed twice"))
                out += _entry_problems(entries[k], where)
        builtin = ins.builtin_item_ids()
        taken = builtin | ins.builtin_scale_ids() | set(ins.INSTRUMENTS) | ins.RESERVED_NAMES
        seen: set[str] = set()
        for k, item in enumerate(measures.custom_items):
            where = f"measures.custom_items[{k}].id"
            if item is None:
                continue
            if item.id in seen:
                out.append((where, f"custom item id {item.id!r} is used twice"))
            elif item.id in taken:
                out.append((where, f"custom item id {item.id!r} is already taken by a built-in item, scale, "
                                   "instrument or data column; choose another id"))
            seen.add(item.id)
        if "measures" not in partial and not measures.per_clip and not [
                c for c in measures.custom_items if c.scope == "per_clip"]:
            out.append(("measures.per_clip", "no questions are asked after the clips; list at least one instrument"))

    demographics = sections.get("demographics")
    if demographics is not None:
        demo_ids = [it.id for it in ins.INSTRUMENTS["demographics"].items]
        for k, did in enumerate(demographics):
            if did not in demo_ids:
                out.append((f"demographics[{k}]", f"unknown demographic item {did!r}; known: {', '.join(demo_ids)}"))
            elif demographics.index(did) != k:
                out.append((f"demographics[{k}]", f"{did!r} is listed twice"))

    checks = sections.get("attention_checks")
    if checks is not None:
        seen_ids: set[str] = set()
        taken_ids = ins.builtin_item_ids() | ins.builtin_scale_ids() | ins.RESERVED_NAMES
        if measures is not None:
            taken_ids |= {c.id for c in measures.custom_items if c is not None}
        for k, check in enumerate(checks):
            if check is None:
                continue
            if check.id in seen_ids:
                out.append((f"attention_checks[{k}].id", f"attention check id {check.id!r} is used twice"))
            elif check.id in taken_ids:
                out.append((f"attention_checks[{k}].id", f"id {check.id!r} is already used by an item or column"))
            seen_ids.add(check.id)
        design: Design | None = sections.get("design")
        if design is not None and design.clips_per_participant is not None:
            for k, check in enumerate(checks):
                if check is not None and check.after_clip > design.clips_per_participant:
                    out.append((f"attention_checks[{k}].after_clip",
                                f"is {check.after_clip}, but each participant sees only "
                                f"{design.clips_per_participant} clips (design.clips_per_participant)"))

    out += _follow_up_problems(sections.get("follow_ups"))

    plan: AnalysisPlan | None = sections.get("analysis")
    if plan is not None and measures is not None and "measures" not in partial:
        items, scales, unscored = _measured_per_clip(measures)
        measured = sorted({i for i, it in items.items() if it.is_numeric} | scales)

        def check_outcome(where: str, oid: str) -> None:
            if oid in scales:
                return
            if oid in unscored:
                out.append((where, f"the scale {oid!r} is not scored, because measures.per_clip asks only some of its "
                                   f"items (not asked: {', '.join(unscored[oid])}); ask them all, or choose one of: "
                                   f"{', '.join(measured)}"))
                return
            if oid not in items:
                hint = difflib.get_close_matches(oid, measured, n=1)
                out.append((where, f"{oid!r} is not measured after each clip"
                            + (f" (did you mean {hint[0]!r}?)" if hint else "")
                            + f"; choose one of: {', '.join(measured)}"))
            elif not items[oid].is_numeric:
                out.append((where, f"{oid!r} is a {items[oid].type} item, not a number; choose a numeric item or scale"))

        check_outcome("analysis.primary_outcome", plan.primary_outcome)
        for k, oid in enumerate(plan.secondary_outcomes):
            check_outcome(f"analysis.secondary_outcomes[{k}]", oid)
            if oid == plan.primary_outcome:
                out.append((f"analysis.secondary_outcomes[{k}]", f"{oid!r} is already the primary outcome"))
    return out


def _follow_up_problems(follow_ups: list | None) -> list[tuple[str, str]]:
    """Follow-ups: distinct names, windows that do not overlap (a link names one follow-up, but a
    participant invited to two at once would not know which to take first)."""
    out: list[tuple[str, str]] = []
    if not follow_ups:
        return out
    names: set[str] = set()
    for k, fu in enumerate(follow_ups):
        if fu is None:
            continue
        if fu.name in names:
            out.append((f"follow_ups[{k}].name", f"follow-up name {fu.name!r} is used twice"))
        names.add(fu.name)
    valid = sorted(((fu.delay_hours, k, fu) for k, fu in enumerate(follow_ups) if fu is not None), key=lambda x: x[:2])
    for (_, _, a), (_, k, b) in zip(valid, valid[1:]):
        if b.delay_hours < a.closes_hours:
            out.append((f"follow_ups[{k}].delay_hours",
                        f"is {b.delay_hours:g}, so follow-up {b.name!r} opens before follow-up {a.name!r} closes "
                        f"({a.delay_hours:g} + {a.window_hours:g} = {a.closes_hours:g} hours); the windows must not overlap"))
    for k, fu in enumerate(follow_ups):
        if fu is not None and not any(getattr(fu.ask, q) for q in ("free_recall", "recognition", "vividness",
                                                                   "intrusions", "feeling_now", "watch_more")):
            out.append((f"follow_ups[{k}].ask", "asks nothing; switch on at least one question"))
    return out


def manifest_problems(study: Study, stimuli: list[Any], label: str = "study.yaml") -> list[Problem]:
    """Contradictions between the study's design and the clips its manifest lists."""
    out: list[Problem] = []

    def add(path: str, msg: str, severity: str = "error") -> None:
        out.append(Problem(f"{label}: {path}", msg, severity))

    ids = [s.id for s in stimuli]
    practice = study.stimuli.practice
    if practice is not None and practice not in ids:
        add("stimuli.practice", f"practice clip {practice!r} is not in the manifest ({study.manifest_path.name})")
    pool = [s for s in stimuli if s.id != practice]
    if not pool:
        add("stimuli.manifest", "the manifest lists no main clips (besides the practice clip)")
        return out
    by_source = {src: [s for s in pool if s.source == src] for src in ("human", "ai")}
    if not by_source["human"] or not by_source["ai"]:
        only = "human" if by_source["human"] else "ai"
        add("stimuli.manifest", f"every main clip is {only}; a human-AI comparison needs clips of both sources", "warning")
    pairs: dict[str, list[Any]] = {}
    for s in pool:
        if getattr(s, "pair_id", None):
            pairs.setdefault(s.pair_id, []).append(s)
    unpaired = [s for s in pool if not getattr(s, "pair_id", None)]
    design = study.design
    cpp = design.clips_per_participant
    # the default "both" quietly means "no pairs" for a manifest without pair_id; said explicitly, it is a mistake
    explicit = "pairs" in design.model_fields_set
    if design.pairs in ("both", "one_per_participant") and not pairs and explicit:
        add("design.pairs", f"is {design.pairs!r}, but no clip in the manifest has a pair_id; "
                            "add pair_id values or set pairs: ignore")
    # how many distinct clips one participant can be given at most
    capacity = len(pool) if design.pairs != "one_per_participant" else len(pairs) + len(unpaired)
    if cpp is not None and cpp > capacity:
        why = " (one clip per pair)" if design.pairs == "one_per_participant" else ""
        add("design.clips_per_participant", f"is {cpp}, but only {capacity} main clips are available{why}")
    shown = min(cpp, capacity) if cpp is not None else capacity
    if design.ordering == "blocked_by_source":
        if shown % 2:
            add("design.clips_per_participant", f"is {shown}, an odd number, so the human block and the AI block "
                                                "cannot be the same size; use an even number")
        for src, clips in by_source.items():
            if len(clips) < shown // 2:
                add("design.clips_per_participant", f"blocked_by_source gives each participant {shown // 2} {src} "
                                                    f"clips, but the manifest has only {len(clips)}")
    if design.ordering == "latin_square" and len(by_source["human"]) != len(by_source["ai"]):
        add("design.ordering", f"the manifest has {len(by_source['human'])} human and {len(by_source['ai'])} AI "
                               "clips, so the Latin square's lists cannot all hold as many of each", "warning")
    if not any(p.where.split(": ", 1)[-1].startswith("design.") and p.severity == "error" for p in out):
        out += _design_problems(study, pool, label)
    for k, fu in enumerate(getattr(study, "follow_ups", None) or []):
        if fu.ask.recognition and fu.ask.foils:
            unseen = len(pool) - shown
            if unseen < fu.ask.foils:
                add(f"follow_ups[{k}].ask.foils",
                    f"is {fu.ask.foils}, but each participant sees {shown} of the {len(pool)} main clips, so "
                    + ("no clip is left to serve as a foil (recognition with no possible foils); "
                       "lower design.clips_per_participant or set foils: 0"
                       if unseen <= 0 else f"only {unseen} unseen clip(s) can serve as foils"))
    for k, check in enumerate(study.attention_checks):
        if check.after_clip > shown:
            add(f"attention_checks[{k}].after_clip", f"is {check.after_clip}, but each participant sees only {shown} clips")
    return out


def design_warnings(study: Study, label: str = "study.yaml") -> list[Problem]:
    """Settings that are valid together but undermine what the study measures (warnings)."""
    out: list[Problem] = []
    # Only the attribution instrument asks it: custom items may not reuse its item ids.
    if "true" in study.design.label_conditions and any(
            it.id == "judged_source" for e in study.measures.per_clip for it in ins.chosen_items(e)):
        out.append(Problem(
            f"{label}: design.label_conditions",
            'includes "true", and measures.per_clip asks whether each clip was made by AI (attribution): '
            "participants in the true condition were told the answer with the clip, so their judgments "
            'measure reading the label, not telling the sources apart. Analyse attribution only in the "none" '
            'condition, or drop "true" (or attribution) from the study', "warning"))
    capture = [name for name in ("continuous_rating", "marks") if getattr(study.playback, name, None) is not None]
    if capture and not study.stimuli.practice:
        out.append(Problem(
            f"{label}: stimuli.practice",
            f"is empty, but playback.{' and playback.'.join(capture)} asks participants to answer while a clip "
            "plays: without a practice clip they learn the control on the first real clip, whose trace then "
            "records the learning. Name a practice clip (e.g. practice: practice)", "warning"))
    return out


def _design_problems(study: Study, pool: list[Any], label: str) -> list[Problem]:
    """Ask the assignment engine itself whether it can build lists for this design and pool."""
    try:
        from study.design import Clip, DesignError, DesignSpec, build_lists
    except ImportError:
        return []
    d = study.design
    spec = DesignSpec(clips_per_participant=d.clips_per_participant, ordering=d.ordering, seed=d.seed,
                      pairs=d.pairs, label_conditions=tuple(d.label_conditions))
    clips = [Clip(id=s.id, source=s.source, pair_id=getattr(s, "pair_id", None) or None) for s in pool]
    try:
        build_lists(spec, clips)
    except DesignError as exc:
        text = str(exc.args[0])
        found = re.search(r"design\.(\w+)", text)
        path = f"design.{found.group(1)}" if found else "design"
        return [Problem(f"{label}: {path}", re.sub(r"^study file: design\.\w+ ", "", text))]
    return []
