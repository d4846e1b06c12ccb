// rolegate's console, part 2: signing in, the screens' router, and the screens every user has
// (my roles, the request form, a request's live status, my requests, approvals, enrolment).
"use strict";

// --- screens and hash routing: `#/roles`, `#/activate/<role>`, `#/request/<id>`, … ----------
// The CLI's links (`#request/<id>`, `#enrol/<provider>`) are routes too.
const screens = {};

function parseHash() {
  let h = location.hash.slice(1);
  if (h.startsWith("/")) h = h.slice(1);
  const i = h.indexOf("/");
  const name = i < 0 ? h : h.slice(0, i);
  let arg = i < 0 ? "" : h.slice(i + 1);
  try { arg = decodeURIComponent(arg); } catch (_) { /* as typed */ }
  return { name: name || "roles", arg };
}

let routeSeq = 0;
async function route() {
  if (!me) return;
  const { name, arg } = parseHash();
  let target = document.querySelector('.screen[data-route="' + CSS.escape(name) + '"]');
  if (!target || !screens[name] || (target.dataset.admin && !me.admin)) target = $("scr-missing");
  const seq = ++routeSeq;
  for (const s of document.querySelectorAll(".screen")) s.hidden = s !== target;
  const navName = name === "request" ? "requests" : name;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === "#/" + navName && target !== $("scr-missing")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const h1 = target.querySelector("h1");
  document.title = (h1 ? h1.textContent : "rolegate") + " – rolegate";
  if (h1 && routed) h1.focus();
  routed = true;
  // `data-loaded` marks a screen whose data arrived (or failed to): tests wait for it.
  delete target.dataset.loaded;
  if (target !== $("scr-missing")) {
    try {
      await screens[name](arg, () => seq === routeSeq);
    } catch (e) {
      const status = target.querySelector(".status");
      sayError(status, e);
    }
  }
  if (seq === routeSeq) target.dataset.loaded = "yes";
}
let routed = false;

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

// --- signing in ----------------------------------------------------------------------------
async function signIn() {
  // The token is checked by asking whose it is.
  try {
    me = await api("GET", "/v1/me");
  } catch (e) {
    if (e.status === 401) signOut("This token does not work here.");
    throw e;
  }
  for (const e of document.querySelectorAll(".admin-only")) e.hidden = !me.admin;
  $("who").textContent = me.account + (me.admin ? " (admin)" : "");
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  say($("error"), "", "");
  routed = false;
  await route();
}

function signOut(message) {
  token = "";
  me = null;
  current = null;
  sessionStorage.removeItem("rolegate-token");
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signout").hidden = true;
  $("who").textContent = "";
  say($("error"), typeof message === "string" ? message : "Signed out.", typeof message === "string" ? "err" : "ok");
}

// --- policy words --------------------------------------------------------------------------
// A role's availability window as a line (`mon-fri, sat 08:00–18:00 Europe/London`).
function windowText(w) { return w ? w.days.join(", ") + " " + w.from + "–" + w.to + " " + w.time_zone : "any time"; }
function mfaText(r) {
  if (!r.mfa_enabled) return "off";
  return (r.providers.length ? r.providers.join(", ") : "on") +
    (r.shadow && r.shadow.length ? " (shadow: " + r.shadow.join(", ") + ")" : "");
}
function durationText(r) { return minutes(r.ttl_s) + " min (max " + minutes(r.max_ttl_s) + ")"; }

// The providers as GET /v1/providers lists them, by id (read once per screen visit).
let providersById = {};
async function loadProviderNames() {
  const list = await api("GET", "/v1/providers");
  providersById = {};
  for (const p of list) providersById[p.id] = p;
  return list;
}
function providerName(id) {
  const p = providersById[id];
  return p && p.info ? p.info.name + " (" + id + ")" : id;
}

// --- My roles ------------------------------------------------------------------------------
let myRoles = [];
async function loadMyRoles() {
  myRoles = await api("GET", "/v1/roles?mine=true");
  return myRoles;
}

