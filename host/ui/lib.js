// rolegate's console, part 1: the JSON API client and the building blocks of every screen
// (status lines, two-step confirmations, list views with search, sorting and paging).
// Every value from the server is written with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("rolegate-token") || "";
// The signed-in caller, as `GET /v1/me` tells: {account, admin}.
let me = null;

async function api(method, path, body) {
  const init = { method, headers: { "Authorization": "Bearer " + token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!r.ok) {
    const message = data && data.error ? data.error.message : (r.status + " " + r.statusText);
    const e = new Error(message);
    e.status = r.status;
    e.code = data && data.error ? data.error.code : "";
    throw e;
  }
  return data;
}

const path = (base, name) => base + "/" + encodeURIComponent(name);
const query = (base, params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? base + "?" + s : base;
};

// --- status lines: feedback beside the form or buttons that caused it -----------------------
// `el` is a status element (role=status, aria-live=polite); `kind` is "ok", "err" or "" (busy).
function say(el, text, kind) {
  if (!el) return;
  el.textContent = text || "";
  el.classList.toggle("ok", kind === "ok");
  el.classList.toggle("err", kind === "err");
}
function sayError(el, e) {
  if (e && e.status === 401 && typeof signOut === "function") {
    signOut("Your token no longer works; sign in again.");
    return;
  }
  say(el, e ? String(e.message || e) : "", "err");
}

// Runs `act` (returning a promise) with `el` as its status line: its success says `done`
// (a string, or a function of the result), its failure the API's message.
async function run(el, act, done) {
  say(el, "Working…", "");
  try {
    const v = await act();
    const text = typeof done === "function" ? done(v) : done;
    say(el, text || "", text ? "ok" : "");
    return v;
  } catch (e) {
    sayError(el, e);
    return undefined;
  }
}

// --- small DOM helpers ---------------------------------------------------------------------
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "hidden") e.hidden = true;
    else e.setAttribute(k, v === true ? "" : v);
  }
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function button(parent, label, onclick, cls) {
  const b = el("button", { type: "button", class: cls }, label);
  b.onclick = onclick;
  parent.appendChild(b);
  return b;
}

function when(ms) { return ms ? new Date(ms).toLocaleString() : ""; }
function minutes(s) { return Math.round((s || 0) / 60); }
function stateText(s) { return (s || "").replace(/_/g, " "); }

// A long id's short form: its last 8 characters (its first ones are a timestamp, the same for
// requests made minutes apart).
function short(id) { return id && id.length > 10 ? "…" + id.slice(-8) : id || ""; }

// A long id in short, the full id in its title and a copy button beside it.
function shortId(parent, id, what) {
  const wrap = el("span", { class: "id" });
  wrap.appendChild(el("code", { title: id }, short(id)));
  const b = el("button", { type: "button", class: "small", "aria-label": "Copy " + (what || "id") + " " + id, title: "Copy " + id }, "Copy");
  b.onclick = () => copy(id, b);
  wrap.appendChild(b);
  parent.appendChild(wrap);
  return wrap;
}

function copy(text, btn) {
  const label = btn.dataset.label || (btn.dataset.label = btn.textContent);
  const done = () => { btn.textContent = "Copied"; setTimeout(() => { btn.textContent = label; }, 1500); };
  if (navigator.clipboard && navigator.clipboard.writeText) {
    navigator.clipboard.writeText(text).then(done, () => { btn.textContent = "Copy failed"; });
  } else {
    btn.textContent = "Copy failed";
  }
}

// --- two-step confirmation, the same for every destructive action ---------------------------
// The first click turns the button into "Confirm …" and shows Cancel beside it; the second
// click acts. Escape (on either button) or Cancel backs out. `act` returns a promise.
// `extra` (optional) is an element shown while armed (a reason field for a rejection).
function confirmButton(parent, label, what, act, extra) {
  const wrap = el("span", { class: "confirm" });
  const b = el("button", { type: "button", class: "danger" }, label);
  const cancel = el("button", { type: "button" }, "Cancel");
  cancel.hidden = true;
  if (extra) { extra.hidden = true; wrap.appendChild(extra); }
  wrap.appendChild(b);
  wrap.appendChild(cancel);
  const disarm = () => {
    delete b.dataset.armed;
    b.textContent = label;
    cancel.hidden = true;
    if (extra) extra.hidden = true;
  };
  b.onclick = () => {
    if (!b.dataset.armed) {
      b.dataset.armed = "1";
      b.textContent = "Confirm: " + label.toLowerCase() + " " + what;
      cancel.hidden = false;
      if (extra) extra.hidden = false;
      return;
    }
    disarm();
    b.disabled = true;
    Promise.resolve(act()).finally(() => { b.disabled = false; });
  };
  cancel.onclick = () => { disarm(); b.focus(); };
  wrap.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && b.dataset.armed) {
      ev.preventDefault();
      ev.stopPropagation();
      disarm();
      b.focus();
    }
  });
  parent.appendChild(wrap);
  return b;
}

