"""Researcher page (editors and owners): build a study in the browser.

A form generated from the study-file schema (study.protocol.form), the YAML beside it (either
can be edited; a YAML edit re-fills the form), clips uploaded through the app's streaming
route (server.py /api/builder/upload, components/builder), the manifest as a table, the
problems `kuleshov validate` finds shown next to their fields, and Save, which writes a new
version folder and registers it (app_pages.actions.builder_save). The draft lives in a folder
under the data directory (study.builder); the session keeps only its path and the form's data.
"""

from app_pages.auth import require_researcher

me = require_researcher()

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app_pages import actions, browser_component, component_data, get_engine, preview  # noqa: E402
from study import builder  # noqa: E402
from study import instruments as ins  # noqa: E402
from study.errors import UserError  # noqa: E402
from study.protocol import form  # noqa: E402

engine = get_engine()
# The YAML beside the form reads as YAML only in a fixed-width font, unwrapped: a wrapped line
# started at column 0 and looked like a new top-level key.
st.markdown("""<style>
.st-key-b-yaml-box textarea {font-family: "Source Code Pro", ui-monospace, monospace;
  font-size: 0.85rem; white-space: pre; overflow-x: auto}
</style>""", unsafe_allow_html=True)
st.title("Study builder")
try:
    me = actions.builder_allowed(engine, me)
except UserError as exc:
    st.error(f"Not allowed: {exc}. The study builder is for editors and owners.")
    st.stop()

S = st.session_state
FIELDS = form.form_fields()
KNOWN = set(form.all_paths(FIELDS))
LONG = ("consent.text", "instructions", "completion.message", "description", "playback.marks.instruction")
MISSING = object()
_upload = browser_component("kuleshov.builder_upload", "builder", "upload.html", css=("upload.css",),
                            js=("upload.js",))


def _noop() -> None:
    return None


# --------------------------------------------------------------------------- draft state


def _start(draft: builder.Draft, data: dict) -> None:
    S["b-draft"] = str(draft.folder)
    S["b-data"] = S["b-start"] = data
    S["b-gen"] = S.get("b-gen", 0) + 1
    S["b-rows"] = builder.read_manifest(draft.manifest_file) if draft.manifest_file.is_file() else []
    S["b-rows-v"] = S.get("b-rows-v", 0) + 1
    S.pop("b-rows-edited", None)  # the last study's table
    S.pop("b-yaml-problems", None)
    S.pop("b-yaml-sent", None)
    S.pop("b-ticket", None)
    S.pop("b-saved", None)


def _new_study() -> None:
    draft = builder.new_draft()
    builder.write_manifest(draft, [])
    _start(draft, {"title": "New study", "consent": {"text": ""}, "stimuli": {"manifest": builder.MANIFEST}})


def _open_study(study_id: str) -> None:
    try:
        draft, data = actions.builder_open(engine, me, study_id)
    except UserError as exc:
        S["b-flash"] = ("error", str(exc))
        return
    _start(draft, data)


studies = [s["id"] for s in actions.studies(engine, me)]
with st.container(border=True):
    c1, c2, c3 = st.columns([1, 2, 1], vertical_alignment="bottom")
    c1.button("New study", on_click=_new_study, type="primary" if "b-draft" not in S else "secondary")
    pick = c2.selectbox("Registered study", studies, index=len(studies) - 1 if studies else None,
                        placeholder="none registered yet", key="b-pick")
    c3.button("Open its current version", disabled=not pick, on_click=lambda: _open_study(pick))

if flash := S.pop("b-flash", None):
    getattr(st, flash[0])(flash[1])

draft = None
if "b-draft" in S:
    try:
        draft = builder.draft_at(S["b-draft"])
    except UserError as exc:
        st.warning(str(exc))
        S.pop("b-draft", None)
if draft is None:
    st.info("Start a new study, open a registered one, or open a study folder from a zip below.")

