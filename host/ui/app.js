// rolegate's web page: the same JSON API the CLI uses, with the token kept in this tab's
// sessionStorage. Every value from the server is written with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("rolegate-token") || "";

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
    throw e;
  }
  return data;
}

function showError(e) { $("error").textContent = e ? String(e.message || e) : ""; }

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  row.appendChild(td);
  return td;
}

function button(td, label, onclick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.onclick = onclick;
  td.appendChild(b);
  return b;
}

// Replaces the rows of the table body `id` with one row per item, filled by `fillRow(row, item)`;
// marks the body filled (a test waits for that).
function fill(id, items, fillRow) {
  const body = $(id);
  body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    fillRow(row, item);
    body.appendChild(row);
  }
  body.dataset.filled = "yes";
}

function when(ms) { return ms ? new Date(ms).toLocaleString() : ""; }

function tab(name) {
  for (const b of document.querySelectorAll(".tab")) {
    b.setAttribute("aria-current", b.dataset.tab === name ? "true" : "false");
  }
  for (const p of document.querySelectorAll(".pane")) p.hidden = p.id !== "tab-" + name;
  showError(null);
  if (name === "requests") loadRequests().catch(showError);
  if (name === "approvals") loadApprovals().catch(showError);
  if (name === "events") loadEvents().catch(showError);
  if (name === "admin") loadAdmin().catch(showError);
  if (name === "enrol") Promise.all([loadEnrolProviders(), loadMyCredentials()]).catch(showError);
}

// The signed-in caller, as `GET /v1/me` tells: {account, admin}.
let me = null;

async function signIn() {
  // The token is checked by asking whose it is.
  try {
    me = await api("GET", "/v1/me");
  } catch (e) {
    if (e.status === 401) signOut();
    throw e;
  }
  for (const el of document.querySelectorAll(".admin-only")) el.hidden = !me.admin;
  $("who").textContent = me.account + (me.admin ? " (admin)" : "");
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  loadRequestProviders().catch(showError);
  followLink().catch(showError);
}

// A link the CLI printed for a ceremony a terminal cannot run: `#enrol/<provider>` starts that
// enrolment's page, `#request/<id>` shows the request's prompt.
async function followLink() {
  const [what, arg] = decodeURIComponent(location.hash.slice(1)).split("/", 2);
  if (what === "enrol" && arg) {
    tab("enrol");
    await loadEnrolProviders();
    $("enrol-provider").value = arg;
    $("enrol-result").textContent = "";
    enrolStep(await api("POST", "/v1/enrolments", { provider: arg }));
  } else if (what === "request" && arg) {
    tab("activate");
    settle(await api("GET", "/v1/requests/" + encodeURIComponent(arg)));
  } else {
    tab("activate");
  }
}

function signOut() {
  token = "";
  me = null;
  sessionStorage.removeItem("rolegate-token");
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signout").hidden = true;
  $("who").textContent = "";
}

// --- activation: create, then walk the prompts --------------------------------------------
let current = null;