let myRolesView = null;
screens.roles = async () => {
  if (!myRolesView) {
    myRolesView = listView($("my-roles-list"), {
      id: "my-roles-body",
      caption: "Roles",
      empty: "You may not request any role. Ask an administrator to make you a candidate.",
      sortBy: 0,
      columns: [
        { label: "Role", value: (r) => r.name },
        { label: "MFA", value: mfaText },
        { label: "Approval", value: (r) => (r.approval_enabled ? "needed" : "not needed") },
        { label: "Duration", value: durationText, sort: (r) => r.ttl_s },
        { label: "Available", value: (r) => windowText(r.availability) },
        { label: "Justification", value: (r) => (r.justification_required ? "required" : "optional") },
      ],
      actions: (td, r) => {
        td.appendChild(el("a", { class: "button primary", href: "#/activate/" + encodeURIComponent(r.name), "aria-label": "Request " + r.name }, "Request"));
      },
    });
  }
  myRolesView.set(await loadMyRoles());
};

// --- Request form --------------------------------------------------------------------------
function rolePolicy(r) {
  if (!r) return "";
  const parts = ["MFA: " + (r.mfa_enabled ? r.providers.map(providerName).join(", ") : "off"),
    "approval " + (r.approval_enabled ? "needed" : "not needed"),
    "default " + minutes(r.ttl_s) + " min, at most " + minutes(r.max_ttl_s) + " min",
    "available " + windowText(r.availability)];
  if (r.justification_required) parts.push("justification required");
  return parts.join(" · ");
}

function fillFactors() {
  const r = myRoles.find((x) => x.name === $("role").value);
  const sel = $("request-provider");
  const keep = sel.value;
  const opts = [el("option", { value: "" }, r && !r.mfa_enabled ? "no second factor for this role" : "the role's first I can use")];
  if (r && r.mfa_enabled) {
    for (const id of r.providers) opts.push(el("option", { value: id }, providerName(id)));
  }
  sel.replaceChildren(...opts);
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  $("role-policy").textContent = rolePolicy(r);
  $("justification").required = !!(r && r.justification_required);
  $("minutes").max = r ? String(minutes(r.max_ttl_s)) : "";
  $("minutes").placeholder = r ? String(minutes(r.ttl_s)) : "";
}

screens.activate = async (arg, live) => {
  say($("request-form-status"), "", "");
  const [roles] = await Promise.all([loadMyRoles(), loadProviderNames()]);
  if (!live()) return;
  const sel = $("role");
  const opts = [el("option", { value: "" }, roles.length ? "Choose a role" : "no role you may request")];
  for (const r of roles) opts.push(el("option", { value: r.name }, r.name));
  sel.replaceChildren(...opts);
  if (arg && roles.some((r) => r.name === arg)) sel.value = arg;
  else if (arg) say($("request-form-status"), "You may not request `" + arg + "`.", "err");
  fillFactors();
};

async function submitRequest() {
  const status = $("request-form-status");
  const body = { role: $("role").value, justification: $("justification").value };
  if (!body.role) { say(status, "Choose a role first.", "err"); $("role").focus(); return; }
  const factor = $("request-provider").value;
  if (factor) body.provider = factor;
  const m = parseInt($("minutes").value, 10);
  if (m > 0) body.ttl_s = m * 60;
  // An authenticator app's code sent with the request: judged at once, no prompt.
  const code = $("request-code").value.trim();
  $("request-code").value = "";
  if (code) body.code = code;
  const v = await run(status, () => api("POST", "/v1/requests", body), "Requested.");
  if (!v) return;
  current = v;
  justCreated = v.id;
  go("#/request/" + encodeURIComponent(v.id));
}

// --- one request: its live status through every prompt kind ---------------------------------
let current = null;

// The request just created, shown as its answer came (its screen reads it anew otherwise).
let justCreated = null;

screens.request = async (id, live) => {
  const fresh = justCreated === id && current && current.id === id;
  justCreated = null;
  if (!fresh) {
    clearPrompt();
    $("request-facts").replaceChildren();
    say($("request-result"), "Loading…", "");
    const v = await api("GET", "/v1/requests/" + encodeURIComponent(id));
    if (!live()) return;
    settle(v);
  } else {
    settle(current);
  }
};

// What ends when: an active or scheduled activation's end; an expired one's actual end; a
// closed one's end is when it was closed, which the view does not carry: none is shown.
function endText(v) {
  if ((v.state === "active" || v.state === "scheduled") && v.expires_at) return "ends " + when(v.expires_at);
  if (v.state === "expired" && v.expires_at) return "ended " + when(v.expires_at);
  return "";
}

