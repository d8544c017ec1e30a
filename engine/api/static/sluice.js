// Sluice dashboard: live refresh over server-sent events, actions over the JSON API, log follow.
"use strict";

async function api(path, body) {
  const resp = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "Accept": "application/json"},
    body: JSON.stringify(body || {}),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((data.error && data.error.message) || resp.status + " " + resp.statusText);
  return data;
}

function say(el, text) {
  const out = el.closest("p, form, td").querySelector(".action-result");
  if (out) out.textContent = text;
}

async function refresh() {
  const live = document.getElementById("live");
  if (!live) return;
  const url = new URL(location.href);
  url.searchParams.set("fragment", "1");
  const resp = await fetch(url, {credentials: "same-origin"});
  if (resp.ok && resp.headers.get("Content-Type").startsWith("text/html")) {
    const open = new Set([...live.querySelectorAll("details[open] > summary")].map(s => s.textContent));
    live.innerHTML = await resp.text();
    live.querySelectorAll("details > summary").forEach(s => { if (open.has(s.textContent)) s.parentElement.open = true; });
  }
}

let pending = null;
function schedule() { if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 100); }

function connect() {
  if (!document.getElementById("live") || !window.EventSource) return;
  const dot = document.getElementById("live-state");
  const stream = new EventSource("/dashboard/stream");
  // on (re)connect, catch up with what changed between the page's render and the stream's start
  stream.onopen = () => { if (dot) dot.classList.add("on"); schedule(); };
  stream.onerror = () => dot && dot.classList.remove("on");
  stream.onmessage = schedule;
}

async function follow() {
  for (const pre of document.querySelectorAll("pre[data-follow]")) {
    const resp = await fetch(pre.dataset.follow, {credentials: "same-origin"});
    if (resp.ok) {
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = await resp.text();
      if (stick) pre.scrollTop = pre.scrollHeight;
    }
  }
}

document.addEventListener("click", async (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (!button) return;
  if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
    const data = await api(button.dataset.action, body);
    if (data.run_id && data.status_url) { location.href = "/runs/" + data.run_id; return; }
    if ("reload" in button.dataset) { location.reload(); return; }  // e.g. a trigger paused: show its new state
    say(button, "done: " + (data.status || "ok"));
    refresh();
  } catch (err) {
    say(button, err.message);
  } finally {
    button.disabled = false;
  }
});

document.addEventListener("submit", async (ev) => {
  const form = ev.target.closest("form.run-form");
  if (!form) return;
  ev.preventDefault();
  const params = {};
  for (const input of form.querySelectorAll("input[name]")) {
    if (input.value === "") continue;
    const kind = input.dataset.type;
    if (kind === "string") { params[input.name] = input.value; continue; }
    try { params[input.name] = JSON.parse(input.value); } catch (e) { params[input.name] = input.value; }
  }
  try {
    const data = await api("/api/v1/workflows/" + encodeURIComponent(form.dataset.workflow) + "/runs", params);
    location.href = "/runs/" + data.run_id;
  } catch (err) {
    say(form.querySelector("button"), err.message);
  }
});

document.addEventListener("submit", async (ev) => {
  const form = ev.target.closest("form.api-form");
  if (!form) return;
  ev.preventDefault();
  const body = {};
  try {
    for (const input of form.querySelectorAll("input[name]")) {
      if (input.type === "checkbox") body[input.name] = input.checked;
      else if (input.value !== "") body[input.name] = "json" in input.dataset ? JSON.parse(input.value) : input.value;
    }
    const data = await api(form.dataset.action, body);
    const out = form.nextElementSibling;
    if (out && out.classList.contains("api-answer")) { out.hidden = false; out.textContent = JSON.stringify(data, null, 2); }
    say(form.querySelector("button"), "done");
  } catch (err) {
    say(form.querySelector("button"), err.message);
  }
});

connect();
setInterval(follow, 1000);