function settle(v) {
  current = v;
  const mfa = $("mfa");
  $("code-form").hidden = true;
  $("mfa-wait").hidden = true;
  $("shadow-skip").hidden = true;
  $("webauthn").hidden = true;
  // A shadow factor: asked once the real one is done, never deciding the request.
  const shadow = v.shadow && v.shadow.outcome === "asked" ? v.shadow : null;
  if (v.state !== "pending_mfa") {
    let text = "Request " + v.id + " is " + v.state.replace("_", " ");
    if (v.state === "active" && v.expires_at) text += " until " + when(v.expires_at);
    if (v.reason) text += " (" + v.reason + ")";
    if (v.shadow && v.shadow.reason) text += ". " + v.shadow.reason;
    $("request-result").textContent = text + ".";
    if (!shadow) {
      mfa.hidden = true;
      return;
    }
  }
  mfa.hidden = false;
  const p = (shadow ? shadow.prompt : v.prompt) || {};
  const why = shadow ? shadow.reason : v.reason;
  const trial = shadow ? "This role is trying `" + shadow.provider + "`; your request does not depend on it. " : "";
  if (shadow) $("shadow-skip").hidden = false;
  $("mfa-message").textContent = trial + (why ? why + " — " : "") + (p.message || p.status || "");
  if (p.kind === "code") {
    $("code-form").hidden = false;
    $("code").value = "";
    $("code").focus();
  } else if (p.kind === "wait" || p.kind === "phone") {
    $("mfa-wait").hidden = false;
    $("mfa-wait").textContent = p.status || p.message || "Waiting for the provider";
    const after = Math.min(Math.max(p.poll_after_ms || 1000, 200), 10000);
    setTimeout(() => {
      if (current && current.id === v.id) {
        api("POST", "/v1/requests/" + encodeURIComponent(v.id) + "/poll").then(settle, showError);
      }
    }, after);
  } else if (p.kind === "webauthn") {
    // The facts the signature commits to, beside the button that signs them.
    const r = (p.options && p.options.request) || {};
    $("webauthn-facts").textContent = "role " + (r.role || v.role) + " for " +
      Math.round((r.ttl_s || v.ttl_s || 0) / 60) + " min" +
      (r.justification ? ", because: " + r.justification : "") + " (request " + (r.id || v.id) + ")";
    $("webauthn").hidden = false;
    $("webauthn-go").onclick = () => {
      showError(null);
      webauthn(v.id, p.options).catch(showError);
    };
  } else if (p.kind === "smartcard") {
    // A browser cannot reach the card reader: the exact command that answers this prompt.
    $("mfa-message").textContent = (p.message || "") +
      " — a browser cannot reach your card reader: on the computer with the reader, run: rolegate request answer " + v.id;
    // The page follows the request while the terminal answers it.
    setTimeout(() => {
      if (current && current.id === v.id) {
        api("GET", "/v1/requests/" + encodeURIComponent(v.id)).then(settle, showError);
      }
    }, 2000);
  } else {
    $("mfa-message").textContent = "This page cannot answer a `" + p.kind + "` prompt; use the rolegate CLI.";
  }
}