function fact(dl, term, value) {
  dl.appendChild(el("dt", {}, term));
  const dd = el("dd");
  if (value instanceof Node) dd.appendChild(value); else dd.textContent = value == null ? "" : String(value);
  dl.appendChild(dd);
}

function requestFacts(v) {
  const dl = $("request-facts");
  dl.replaceChildren();
  const idSpan = el("span");
  shortId(idSpan, v.id, "request id");
  fact(dl, "Request", idSpan);
  fact(dl, "Role", v.role);
  fact(dl, "State", stateText(v.state));
  fact(dl, "Requested", when(v.created_at));
  if (v.starts_at) fact(dl, "Starts", when(v.starts_at));
  fact(dl, "Duration", minutes(v.ttl_s) + " min");
  const end = endText(v);
  if (end) fact(dl, "End", end.replace(/^ends |^ended /, ""));
  if (v.provider) fact(dl, "Factor", v.provider);
  if (v.justification) fact(dl, "Justification", v.justification);
}

function clearPrompt() {
  $("mfa").hidden = true;
  $("code-form").hidden = true;
  $("mfa-wait").hidden = true;
  $("mfa-wait").textContent = "";
  $("shadow-skip").hidden = true;
  $("webauthn").hidden = true;
  $("webauthn-facts").textContent = "";
  $("smartcard").hidden = true;
  $("smartcard-command").textContent = "";
  $("mfa-message").textContent = "";
  say($("mfa-status"), "", "");
}

function resultText(v) {
  const role = v.role;
  switch (v.state) {
    case "active": return role + " is active until " + when(v.expires_at) + ".";
    case "scheduled": return role + " is scheduled: it starts " + when(v.starts_at) + (v.expires_at ? " and ends " + when(v.expires_at) : "") + ".";
    case "pending_approval": return role + " is waiting for an approver.";
    case "pending_mfa": return role + " is waiting for your second factor.";
    case "expired": return role + " expired: it ended " + when(v.expires_at) + ".";
    case "closed": return role + " is closed" + (v.reason ? ": " + v.reason : "") + ".";
    default: return role + " is " + stateText(v.state) + (v.reason ? ": " + v.reason : "") + ".";
  }
}

