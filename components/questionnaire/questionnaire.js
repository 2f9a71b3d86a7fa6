// Kuleshov questionnaire (Streamlit components v2, no build step).
//
// One page of items is drawn here and answered without any round trip to the server; the page
// goes to Python once, as one trigger value, when the participant presses Continue (each
// trigger value costs a whole script run). The browser measures what only it can see: when
// each item was first and last answered (ms since the page was first shown) and how often the
// answer changed (every time a new value was chosen or committed, the first one included).
// Answers in progress are kept in localStorage under a key the server gives, so a reload keeps
// them; they are dropped once the server has moved the participant on.

const STATE = "__kuleshovQuestionnaire";
const STORE_VERSION = 1;
const STORE_MAX_AGE_MS = 3 * 24 * 3600 * 1000;
const BUSY_MS = 5000;
// A Continue the server has not acknowledged (data.answered, the highest submit_id it has)
// is sent again after 8, 16 and 32 s: a message lost to a reconnect, or to another element's
// rerun racing it, would otherwise leave the participant pressing a button that did nothing.
// The server stores a page once, so a second copy of a stored page is no new answer.
const RESEND_MS = 8000;
const MAX_RESENDS = 3;
const SINGLE_CONTROL = ["slider", "number", "text"];
// Only for a key the server did not send; the server sends the participant's language.
const FALLBACK = {
  submit: "Continue",
  optional: "(optional)",
  error_summary_title: "There is a problem",
  error_summary_intro: "",
  required: "Please answer this question.",
  slider_required: "Please move the slider to give your answer.",
  slider_untouched: "Not answered yet.",
  point_label: "{name} {value} of {max}",
  chars: "{n} / {max}",
  grid_caption: "",
  number_hint: "",
};

export default function (component) {
  const { parentElement, setTriggerValue } = component;
  const data = unpack(component.data);
  const root = parentElement.querySelector(".kq-root");
  if (!root || !data || !Array.isArray(data.items)) return undefined;
  let q = root[STATE];
  if (!q || q.pageKey !== data.page_key) {
    // Another page in the same element: the last page's Continue is answered (or moot).
    if (q) q.settle();
    root.querySelector(".kq-items").replaceChildren();
    q = createQuestionnaire(root, data);
    root[STATE] = q;
    root.dataset.page = data.page_key;
  }
  q.setTrigger = setTriggerValue;
  q.update(data);
  return undefined;
}

// ------------------------------------------------------------------ small helpers

// Item texts may use **bold** and *italics* (study files are markdown): draw them, never show
// (or let a screen reader read out) the asterisks. Everything else stays plain text.
function richText(text) {
  const frag = document.createDocumentFragment();
  const parts = String(text ?? "").split(/(\*\*[^*]+\*\*|\*[^*\s][^*]*\*|__[^_]+__)/g);
  for (const part of parts) {
    if (!part) continue;
    if ((part.startsWith("**") && part.endsWith("**")) || (part.startsWith("__") && part.endsWith("__"))) {
      frag.append(el("strong", { text: part.slice(2, -2) }));
    } else if (part.startsWith("*") && part.endsWith("*") && part.length > 2) {
      frag.append(el("em", { text: part.slice(1, -1) }));
    } else frag.append(document.createTextNode(part));
  }
  return frag;
}

function plainText(text) {
  return String(text ?? "").replace(/\*\*|__|\*/g, "");
}

function safeId(s) {
  return String(s).replace(/[^A-Za-z0-9_-]/g, "-");
}

function sameValue(a, b) {
  return a === b || (a !== null && b !== null && String(a) === String(b));
}

// ------------------------------------------------------------------ storage

function storageGet(key) {
  try {
    const raw = window.localStorage.getItem(key);
    return raw ? JSON.parse(raw) : null;
  } catch (err) {
    return null;
  }
}

function storageSet(key, value) {
  try {
    window.localStorage.setItem(key, JSON.stringify(value));
  } catch (err) {
    // Private mode or a full quota: answers still work, they only do not survive a reload.
  }
}

