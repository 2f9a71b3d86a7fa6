// Kuleshov clip player (Streamlit components v2, no build step).
//
// Streamlit calls the default export on every rerun that reaches this element; the DOM
// (and so the <video>) survives, so all state lives on the root element and a call with the
// same `instance` only refreshes callbacks. Playback events are batched and POSTed to the
// app's own /api/events route: a Streamlit rerun per event would cost a full script run each.
// Python hears only about the few things that change the page: enough watched, ended, failed.
// Every word it shows comes in `data` from the text catalogue (study/texts.py, keys player.*).
//
// What was seen and heard: a clip pauses when its page is hidden or the window loses focus,
// and resumes only from the participant's click on Resume (so time away never counts as
// watched); volume and mute changes, load time (source set -> canplay), stalls, offline
// periods and replays go out as events, from which the server computes the trial's playback
// columns (study/playback.py). With `require_sound` the clip starts with sound and pauses
// when muted. While the ratings are open, the next clip (`next_src`) is loaded in a hidden
// <video>, so it starts at once on the next page.

const STATE = "__kuleshovPlayer";
const FLUSH_MS = 4000;
const FLUSH_AT = 25;
const MAX_BATCH = 100;
// Server errors (5xx, 429) an event may meet before the player gives it up (about 2 min of backoff).
const MAX_SERVER_TRIES = 8;
const LOAD_TIMEOUT_MS = 20000;
// A jump larger than this between two timeupdates is a seek, not playback.
const MAX_STEP_S = 1.5;

export default function (component) {
  const { parentElement, setStateValue } = component;
  const data = unpack(component.data);
  const root = parentElement.querySelector(".kp-root");
  if (!root || !data) return undefined;
  let player = root[STATE];
  if (!player || player.instance !== data.instance) {
    if (player) player.dispose();
    player = createPlayer(root, data);
    root[STATE] = player;
  }
  player.setStateValue = setStateValue;
  // Never tear the player down here: Streamlit may call this on reruns, and the same
  // <video> must keep playing. Only push queued events out.
  return () => player.flush(true);
}

