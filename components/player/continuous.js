// Kuleshov continuous rating and moment marking during playback (loaded before player.js in the
// same module: app_pages/player.py joins the files; player.js calls kuleshovCapture once per clip).
//
// What the browser knows best stays here: the video's own clock, the pointer and the keys. A
// sample is the control's value stamped with video.currentTime, taken `rate_hz` times a second of
// playback and only while the video really advances, so a pause, a stall or a blocked seek
// never shifts the trace in video time; after a backward seek or a replay, samples resume only
// past the furthest time already sampled (the first pass through the clip is the trace).
// Samples and marks leave in batches (every FLUSH_MS, at a pause, at the end) to their own
// route, never as a Streamlit rerun. Each batch is written to localStorage before it is sent and
// removed only once the server has judged it, so a dropped connection or a reload loses
// nothing; the server stores a batch once whatever how often it arrives (key: position, attempt,
// seq). A reload draws a new `attempt`: the trial restarts cleanly, and the old attempt's trace
// is kept (the loader marks it partial). Every word shown comes in `data` from the catalogue.

const KC_FLUSH_MS = 3000;
const KC_MAX_PER_POST = 20;
const KC_STORE_PREFIX = "kuleshov.traces.";

function kuleshovCapture(root, video, data) {
  const cap = data.capture;
  if (!cap) return null;
  const mode = cap.mode; // 1d | 2d | marks
  const texts = cap.texts || {};
  const storeKey = KC_STORE_PREFIX + data.token;
  const attempt = randomAttempt();
  const everyMs = Math.max(1000 / 60, 1000 / (Number(cap.rate_hz) || 10));
  const flushMs = Number(cap.flush_ms) || KC_FLUSH_MS;
  const xr = [Number(cap.min), Number(cap.max)];
  const yr = [Number(cap.arousal_min), Number(cap.arousal_max)];
  const mid = (r) => (r[0] + r[1]) / 2;

  const s = {
    x: cap.start ?? (mode === "marks" ? null : mid(xr)),
    y: mode === "2d" ? (cap.arousal_start ?? mid(yr)) : null,
    startX: null,
    startY: null,
    firstMoveT: null,
    buf: { t: [], x: [], y: [], marks: [] },
    seq: 0,
    furthest: -1,
    started: false,
    finalSent: false,
    outbox: [],
    inflight: false,
    backoff: 1000,
    retryTimer: null,
    disposed: false,
    dragging: false,
  };
  s.startX = s.x;
  s.startY = s.y;

  const box = document.createElement("div");
  box.className = "kc-root";
  const stage = root.querySelector(".kp-stage");
  (stage || root.firstChild).after(box);
  const live = el("div", { class: "kc-live" });
  live.setAttribute("role", "status");
  live.setAttribute("aria-live", "polite");

  let control = null;
  let thumb = null;
  if (mode === "1d" || mode === "2d") buildControl();
  const markButtons = buildMarks();
  box.appendChild(live);
  render();

  // ------------------------------------------------------------------ control
  // (el() is common.js's: el(tag, {class, text, ...attributes}, ...children))
  function buildControl() {
    const wrap = el("div", { class: `kc-control kc-${mode}` + (mode === "1d" ? ` kc-${cap.orientation || "horizontal"}` : "") });
    const itemId = `kc-item-${attempt}`;
    const hintId = `kc-hint-${attempt}`;
    const item = el("p", { class: "kc-item", text: cap.item || "" });
    item.id = itemId;
    wrap.appendChild(item);
    control = el("div", { class: "kc-area" });
    control.tabIndex = 0;
    control.setAttribute("role", "slider");
    control.setAttribute("aria-labelledby", itemId);
    control.setAttribute("aria-describedby", hintId);
    thumb = el("div", { class: "kc-thumb" });
    control.appendChild(thumb);
    if (mode === "1d") {
      const vertical = cap.orientation === "vertical";
      control.setAttribute("aria-orientation", vertical ? "vertical" : "horizontal");
      control.setAttribute("aria-valuemin", String(xr[0]));
      control.setAttribute("aria-valuemax", String(xr[1]));
      const low = el("span", { class: "kc-low", text: cap.min_label || "" });
      const high = el("span", { class: "kc-high", text: cap.max_label || "" });
      const row = el("div", { class: "kc-row" });
      if (vertical) row.append(high, control, low);
      else row.append(low, control, high);
      wrap.appendChild(row);
    } else {
      if (texts.grid_role) control.setAttribute("aria-roledescription", texts.grid_role);
      const grid = el("div", { class: "kc-grid" });
      grid.append(el("span", { class: "kc-top", text: cap.arousal_max_label || "" }), el("span", { class: "kc-left", text: cap.min_label || "" }),
        control, el("span", { class: "kc-right", text: cap.max_label || "" }), el("span", { class: "kc-bottom", text: cap.arousal_min_label || "" }));
      wrap.appendChild(grid);
    }
    const hint = el("p", { class: "kc-hint", text: mode === "1d" ? texts.slider_hint : texts.grid_hint });
    hint.id = hintId;
    wrap.appendChild(hint);
    box.appendChild(wrap);

    control.addEventListener("pointerdown", (e) => {
      s.dragging = true;
      try { control.setPointerCapture(e.pointerId); } catch (err) { /* synthetic pointers */ }
      control.focus({ preventScroll: true });
      fromPointer(e);
      e.preventDefault();
    });
    control.addEventListener("pointermove", (e) => { if (s.dragging) fromPointer(e); });
    const stop = () => { s.dragging = false; };
    control.addEventListener("pointerup", stop);
    control.addEventListener("pointercancel", stop);
    control.addEventListener("keydown", onKey);
  }

  function clamp(v, r) { return Math.min(r[1], Math.max(r[0], v)); }
  function round(v) { return Math.round(v * 1000) / 1000; }

  function fromPointer(e) {
    const rect = control.getBoundingClientRect();
    const fx = rect.width ? (e.clientX - rect.left) / rect.width : 0.5;
    const fy = rect.height ? (rect.bottom - e.clientY) / rect.height : 0.5;
    if (mode === "1d") {
      const f = cap.orientation === "vertical" ? fy : fx;
      setValue(xr[0] + clamp(f, [0, 1]) * (xr[1] - xr[0]), null);
    } else {
      setValue(xr[0] + clamp(fx, [0, 1]) * (xr[1] - xr[0]), yr[0] + clamp(fy, [0, 1]) * (yr[1] - yr[0]));
    }
  }

  function onKey(e) {
    const steps = Number(cap.key_steps) || 20;
    const dx = (xr[1] - xr[0]) / steps;
    const dy = (yr[1] - yr[0]) / steps;
    const big = e.key === "PageUp" || e.key === "PageDown" ? 5 : 1;
    let x = s.x;
    let y = s.y;
    if (mode === "1d") {
      if (e.key === "ArrowUp" || e.key === "ArrowRight" || e.key === "PageUp") x += dx * big;
      else if (e.key === "ArrowDown" || e.key === "ArrowLeft" || e.key === "PageDown") x -= dx * big;
      else if (e.key === "Home") x = xr[0];
      else if (e.key === "End") x = xr[1];
      else return;
    } else {
      if (e.key === "ArrowRight") x += dx;
      else if (e.key === "ArrowLeft") x -= dx;
      else if (e.key === "ArrowUp" || e.key === "PageUp") y += dy * big;
      else if (e.key === "ArrowDown" || e.key === "PageDown") y -= dy * big;
      else return;
    }
    e.preventDefault();
    setValue(x, y);
  }

  function setValue(x, y) {
    const nx = round(clamp(x, xr));
    const ny = mode === "2d" ? round(clamp(y, yr)) : null;
    if (nx === s.x && ny === s.y) return;
    s.x = nx;
    s.y = ny;
    if (s.firstMoveT === null) s.firstMoveT = round(Number.isFinite(video.currentTime) ? video.currentTime : 0);
    render();
  }

  function format(template, values) {
    return String(template || "").replace(/\{(\w+)\}/g, (m, k) => (k in values ? String(values[k]) : m));
  }

  function render() {
    if (!control) return;
    control.dataset.x = String(s.x);
    if (mode === "2d") control.dataset.y = String(s.y);
    const fx = (s.x - xr[0]) / (xr[1] - xr[0]);
    if (mode === "1d") {
      control.setAttribute("aria-valuenow", String(s.x));
      control.setAttribute("aria-valuetext", String(round(s.x)));
      if (cap.orientation === "vertical") thumb.style.bottom = `${fx * 100}%`;
      else thumb.style.left = `${fx * 100}%`;
    } else {
      const fy = (s.y - yr[0]) / (yr[1] - yr[0]);
      control.setAttribute("aria-valuetext", format(texts.grid_value, { v: round(s.x), a: round(s.y) }));
      thumb.style.left = `${fx * 100}%`;
      thumb.style.bottom = `${fy * 100}%`;
    }
  }

  // ------------------------------------------------------------------ marks
  function buildMarks() {
    const prompts = cap.prompts || [];
    if (!prompts.length) return [];
    const wrap = el("div", { class: "kc-marks" });
    wrap.appendChild(el("p", { class: "kc-marks-hint", text: cap.marks_hint || "" }));
    const row = el("div", { class: "kc-mark-row" });
    const buttons = prompts.map((p) => {
      const b = el("button", { class: "kc-mark", text: p.text || p.label });
      b.type = "button";
      b.dataset.prompt = p.id;
      b.setAttribute("aria-keyshortcuts", p.key);
      // A tap must not take the focus from the rating control (its arrows would stop working).
      b.addEventListener("pointerdown", (e) => e.preventDefault());
      b.addEventListener("click", () => mark(p));
      row.appendChild(b);
      return b;
    });
    wrap.appendChild(row);
    box.appendChild(wrap);
    return buttons;
  }

  function mark(p) {
    if (!s.started || video.ended || s.disposed) return;
    const t = round(video.currentTime);
    s.buf.marks.push([t, p.id]);
    live.textContent = format(texts.marked, { label: p.label });
    const b = markButtons.find((x) => x.dataset.prompt === p.id);
    if (b) {
      b.classList.add("kc-flash");
      setTimeout(() => b.classList.remove("kc-flash"), 300);
    }
  }

  const onDocKey = (e) => {
    if (!video.isConnected) return dispose();
    if (e.repeat || e.ctrlKey || e.metaKey || e.altKey) return;
    // Inside a component's shadow root e.target is the host: the real target is the path's first.
    const target = (e.composedPath && e.composedPath()[0]) || e.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
    const p = (cap.prompts || []).find((x) => x.key === String(e.key).toLowerCase());
    if (p) {
      e.preventDefault();
      mark(p);
    }
  };
  if ((cap.prompts || []).length) document.addEventListener("keydown", onDocKey);

  // ------------------------------------------------------------------ sampling
  function sample() {
    if (!video.isConnected) return dispose();
    if (mode === "marks" || video.paused || video.ended || video.seeking || video.readyState < 2) return;
    push(video.currentTime);
  }

  function push(time) {
    if (mode === "marks" || !Number.isFinite(time)) return;
    const t = round(time);
    if (t <= s.furthest) return; // not yet past what was already sampled (a stall, a seek back, a replay)
    s.furthest = t;
    s.buf.t.push(t);
    s.buf.x.push(s.x);
    if (mode === "2d") s.buf.y.push(s.y);
  }

  const sampleTimer = setInterval(sample, everyMs);
  const flushTimer = setInterval(() => {
    if (!video.isConnected) return dispose();
    if (s.buf.t.length || s.buf.marks.length) seal(false);
    send();
  }, flushMs);

  const on = (name, fn) => video.addEventListener(name, fn);
  // Start or Resume pressed: the rating control takes the focus from where the player left it
  // (its stage or button, or nowhere), so the arrow keys work at once. This happens at "play",
  // which follows the press at once; at "playing", which waits for data (and comes again after
  // every stall), a keyboard user may already have moved on (to the captions toggle, a mark
  // button, out of the page), and taking the focus back then made a Tab go round the page and
  // out of the window, whose blur pauses the clip: the keys moved a control that was not sampled.
  const onPlay = () => {
    if (!control) return;
    const inShadow = root.getRootNode().activeElement; // null when the focus is outside this component
    const active = inShadow || document.activeElement;
    if (active === control) return;
    const leftByPlayer = !active || active === document.body || (stage && stage.contains(active));
    if (leftByPlayer) control.focus({ preventScroll: true });
  };
  const onPlaying = () => {
    s.started = true;
    push(video.currentTime);
  };
  // A pause (or leaving the page) takes one last sample at the paused time, so the value held
  // up to the pause is in the trace even where the last tick came before the control moved;
  // push() drops it when that time is already sampled, so times stay strictly increasing.
  const onPause = () => {
    if (video.ended) return;
    push(video.currentTime);
    if (s.buf.t.length || s.buf.marks.length) seal(false);
    send();
  };
  const onEnded = () => {
    push(video.currentTime);
    if (!s.finalSent) {
      s.finalSent = true;
      seal(true);
    }
    send();
  };
  on("play", onPlay);
  on("playing", onPlaying);
  on("pause", onPause);
  on("ended", onEnded);
  const onOnline = () => { s.backoff = 1000; send(); };
  const onPageHide = () => {
    if (!video.isConnected) return;
    if (!video.paused && !video.ended) push(video.currentTime);
    if (s.buf.t.length || s.buf.marks.length) seal(false);
    beacon();
  };
  window.addEventListener("online", onOnline);
  window.addEventListener("pagehide", onPageHide);

  // ------------------------------------------------------------------ batches out
  function keyOf(b) { return `${b.position}:${b.attempt}:${b.seq}`; }

  function seal(final) {
    const b = {
      position: data.position,
      attempt,
      seq: s.seq++,
      mode,
      final: Boolean(final),
      t: s.buf.t,
      x: mode === "marks" ? [] : s.buf.x,
      marks: s.buf.marks,
      start_x: s.startX,
      first_move_t: s.firstMoveT,
      client_time: Date.now(),
    };
    if (mode === "2d") {
      b.y = s.buf.y;
      b.start_y = s.startY;
    }
    s.buf = { t: [], x: [], y: [], marks: [] };
    s.outbox.push(b);
    save();
  }

  function load() {
    try {
      const old = JSON.parse(window.localStorage.getItem(storeKey) || "[]");
      if (Array.isArray(old)) s.outbox.push(...old.filter((b) => b && typeof b === "object"));
    } catch (err) { /* storage off or damaged: nothing to resend */ }
  }

  function save() {
    try {
      if (s.outbox.length) window.localStorage.setItem(storeKey, JSON.stringify(s.outbox));
      else window.localStorage.removeItem(storeKey);
    } catch (err) { /* full or off: the batches stay in memory */ }
  }

  function settle(keys) {
    if (!keys.size) return;
    s.outbox = s.outbox.filter((b) => !keys.has(keyOf(b)));
    save();
  }

  function beacon() {
    if (!s.outbox.length || !navigator.sendBeacon) return;
    // The answer cannot be read: the batches stay stored and are sent again on the next page
    // (a repeat is stored once).
    const body = JSON.stringify({ token: data.token, batches: s.outbox.slice(0, KC_MAX_PER_POST) });
    navigator.sendBeacon(data.traces_url, new Blob([body], { type: "application/json" }));
  }

  function retryLater() {
    clearTimeout(s.retryTimer);
    s.retryTimer = setTimeout(send, s.backoff);
    s.backoff = Math.min(s.backoff * 2, 30000);
  }

  async function send() {
    if (s.inflight || !s.outbox.length) return;
    const batch = s.outbox.slice(0, KC_MAX_PER_POST);
    s.inflight = true;
    let again = false;
    try {
      const resp = await fetch(data.traces_url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: data.token, batches: batch }),
        credentials: "same-origin",
        keepalive: true,
      });
      live.classList.remove("kc-offline");
      if (live.textContent === texts.offline) live.textContent = "";
      if (resp.status >= 500 || resp.status === 429) {
        again = true;
      } else {
        let answer = null;
        try { answer = await resp.json(); } catch (err) { answer = null; }
        const done = new Set();
        if (answer && Array.isArray(answer.accepted) && Array.isArray(answer.refused)) {
          for (const i of answer.accepted) if (batch[i]) done.add(keyOf(batch[i]));
          for (const r of answer.refused) if (batch[r.index]) done.add(keyOf(batch[r.index]));
          if (answer.refused.length) console.warn("kuleshov capture: batches refused", answer.refused);
        } else {
          // 4xx for the whole request (link no longer valid, too large): resending is useless.
          for (const b of batch) done.add(keyOf(b));
          console.warn("kuleshov capture: batches refused", resp.status, answer && answer.error);
        }
        settle(done);
        s.backoff = 1000;
      }
    } catch (err) {
      // No answer at all (offline, connection cut): everything stays stored for later.
      again = true;
      if (texts.offline) {
        live.textContent = texts.offline;
        live.classList.add("kc-offline");
      }
    } finally {
      s.inflight = false;
    }
    if (again) retryLater();
    else if (s.outbox.length) send();
  }

  function dispose() {
    if (s.disposed) return;
    s.disposed = true;
    clearInterval(sampleTimer);
    clearInterval(flushTimer);
    clearTimeout(s.retryTimer);
    if (s.buf.t.length || s.buf.marks.length) seal(false);
    send();
    document.removeEventListener("keydown", onDocKey);
    window.removeEventListener("online", onOnline);
    window.removeEventListener("pagehide", onPageHide);
    video.removeEventListener("play", onPlay);
    video.removeEventListener("playing", onPlaying);
    video.removeEventListener("pause", onPause);
    video.removeEventListener("ended", onEnded);
    box.remove();
  }

  load();
  send();

  return {
    attempt,
    dispose,
    flush: () => { if (s.buf.t.length || s.buf.marks.length) seal(false); send(); },
    // For tests and the researcher's preview: what the control shows and what is waiting.
    state: () => ({ x: s.x, y: s.y, started: s.started, firstMoveT: s.firstMoveT, outbox: s.outbox.length }),
  };
}

function randomAttempt() {
  try {
    return crypto.getRandomValues(new Uint32Array(1))[0] >>> 1;
  } catch (err) {
    return Math.floor(Math.random() * 2147483647);
  }
}