# Uploads (clips and zips) arrive through the route; collect what it took or refused.
if "b-ticket" not in S:
    folder = draft.folder if draft else builder.new_draft().folder
    S["b-ticket-folder"] = str(folder)
    S["b-ticket"] = actions.builder_upload_ticket(engine, me, str(folder))
for kind, name, result in builder.TICKETS.collect(S["b-ticket"]):
    if kind == "error":
        st.error(f"Refused: {result}")
    elif kind == "zip":
        opened = builder.draft_at(result)
        data, problems = builder.from_yaml(opened.study_file.read_text(encoding="utf-8"))
        _start(opened, data or {})
        S["b-flash"] = ("success", f"Opened {name}.")
        if problems:
            S["b-yaml-problems"] = [str(p) for p in problems]
        st.rerun()
    elif draft is not None:
        # Several files can arrive between two runs: each adds to the rows the last one left.
        S["b-rows"] = S["b-rows-edited"] = builder.add_clip_row(S.get("b-rows-edited", S["b-rows"]), result)
        S["b-rows-v"] += 1
        extra = f" ({'; '.join(result.warnings)})" if result.warnings else ""
        st.success(f"Received {result.filename}: {result.size_bytes / 1024:.0f} kB, sha256 "
                   f"{result.sha256[:12]}…{extra}")

with st.expander("Open a study folder from a zip", expanded=draft is None):
    _upload(key="b-zip-upload", data=component_data({
        "ticket": S["b-ticket"], "kind": "zip", "accept": ".zip",
        "label": f"A zip of a study folder (study.yaml, manifest.csv, clips; at most "
                 f"{builder.megabytes(builder.max_zip_bytes())})"}), on_done_change=_noop)

if draft is None:
    st.stop()

# --------------------------------------------------------------------------- the form

gen = S["b-gen"]
# The form is drawn from the data its generation started with (widgets keep their own values
# after that); what it holds now is collected into b-data at every run.
data: dict = S["b-start"]
slots: dict[str, object] = {}


def _key(path: str) -> str:
    return f"b{gen}|{path}"


def _langs(values: dict) -> list[str]:
    langs = values.get("languages")
    return [x for x in langs if isinstance(x, str)] if isinstance(langs, list) and langs else ["en"]


def _label(spec: form.FieldSpec) -> str:
    star = " *" if spec.required else ""
    return spec.name.replace("_", " ") + star


def _help(spec: form.FieldSpec) -> str:
    bits = [spec.help]
    if spec.constraints:
        bits.append(f"({spec.constraints})")
    if spec.default not in (None, "", [], {}):
        bits.append(f"Default: {spec.default}")
    return " ".join(b for b in bits if b)


def _number(text: str, integer: bool):
    text = text.strip()
    if not text:
        return None
    try:
        return int(text) if integer else (int(text) if text.lstrip("-").isdigit() else float(text))
    except ValueError:
        return text  # the schema says "must be a number (got ...)" next to the field


def _emit(spec: form.FieldSpec, value):
    """MISSING for a value the file need not carry (empty, or the schema's default)."""
    if value is None or value == "" or value == [] or value == {}:
        return MISSING
    if not spec.required and value == spec.default:
        return MISSING
    return value


def _slot(path: str) -> None:
    slots[path] = st.empty()


def _words(spec: form.FieldSpec, value, path: str, langs: list[str]):
    widget = st.text_area if spec.path in LONG else st.text_input
    if isinstance(value, dict):
        given = {k: str(v) for k, v in value.items()}
    else:
        given = {langs[0]: "" if value is None else str(value)}
    out = {}
    for lang in langs:
        label = _label(spec) + (f" ({lang})" if len(langs) > 1 else "")
        placeholder = f"default: {spec.default}" if isinstance(spec.default, str) else None
        if isinstance(spec.default, str) and given.get(lang) == spec.default:
            given[lang] = ""
        text = widget(label, value=given.get(lang, ""), help=_help(spec), key=_key(f"{path}@{lang}"),
                      placeholder=placeholder[:120] if placeholder else None)
        if text.strip():
            out[lang] = text
    _slot(path)
    if not out:
        return MISSING
    return out[langs[0]] if len(langs) == 1 and langs[0] in out else out