// Shows the request `v`: every prompt text is replaced (none survives a state change).
function settle(v) {
  const changed = !current || current.id !== v.id || current.state !== v.state;
  current = v;
  clearPrompt();
  requestFacts(v);
  $("h-request").textContent = "Request for " + v.role;
  const ok = ["active", "scheduled", "pending_approval"].includes(v.state);
  const bad = ["failed", "rejected", "cancelled"].includes(v.state);
  let text = resultText(v);
  if (v.shadow && v.shadow.reason && v.shadow.outcome !== "asked") text += " " + v.shadow.reason;
  say($("request-result"), text, ok ? "ok" : bad ? "err" : "");
  // A shadow factor: asked once the real one is done, never deciding the request.
  const shadow = v.shadow && v.shadow.outcome === "asked" ? v.shadow : null;
  if (v.state !== "pending_mfa" && !shadow) return;
  $("mfa").hidden = false;
  const p = (shadow ? shadow.prompt : v.prompt) || {};
  // The last answer's outcome (a wrong code), while the prompt is still open.
  const why = shadow ? shadow.reason : v.reason;
  if (why) say($("mfa-status"), why, "err");
  const trial = shadow ? "This role is trying `" + shadow.provider + "`; your request does not depend on it. " : "";
  if (shadow) $("shadow-skip").hidden = false;
  $("mfa-message").textContent = trial + (p.message || p.status || "");
  if (p.kind === "code") {
    $("code-form").hidden = false;
    $("code").value = "";
    if (changed || !shadow) $("code").focus();
  } else if (p.kind === "wait" || p.kind === "phone") {
    $("mfa-wait").hidden = false;
    $("mfa-wait").textContent = p.status || p.message || "Waiting for the provider";
    const after = Math.min(Math.max(p.poll_after_ms || 1000, 200), 10000);
    setTimeout(() => {
      if (current && current.id === v.id && me) {
        api("POST", "/v1/requests/" + encodeURIComponent(v.id) + "/poll").then(settle, (e) => sayError($("mfa-status"), e));
      }
    }, after);
  } else if (p.kind === "webauthn") {
    // The facts the signature commits to, beside the button that signs them.
    const r = (p.options && p.options.request) || {};
    $("webauthn-facts").textContent = "role " + (r.role || v.role) + " for " +
      Math.round((r.ttl_s || v.ttl_s || 0) / 60) + " min" +
      (r.justification ? ", because: " + r.justification : "") + " (request " + short(r.id || v.id) + ")";
    $("webauthn").hidden = false;
    $("webauthn-go").onclick = () => {
      say($("mfa-status"), "Follow your browser…", "");
      webauthn(v.id, p.options).catch((e) => sayError($("mfa-status"), e));
    };
  } else if (p.kind === "smartcard") {
    // A browser cannot reach the card reader: the exact command that answers this prompt.
    $("smartcard").hidden = false;
    const cmd = "rolegate request answer " + v.id;
    $("mfa-message").textContent = (p.message || "") +
      " — a browser cannot reach your card reader: on the computer with the reader, run: " + cmd;
    $("smartcard-command").textContent = cmd;
    const row = $("smartcard-command").parentNode;
    for (const b of row.querySelectorAll("button")) b.remove();
    const b = button(row, "Copy", () => copy(cmd, b), "small");
    b.setAttribute("aria-label", "Copy the command");
    // The page follows the request while the terminal answers it.
    setTimeout(() => {
      if (current && current.id === v.id && me) {
        api("GET", "/v1/requests/" + encodeURIComponent(v.id)).then(settle, (e) => sayError($("mfa-status"), e));
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

// --- request lists: mine, and (admin.js) everyone's -----------------------------------------
const OPEN = ["active", "pending_mfa", "pending_approval", "scheduled"];

// The columns of a request list; `who` adds the requester.
function requestColumns(who) {
  const cols = [
    { label: "Request", value: (v) => v.id, sortable: false, render: (td, v) => shortId(td, v.id, "request id") },
  ];
  if (who) cols.push({ label: "Who", value: (v) => v.account });
  cols.push(
    { label: "Role", value: (v) => v.role },
    { label: "State", value: (v) => stateText(v.state) },
    { label: "Requested", value: (v) => when(v.created_at), sort: (v) => v.created_at },
    { label: "Minutes", value: (v) => minutes(v.ttl_s), sort: (v) => v.ttl_s },
    { label: "Ends", value: endText, sort: (v) => v.expires_at || 0 },
    { label: "Justification", value: (v) => v.justification },
    { label: "Reason", value: (v) => (v.state === "active" || v.state === "scheduled" ? "" : v.reason || "") },
  );
  return cols;
}

// The close button of an open request: two steps, its feedback in the list's status line.
function closeAction(td, v, view, reload) {
  if (v.state === "pending_mfa" && v.account === (me && me.account)) {
    td.appendChild(el("a", { class: "button", href: "#/request/" + encodeURIComponent(v.id) }, "Continue"));
  } else {
    td.appendChild(el("a", { class: "button", href: "#/request/" + encodeURIComponent(v.id), "aria-label": "Open request " + short(v.id) }, "Open"));
  }
  if (!OPEN.includes(v.state)) return;
  const label = v.state === "active" ? "End now" : v.state === "pending_approval" || v.state === "pending_mfa" ? "Cancel" : "Close";
  confirmButton(td, label, v.role + " (" + short(v.id) + ")", () =>
    run(view.status, async () => {
      const r = await api("POST", "/v1/requests/" + encodeURIComponent(v.id) + "/close");
      await reload();
      return r;
    }, "Closed " + v.role + " (" + short(v.id) + ")."));
}

let requestsView = null;
let myRequests = [];
function showMyRequests() {
  const f = $("requests-state").value;
  requestsView.set(myRequests.filter((v) => !f || (f === "open" ? OPEN.includes(v.state) : v.state === f)));
}
async function reloadMyRequests() {
  myRequests = await api("GET", "/v1/requests?limit=500");
  showMyRequests();
}
screens.requests = async () => {
  if (!requestsView) {
    requestsView = listView($("requests-list"), {
      id: "requests-body",
      caption: "My requests",
      empty: "No requests yet.",
      sortBy: 3,
      sortDir: "descending",
      columns: requestColumns(false),
      actions: (td, v, view) => closeAction(td, v, view, reloadMyRequests),
    });
    $("requests-state").onchange = showMyRequests;
  }
  await reloadMyRequests();
};

// --- approver inbox ------------------------------------------------------------------------
let approvalsView = null;
async function reloadApprovals() { approvalsView.set(await api("GET", "/v1/approvals")); }
screens.approvals = async () => {
  if (!approvalsView) {
    approvalsView = listView($("approvals-list"), {
      id: "approvals-body",
      caption: "Requests to approve",
      empty: "Nothing waits for your decision.",
      sortBy: 4,
      columns: [
        { label: "Request", value: (v) => v.id, sortable: false, render: (td, v) => shortId(td, v.id, "request id") },
        { label: "Requester", value: (v) => v.account },
        { label: "Role", value: (v) => v.role },
        { label: "Justification", value: (v) => v.justification },
        { label: "Requested", value: (v) => when(v.created_at), sort: (v) => v.created_at },
        { label: "Minutes", value: (v) => minutes(v.ttl_s), sort: (v) => v.ttl_s },
        { label: "State", value: (v) => stateText(v.state) },
      ],
      actions: (td, v, view) => {
        const what = v.role + " for " + v.account;
        button(td, "Approve", () => run(view.status, async () => {
          await api("POST", "/v1/approvals/" + encodeURIComponent(v.id) + "/approve");
          await reloadApprovals();
        }, "Approved " + what + "."), "primary");
        const reasonId = "reject-reason-" + v.id.slice(0, 12).replace(/[^A-Za-z0-9_-]/g, "");
        const extra = el("span", { class: "reason" });
        extra.appendChild(el("label", { for: reasonId }, "Reason (optional)"));
        const input = el("input", { id: reasonId });
        extra.appendChild(input);
        confirmButton(td, "Reject", what, () => run(view.status, async () => {
          const reason = input.value.trim();
          await api("POST", "/v1/approvals/" + encodeURIComponent(v.id) + "/reject", reason ? { reason } : {});
          await reloadApprovals();
        }, "Rejected " + what + "."), extra);
      },
    });
  }
  await reloadApprovals();
};

// --- enrolment: pick a provider, show its material (QR code), confirm with a code ----------
let enrolment = null;
let credsView = null;

async function loadEnrolProviders() {
  // Replaced in one go after the read: two loads at once leave one list, not both.
  const options = [];
  for (const p of await loadProviderNames()) {
    if (!p.info || !p.info.needs_enrolment) continue;
    options.push(el("option", { value: p.id }, p.info.name + " (" + p.id + ")"));
  }
  const sel = $("enrol-provider");
  const keep = sel.value;
  sel.replaceChildren(...options);
  if (keep && options.some((o) => o.value === keep)) sel.value = keep;
}

// A credential set aside for an admin (a suspected copy) says so, and why.
function flagText(c) {
  return c.flag ? "SET ASIDE " + when(c.flagged_at) + ": " + c.flag : "in use";
}

async function loadMyCredentials() {
  if (!me) return;
  if (!credsView) {
    credsView = listView($("my-credentials-list"), {
      id: "my-credentials-body",
      caption: "Your credentials",
      empty: "You have no credentials here.",
      columns: [
        { label: "Provider", value: (c) => c.provider },
        { label: "Label", value: (c) => c.label },
        { label: "Enrolled", value: (c) => when(c.created_at), sort: (c) => c.created_at },
        { label: "Status", value: flagText },
      ],
    });
  }
  // A token's account need not be a user (the first admin's is not): then it has none.
  const mine = await api("GET", path("/v1/users", me.account) + "/credentials")
    .catch((e) => { if (e.status === 404) return []; throw e; });
  credsView.set(mine);
}

screens.enrol = async (arg) => {
  await Promise.all([loadEnrolProviders(), loadMyCredentials()]);
  if (arg) {
    // The CLI's link (`#enrol/<provider>`): that enrolment starts at once.
    $("enrol-provider").value = arg;
    say($("enrol-result"), "", "");
    enrolStep(await api("POST", "/v1/enrolments", { provider: arg }));
  }
};

function enrolStep(v) {
  enrolment = v;
  $("enrol-step").hidden = true;
  $("enrol-webauthn").hidden = true;
  $("enrol-code-form").hidden = false;
  if (v.done || !v.state) {
    say($("enrol-result"), v.done
      ? "Enrolled (credential " + v.credential + ")."
      : (v.message || "The enrolment did not complete."), v.done ? "ok" : "err");
    enrolment = null;
    loadMyCredentials().catch((e) => sayError($("enrol-result"), e));
    return;
  }
  say($("enrol-result"), "", "");
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
  const row = $("enrol-key-row");
  row.hidden = !key;
  for (const b of row.querySelectorAll("button")) b.remove();
  if (key) {
    const secret = key.slice(5).split("(")[0].replace(/\s+/g, "");
    const b = button(row, "Copy", () => copy(secret, b), "small");
    b.setAttribute("aria-label", "Copy the key");
  }
  // A bare `code` prompt in an enrolment asks for a secret the user chooses (a PIN): no echo.
  const input = $("enrol-code");
  input.type = p.kind === "code" ? "password" : "text";
  input.autocomplete = p.kind === "code" ? "new-password" : "one-time-code";
  document.querySelector('label[for="enrol-code"]').textContent = p.kind === "code" ? "Your new PIN" : "Code from your app";
  input.value = "";
  input.focus();
}

// A WebAuthn enrolment: a user who holds a credential proves it first (`get`), then the new
// one is registered (`create`) under the name the user gives it.
function enrolWebauthn(v, options) {
  const prove = options.ceremony === "get";
  $("enrol-qr").hidden = true;
  $("enrol-key").textContent = "";
  $("enrol-key-row").hidden = true;
  $("enrol-code-form").hidden = true;
  $("enrol-webauthn").hidden = false;
  $("enrol-label-field").hidden = prove;
  $("enrol-message").textContent = prove
    ? "First confirm with a credential you already hold here; then register the new one."
    : "Name the new credential, then follow your browser (Windows Hello, or touch your security key).";
  $("enrol-webauthn-go").textContent = prove ? "Confirm with a credential you hold" : "Register";
  $("enrol-webauthn-go").onclick = () => {
    say($("enrol-result"), "Follow your browser…", "");
    const answer = prove
      ? assertion(options)
      : registration(options).then((credential) => ({ credential, label: $("enrol-label").value.trim() }));
    answer
      .then((value) => api("POST", "/v1/enrolments/continue",
        { provider: v.provider, state: v.state, input: { kind: "json", value } }))
      .then(enrolStep, (e) => sayError($("enrol-result"), e));
  };
}

// --- wiring -------------------------------------------------------------------------------
// Runs `act` when the form `id` is submitted (the browser's own checks first).
function onSubmit(id, act) {
  $(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    act();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  onSubmit("signin-form", () => {
    token = $("token").value.trim();
    $("token").value = "";
    sessionStorage.setItem("rolegate-token", token);
    say($("error"), "Signing in…", "");
    signIn().catch((e) => sayError($("error"), e));
  });
  $("signout").onclick = () => signOut();
  $("role").onchange = fillFactors;
  onSubmit("request-form", submitRequest);
  $("shadow-skip").onclick = () => {
    // Skipped: the trial ends unanswered (recorded when it expires); the request stands.
    const v = current;
    current = null;
    clearPrompt();
    if (v) say($("request-result"), resultText(v) + " You skipped the trial.", "ok");
  };
  onSubmit("code-form", () => {
    if (!current) return;
    const code = $("code").value.trim();
    say($("mfa-status"), "Checking…", "");
    api("POST", "/v1/requests/" + encodeURIComponent(current.id) + "/answer", { code })
      .then(settle, (e) => sayError($("mfa-status"), e));
  });
  onSubmit("enrol-form", () => {
    say($("enrol-result"), "Starting…", "");
    api("POST", "/v1/enrolments", { provider: $("enrol-provider").value })
      .then(enrolStep, (e) => sayError($("enrol-result"), e));
  });
  onSubmit("enrol-code-form", () => {
    if (!enrolment) return;
    const body = { provider: enrolment.provider, state: enrolment.state, code: $("enrol-code").value.trim() };
    say($("enrol-result"), "Checking…", "");
    api("POST", "/v1/enrolments/continue", body).then(enrolStep, (e) => sayError($("enrol-result"), e));
  });
  if (typeof wireAdmin === "function") wireAdmin();
  window.addEventListener("hashchange", () => { route(); });
  if (token) signIn().catch((e) => sayError($("error"), e));
});