function createPlayer(root, data) {
  const video = root.querySelector(".kp-video");
  const overlay = root.querySelector(".kp-overlay");
  const startBtn = root.querySelector(".kp-start");
  const hint = root.querySelector(".kp-hint");
  const status = root.querySelector(".kp-status");
  const errorBox = root.querySelector(".kp-error");
  const errorText = root.querySelector(".kp-error-text");
  const retryBtn = root.querySelector(".kp-retry");
  const stage = root.querySelector(".kp-stage");
  const tools = root.querySelector(".kp-tools");
  const ccBtn = root.querySelector(".kp-cc");

  const minShare = Number(data.min_share ?? 1);
  const allowSeek = Boolean(data.allow_seek);
  const requireSound = Boolean(data.require_sound);
  // seq must be unique per participant and clip (the store drops repeats), also across a
  // reload or a second tab: start from the clock in seconds x 1000, so a later instance
  // always starts above an earlier one unless it emitted > 1000 events per second.
  const seqBase = Number.isInteger(data.seq_base)
    ? data.seq_base
    : (Math.floor(Date.now() / 1000) % 2000000) * 1000;

  const p = {
    instance: data.instance,
    setStateValue: null,
    queue: [],
    counter: 0,
    inflight: false,
    backoff: 1000,
    flushTimer: null,
    intervals: [],
    lastT: null,
    lastGoodT: 0,
    reportedEnough: false,
    reportedEnded: false,
    loadedAt: null,
    srcSetAt: 0,
    attempt: 0,
    loadTimer: null,
    failed: false,
    atEnd: false,
    disposed: false,
    // Why the clip is paused, when the player paused it: "hidden", "blur" or "muted". Only a
    // click on the overlay's button (Resume / sound on) plays it again.
    pauseReason: null,
    canplaySeen: false,
    soundRecorded: false,
    preloader: null,
    // The last few events' names, and when this player was made: what a failing browser
    // test reports (tests/browser_util.py page_report), never sent anywhere.
    recent: [],
    madeAt: Math.round(performance.now()),
  };

  // ------------------------------------------------------------------ events out
  // How many server errors an event may meet before it is given up (kept beside the event,
  // not inside it, so it is never sent).
  const tries = new WeakMap();
  function bumpTries(ev) {
    const n = (tries.get(ev) || 0) + 1;
    tries.set(ev, n);
    return n;
  }

  function record(name, detail, extra) {
    if (p.disposed) return;
    p.recent.push(name);
    if (p.recent.length > 12) p.recent.shift();
    const t = Number.isFinite(video.currentTime) ? Math.round(video.currentTime * 1000) / 1000 : null;
    p.queue.push({
      seq: seqBase + p.counter++,
      position: data.position,
      stimulus_id: data.stimulus_id,
      event: name,
      media_time: t,
      client_time: Date.now(),
      detail: detail ?? null,
      ...(extra || {}),
    });
    if (p.queue.length >= FLUSH_AT) flush(false);
    else if (!p.flushTimer) p.flushTimer = setTimeout(() => flush(false), FLUSH_MS);
  }

  async function flush(final) {
    if (p.flushTimer) {
      clearTimeout(p.flushTimer);
      p.flushTimer = null;
    }
    if (!p.queue.length) return;
    if (final) {
      // pagehide: fetch may be cancelled, sendBeacon is delivered after the page is gone.
      const body = JSON.stringify({ token: data.token, events: p.queue.slice(0, MAX_BATCH) });
      if (navigator.sendBeacon && navigator.sendBeacon(data.events_url, new Blob([body], { type: "application/json" }))) {
        p.queue.splice(0, MAX_BATCH);
        return;
      }
    }
    if (p.inflight) return;
    const batch = p.queue.splice(0, MAX_BATCH);
    p.inflight = true;
    let again = [];
    try {
      const resp = await fetch(data.events_url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: data.token, events: batch }),
        credentials: "same-origin",
        keepalive: true,
      });
      if (resp.status >= 500 || resp.status === 429) {
        // A server error may be this batch's fault: each event gets a few tries, not forever.
        again = batch.filter((ev) => bumpTries(ev) < MAX_SERVER_TRIES);
      } else {
        let answer = null;
        try { answer = await resp.json(); } catch (e) { answer = null; }
        if (answer && Array.isArray(answer.accepted) && Array.isArray(answer.refused)) {
          // The server judged each event: accepted ones are stored, refused ones never will be.
          const settled = new Set(answer.accepted);
          for (const r of answer.refused) settled.add(r.index);
          if (answer.refused.length) console.warn("kuleshov player: events refused", answer.refused);
          again = batch.filter((ev, i) => !settled.has(i) && bumpTries(ev) < MAX_SERVER_TRIES);
        } else if (!resp.ok) {
          // 4xx for the whole batch (bad token, withdrawn, too large): resending is useless.
          console.warn("kuleshov player: events refused", resp.status);
        }
      }
      p.backoff = again.length ? Math.min(p.backoff * 2, 30000) : 1000;
    } catch (err) {
      // No answer at all (offline, connection cut): keep everything, the server never saw it.
      again = batch;
      p.backoff = Math.min(p.backoff * 2, 30000);
    } finally {
      p.inflight = false;
    }
    if (again.length) {
      p.queue.unshift(...again);
      setTimeout(() => flush(false), p.backoff);
      return;
    }
    if (p.queue.length >= FLUSH_AT) flush(false);
    else if (p.queue.length && !p.flushTimer) p.flushTimer = setTimeout(() => flush(false), FLUSH_MS);
  }

  // ------------------------------------------------------------------ watched share
  function addInterval(a, b) {
    if (!(b > a)) return;
    const merged = [];
    let cur = [a, b];
    for (const iv of p.intervals) {
      if (iv[1] < cur[0] || iv[0] > cur[1]) merged.push(iv);
      else cur = [Math.min(iv[0], cur[0]), Math.max(iv[1], cur[1])];
    }
    merged.push(cur);
    merged.sort((x, y) => x[0] - y[0]);
    p.intervals = merged;
  }

  function duration() {
    if (Number.isFinite(video.duration) && video.duration > 0) return video.duration;
    return Number(data.duration) > 0 ? Number(data.duration) : null;
  }

  function share() {
    const d = duration();
    if (!d) return 0;
    const seen = p.intervals.reduce((s, iv) => s + (Math.min(iv[1], d) - Math.max(iv[0], 0)), 0);
    return Math.max(0, Math.min(1, seen / d));
  }

  function report(extra) {
    if (!p.setStateValue || p.disposed) return;
    const s = Math.round(share() * 1000) / 1000;
    p.setStateValue("progress", {
      instance: p.instance,
      share: s,
      enough: p.reportedEnough,
      ended: p.reportedEnded,
      ...extra,
    });
  }

  function checkEnough() {
    // Timeupdates come every ~250 ms, so the last quarter second may be missing before ended.
    if (!p.reportedEnough && share() >= minShare - 0.005) {
      p.reportedEnough = true;
      record("watched", { watched_share: share() });
      report();
      preloadIfBuffered();
    }
  }

  // ------------------------------------------------------------------ UI helpers
  function showOverlay(buttonLabel, text) {
    overlay.hidden = false;
    startBtn.hidden = !buttonLabel;
    startBtn.disabled = false;
    if (buttonLabel) startBtn.textContent = buttonLabel;
    hint.textContent = text || "";
  }

  function showError(message) {
    errorText.textContent = message;
    errorBox.hidden = false;
    overlay.hidden = true;
  }

  function setSource() {
    p.srcSetAt = performance.now();
    p.loadedAt = null;
    p.canplaySeen = false;
    const sep = data.src.includes("?") ? "&" : "?";
    video.src = p.attempt ? `${data.src}${sep}retry=${p.attempt}` : data.src;
    video.load();
    clearTimeout(p.loadTimer);
    p.loadTimer = setTimeout(() => {
      if (p.loadedAt === null && !p.disposed) fail("timeout", "The clip did not load.");
    }, LOAD_TIMEOUT_MS);
  }

  function fail(code, message) {
    clearTimeout(p.loadTimer);
    p.failed = true;
    record("error", { code, message, attempt: p.attempt });
    // The browser's wording ("PIPELINE_ERROR_DECODE ...") means nothing to a participant; it
    // goes into the recorded event, the participant gets a plain sentence.
    showError(data.error_text || "");
    if (p.setStateValue) p.setStateValue("failure", { instance: p.instance, code, message, attempt: p.attempt });
    flush(false);
  }

  // ------------------------------------------------------------------ wiring
  video.controls = Boolean(data.controls);
  video.playsInline = true;
  video.setAttribute("playsinline", "");
  video.disablePictureInPicture = true;
  if (!allowSeek) video.setAttribute("controlslist", "nodownload noplaybackrate");

  startBtn.textContent = data.start_label || "";
  retryBtn.textContent = data.retry_label || "";
  hint.textContent = data.start_hint || "";
  startBtn.onclick = () => {
    if (p.pauseReason) {
      record("resume_click", { reason: p.pauseReason });
      p.pauseReason = null;
    } else record("start_click");
    if (requireSound) {
      // Inside the click itself, so the browser lets the sound play.
      video.muted = false;
      if (!(video.volume > 0)) video.volume = 1;
    }
    if (!p.soundRecorded) {
      // The sound at the start; every later change comes from volumechange.
      p.soundRecorded = true;
      record("volume", { volume: video.volume, muted: video.muted, initial: true });
    }
    // The button hides once the clip plays; keep a keyboard user's place in the player.
    // (inside a component's shadow root, document.activeElement is only the host)
    const active = root.getRootNode().activeElement || document.activeElement;
    if (active && root.contains(active)) p.refocus = true;
    if (video.ended) {
      p.atEnd = true;
      video.currentTime = 0;
    }
    startBtn.disabled = true;
    // play() must run inside the click handler itself: a Streamlit button would reach the
    // browser only after a server round trip, which iOS Safari no longer counts as a gesture.
    const promise = video.play();
    if (promise && promise.catch) {
      promise.catch((err) => {
        record("play_rejected", { name: err && err.name, message: err && String(err.message).slice(0, 200) });
        showOverlay(data.click_to_play_label || "", data.play_rejected_text || "");
      });
    }
  };
  retryBtn.onclick = () => {
    p.attempt += 1;
    p.failed = false;
    errorBox.hidden = true;
    record("retry", { attempt: p.attempt });
    setSource();
    showOverlay(data.start_label || "", "");
  };

  // A later instance on the same root (another clip at this step) takes over this <video>:
  // dispose() removes every listener this one added, or its handlers would go on drawing
  // its own overlay over the new player's.
  const listening = new AbortController();
  const on = (name, fn) => video.addEventListener(name, fn, { signal: listening.signal });
  on("loadedmetadata", () => {
    p.loadedAt = performance.now();
    applyCaptions();
    clearTimeout(p.loadTimer);
    // A retry that loads clears the page's "could not be played" notice.
    if (p.attempt && p.setStateValue && !p.failed) p.setStateValue("failure", null);
    record("loaded", { load_ms: Math.round(p.loadedAt - p.srcSetAt), duration: video.duration, attempt: p.attempt });
  });
  on("play", () => {
    overlay.hidden = true;
    if (p.refocus) {
      p.refocus = false;
      stage.focus({ preventScroll: true });
    }
    p.pauseReason = null;
    p.atEnd = false;
    p.lastT = video.currentTime;
    record("play");
  });
  on("pause", () => {
    // A decode error pauses the video after the error box is up: no "Continue" over it.
    if (video.ended || p.failed || video.error) return;
    record("pause", { watched_share: share(), reason: p.pauseReason || "participant" });
    p.lastT = null;
    if (p.pauseReason === "muted") showOverlay(data.unmute_label || "", data.muted_text || "");
    else if (p.pauseReason) showOverlay(data.resume_label || "", data.away_text || "");
    else if (!video.controls) showOverlay(data.continue_label || "", "");
  });
  on("playing", () => record("playing"));
  on("canplay", () => {
    if (p.canplaySeen) return;
    p.canplaySeen = true;
    record("canplay", { load_ms: Math.round(performance.now() - p.srcSetAt), attempt: p.attempt });
  });
  on("volumechange", () => {
    record("volume", { volume: Math.round(video.volume * 1000) / 1000, muted: video.muted });
    if (requireSound && (video.muted || !(video.volume > 0)) && !video.paused && !video.ended) {
      pauseFor("muted");
    }
  });
  on("timeupdate", () => {
    const t = video.currentTime;
    // The last timeupdate of a clip comes with paused already true (and ended true): it still
    // closes the final stretch, or the last ~0.5 s of every clip went missing from the share.
    if ((!video.paused || video.ended) && !video.seeking && p.lastT !== null) {
      const dt = t - p.lastT;
      if (dt > 0 && dt <= MAX_STEP_S * Math.max(1, video.playbackRate)) addInterval(p.lastT, t);
    }
    if (!video.seeking) {
      p.lastT = video.paused ? null : t;
      p.lastGoodT = t;
    }
    checkEnough();
    // The share also reaches the database through the events, so a reload keeps it.
    const now = performance.now();
    if (!video.paused && now - (p.lastProgressAt || 0) > 5000) {
      p.lastProgressAt = now;
      record("progress", { watched_share: share() });
    }
  });
  on("seeking", () => {
    // The timeupdate after a seek arrives with seeking already false: forget the time before
    // the seek, or a jump shorter than MAX_STEP_S would count as watched.
    const from = p.lastGoodT;
    p.lastT = null;
    if (p.atEnd && video.currentTime < 0.5) {
      // Playing again after the end restarts from 0 (the browser seeks there itself).
      p.atEnd = false;
      p.lastGoodT = video.currentTime;
      record("seeking", { replay: true, to: video.currentTime, from });
    } else if (!allowSeek && Math.abs(video.currentTime - from) > 0.3) {
      record("seeking", { blocked: true, to: video.currentTime, from });
      video.currentTime = from;
    } else if (Math.abs(video.currentTime - from) > 0.3) {
      record("seeking", { blocked: false, to: video.currentTime, from });
    }
  });
  on("seeked", () => {
    p.lastT = video.paused ? null : video.currentTime;
    record("seeked");
  });
  on("ended", () => {
    const d = duration();
    if (d && p.lastT !== null && d - p.lastT <= MAX_STEP_S) addInterval(p.lastT, d);
    p.lastT = null;
    record("ended", { watched_share: share() });
    checkEnough();
    p.reportedEnded = true;
    p.atEnd = true;
    report();
    if (!p.reportedEnough) {
      // Not enough seen (e.g. the phone skipped timeupdates while busy): without a way to play
      // again the participant would be stuck, since the ratings stay closed.
      showOverlay(data.replay_label || "", data.replay_text || "");
    } else if (!video.controls) showOverlay("", data.ended_text || "");
    preloadNext();
    flush(false);
  });
  on("waiting", () => record("waiting"));
  // The DOM's "progress": more of this clip was downloaded.
  on("progress", () => preloadIfBuffered());
  on("stalled", () => record("stalled"));
  on("ratechange", () => record("rate", { rate: video.playbackRate }));
  on("error", () => {
    const e = video.error;
    fail(e ? `media_${e.code}` : "media", (e && e.message) || "media error");
  });

  // The player pauses the clip itself (hidden page, lost focus, muted when sound is required):
  // the pause handler shows the overlay whose button resumes.
  // What played up to this moment was seen; nothing counts as watched from here until the
  // next play, also if a timeupdate comes before the pause.
  function closeStretch() {
    const t = video.currentTime;
    if (p.lastT !== null && !video.seeking && t - p.lastT > 0 && t - p.lastT <= MAX_STEP_S * Math.max(1, video.playbackRate)) {
      addInterval(p.lastT, t);
    }
    p.lastT = null;
  }
  function pauseFor(reason) {
    if (video.paused || video.ended || p.failed) return;
    p.pauseReason = reason;
    closeStretch();
    video.pause();
  }
  function away(name, reason) {
    if (!video.paused && !video.ended && !p.failed) closeStretch();
    record(name, { watched_share: share() });
    pauseFor(reason);
    flush(false);
  }
  function back(name) {
    record(name, { watched_share: share() });
    // Never resumes by itself: the participant presses Resume (or Enter / Space on it).
    if (p.pauseReason && p.pauseReason !== "muted" && !startBtn.hidden) startBtn.focus({ preventScroll: true });
  }
  const onVisibility = () => {
    if (!video.isConnected) return detach();
    if (document.hidden) away("visibility_hidden", "hidden");
    else back("visibility_visible");
  };
  const onBlur = () => {
    if (!video.isConnected) return detach();
    away("window_blur", "blur");
  };
  const onFocus = () => {
    if (!video.isConnected) return detach();
    back("window_focus");
  };
  const onOffline = () => {
    if (!video.isConnected) return detach();
    record("offline");
  };
  const onOnline = () => {
    if (!video.isConnected) return detach();
    record("online");
    flush(false);
  };

  // The next clip is requested while the participant answers this one's ratings: once the
  // ratings are open and this clip is downloaded to its end, or else once it has ended, so it
  // never competes for bandwidth with the clip being watched. The browser's media cache then
  // serves the next page's <video> at once.
  function preloadIfBuffered() {
    if (!p.reportedEnough || p.preloader) return;
    const d = duration();
    const b = video.buffered;
    if (d && b && b.length && b.end(b.length - 1) >= d - 0.25) preloadNext();
  }
  function preloadNext() {
    if (p.preloader || !data.next_src || p.disposed) return;
    const pre = document.createElement("video");
    pre.className = "kp-preload";
    pre.hidden = true;
    pre.muted = true;
    pre.preload = "auto";
    pre.setAttribute("aria-hidden", "true");
    pre.src = data.next_src;
    root.appendChild(pre);
    pre.load();
    p.preloader = pre;
    record("preload", { next_stimulus_id: data.next_stimulus_id ?? null });
  }
  const onFullscreen = () => {
    if (!video.isConnected) return detach();
    record(document.fullscreenElement ? "fullscreen_enter" : "fullscreen_exit");
  };
  const onPageHide = () => {
    if (!video.isConnected) return detach();
    flush(true);
  };
  function detach() {
    document.removeEventListener("visibilitychange", onVisibility);
    window.removeEventListener("blur", onBlur);
    window.removeEventListener("focus", onFocus);
    window.removeEventListener("offline", onOffline);
    window.removeEventListener("online", onOnline);
    document.removeEventListener("fullscreenchange", onFullscreen);
    window.removeEventListener("pagehide", onPageHide);
  }
  document.addEventListener("visibilitychange", onVisibility);
  window.addEventListener("blur", onBlur);
  window.addEventListener("focus", onFocus);
  window.addEventListener("offline", onOffline);
  window.addEventListener("online", onOnline);
  document.addEventListener("fullscreenchange", onFullscreen);
  window.addEventListener("pagehide", onPageHide);

  // Captions: the manifest's WebVTT file as a captions track, on at first, with a toggle
  // (a real <button>, so Tab, Enter and Space work) because the browser's own menu is gone
  // whenever the study hides the controls.
  let track = null;
  p.captionsShown = true;
  function applyCaptions() {
    if (!track) return;
    if (track.track) track.track.mode = p.captionsShown ? "showing" : "hidden";
    ccBtn.setAttribute("aria-pressed", p.captionsShown ? "true" : "false");
  }
  if (data.captions_src) {
    track = document.createElement("track");
    track.kind = "captions";
    track.label = data.captions_label || "";
    track.src = data.captions_src;
    track.default = true;
    video.appendChild(track);
    ccBtn.textContent = data.captions_toggle || "";
    tools.hidden = false;
    ccBtn.onclick = () => {
      p.captionsShown = !p.captionsShown;
      applyCaptions();
      record("captions", { shown: p.captionsShown });
    };
    track.addEventListener("load", applyCaptions);
    applyCaptions();
  }

  // Continuous rating and moment marks (continuous.js, joined before this file by app_pages/player.py).
  const capture = data.capture && typeof kuleshovCapture === "function" ? kuleshovCapture(root, video, data) : null;

  status.textContent = "";
  if (requireSound) {
    // Never start muted (a muted attribute or a remembered volume of 0).
    video.muted = false;
    video.defaultMuted = false;
  }
  showOverlay(data.start_label || "", requireSound ? data.sound_required_text || "" : data.start_hint || "");
  setSource();

  return {
    get instance() {
      return p.instance;
    },
    get recent() {
      return { made_at_ms: p.madeAt, events: p.recent.slice() };
    },
    set setStateValue(fn) {
      p.setStateValue = fn;
    },
    flush,
    dispose() {
      p.disposed = false;
      flush(true);
      p.disposed = true;
      clearTimeout(p.loadTimer);
      if (capture) capture.dispose();
      detach();
      listening.abort();
      if (p.preloader) p.preloader.remove();
      if (track) track.remove();
      tools.hidden = true;
      errorBox.hidden = true;
      video.pause();
    },
  };
}