function storageRemove(key) {
  try {
    window.localStorage.removeItem(key);
  } catch (err) {
    /* nothing stored */
  }
}

// The server has moved the participant on from every other page of theirs: those pages are
// stored. Entries of anyone, older than a few days, are leftovers of abandoned sessions.
function storageTidy(prefix, keep) {
  try {
    const now = Date.now();
    const drop = [];
    for (let i = 0; i < window.localStorage.length; i += 1) {
      const key = window.localStorage.key(i);
      if (!key || !key.startsWith("kuleshov.q.") || key === keep) continue;
      if (key.startsWith(prefix)) drop.push(key);
      else {
        const entry = storageGet(key);
        if (!entry || !(now - Number(entry.saved_at) < STORE_MAX_AGE_MS)) drop.push(key);
      }
    }
    drop.forEach(storageRemove);
  } catch (err) {
    /* storage unavailable */
  }
}

// ------------------------------------------------------------------ the questionnaire

function createQuestionnaire(root, data) {
  const itemsBox = root.querySelector(".kq-items");
  const summary = root.querySelector(".kq-summary");
  const submitBtn = root.querySelector(".kq-submit");
  const items = data.items;
  const byId = Object.fromEntries(items.map((it) => [it.id, it]));
  let texts = { ...FALLBACK, ...(data.texts || {}) };
  const storageKey = data.storage_key || null;

  const q = {
    pageKey: data.page_key,
    setTrigger: null,
    answers: {},
    shownAt: Date.now(),
    views: {},
    errors: {},
    lastServerErrors: "{}",
    busyUntil: 0,
    // From the clock, so a page drawn again in the same session (a reconnect) numbers its
    // presses above the ones the server has already acknowledged.
    submitId: Date.now(),
    pending: null,
    resendTimer: null,
    update,
    settle,
  };
  for (const it of items) {
    q.answers[it.id] = { value: null, untouched: it.widget === "slider", first_ms: null, last_ms: null, changes: 0 };
  }

  const saved = storageKey ? storageGet(storageKey) : null;
  const restored = Boolean(saved && saved.v === STORE_VERSION && saved.page_key === data.page_key);
  if (restored) {
    if (Number.isFinite(saved.shown_at)) q.shownAt = saved.shown_at;
    for (const [id, a] of Object.entries(saved.answers || {})) {
      if (!byId[id] || !a || typeof a !== "object") continue;
      q.answers[id] = {
        value: restorable(byId[id], a.value),
        untouched: Boolean(a.untouched),
        first_ms: Number.isFinite(a.first_ms) ? a.first_ms : null,
        last_ms: Number.isFinite(a.last_ms) ? a.last_ms : null,
        changes: Number.isInteger(a.changes) ? a.changes : 0,
      };
    }
  }
  if (storageKey) storageTidy(data.storage_prefix || "\u0000", storageKey);

  // A value kept from an earlier visit only comes back if this page still offers it.
  function restorable(item, value) {
    if (value === null || value === undefined) return null;
    if (item.points) return item.points.some((p) => String(p) === String(value)) ? Number(value) : null;
    if (item.options && item.options.length) return item.options.some((o) => o.value === value) ? value : null;
    if (item.widget === "slider" || item.widget === "number") return Number.isFinite(Number(value)) ? Number(value) : null;
    return typeof value === "string" ? value : null;
  }

  function save() {
    if (!storageKey) return;
    storageSet(storageKey, {
      v: STORE_VERSION,
      page_key: q.pageKey,
      shown_at: q.shownAt,
      saved_at: Date.now(),
      answers: q.answers,
    });
  }

  // Record a response. `commit`: the participant settled on this value (a click, a slider
  // released, a field left), which is what `changes` counts.
  function respond(id, value, commit) {
    const a = q.answers[id];
    const t = Date.now() - q.shownAt;
    const changed = !sameValue(a.value, value) || a.untouched;
    if (a.first_ms === null) a.first_ms = t;
    a.last_ms = t;
    if (commit && (changed || a.pendingCommit)) a.changes += 1;
    a.pendingCommit = !commit && (changed || a.pendingCommit);
    a.value = value;
    a.untouched = false;
    if (q.errors[id] && value !== null && value !== "") setError(id, null);
    save();
  }

  // Times count from the page's first showing, also after a reload: keep that moment now.
  if (!restored) save();

  // ---------------------------------------------------------------- radiogroups
  function radiogroup(id, choices, labelledBy, className) {
    const group = el("div", { class: className, role: "radiogroup", "aria-labelledby": labelledBy });
    if (byId[id].required) group.setAttribute("aria-required", "true");
    const buttons = choices.map((c) => {
      const b = c.node;
      b.setAttribute("role", "radio");
      b.setAttribute("type", "button");
      b.dataset.value = String(c.value);
      b.addEventListener("click", () => select(c.value, true));
      b.addEventListener("keydown", (ev) => {
        const i = buttons.indexOf(b);
        let j = null;
        if (ev.key === "ArrowRight" || ev.key === "ArrowDown") j = (i + 1) % buttons.length;
        else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") j = (i - 1 + buttons.length) % buttons.length;
        else if (ev.key === "Home") j = 0;
        else if (ev.key === "End") j = buttons.length - 1;
        if (j === null) return;
        ev.preventDefault();
        // Arrows move the focus only; Space or Enter chooses. Choosing on every arrow press
        // would record each point passed on the way as a change of answer.
        buttons.forEach((x, k) => x.setAttribute("tabindex", k === j ? "0" : "-1"));
        buttons[j].focus();
      });
      group.append(b);
      return b;
    });
    function paint(value) {
      let checked = -1;
      buttons.forEach((b, k) => {
        const on = value !== null && b.dataset.value === String(value);
        b.setAttribute("aria-checked", on ? "true" : "false");
        if (on) checked = k;
      });
      buttons.forEach((b, k) => b.setAttribute("tabindex", k === (checked < 0 ? 0 : checked) ? "0" : "-1"));
    }
    function select(value, commit) {
      respond(id, value, commit);
      paint(value);
    }
    paint(q.answers[id].value);
    return { group, focusTarget: () => buttons.find((b) => b.getAttribute("tabindex") === "0") || buttons[0], invalidTarget: group };
  }

  function anchorsRow(item) {
    const entries = Object.entries(item.anchors || {});
    if (!entries.length) return null;
    const row = el("div", { class: "kq-anchors", "aria-hidden": "true" });
    for (const [, label] of entries) row.append(el("span", { text: label }));
    return row;
  }

  function pointLabel(item, value) {
    const anchor = (item.anchors || {})[String(value)];
    const name = item.pictograms ? item.label || "" : "";
    const base = fill(texts.point_label, { name, value, max: item.max, min: item.min }).trim();
    return anchor ? `${base}, ${anchor}` : base;
  }

  function scale(container, item, labelledBy) {
    const points = item.points || [];
    const choices = points.map((v) => {
      const node = el("button", { class: "kq-point", "aria-label": pointLabel(item, v) });
      const pic = item.pictograms && item.pictograms[String(v)];
      if (pic) node.append(el("img", { src: pic, alt: "", draggable: "false" }));
      node.append(el("span", { class: "kq-n", text: String(v), "aria-hidden": "true" }));
      return { value: v, node };
    });
    const cls = `kq-scale kq-n${points.length}${item.pictograms ? " kq-pictorial" : ""}`;
    const view = radiogroup(item.id, choices, labelledBy, cls);
    view.group.style.setProperty("--kq-n", String(points.length));
    container.append(view.group);
    return view;
  }

  // ---------------------------------------------------------------- one item
  // A single control (slider, number, text) gets a real <label> inside the legend: the legend
  // names the group, the label names the control, for every screen reader and checker.
  function legendFor(item, cls) {
    const legend = el("legend", { class: cls, id: `kq-legend-${safeId(item.id)}` });
    const single = SINGLE_CONTROL.includes(item.widget);
    const holder = single ? el("label", { for: `kq-ctl-${safeId(item.id)}` }) : legend;
    if (data.numbered) holder.append(el("span", { class: "kq-num", text: `${item.position}.` }));
    holder.append(richText(item.text));
    if (!item.required) holder.append(el("span", { class: "kq-optional", text: texts.optional }));
    if (single) legend.append(holder);
    return legend;
  }

  function errorNode(item) {
    return el("p", { class: "kq-error", id: `kq-err-${safeId(item.id)}`, hidden: true });
  }

  function renderItem(item) {
    const box = el("fieldset", { class: `kq-item kq-type-${item.type} kq-widget-${item.widget}`, id: `kq-item-${safeId(item.id)}`, "data-item": item.id });
    if (item.points) box.style.setProperty("--kq-n", String(item.points.length));
    const legend = legendFor(item, "kq-legend");
    box.append(legend);
    let view;
    if (item.widget === "points") {
      view = scale(box, item, legend.id);
      const anchors = anchorsRow(item);
      if (anchors) box.append(anchors);
    } else if (item.widget === "choice") {
      const choices = (item.options || []).map((o) => {
        const node = el("button", { class: "kq-option" }, el("span", { class: "kq-dot", "aria-hidden": "true" }));
        node.append(el("span", { class: "kq-option-label" }, richText(o.label)));
        return { value: o.value, node };
      });
      view = radiogroup(item.id, choices, legend.id, "kq-options");
      box.append(view.group);
    } else if (item.widget === "slider") {
      view = slider(box, item);
    } else if (item.widget === "number") {
      view = numberField(box, item);
    } else {
      view = textField(box, item);
    }
    const err = errorNode(item);
    box.append(err);
    q.views[item.id] = { ...view, box, err };
    return box;
  }

  function slider(box, item) {
    const wrap = el("div", { class: "kq-slider" });
    const mid = Number(item.min) + Math.round((Number(item.max) - Number(item.min)) / (2 * (item.step || 1))) * (item.step || 1);
    const input = el("input", {
      type: "range",
      id: `kq-ctl-${safeId(item.id)}`,
      min: item.min,
      max: item.max,
      step: item.step || 1,
      value: mid,
    });
    const anchors = anchorsRow(item);
    const shown = el("p", { class: "kq-slider-value", id: `kq-val-${safeId(item.id)}`, "aria-hidden": "true" });
    wrap.append(input);
    if (anchors) wrap.append(anchors);
    wrap.append(shown);
    box.append(wrap);
    const unit = item.unit ? (item.unit === "%" ? " %" : ` ${item.unit}`) : "";
    function paint(a) {
      const touched = a.value !== null && !a.untouched;
      wrap.classList.toggle("kq-untouched", !touched);
      if (touched) input.value = String(a.value);
      const words = touched ? `${a.value}${unit}` : texts.slider_untouched;
      shown.textContent = words;
      input.setAttribute("aria-valuetext", words);
    }
    const current = () => Number(input.value);
    input.addEventListener("input", () => {
      respond(item.id, current(), false);
      paint(q.answers[item.id]);
    });
    input.addEventListener("change", () => {
      respond(item.id, current(), true);
      paint(q.answers[item.id]);
    });
    // A click on the track right where the hidden thumb sits changes nothing, so no input or
    // change event comes: it is still an answer.
    input.addEventListener("pointerup", () => {
      if (q.answers[item.id].untouched) {
        respond(item.id, current(), true);
        paint(q.answers[item.id]);
      }
    });
    paint(q.answers[item.id]);
    return { paint, focusTarget: () => input, invalidTarget: input };
  }

  function numberField(box, item) {
    const hintText = item.min !== null && item.max !== null && texts.number_hint
      ? fill(texts.number_hint, { min: item.min, max: item.max }) : "";
    const hintId = `kq-hint-${safeId(item.id)}`;
    const input = el("input", {
      class: "kq-number",
      id: `kq-ctl-${safeId(item.id)}`,
      type: "number",
      inputmode: Number.isInteger(item.step || 1) ? "numeric" : "decimal",
      min: item.min,
      max: item.max,
      step: item.step || "any",
      "aria-describedby": hintText ? hintId : null,
      "aria-required": item.required ? "true" : null,
    });
    const row = el("div", {}, input);
    if (item.unit) row.append(el("span", { class: "kq-unit", text: item.unit }));
    box.append(row);
    if (hintText) box.append(el("p", { class: "kq-hint", id: hintId, text: hintText }));
    const read = () => (input.value.trim() === "" ? null : Number(input.value));
    input.addEventListener("input", () => respond(item.id, read(), false));
    input.addEventListener("change", () => respond(item.id, read(), true));
    const a = q.answers[item.id];
    if (a.value !== null) input.value = String(a.value);
    return { focusTarget: () => input, invalidTarget: input, describedBy: hintText ? hintId : null };
  }

  function textField(box, item) {
    const limit = Number(item.max_length) || 2000;
    const counterId = `kq-count-${safeId(item.id)}`;
    const area = el("textarea", {
      class: "kq-text",
      id: `kq-ctl-${safeId(item.id)}`,
      maxlength: limit,
      rows: 3,
      "aria-describedby": counterId,
      "aria-required": item.required ? "true" : null,
    });
    const counter = el("p", { class: "kq-counter", id: counterId });
    box.append(area, counter);
    const a = q.answers[item.id];
    if (typeof a.value === "string") area.value = a.value;
    const count = () => {
      counter.textContent = fill(texts.chars, { n: area.value.length, max: limit });
    };
    area.addEventListener("input", () => {
      count();
      respond(item.id, area.value === "" ? null : area.value, false);
    });
    area.addEventListener("change", () => respond(item.id, area.value === "" ? null : area.value, true));
    count();
    return { focusTarget: () => area, invalidTarget: area, describedBy: counterId };
  }

  // ---------------------------------------------------------------- grid (discrete emotions)
  function renderGrid(gridItems) {
    const first = gridItems[0];
    const box = el("div", { class: "kq-grid", role: "group", id: `kq-${safeId(first.grid)}` });
    if (texts.grid_caption) {
      const head = el("p", { class: "kq-grid-head", id: `kq-head-${safeId(first.grid)}`, text: texts.grid_caption });
      box.append(head);
      box.setAttribute("aria-labelledby", head.id);
    }
    const anchors = anchorsRow(first);
    if (anchors) box.append(anchors);
    for (const item of gridItems) {
      const row = el("fieldset", { class: "kq-row", id: `kq-item-${safeId(item.id)}`, "data-item": item.id });
      const legend = legendFor(item, "kq-row-legend");
      row.append(legend);
      const view = scale(row, item, legend.id);
      const err = errorNode(item);
      row.append(err);
      q.views[item.id] = { ...view, box: row, err };
      box.append(row);
    }
    return box;
  }

  let i = 0;
  while (i < items.length) {
    const item = items[i];
    if (item.grid) {
      let j = i;
      while (j + 1 < items.length && items[j + 1].grid === item.grid) j += 1;
      itemsBox.append(renderGrid(items.slice(i, j + 1)));
      i = j + 1;
    } else {
      itemsBox.append(renderItem(item));
      i += 1;
    }
  }

  // ---------------------------------------------------------------- errors
  function setError(id, message) {
    const v = q.views[id];
    if (!v) return;
    const target = v.invalidTarget;
    const described = [message ? v.err.id : null, v.describedBy].filter(Boolean).join(" ");
    if (message) {
      q.errors[id] = message;
      v.err.textContent = message;
      v.err.hidden = false;
      v.box.classList.add("kq-invalid");
      target.setAttribute("aria-invalid", "true");
    } else {
      delete q.errors[id];
      v.err.textContent = "";
      v.err.hidden = true;
      v.box.classList.remove("kq-invalid");
      target.removeAttribute("aria-invalid");
    }
    if (described) target.setAttribute("aria-describedby", described);
    else target.removeAttribute("aria-describedby");
    if (!message) drawSummary();
  }

  function focusItem(id) {
    const v = q.views[id];
    if (!v) return;
    v.box.scrollIntoView({ block: "center" });
    const target = v.focusTarget();
    if (target) target.focus({ preventScroll: true });
  }

  function drawSummary() {
    const ids = items.map((it) => it.id).filter((id) => q.errors[id]);
    const list = summary.querySelector(".kq-summary-list");
    list.replaceChildren();
    if (!ids.length) {
      summary.hidden = true;
      return;
    }
    summary.querySelector(".kq-summary-title").textContent = texts.error_summary_title;
    const intro = summary.querySelector(".kq-summary-intro");
    intro.textContent = texts.error_summary_intro || "";
    intro.hidden = !texts.error_summary_intro;
    for (const id of ids) {
      const it = byId[id];
      const link = el("a", { href: `#kq-item-${safeId(id)}` });
      link.textContent = `${data.numbered ? `${it.position}. ` : ""}${plainText(it.text)}`;
      link.addEventListener("click", (ev) => {
        ev.preventDefault();
        focusItem(id);
      });
      list.append(el("li", {}, link, el("span", { class: "kq-summary-why", text: q.errors[id] })));
    }
    summary.hidden = false;
  }

  function showErrors(errors, focusFirst) {
    for (const it of items) setError(it.id, errors[it.id] || null);
    drawSummary();
    const first = items.find((it) => errors[it.id]);
    if (first && focusFirst) focusItem(first.id);
  }

  // ---------------------------------------------------------------- submit
  function missing() {
    const out = {};
    for (const it of items) {
      const a = q.answers[it.id];
      const empty = a.value === null || a.value === "" || (typeof a.value === "string" && !a.value.trim());
      if (it.required && (empty || (it.widget === "slider" && a.untouched))) {
        out[it.id] = it.widget === "slider" ? texts.slider_required : texts.required;
      }
    }
    return out;
  }

  root.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (Date.now() < q.busyUntil) return;
    const problems = missing();
    if (Object.keys(problems).length) {
      showErrors(problems, true);
      return;
    }
    showErrors({}, false);
    const answers = {};
    for (const it of items) {
      const a = q.answers[it.id];
      answers[it.id] = {
        value: it.widget === "slider" && a.untouched ? null : a.value,
        untouched: it.widget === "slider" ? Boolean(a.untouched) : false,
        first_ms: a.first_ms,
        last_ms: a.last_ms,
        changes: a.changes,
        shown_position: it.position,
      };
    }
    q.busyUntil = Date.now() + BUSY_MS;
    submitBtn.setAttribute("aria-disabled", "true");
    q.submitId += 1;
    send({ page_key: q.pageKey, answers, submit_id: q.submitId }, 0);
  });

  function send(payload, resends) {
    clearTimeout(q.resendTimer);
    q.pending = payload.submit_id;
    // `resend` makes each copy a new value (a trigger equal to the last one might be no news).
    if (q.setTrigger) q.setTrigger("submit", resends ? { ...payload, resend: resends } : payload);
    if (resends >= MAX_RESENDS) return;
    q.resendTimer = setTimeout(() => {
      // Gone (the server moved on and removed this page) or answered: nothing to resend.
      if (root.isConnected && q.pending === payload.submit_id) send(payload, resends + 1);
    }, RESEND_MS * 2 ** resends);
  }

  // No Continue waiting for the server's acknowledgement any more: no copy goes out.
  function settle() {
    q.pending = null;
    clearTimeout(q.resendTimer);
  }

  // ---------------------------------------------------------------- every render
  function update(next) {
    texts = { ...FALLBACK, ...(next.texts || {}) };
    submitBtn.textContent = texts.submit;
    if (q.pending !== null && Number(next.answered) >= q.pending) settle();
    // A new render means the server has answered the last submit (or never got one).
    q.busyUntil = 0;
    submitBtn.removeAttribute("aria-disabled");
    if (next.stored && storageKey) storageRemove(storageKey);
    const serverErrors = next.errors && typeof next.errors === "object" ? next.errors : {};
    const fingerprint = JSON.stringify(serverErrors);
    if (fingerprint !== q.lastServerErrors) {
      q.lastServerErrors = fingerprint;
      showErrors(serverErrors, Object.keys(serverErrors).length > 0);
    }
  }

  return q;
}