def _wordslist(spec: form.FieldSpec, value, path: str, langs: list[str]):
    items = value if isinstance(value, list) else []
    columns = {}
    for lang in langs:
        lines = [(x.get(lang, "") if isinstance(x, dict) else (str(x) if lang == langs[0] else "")) for x in items]
        label = _label(spec) + (f" ({lang})" if len(langs) > 1 else "") + ", one per line"
        text = st.text_area(label, value="\n".join(lines), help=_help(spec), key=_key(f"{path}@{lang}"), height=100)
        columns[lang] = [x.strip() for x in text.splitlines() if x.strip()]
    _slot(path)
    n = max(len(v) for v in columns.values())
    if n == 0:
        return MISSING
    if len(langs) == 1:
        return columns[langs[0]]
    return [{lang: columns[lang][i] for lang in langs if i < len(columns[lang])} for i in range(n)]


def _entries(spec: form.FieldSpec, value, path: str):
    entries = value if isinstance(value, list) else (spec.default or [])
    chosen = [ins.entry_name(e) if not isinstance(e, dict) else str(e.get("name")) for e in entries]
    picked_items = {str(e.get("name")): e.get("items") for e in entries if isinstance(e, dict)}
    names = st.multiselect(_label(spec), spec.choices, default=[c for c in chosen if c in spec.choices],
                           help=_help(spec), key=_key(path))
    out = []
    for name in names:
        every = [i.id for i in ins.INSTRUMENTS[name].items]
        items = st.multiselect(f"{name}: items", every, default=[i for i in (picked_items.get(name) or every)
                                                                   if i in every],
                               key=_key(f"{path}/{name}"), help="All items = the whole instrument (scored); "
                               "a subset is asked in this order and its scales are not scored.")
        out.append(name if items == every or not items else {"name": name, "items": items})
    _slot(path)
    if out == spec.default:
        return MISSING
    return out


def _rows(spec: form.FieldSpec, value, path: str, key_path: str, langs: list[str]):
    """A list of entries: one bordered box per row, each with Remove, and Add below. Rows keep a
    stable id for their widgets' keys, so removing row 2 never hands its answers to row 3."""
    ids_key = f"b{gen}-ids|{key_path}"
    items = value if isinstance(value, list) else []
    if ids_key not in S:
        S[ids_key] = list(range(len(items)))
    out = []
    _slot(path)
    noun = spec.name.replace("_", " ")
    for i, uid in enumerate(S[ids_key]):
        row_value = items[uid] if uid < len(items) and isinstance(items[uid], dict) else {}
        with st.container(border=True):
            head, remove = st.columns([3, 1], vertical_alignment="center")  # [5, 1] cut "Remove" to "Rem…"
            head.markdown(f"**{noun.removesuffix('s')} {i + 1}**")
            remove.button("Remove", key=_key(f"{key_path}#{uid}-remove"),
                          on_click=lambda u=uid: S[ids_key].remove(u))
            _slot(f"{path}[{i}]")
            out.append(_fields(spec.children, row_value, f"{path}[{i}]", langs, uid_path=f"{key_path}#{uid}"))
    st.button(f"Add {noun.removesuffix('s')}", key=_key(f"{key_path}-add"),
              on_click=lambda: S[ids_key].append(max(S[ids_key] + [len(items) - 1]) + 1))
    return out if out else MISSING


