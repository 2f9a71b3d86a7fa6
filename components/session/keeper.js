// The participant's token, kept in this browser (localStorage) per study, so that the same
// study link reopened, or reloaded after Back took the address bar to it, resumes the same
// participant instead of enrolling a new one.
//
// Two modes, chosen by the server: with data.token it stores the token; without, it reads what
// this browser stored for data.study and reports it once as the state value "stored"
// ({study, token}; token "" when there is none or storage is blocked).

const PREFIX = "kuleshov.t.";
const MAX_AGE_MS = 30 * 24 * 3600 * 1000;

function storageKey(data) {
  return PREFIX + String(data.study) + (data.pilot ? ".pilot" : "");
}

function readToken(key) {
  try {
    const raw = window.localStorage.getItem(key);
    if (!raw) return "";
    const entry = JSON.parse(raw);
    if (!entry || typeof entry.token !== "string") return "";
    if (!(Date.now() - Number(entry.saved_at) < MAX_AGE_MS)) return "";
    return entry.token;
  } catch (err) {
    return "";
  }
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  if (!data || !data.study) return undefined;
  const key = storageKey(data);
  const root = parentElement.querySelector(".kt-root");
  if (data.token) {
    try {
      window.localStorage.setItem(key, JSON.stringify({ token: String(data.token), saved_at: Date.now() }));
    } catch (err) {
      // Private mode or a full quota: the token in the address bar still resumes on reload.
    }
    if (root) root.dataset.kept = "1";
    return undefined;
  }
  if (root && root.dataset.asked === key) return undefined;
  if (root) root.dataset.asked = key;
  setStateValue("stored", { study: String(data.study), token: readToken(key) });
  return undefined;
}
