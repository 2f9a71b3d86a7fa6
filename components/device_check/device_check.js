// Kuleshov device check (Streamlit components v2, no build step).
//
// Before consent the browser measures what only it can see and sends it to the server in one
// report (one trigger value = one script run): which of the study's codec strings it can play
// (canPlayType, MediaSource.isTypeSupported), screen, window, pixel ratio, touch, how fast a
// ranged fetch of the first clip came in, and the participant's answers to the sound test and
// the optional headphone check. The sounds arrive as WAV files made on the server: the browser
// never knows the right answers, the server judges them. A browser that cannot play the clips
// reports at once (nothing the participant does here can change that).

const STATE = "__kuleshovDeviceCheck";
const SPEED_TIMEOUT_MS = 15000;
const BUSY_MS = 8000;
const FALLBACK = {
  checking: "Checking your browser…",
  codec_fail: "This browser cannot play the study's videos.",
  window_small: "Your browser window is {width} × {height} pixels; the study needs at least {min_width} × {min_height}.",
  window_ok: "Your browser can play the videos, and the window is large enough.",
  audio_title: "Sound test",
  audio_intro: "",
  play: "Play the sound",
  play_again: "Play it again",
  answer_label: "The number of beeps in each group, in order",
  answer_hint: "",
  audio_error: "This browser could not play the sound.",
  headphone_title: "Headphone check",
  headphone_intro: "",
  headphone_round: "Round {n} of {total}",
  headphone_play: "Play round {n}",
  tone_label: "Tone {n}",
  quietest: "Which tone was the quietest?",
  continue: "Continue",
  need_answer: "Please play the sound and type the three numbers you heard.",
  need_picks: "Please play every round and choose the quietest tone in each.",
  sending: "Checking…",
};

export default function (component) {
  const { parentElement, setTriggerValue } = component;
  const data = unpack(component.data);
  const root = parentElement.querySelector(".kd-root");
  if (!root || !data || !Array.isArray(data.codecs)) return undefined;
  let d = root[STATE];
  if (!d || d.pageKey !== data.page_key) {
    if (d) d.stop();
    d = createCheck(root, data);
    root[STATE] = d;
    root.dataset.page = data.page_key;
  }
  d.setTrigger = setTriggerValue;
  d.update(data);
  return undefined;
}

function codecSupport(mime) {
  let canPlay = "";
  try {
    canPlay = document.createElement("video").canPlayType(mime) || "";
  } catch (e) {
    canPlay = "";
  }
  let mse = null;
  try {
    const MS = window.MediaSource || window.ManagedMediaSource;
    if (MS && typeof MS.isTypeSupported === "function") mse = Boolean(MS.isTypeSupported(mime));
  } catch (e) {
    mse = null;
  }
  return { mime, can_play: canPlay === "probably" || canPlay === "maybe" ? canPlay : "", mse };
}

// Time a ranged fetch of the first part of the first clip (bytes and milliseconds).
async function measureSpeed(url, bytes) {
  if (!url) return null;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), SPEED_TIMEOUT_MS);
  const t0 = performance.now();
  try {
    const resp = await fetch(url, {
      headers: { Range: `bytes=0-${bytes - 1}` },
      cache: "no-store",
      signal: controller.signal,
    });
    if (!resp.ok) return { bytes: 0, ms: 0, error: `HTTP ${resp.status}` };
    const body = await resp.arrayBuffer();
    const ms = Math.max(1, performance.now() - t0);
    return { bytes: body.byteLength, ms: Math.round(ms * 10) / 10, error: null };
  } catch (e) {
    return { bytes: 0, ms: 0, error: String((e && e.name) || "fetch failed").slice(0, 200) };
  } finally {
    clearTimeout(timer);
  }
}