// --- list views: search, sortable columns (aria-sort), paging -------------------------------
// `host` is the element to build into; opts: {id (the tbody's id), caption, columns: [{label,
// value(item) (text, for search and sorting), sort (a sortable key of item; defaults to
// value), render(td, item) (optional)}], actions(td, item, view) (optional), pageSize,
// empty (text when nothing), sortBy (column index), sortDir ("ascending"|"descending")}.
let listCount = 0;
function listView(host, opts) {
  const n = ++listCount;
  const st = { items: [], q: "", col: opts.sortBy ?? -1, dir: opts.sortDir || "ascending", page: 0, size: opts.pageSize || 20 };
  host.replaceChildren();
  host.classList.add("list");
  const tools = el("div", { class: "list-tools" });
  const searchId = "search-" + n;
  tools.appendChild(el("label", { for: searchId }, "Search " + opts.caption.toLowerCase()));
  const search = el("input", { type: "search", id: searchId, autocomplete: "off" });
  tools.appendChild(search);
  host.appendChild(tools);
  const status = el("p", { class: "status", role: "status", "aria-live": "polite", id: opts.id + "-status" });
  host.appendChild(status);
  const wrap = el("div", { class: "table-wrap" });
  const table = el("table");
  table.appendChild(el("caption", { class: "visually-hidden" }, opts.caption));
  const head = el("tr");
  const ths = [];
  opts.columns.forEach((c, i) => {
    const th = el("th", { scope: "col", class: c.sortable === false ? "plain" : undefined });
    if (c.sortable === false) {
      th.textContent = c.label;
    } else {
      const b = el("button", { type: "button", class: "sort" }, c.label);
      b.onclick = () => {
        st.dir = st.col === i && st.dir === "ascending" ? "descending" : "ascending";
        st.col = i;
        st.page = 0;
        render();
      };
      th.appendChild(b);
    }
    ths.push(th);
    head.appendChild(th);
  });
  if (opts.actions) head.appendChild(el("th", { scope: "col", class: "plain" }, "Actions"));
  const thead = el("thead");
  thead.appendChild(head);
  table.appendChild(thead);
  const body = el("tbody", { id: opts.id });
  table.appendChild(body);
  wrap.appendChild(table);
  host.appendChild(wrap);
  const pager = el("div", { class: "pager" });
  const prev = button(pager, "Previous page", () => { st.page--; render(); });
  const info = el("span", { "aria-live": "polite" });
  pager.appendChild(info);
  const next = button(pager, "Next page", () => { st.page++; render(); });
  host.appendChild(pager);
  search.oninput = () => { st.q = search.value.trim().toLowerCase(); st.page = 0; render(); };

  const text = (c, item) => { const v = c.value(item); return v == null ? "" : String(v); };
  function render() {
    let items = st.items;
    if (st.q) {
      items = items.filter((it) => opts.columns.some((c) => text(c, it).toLowerCase().includes(st.q)));
    }
    if (st.col >= 0) {
      const c = opts.columns[st.col];
      const key = c.sort || c.value;
      const sign = st.dir === "ascending" ? 1 : -1;
      items = items.slice().sort((a, b) => {
        const x = key(a), y = key(b);
        if (typeof x === "number" && typeof y === "number") return sign * (x - y);
        return sign * String(x ?? "").localeCompare(String(y ?? ""), undefined, { numeric: true, sensitivity: "base" });
      });
    }
    ths.forEach((th, i) => th.setAttribute("aria-sort", i === st.col ? st.dir : "none"));
    const pages = Math.max(1, Math.ceil(items.length / st.size));
    st.page = Math.min(Math.max(st.page, 0), pages - 1);
    const shown = items.slice(st.page * st.size, (st.page + 1) * st.size);
    body.replaceChildren();
    for (const item of shown) {
      const row = el("tr");
      for (const c of opts.columns) {
        const td = el("td", { "data-label": c.label });
        if (c.render) c.render(td, item); else td.textContent = text(c, item);
        row.appendChild(td);
      }
      if (opts.actions) {
        const td = el("td", { "data-label": "Actions", class: "acts" });
        opts.actions(td, item, view);
        row.appendChild(td);
      }
      body.appendChild(row);
    }
    if (!shown.length) {
      const row = el("tr", { class: "empty" });
      const td = el("td", { colspan: String(opts.columns.length + (opts.actions ? 1 : 0)) },
        st.q ? "Nothing matches the search." : (opts.empty || "Nothing to show."));
      row.appendChild(td);
      body.appendChild(row);
    }
    info.textContent = items.length
      ? "Page " + (st.page + 1) + " of " + pages + " (" + items.length + (items.length === 1 ? " item" : " items") + ")"
      : "No items";
    prev.disabled = st.page === 0;
    next.disabled = st.page >= pages - 1;
    pager.hidden = pages <= 1;
    body.dataset.filled = "yes";
  }
  const view = {
    status,
    body,
    set(items) { st.items = items || []; render(); },
    items() { return st.items; },
    render,
  };
  render();
  return view;
}