def _field(spec: form.FieldSpec, value, path: str, langs: list[str], key_path: str):
    k = spec.kind
    if k == "section":
        return _section(spec, value, path, langs, key_path, nested=True)
    if k == "rows":
        return _rows(spec, value, path, key_path, langs)
    if k == "words":
        return _words(spec, value, key_path, langs)
    if k == "wordslist":
        return _wordslist(spec, value, key_path, langs)
    if k == "entries":
        return _entries(spec, value, key_path)
    if k == "bool":
        current = spec.default if value is None else bool(value) if isinstance(value, bool) else value
        got = st.checkbox(_label(spec), value=bool(current), help=_help(spec), key=_key(key_path))
        _slot(path)
        return MISSING if got == spec.default and not spec.required else got
    if k == "choice":
        options = ([""] if spec.optional or spec.default is None else []) + spec.choices
        current = "" if value is None else str(value)
        if current and current not in options:
            options.append(current)
        index = options.index(current) if current in options else options.index(str(spec.default)) \
            if spec.default is not None and str(spec.default) in options else 0
        got = st.selectbox(_label(spec), options, index=index, help=_help(spec), key=_key(key_path))
        _slot(path)
        return _emit(spec, got)
    if k == "multichoice":
        current = value if isinstance(value, list) else (spec.default or [])
        current = [str(x).lower() if isinstance(x, bool) else str(x) for x in current]  # YAML's bare true
        options = spec.choices + [x for x in current if x not in spec.choices]
        got = st.multiselect(_label(spec), options, default=current, help=_help(spec), key=_key(key_path))
        _slot(path)
        return _emit(spec, got)
    if k == "lines":
        current = value if isinstance(value, list) else (spec.default or [])
        text = st.text_area(_label(spec) + ", one per line", value="\n".join(map(str, current)), help=_help(spec),
                            key=_key(key_path), height=80)
        _slot(path)
        return _emit(spec, [x.strip() for x in text.splitlines() if x.strip()])
    if k in ("integer", "number"):
        current = spec.default if value is None else value
        text = st.text_input(_label(spec), value="" if current is None else str(current), help=_help(spec),
                             key=_key(key_path), placeholder="empty" if spec.optional else None)
        _slot(path)
        return _emit(spec, _number(text, k == "integer"))
    if k == "yaml":
        current = value if value is not None else spec.default
        text = st.text_area(_label(spec) + " (YAML)", value=builder.to_yaml(current).strip() if current else "",
                            help=_help(spec), key=_key(key_path), height=80)
        _slot(path)
        parsed, problems = builder.from_yaml(text) if text.strip() else ({}, [])
        return _emit(spec, parsed if not problems else text)
    current = spec.default if value is None else value
    text = st.text_input(_label(spec), value="" if current is None else str(current), help=_help(spec),
                         key=_key(key_path))
    _slot(path)
    return _emit(spec, text.strip())


def _fields(specs, values, prefix: str, langs: list[str], uid_path: str | None = None) -> dict:
    values = values if isinstance(values, dict) else {}
    out = {}
    for spec in specs:
        path = f"{prefix}.{spec.name}" if prefix else spec.name
        key_path = f"{uid_path}.{spec.name}" if uid_path else path
        got = _field(spec, values.get(spec.name), path, langs, key_path)
        if got is not MISSING:
            out[spec.name] = got
    return out


def _section(spec, value, path, langs, key_path, nested=False):
    values = value if isinstance(value, dict) else {}
    box = st.container(border=True) if nested else st.container()
    with box:
        if nested:
            st.markdown(f"**{spec.name.replace('_', ' ')}** — {spec.help}")
        _slot(path)
        if spec.optional:
            on = st.checkbox(f"Use {spec.name.replace('_', ' ')}", value=value is not None, key=_key(f"{key_path}-on"))
            if not on:
                return MISSING
        got = _fields(spec.children, values, path, langs, uid_path=key_path if key_path != path else None)
    if got or (spec.optional and value is not None) or spec.required:
        return got
    return MISSING


