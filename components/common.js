// Helpers shared by Kuleshov's components, joined before each component's own script
// (app_pages.browser_component): components v2 take one inline script, so there is no import.

// The server sends `data` as one JSON string (app_pages.component_data: Streamlit scans a
// dict's values for dataframes on every run, which cost more than the page itself).
function unpack(data) {
  if (data && typeof data.json === "string") {
    try {
      return JSON.parse(data.json);
    } catch (e) {
      return null;
    }
  }
  return data;
}

// "{name} of {max}" with values; an unknown {key} is left as it is.
function fill(template, values) {
  return String(template).replace(/\{(\w+)\}/g, (m, k) => (k in values ? String(values[k]) : m));
}

// A DOM element: attrs "class" and "text" set className and textContent, any other is an
// attribute (true: present and empty; null, undefined or false: left out); then the children.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}
