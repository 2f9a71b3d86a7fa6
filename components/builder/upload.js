// The study builder's upload: each chosen file is sent as the body of one POST to the app's
// /api/builder/upload route (the browser streams a File from disk; the server writes it to disk
// as it arrives, with a size limit), then the page is told once, so it reruns and collects what
// the server accepted or refused. Streamlit's own file_uploader would hold the file in memory.

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const d = unpack(data);
  if (!d || !d.ticket) return undefined;
  const root = parentElement.querySelector(".kb-upload");
  const input = root.querySelector(".kb-input");
  const status = root.querySelector(".kb-status");
  root.querySelector(".kb-title").textContent = d.label || "Upload";
  input.accept = d.accept || "";
  input.multiple = d.kind !== "zip";
  input.dataset.kind = d.kind || "clip";
  // The listener is bound once, but each run may bring another ticket (a study opened, a zip
  // opened: a new draft): it reads the latest data, or files would go to the last draft.
  input.__kbLatest = { d, setTriggerValue };
  if (input.dataset.bound === "1") return undefined;
  input.dataset.bound = "1";
  input.addEventListener("change", async () => {
    const files = Array.from(input.files || []);
    if (!files.length) return;
    const { d, setTriggerValue } = input.__kbLatest;
    const lines = [];
    for (const file of files) {
      status.textContent = lines.concat([`uploading ${file.name} (${Math.round(file.size / 1024)} kB) ...`]).join("\n");
      const url = `/api/builder/upload?ticket=${encodeURIComponent(d.ticket)}&name=${encodeURIComponent(file.name)}`
        + (d.kind === "zip" ? "&kind=zip" : "");
      try {
        const answer = await fetch(url, { method: "POST", body: file, credentials: "same-origin" });
        const body = await answer.json().catch(() => ({}));
        lines.push(answer.ok ? `${file.name}: received` : `${file.name}: ${body.error || answer.status}`);
      } catch (err) {
        lines.push(`${file.name}: the upload failed (${err})`);
      }
    }
    status.textContent = lines.join("\n");
    input.value = "";
    setTriggerValue("done", Date.now());
  });
  // Usable only from here: a file chosen before the listener was bound went nowhere (the HTML
  // is drawn before this script runs, seconds before on a loaded machine).
  input.disabled = false;
  return undefined;
}