prev_errors: set[str] = S.get("b-error-sections", set())
left, right = st.columns([3, 2], gap="large")
collected: dict = {}
with left:
    st.subheader("Settings")
    langs = _langs(data)
    top = [f for f in FIELDS if f.kind not in ("section", "rows")]
    with st.expander("General", expanded=True):
        for spec in top:
            got = _field(spec, data.get(spec.name), spec.name, langs, spec.name)
            if got is not MISSING:
                collected[spec.name] = got
        langs = _langs(collected)  # a language added shows its inputs at the next run
    for spec in FIELDS:
        if spec.kind not in ("section", "rows"):
            continue
        with st.expander(f"{spec.name.replace('_', ' ').capitalize()} — {spec.help}",
                         expanded=spec.name in prev_errors or spec.name in ("consent", "attention_checks")):
            if spec.kind == "rows":
                got = _rows(spec, data.get(spec.name), spec.name, spec.name, langs)
            else:
                got = _section(spec, data.get(spec.name), spec.name, langs, spec.name)
            if got is not MISSING:
                collected[spec.name] = got
# Keep the study's languages in step with the form at once (a language removed drops its inputs).
ordered = {f.name: collected[f.name] for f in FIELDS if f.name in collected}
S["b-data"] = ordered

# --------------------------------------------------------------------------- YAML beside it


def _yaml_edited() -> None:
    text = S.get(f"b{S['b-gen']}|yaml", "")
    if text in S.get("b-yaml-sent", ()):
        # Not an edit: a text this page put in the box itself. When a run is interrupted by
        # the next click before the box reaches the browser, the browser still holds the
        # previous text and sends it back with that click; taking it for an edit would undo
        # the click before it (and redraw the whole form).
        return
    parsed, problems = builder.from_yaml(text)
    if problems:
        S["b-yaml-problems"] = [str(p) for p in problems]
        S["b-yaml-text"] = text
        return
    S.pop("b-yaml-problems", None)
    S.pop("b-yaml-text", None)
    S["b-data"] = S["b-start"] = parsed
    S["b-gen"] += 1


yaml_text = builder.to_yaml(ordered)
with right:
    st.subheader("Study file (YAML)")
    st.caption("Edit either side: a change here re-fills the form when you click outside the box.")
    ykey = _key("yaml")
    S[ykey] = S.get("b-yaml-text", yaml_text)
    S["b-yaml-sent"] = [yaml_text, *[t for t in S.get("b-yaml-sent", []) if t != yaml_text]][:4]
    with st.container(key="b-yaml-box"):
        st.text_area("study.yaml", key=ykey, height=520, on_change=_yaml_edited, label_visibility="collapsed")
    for msg in S.get("b-yaml-problems", []):
        st.error(msg)
    summary = st.container()

# --------------------------------------------------------------------------- clips and manifest

st.subheader("Clips and manifest")
_upload(key="b-clip-upload", data=component_data({
    "ticket": S["b-ticket"],
    "kind": "clip", "accept": "video/*,.mp4,.webm,.vtt",
    "label": f"Add clips (MP4/WebM, at most {builder.megabytes(builder.max_clip_bytes())} each) or "
             "WebVTT captions named like their clip"}), on_done_change=_noop)

base_rows = S["b-rows"]
frame = pd.DataFrame([{c: r.get(c, "") for c in builder.TABLE_COLUMNS} for r in base_rows],
                     columns=builder.TABLE_COLUMNS).astype(str).replace({"None": "", "nan": ""})
edited = st.data_editor(
    frame, key=f"b-manifest-{S['b-rows-v']}", hide_index=True, num_rows="dynamic", width="stretch",
    column_config={
        "id": st.column_config.TextColumn("id", help="stable clip id, stored with every answer", required=True),
        "file": st.column_config.TextColumn("file", help="the uploaded file (relative to the study folder)"),
        "source": st.column_config.SelectboxColumn("source", options=["human", "ai"], required=True,
                                                   help="who made the clip"),
        "pair_id": st.column_config.TextColumn("pair", help="ties an AI clip to the human clip it matches"),
        "seed": st.column_config.TextColumn("seed", help="AI clips: the random seed, if known"),
    })
rows = [{k: v for k, v in r.items() if v not in ("", None)} for r in edited.to_dict("records")]
S["b-rows-edited"] = rows