function b64u(buf) {
  let s = "";
  for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64u(s) {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

// A WebAuthn assertion (navigator.credentials.get) as JSON webauthn-rs reads.
async function assertion(options) {
  const o = structuredClone(options.publicKey || options);
  o.challenge = unb64u(o.challenge);
  for (const c of o.allowCredentials || []) c.id = unb64u(c.id);
  const cred = await navigator.credentials.get({ publicKey: o });
  const r = cred.response;
  return {
    id: cred.id, rawId: b64u(cred.rawId), type: cred.type,
    response: {
      clientDataJSON: b64u(r.clientDataJSON), authenticatorData: b64u(r.authenticatorData),
      signature: b64u(r.signature), userHandle: r.userHandle ? b64u(r.userHandle) : null,
    },
    extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
  };
}

// A WebAuthn registration (navigator.credentials.create) as JSON webauthn-rs reads.
async function registration(options) {
  const o = structuredClone(options.publicKey || options);
  o.challenge = unb64u(o.challenge);
  o.user.id = unb64u(o.user.id);
  for (const c of o.excludeCredentials || []) c.id = unb64u(c.id);
  const cred = await navigator.credentials.create({ publicKey: o });
  const r = cred.response;
  return {
    id: cred.id, rawId: b64u(cred.rawId), type: cred.type,
    response: {
      attestationObject: b64u(r.attestationObject), clientDataJSON: b64u(r.clientDataJSON),
      transports: r.getTransports ? r.getTransports() : undefined,
    },
    extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
  };
}

async function webauthn(id, options) {
  const json = await assertion(options);
  settle(await api("POST", "/v1/requests/" + encodeURIComponent(id) + "/answer",
    { input: { kind: "json", value: json } }));
}

// --- lists --------------------------------------------------------------------------------
async function loadRequests() {
  fill("requests-body", await api("GET", "/v1/requests?limit=50"), (row, v) => {
    cell(row, v.role); cell(row, v.state); cell(row, when(v.expires_at)); cell(row, v.reason);
    const td = cell(row, "");
    if (["active", "pending_mfa", "pending_approval", "scheduled"].includes(v.state)) {
      button(td, v.state === "active" ? "End now" : "Cancel", () =>
        api("POST", "/v1/requests/" + encodeURIComponent(v.id) + "/close").then(loadRequests, showError));
    }
  });
}

async function loadApprovals() {
  fill("approvals-body", await api("GET", "/v1/approvals"), (row, v) => {
    cell(row, v.account); cell(row, v.role); cell(row, v.justification);
    cell(row, Math.round(v.ttl_s / 60));
    const td = cell(row, "");
    for (const [label, verb] of [["Approve", "approve"], ["Reject", "reject"]]) {
      button(td, label, () => api("POST", "/v1/approvals/" + encodeURIComponent(v.id) + "/" + verb)
        .then(loadApprovals, showError));
    }
  });
}

async function loadEvents() {
  fill("events-body", await api("GET", "/v1/events?limit=200"), (row, e) => {
    cell(row, when(e.at)); cell(row, e.id); cell(row, e.severity);
    cell(row, e.account); cell(row, e.role); cell(row, e.message);
  });
}

// --- administration: users, roles (the policy as the API holds it), tokens -----------------
const list = (text) => text.split(",").map((s) => s.trim()).filter((s) => s);
const path = (base, name) => base + "/" + encodeURIComponent(name);
// The role being edited as the API returned it: fields the form does not show go back
// unchanged.
let editing = null;

// A button that acts on its second click only (the first asks), for what cannot be undone.
function removeButton(td, what, remove) {
  const b = button(td, "Remove", () => {
    if (b.dataset.armed) return remove();
    b.dataset.armed = "1";
    b.textContent = "Remove " + what + "? Click again";
  });
}

async function loadAdmin() {
  await Promise.all([loadUsers(), loadRoles(), loadTokens(), loadProviders(), loadReadiness()]);
}

async function loadReadiness() {
  const all = await api("GET", "/v1/readiness");
  const rows = [];
  for (const r of all) for (const p of r.providers) rows.push([r, p]);
  fill("readiness-body", rows, (row, [r, p]) => {
    cell(row, r.role); cell(row, p.provider); cell(row, p.shadow ? "shadow" : "");
    cell(row, p.status); cell(row, p.ready + " of " + p.candidates);
    cell(row, p.shadow ? p.shadow_completed_by + " of " + p.candidates : "");
  });
  const ul = $("readiness-summary");
  ul.textContent = "";
  for (const r of all) {
    for (const s of r.summary) {
      const li = document.createElement("li");
      li.textContent = r.role + ": " + s;
      ul.appendChild(li);
    }
  }
}

async function loadProviders() {
  fill("providers-body", await api("GET", "/v1/providers"), (row, p) => {
    cell(row, p.id); cell(row, p.info ? p.info.name : ""); cell(row, p.isolation);
    cell(row, p.health ? p.health.status : "");
    // Why, when not ok: what the host saw of its calls, else the provider's own word.
    const seen = p.health && p.health.seen;
    cell(row, seen && seen.reason ? seen.reason + " (" + seen.failures_in_window + " failed calls)"
      : (p.health && p.health.message) || "");
    cell(row, p.sunset ? (p.retired ? "retired since " : "retires ") + p.sunset : "");
  });
}

async function loadUsers() {
  const users = await api("GET", "/v1/users");
  // A removed user's credentials are not left on show.
  if (!users.some((u) => u.account === credentialsOf)) $("credentials").hidden = true;
  fill("users-body", users, (row, u) => {
    cell(row, u.account); cell(row, u.display_name); cell(row, u.phone); cell(row, u.enabled ? "yes" : "no");
    const td = cell(row, "");
    button(td, u.enabled ? "Disable" : "Enable", () =>
      api("PATCH", path("/v1/users", u.account), { enabled: !u.enabled }).then(loadUsers, showError));
    button(td, "Edit", () => editUser(u));
    button(td, "Credentials", () => loadCredentials(u.account).catch(showError));
    removeButton(td, u.account, () =>
      api("DELETE", path("/v1/users", u.account)).then(loadUsers, showError));
  });
}

// Puts the `user` or `role` form in edit mode for `name` (its key field read-only), or, with
// null, empties it and back to adding (its button says `addLabel`).
function editMode(form, name, addLabel) {
  const key = $(form === "user" ? "user-account" : "role-name");
  if (name === null) $(form + "-form").reset();
  key.readOnly = name !== null;
  $(form + "-save").textContent = name === null ? addLabel : "Save changes to " + name;
}

// The user being edited as the API returned it; a save sends only what the form changed (a
// different phone number raises event 825).
let editingUser = null;

function editUser(u) {
  editingUser = u;
  $("user-account").value = u.account;
  editMode("user", u.account, "Add user");
  $("user-name").value = u.display_name || "";
  $("user-phone").value = u.phone || "";
  $("user-email").value = u.email || "";
}

function saveUser() {
  const [name, phone, email] = ["user-name", "user-phone", "user-email"].map((id) => $(id).value.trim());
  let done;
  if (editingUser) {
    const u = editingUser;
    const patch = {};
    if (name !== (u.display_name || "")) patch.display_name = name;
    if (phone !== (u.phone || "")) patch.phone = phone || null;
    if (email !== (u.email || "")) patch.email = email || null;
    done = api("PATCH", path("/v1/users", u.account), patch);
  } else {
    const body = { account: $("user-account").value.trim(), display_name: name };
    if (phone) body.phone = phone;
    if (email) body.email = email;
    done = api("POST", "/v1/users", body);
  }
  return done.then(() => {
    editingUser = null;
    editMode("user", null, "Add user");
    return loadUsers();
  });
}

// One user's credentials (never their data), each removable: a lost phone or key.
let credentialsOf = null;
async function loadCredentials(account) {
  credentialsOf = account;
  const base = path("/v1/users", account) + "/credentials";
  fill("credentials-body", await api("GET", base), (row, c) => {
    cell(row, c.provider); cell(row, c.id); cell(row, c.label); cell(row, when(c.created_at));
    cell(row, flagText(c));
    removeButton(cell(row, ""), c.provider + " credential", () =>
      api("DELETE", path(path(base, c.provider), c.id))
        .then(() => loadCredentials(account), showError));
  });
  $("credentials-of").textContent = "Credentials of " + account;
  $("credentials").hidden = false;
}

async function loadMyCredentials() {
  if (!me) return;
  // A token's account need not be a user (the first admin's is not): then it has none.
  const mine = await api("GET", path("/v1/users", me.account) + "/credentials")
    .catch((e) => { if (e.status === 404) return []; throw e; });
  fill("my-credentials-body", mine, (row, c) => {
    cell(row, c.provider); cell(row, c.label); cell(row, when(c.created_at));
    cell(row, flagText(c));
  });
}

// A credential set aside for an admin (a suspected copy) says so, and why.
function flagText(c) {
  return c.flag ? "SET ASIDE " + when(c.flagged_at) + ": " + c.flag : "in use";
}

// A role's availability window as a line (`mon-fri 08:00–18:00 Europe/London`).
function windowText(w) { return w ? w.days.join(", ") + " " + w.from + "–" + w.to + " " + w.time_zone : "any time"; }

async function loadRoles() {
  fill("roles-body", await api("GET", "/v1/roles"), (row, r) => {
    cell(row, r.name);
    cell(row, r.mfa_enabled ? r.providers.join(", ") + (r.shadow && r.shadow.length ? " (shadow: " + r.shadow.join(", ") + ")" : "") : "off");
    cell(row, r.approval_enabled ? "on" : "off");
    cell(row, r.candidates.join(", "));
    cell(row, Math.round(r.ttl_s / 60) + " (max " + Math.round(r.max_ttl_s / 60) + ")");
    cell(row, windowText(r.availability));
    const td = cell(row, "");
    button(td, "Edit", () => editRole(r));
    const back = button(td, "Roll back providers", () => {
      if (!back.dataset.armed) {
        back.dataset.armed = "1";
        back.textContent = "Roll back to the previous providers? Click again";
        return;
      }
      api("POST", path("/v1/roles", r.name) + "/rollback").then(() => Promise.all([loadRoles(), loadReadiness()]), showError);
    });
    removeButton(td, r.name, () => api("DELETE", path("/v1/roles", r.name)).then(loadRoles, showError));
  });
}

function editRole(r) {
  editing = r;
  $("role-name").value = r.name;
  editMode("role", r.name, "Save role");
  $("role-candidates").value = r.candidates.join(", ");
  $("role-approvers").value = r.approvers.join(", ");
  $("role-providers").value = r.providers.join(", ");
  $("role-shadow").value = (r.shadow || []).join(", ");
  $("role-mfa").checked = r.mfa_enabled;
  $("role-factor-down").value = r.when_factor_down || "fail_closed";
  $("role-approval").checked = r.approval_enabled;
  $("role-justification").checked = r.justification_required;
  $("role-ttl").value = Math.round(r.ttl_s / 60);
  $("role-max-ttl").value = Math.round(r.max_ttl_s / 60);
  const w = r.availability || { days: [], from: "", to: "", time_zone: "" };
  $("role-days").value = w.days.join(", ");
  $("role-from").value = w.from;
  $("role-to").value = w.to;
  $("role-tz").value = w.time_zone;
}

// The window the form describes: none when its four fields are empty; anything else goes to
// the API as typed, which names what it refuses.
function windowSpec() {
  const [days, from, to, tz] = ["role-days", "role-from", "role-to", "role-tz"].map((id) => $(id).value.trim());
  if (!days && !from && !to && !tz) return null;
  return { days: list(days), from, to, time_zone: tz };
}

function saveRole() {
  const spec = Object.assign({}, editing || {}, {
    name: $("role-name").value.trim(),
    candidates: list($("role-candidates").value),
    approvers: list($("role-approvers").value),
    providers: list($("role-providers").value),
    shadow: list($("role-shadow").value),
    mfa_enabled: $("role-mfa").checked,
    when_factor_down: $("role-factor-down").value,
    approval_enabled: $("role-approval").checked,
    justification_required: $("role-justification").checked,
    ttl_s: parseInt($("role-ttl").value, 10) * 60,
    max_ttl_s: parseInt($("role-max-ttl").value, 10) * 60,
    availability: windowSpec(),
  });
  const done = editing ? api("PUT", path("/v1/roles", spec.name), spec) : api("POST", "/v1/roles", spec);
  return done.then(() => {
    editing = null;
    editMode("role", null, "Save role");
    return Promise.all([loadRoles(), loadReadiness()]);
  });
}

async function loadTokens() {
  fill("tokens-body", await api("GET", "/v1/tokens"), (row, t) => {
    cell(row, t.id); cell(row, t.account); cell(row, t.admin ? "yes" : "no"); cell(row, t.label);
    cell(row, when(t.created_at));
    button(cell(row, ""), "Revoke", () => api("DELETE", path("/v1/tokens", t.id)).then(loadTokens, showError));
  });
}

// --- enrolment: pick a provider, show its material (QR code), confirm with a code ----------
let enrolment = null;

// The factors a user may choose for a request (the role's policy decides which it accepts).
async function loadRequestProviders() {
  const options = [$("request-provider").options[0]];
  for (const p of await api("GET", "/v1/providers")) {
    const o = document.createElement("option");
    o.value = p.id;
    o.textContent = (p.info ? p.info.name + " " : "") + "(" + p.id + ")";
    options.push(o);
  }
  $("request-provider").replaceChildren(...options);
}

async function loadEnrolProviders() {
  // Replaced in one go after the read: two loads at once leave one list, not both.
  const options = [];
  for (const p of await api("GET", "/v1/providers")) {
    if (!p.info || !p.info.needs_enrolment) continue;
    const o = document.createElement("option");
    o.value = p.id;
    o.textContent = p.info.name + " (" + p.id + ")";
    options.push(o);
  }
  $("enrol-provider").replaceChildren(...options);
}

function enrolStep(v) {
  enrolment = v;
  $("enrol-step").hidden = true;
  $("enrol-webauthn").hidden = true;
  $("enrol-code-form").hidden = false;
  if (v.done || !v.state) {
    $("enrol-result").textContent = v.done
      ? "Enrolled (credential " + v.credential + ")."
      : (v.message || "The enrolment did not complete.");
    enrolment = null;
    loadMyCredentials().catch(showError);
    return;
  }
  const p = v.prompt || {};
  $("enrol-step").hidden = false;
  $("enrol-message").textContent = p.message || "";
  if (p.kind === "webauthn") return enrolWebauthn(v, p.options || {});
  const qr = $("enrol-qr");
  // The PNG arrives as base64; only base64 characters reach the data: URL.
  if (typeof p.png === "string" && /^[A-Za-z0-9+/=]+$/.test(p.png)) {
    qr.src = "data:image/png;base64," + p.png;
    qr.hidden = false;
  } else {
    qr.hidden = true;
  }
  const key = (p.text || "").split("\n").find((l) => l.startsWith("Key: "));
  $("enrol-key").textContent = key || "";
  // A bare `code` prompt in an enrolment asks for a secret the user chooses (a PIN): no echo.
  const input = $("enrol-code");
  input.type = p.kind === "code" ? "password" : "text";
  input.autocomplete = p.kind === "code" ? "new-password" : "one-time-code";
  input.value = "";
  input.focus();
}

// A WebAuthn enrolment: a user who holds a credential proves it first (`get`), then the new
// one is registered (`create`) under the name the user gives it.
function enrolWebauthn(v, options) {
  const prove = options.ceremony === "get";
  $("enrol-qr").hidden = true;
  $("enrol-key").textContent = "";
  $("enrol-code-form").hidden = true;
  $("enrol-webauthn").hidden = false;
  $("enrol-label-field").hidden = prove;
  $("enrol-message").textContent = prove
    ? "First confirm with a credential you already hold here; then register the new one."
    : "Name the new credential, then follow your browser (Windows Hello, or touch your security key).";
  $("enrol-webauthn-go").textContent = prove ? "Confirm with a credential you hold" : "Register";
  $("enrol-webauthn-go").onclick = () => {
    showError(null);
    const answer = prove
      ? assertion(options)
      : registration(options).then((credential) => ({ credential, label: $("enrol-label").value.trim() }));
    answer
      .then((value) => api("POST", "/v1/enrolments/continue",
        { provider: v.provider, state: v.state, input: { kind: "json", value } }))
      .then(enrolStep, showError);
  };
}

// --- wiring -------------------------------------------------------------------------------
// Runs `act` (a promise) when the form `id` is submitted, the last error cleared first and its
// own failure shown.
function onSubmit(id, act) {
  $(id).onsubmit = (ev) => {
    ev.preventDefault();
    showError(null);
    act().catch(showError);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".tab")) b.onclick = () => tab(b.dataset.tab);
  $("signin-form").onsubmit = (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    sessionStorage.setItem("rolegate-token", token);
    signIn().catch(showError);
  };
  $("signout").onclick = signOut;
  onSubmit("request-form", () => {
    $("request-result").textContent = "";
    const body = { role: $("role").value.trim(), justification: $("justification").value };
    const factor = $("request-provider").value;
    if (factor) body.provider = factor;
    const minutes = parseInt($("minutes").value, 10);
    if (minutes > 0) body.ttl_s = minutes * 60;
    // An authenticator app's code sent with the request: judged at once, no prompt.
    const code = $("request-code").value.trim();
    $("request-code").value = "";
    if (code) body.code = code;
    return api("POST", "/v1/requests", body).then(settle);
  });
  $("shadow-skip").onclick = () => {
    // Skipped: the trial ends unanswered (recorded when it expires); the request stands.
    current = null;
    $("mfa").hidden = true;
  };
  $("code-form").onsubmit = (ev) => {
    ev.preventDefault();
    const code = $("code").value.trim();
    api("POST", "/v1/requests/" + encodeURIComponent(current.id) + "/answer", { code })
      .then(settle, showError);
  };
  onSubmit("enrol-form", () => {
    $("enrol-result").textContent = "";
    return api("POST", "/v1/enrolments", { provider: $("enrol-provider").value }).then(enrolStep);
  });
  $("enrol-code-form").onsubmit = (ev) => {
    ev.preventDefault();
    if (!enrolment) return;
    const body = { provider: enrolment.provider, state: enrolment.state, code: $("enrol-code").value.trim() };
    api("POST", "/v1/enrolments/continue", body).then(enrolStep, showError);
  };
  onSubmit("user-form", saveUser);
  onSubmit("unlock-form", () => {
    const account = $("unlock-account").value.trim();
    const provider = $("unlock-provider").value.trim();
    return api("POST", path("/v1/users", account) + "/unlock", { provider }).then((v) => {
      $("unlock-result").textContent = v.unlocked
        ? account + " may use " + provider + " again."
        : account + " was not locked out of " + provider + ".";
    });
  });
  onSubmit("role-form", saveRole);
  onSubmit("token-form", () => {
    const body = { account: $("token-account").value.trim(), label: $("token-label").value, admin: $("token-admin").checked };
    return api("POST", "/v1/tokens", body).then((t) => {
      // Shown once, here only; it is not kept by the page.
      $("token-issued").textContent = "Token for " + body.account + " (shown once): " + t.token;
      $("token-form").reset();
      return loadTokens();
    });
  });
  $("verify").onclick = () => api("GET", "/v1/events/verify").then((v) => {
    $("verify-result").textContent = v.intact
      ? "intact: " + v.events + " events"
      : "BROKEN at event " + v.seq + ": " + v.reason;
  }, showError);
  // A link followed while signed in (the CLI's, pasted into this tab).
  window.addEventListener("hashchange", () => { if (me) followLink().catch(showError); });
  if (token) signIn().catch(showError);
});