function dataUrlBytes(url) {
  const b64 = String(url).split(",", 2)[1] || "";
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

function createCheck(root, data) {
  // A new attempt starts from the page's pristine markup (no old listeners, no old answer).
  if (!root.__kdPristine) root.__kdPristine = root.cloneNode(true);
  else root.replaceChildren(...root.__kdPristine.cloneNode(true).childNodes);
  const $ = (sel) => root.querySelector(sel);
  const status = $(".kd-status");
  const windowLine = $(".kd-window");
  const audioBox = $(".kd-audio");
  const playBtn = $(".kd-play");
  const audioError = $(".kd-audio-error");
  const answer = $(".kd-answer");
  const phonesBox = $(".kd-phones");
  const rounds = $(".kd-rounds");
  const errorLine = $(".kd-error");
  const continueBtn = $(".kd-continue");
  let texts = { ...FALLBACK, ...(data.texts || {}) };

  const d = {
    pageKey: data.page_key,
    setTrigger: null,
    busyUntil: 0,
    sent: false,
    plays: 0,
    audioError: null,
    picks: [],
    played: [],
    ctx: null,
    playing: null,
  };

  const codecs = data.codecs.map(codecSupport);
  const unplayable = codecs.filter((c) => c.can_play === "" && c.mse !== true);
  const speed = measureSpeed(data.speed_url, data.speed_bytes || 524288);

  function windowSize() {
    return { width: Math.round(window.innerWidth), height: Math.round(window.innerHeight) };
  }
  function windowOk() {
    const w = windowSize();
    return w.width >= (data.min_width || 0) && w.height >= (data.min_height || 0);
  }
  function showWindow() {
    const w = windowSize();
    windowLine.hidden = false;
    windowLine.textContent = windowOk()
      ? texts.window_ok
      : fill(texts.window_small, { ...w, min_width: data.min_width, min_height: data.min_height });
    root.dataset.window = windowOk() ? "ok" : "small";
  }
  const onResize = () => showWindow();
  window.addEventListener("resize", onResize);

  async function report(stopped) {
    const spd = await speed;
    const w = windowSize();
    return {
      version: 1,
      screen: { width: Math.round(screen.width || 0), height: Math.round(screen.height || 0) },
      window: w,
      pixel_ratio: Number(window.devicePixelRatio || 1),
      touch: "ontouchstart" in window || (navigator.maxTouchPoints || 0) > 0,
      max_touch_points: Number(navigator.maxTouchPoints || 0),
      user_agent: String(navigator.userAgent || "").slice(0, 500),
      platform: String((navigator.userAgentData && navigator.userAgentData.platform) || navigator.platform || "").slice(0, 500),
      language: String(navigator.language || "").slice(0, 500),
      codecs,
      speed: spd,
      audio: data.audio ? { typed: String(answer.value || "").slice(0, 20), plays: d.plays, error: d.audioError } : null,
      headphones: data.headphones ? { picks: d.picks.slice() } : null,
      stopped: stopped || null,
    };
  }

  async function send(stopped) {
    if (Date.now() < d.busyUntil) return;
    d.busyUntil = Date.now() + BUSY_MS;
    continueBtn.setAttribute("aria-disabled", "true");
    status.textContent = texts.sending;
    const body = await report(stopped);
    if (d.setTrigger) d.setTrigger("submit", { page_key: d.pageKey, report: body });
  }

  function context() {
    if (!d.ctx) {
      const AC = window.AudioContext || window.webkitAudioContext;
      d.ctx = new AC();
    }
    return d.ctx;
  }

  // Play one server-made WAV through Web Audio; resolves when it has ended.
  async function play(url) {
    const ctx = context();
    if (ctx.state === "suspended") await ctx.resume();
    if (d.playing) {
      try {
        d.playing.stop();
      } catch (e) {
        /* already stopped */
      }
    }
    const buffer = await ctx.decodeAudioData(dataUrlBytes(url));
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    d.playing = source;
    const ended = new Promise((resolve) => {
      source.onended = resolve;
    });
    source.start();
    return ended;
  }

  // ---------------------------------------------------------------- sound test
  playBtn.addEventListener("click", async () => {
    errorLine.hidden = true;
    try {
      d.plays += 1;
      playBtn.textContent = texts.play_again;
      root.dataset.audio = "playing";
      await play(data.audio);
      root.dataset.audio = "played";
      answer.focus();
    } catch (e) {
      d.audioError = String((e && e.name) || "audio failed").slice(0, 200);
      audioError.hidden = false;
      audioError.textContent = texts.audio_error;
      root.dataset.audio = "error";
    }
  });
  answer.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      continueBtn.click();
    }
  });

  // ---------------------------------------------------------------- headphone check
  function buildRounds() {
    rounds.replaceChildren();
    const total = data.headphones.length;
    data.headphones.forEach((url, i) => {
      const legend = el("legend", { text: fill(texts.headphone_round, { n: i + 1, total }) });
      const btn = el("button", { type: "button", class: "kd-round-play", text: fill(texts.headphone_play, { n: i + 1 }) });
      const question = el("p", { class: "kd-quietest", id: `kd-q-${i}`, text: texts.quietest });
      const tones = el("div", { class: "kd-tones", role: "radiogroup", "aria-labelledby": `kd-q-${i}` });
      for (let k = 0; k < 3; k++) {
        const input = el("input", { type: "radio", name: `kd-round-${i}`, value: String(k), "data-round": i });
        input.addEventListener("change", () => {
          d.picks[i] = k;
        });
        tones.append(el("label", { class: "kd-tone" }, input, el("span", { text: fill(texts.tone_label, { n: k + 1 }) })));
      }
      btn.addEventListener("click", async () => {
        try {
          await play(url);
          d.played[i] = true;
        } catch (e) {
          d.audioError = String((e && e.name) || "audio failed").slice(0, 200);
        }
      });
      rounds.append(el("fieldset", { class: "kd-round" }, legend, btn, question, tones));
    });
  }

  continueBtn.addEventListener("click", () => {
    if (Date.now() < d.busyUntil) return;
    if (windowOk()) {
      if (data.audio && !String(answer.value || "").trim()) {
        errorLine.hidden = false;
        errorLine.textContent = texts.need_answer;
        answer.focus();
        return;
      }
      if (data.headphones) {
        const missing = data.headphones.findIndex((_, i) => d.picks[i] === undefined);
        if (missing >= 0) {
          errorLine.hidden = false;
          errorLine.textContent = texts.need_picks;
          const first = rounds.querySelector(`input[data-round="${missing}"]`);
          if (first) first.focus();
          return;
        }
      }
    }
    errorLine.hidden = true;
    // A window still too small is reported as it is: the server ends the check with the reason.
    send(windowOk() ? null : "window");
  });

  function update(next) {
    texts = { ...FALLBACK, ...(next.texts || {}) };
    data = next;
    d.busyUntil = 0;
    continueBtn.removeAttribute("aria-disabled");
    continueBtn.textContent = texts.continue;
    $(".kd-audio-title").textContent = texts.audio_title;
    $(".kd-audio-intro").textContent = texts.audio_intro;
    $(".kd-answer-label").textContent = texts.answer_label;
    $(".kd-answer-hint").textContent = texts.answer_hint;
    if (!playBtn.textContent) playBtn.textContent = texts.play;
    $(".kd-phones-title").textContent = texts.headphone_title;
    $(".kd-phones-intro").textContent = texts.headphone_intro;
    if (unplayable.length) {
      root.dataset.state = "codec";
      status.textContent = texts.codec_fail;
      audioBox.hidden = true;
      phonesBox.hidden = true;
      if (!d.sent) {
        d.sent = true;
        send("codec");
      }
      return;
    }
    root.dataset.state = "ready";
    status.textContent = "";
    showWindow();
    audioBox.hidden = !next.audio;
    if (next.headphones && !rounds.childElementCount) buildRounds();
    phonesBox.hidden = !next.headphones;
  }

  d.stop = () => {
    window.removeEventListener("resize", onResize);
    if (d.ctx) d.ctx.close().catch(() => {});
  };
  d.update = update;
  status.textContent = texts.checking;
  return d;
}