clip_files = [r.get("file") for r in rows if r.get("file")]
if len(clip_files) >= 2:
    with st.container(border=True):
        st.markdown("**Make a pair** (one human and one AI clip that match)")
        p1, p2, p3, p4 = st.columns([2, 2, 2, 1], vertical_alignment="bottom")
        human = p1.selectbox("Human clip", [r["id"] for r in rows], key="b-pair-human")
        ai = p2.selectbox("AI clip", [r["id"] for r in rows], index=1, key="b-pair-ai")
        n_pairs = len({r.get("pair_id") for r in rows if r.get("pair_id")})
        # keyed by the count, so the suggestion moves on to pair_02 once pair_01 is made
        pair_name = p3.text_input("Pair id", value=f"pair_{n_pairs + 1:02d}", key=f"b-pair-id-{n_pairs}")
        if p4.button("Make pair", disabled=human == ai or not pair_name.strip()):
            for r in rows:
                if r["id"] == human:
                    r.update(source="human", pair_id=pair_name.strip())
                elif r["id"] == ai:
                    r.update(source="ai", pair_id=pair_name.strip())
            S["b-rows"] = rows
            S["b-rows-v"] += 1
            st.rerun()

durations = builder.durations(draft)
pairs = builder.pair_table(rows, durations)
if pairs:
    st.markdown("**Pairs**")
    st.dataframe(pd.DataFrame(pairs), hide_index=True, width="stretch")

# --------------------------------------------------------------------------- validate (as kuleshov validate)

builder.write_manifest(draft, rows)
if "b-yaml-text" not in S:
    builder.write_study(draft, yaml_text)
problems = builder.validate(draft)
by_field, loose = form.errors_by_field(problems, KNOWN)
S["b-error-sections"] = {path.split(".")[0].split("[")[0] for path in by_field}
for path, messages in by_field.items():
    slot = slots.get(path)
    if slot is None:  # a row's field whose widget has another path: the nearest slot above it
        parent = path
        while parent and parent not in slots:
            parent = parent.rsplit(".", 1)[0] if "." in parent else ""
        slot = slots.get(parent)
    if slot is not None:
        slot.error("\n\n".join(messages), icon=":material/error:")
errors = [p for p in problems if p.severity == "error"]
with summary:
    if errors:
        st.error(f"**{len(errors)} problem{'s' if len(errors) != 1 else ''}** (each also shown at its field):\n\n"
                 + "\n".join(f"- {p}" for p in errors))
    else:
        st.success("Valid: `kuleshov validate` accepts this study file and its clips.")
    warnings = [p for p in problems if p.severity == "warning"]
    if warnings:
        st.warning("\n".join(f"- {p}" for p in warnings))

# --------------------------------------------------------------------------- save, download, preview

st.subheader("Save")
s1, s2, s3 = st.columns(3, vertical_alignment="bottom")
if s1.button("Save and register a new version", type="primary", disabled=bool(errors) or "b-yaml-text" in S):
    try:
        study_id, version, path = actions.builder_save(engine, me, str(draft.folder))
        S["b-saved"] = (study_id, version, path)
    except UserError as exc:
        st.error(str(exc))
# The zip is made when the button is clicked (a callable), not at every run of the page: at every
# keystroke it zipped every clip again.
s2.download_button("Download the study folder (zip)", data=lambda folder=draft.folder: builder.folder_zip(folder),
                   file_name=f"{ordered.get('id') or 'study'}.zip", mime="application/zip")
if saved := S.get("b-saved"):
    study_id, version, path = saved
    base = st.context.url.split("?")[0].rstrip("/") if getattr(st.context, "url", None) else ""
    base = base.rsplit("/", 1)[0] if base.endswith("/researcher-builder") else base
    st.success(f"Saved {study_id} version {version} to `{path}` and registered it. New participants get this "
               "version; participants already in a study finish the version they started.")
    st.markdown(f"Participant link: [{base}/?study={study_id}]({base}/?study={study_id})")
    with s3:
        preview.link(study_id)  # in this same session: the login holds
