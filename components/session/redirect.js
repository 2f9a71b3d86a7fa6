// The completion page's redirect: in this same tab (never a new one, which Prolific would not
// see as this participant's return), after a short countdown, with a link to go at once.
// data: {url, seconds, texts: {countdown, now}}; {seconds} in texts.countdown is filled here.

const TIMER = "__kuleshovRedirect";

function safeUrl(url) {
  try {
    const parsed = new URL(String(url), window.location.href);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch (err) {
    return null;
  }
}

export default function (component) {
  const { data, parentElement } = component;
  const root = parentElement.querySelector(".kr-root");
  if (!root || !data) return undefined;
  const url = safeUrl(data.url);
  if (!url) return undefined;
  const texts = data.texts || {};
  const line = root.querySelector(".kr-countdown");
  const now = root.querySelector(".kr-now");
  now.textContent = texts.now || "Continue";
  now.setAttribute("href", url);
  if (root[TIMER] && root[TIMER].url === url) return undefined;
  if (root[TIMER]) window.clearInterval(root[TIMER].id);

  let left = Math.max(0, Math.round(Number(data.seconds) || 0));
  const go = () => {
    window.clearInterval(root[TIMER] && root[TIMER].id);
    window.location.assign(url);
  };
  const show = () => {
    line.textContent = fill(texts.countdown || "{seconds}", { seconds: left });
  };
  if (left === 0) {
    go();
    return undefined;
  }
  show();
  const id = window.setInterval(() => {
    // The page moved on without this element (e.g. a rerun drew another page): stop.
    if (!root.isConnected) {
      window.clearInterval(id);
      return;
    }
    left -= 1;
    if (left <= 0) go();
    else show();
  }, 1000);
  root[TIMER] = { id, url };
  return undefined;
}
