// rolegate's console, part 3: the administrators' screens (elevated now, users, roles,
// providers and readiness, tokens, events). The API refuses them to anyone else; the page only
// hides them.
"use strict";

// --- pickers: checkbox lists instead of comma-separated text --------------------------------
// A list of checkboxes in `host` over `items` ([{value, label}]), `name` naming its ids.
// opts.searchable adds a search box (long lists: users); opts.ordered adds "Move up" buttons,
// the order of the checked boxes being the order the API gets (a role's providers).
function picker(host, name, what, opts) {
  host.replaceChildren();
  host.classList.add("picker-body");
  const st = { items: [], selected: [] };
  let search = null;
  if (opts.searchable) {
    const sid = name + "-search";
    const tools = el("div", { class: "field" });
    tools.appendChild(el("label", { for: sid }, "Search " + what));
    search = el("input", { type: "search", id: sid, autocomplete: "off" });
    tools.appendChild(search);
    host.appendChild(tools);
    search.oninput = () => filter();
  }
  const count = el("p", { class: "hint", "aria-live": "polite" });
  host.appendChild(count);
  const list = el("ul", { class: "checks" + (opts.searchable ? " scroll" : ""), "aria-label": what });
  host.appendChild(list);
  const boxes = () => [...list.querySelectorAll("input[type=checkbox]")];
  function counted() {
    const n = boxes().filter((b) => b.checked).length;
    count.textContent = n + " selected";
  }
  function filter() {
    const q = search ? search.value.trim().toLowerCase() : "";
    for (const li of list.children) li.hidden = !!q && !li.textContent.toLowerCase().includes(q);
  }
  function render() {
    list.replaceChildren();
    // The selected values first (in their order, for an ordered list), then the others.
    const values = st.items.map((i) => i.value);
    const order = opts.ordered
      ? st.selected.concat(values.filter((v) => !st.selected.includes(v)))
      : values.concat(st.selected.filter((v) => !values.includes(v)));
    order.forEach((value, i) => {
      const item = st.items.find((x) => x.value === value);
      const li = el("li");
      const id = name + "-" + i;
      const box = el("input", { type: "checkbox", id, value });
      box.checked = st.selected.includes(value);
      box.onchange = counted;
      li.appendChild(box);
      li.appendChild(el("label", { for: id }, item ? item.label : value + " (unknown here)"));
      if (opts.ordered) {
        const up = button(li, "Move up", () => {
          const prev = li.previousElementSibling;
          if (prev) { list.insertBefore(li, prev); up.focus(); }
        }, "small");
        up.setAttribute("aria-label", "Move up " + value);
      }
      list.appendChild(li);
    });
    counted();
    filter();
  }
  return {
    setItems(items) { st.items = items; st.selected = this.get(); render(); },
    set(selected) { st.selected = [...(selected || [])]; render(); },
    get() { return boxes().filter((b) => b.checked).map((b) => b.value); },
    // A value the list does not know (a provider removed from the config since the list
    // was read): checked, for the server to judge.
    add(value) { st.selected = this.get().concat([value]); render(); },
  };
}

let users = [];
async function loadUsersList() {
  users = await api("GET", "/v1/users");
  const dl = $("user-accounts");
  dl.replaceChildren(...users.map((u) => el("option", { value: u.account })));
  return users;
}
const userItems = () => users.map((u) => ({ value: u.account, label: u.account + (u.display_name && u.display_name !== u.account ? " — " + u.display_name : "") + (u.enabled ? "" : " (disabled)") }));
const providerItems = () => Object.keys(providersById).map((id) => ({ value: id, label: providerName(id) }));

// --- Elevated now, and everyone's requests ---------------------------------------------------
let elevatedView = null;
let allRequestsView = null;

async function reloadElevated() {
  elevatedView.set(await api("GET", "/v1/requests?all=true&state=active,scheduled&limit=500"));
}
const STATES = ["pending_mfa", "pending_approval", "scheduled", "active", "expired", "closed", "rejected", "failed", "cancelled"];
let states = null;
function statePicker() {
  if (!states) {
    states = picker($("all-state"), "st", "states", {});
    states.setItems(STATES.map((s) => ({ value: s, label: stateText(s) })));
  }
  return states;
}

async function reloadAllRequests() {
  allRequestsView.set(await api("GET", query("/v1/requests", {
    all: "true", account: $("all-account").value.trim(), role: $("all-role").value.trim(),
    state: statePicker().get().join(","), limit: 500,
  })));
}

screens.elevated = async () => {
  if (!elevatedView) {
    elevatedView = listView($("elevated-list"), {
      id: "elevated-body",
      caption: "Elevated now",
      empty: "Nobody holds a role now.",
      sortBy: 4,
      columns: [
        { label: "Who", value: (v) => v.account },
        { label: "Role", value: (v) => v.role },
        { label: "State", value: (v) => stateText(v.state) },
        // An active activation began its ttl before it ends.
        { label: "Since", value: (v) => when(v.state === "active" && v.expires_at ? v.expires_at - v.ttl_s * 1000 : v.starts_at), sort: (v) => (v.expires_at || 0) - v.ttl_s * 1000 },
        { label: "Ends", value: (v) => when(v.expires_at), sort: (v) => v.expires_at || 0 },
        { label: "Justification", value: (v) => v.justification },
        { label: "Request", value: (v) => v.id, sortable: false, render: (td, v) => shortId(td, v.id, "request id") },
      ],
      actions: (td, v, view) => {
        const what = v.role + " of " + v.account;
        confirmButton(td, "Close", what, () => run(view.status, async () => {
          await api("POST", "/v1/requests/" + encodeURIComponent(v.id) + "/close");
          await reloadElevated();
        }, "Closed " + what + "."));
      },
    });
    allRequestsView = listView($("all-requests-list"), {
      id: "all-requests-body",
      caption: "Everyone's requests",
      empty: "No requests match.",
      sortBy: 4,
      sortDir: "descending",
      columns: requestColumns(true),
      actions: (td, v, view) => closeAction(td, v, view, reloadAllRequests),
    });
  }
  await Promise.all([reloadElevated(), reloadAllRequests()]);
};

// --- Users, their credentials, lockouts -----------------------------------------------------
let usersView = null;
let credentialsView = null;
let credentialsOf = null;
// The user being edited as the API returned it; a save sends only what the form changed (a
// different phone number raises event 825).
let editingUser = null;

function userMode(u) {
  editingUser = u;
  $("user-account").readOnly = !!u;
  $("user-save").textContent = u ? "Save changes to " + u.account : "Add user";
  $("user-form-h").textContent = u ? "Edit " + u.account : "Add a user";
  $("user-cancel").hidden = !u;
  if (!u) {
    $("user-form").reset();
    return;
  }
  $("user-account").value = u.account;
  $("user-name").value = u.display_name || "";
  $("user-phone").value = u.phone || "";
  $("user-email").value = u.email || "";
  $("user-form-h").scrollIntoView({ block: "start" });
  $("user-name").focus();
}

async function reloadUsers() {
  usersView.set(await loadUsersList());
  // A removed user's credentials are not left on show.
  if (!users.some((u) => u.account === credentialsOf)) { $("credentials").hidden = true; credentialsOf = null; }
}

async function showCredentials(account) {
  credentialsOf = account;
  const base = path("/v1/users", account) + "/credentials";
  if (!credentialsView) {
    credentialsView = listView($("credentials-list"), {
      id: "credentials-body",
      caption: "Credentials",
      empty: "No credentials.",
      columns: [
        { label: "Provider", value: (c) => c.provider },
        { label: "Id", value: (c) => c.id, render: (td, c) => shortId(td, c.id, "credential id") },
        { label: "Label", value: (c) => c.label },
        { label: "Enrolled", value: (c) => when(c.created_at), sort: (c) => c.created_at },
        { label: "Status", value: flagText },
      ],
      actions: (td, c, view) => {
        const who = credentialsOf;
        const b = path("/v1/users", who) + "/credentials";
        confirmButton(td, "Remove", c.provider + " credential " + (c.label || short(c.id)), () =>
          run(view.status, async () => {
            await api("DELETE", path(path(b, c.provider), c.id));
            await showCredentials(who);
          }, "Removed the " + c.provider + " credential of " + who + "."));
      },
    });
  }
  credentialsView.set(await api("GET", base));
  $("credentials-of").textContent = "Credentials of " + account;
  $("credentials").hidden = false;
}

screens.users = async () => {
  if (!usersView) {
    usersView = listView($("users-list"), {
      id: "users-body",
      caption: "Users",
      empty: "No users yet: add one below.",
      sortBy: 0,
      columns: [
        { label: "Account", value: (u) => u.account },
        { label: "Name", value: (u) => u.display_name },
        { label: "Phone", value: (u) => u.phone },
        { label: "Email", value: (u) => u.email },
        { label: "Enabled", value: (u) => (u.enabled ? "yes" : "no") },
        { label: "Source", value: (u) => u.source },
      ],
      actions: (td, u, view) => {
        button(td, u.enabled ? "Disable" : "Enable", () => run(view.status, async () => {
          await api("PATCH", path("/v1/users", u.account), { enabled: !u.enabled });
          await reloadUsers();
        }, (u.enabled ? "Disabled " : "Enabled ") + u.account + "."));
        button(td, "Edit", () => userMode(u));
        button(td, "Credentials", () => run(view.status, () => showCredentials(u.account), ""));
        confirmButton(td, "Remove", u.account, () => run(view.status, async () => {
          await api("DELETE", path("/v1/users", u.account));
          if (editingUser && editingUser.account === u.account) userMode(null);
          await reloadUsers();
        }, "Removed " + u.account + "."));
      },
    });
  }
  const [, providers] = await Promise.all([reloadUsers(), loadProviderNames()]);
  const sel = $("unlock-provider");
  const keep = sel.value;
  sel.replaceChildren(...providers.map((p) => el("option", { value: p.id }, providerName(p.id))));
  if (keep) sel.value = keep;
};

async function saveUser() {
  const [name, phone, email] = ["user-name", "user-phone", "user-email"].map((id) => $(id).value.trim());
  const st = $("user-status");
  let account;
  const ok = await run(st, async () => {
    if (editingUser) {
      const u = editingUser;
      account = u.account;
      const patch = {};
      if (name !== (u.display_name || "")) patch.display_name = name;
      if (phone !== (u.phone || "")) patch.phone = phone || null;
      if (email !== (u.email || "")) patch.email = email || null;
      await api("PATCH", path("/v1/users", u.account), patch);
    } else {
      account = $("user-account").value.trim();
      const body = { account, display_name: name };
      if (phone) body.phone = phone;
      if (email) body.email = email;
      await api("POST", "/v1/users", body);
    }
    return true;
  }, () => (editingUser ? "Saved " : "Added ") + account + ".");
  if (!ok) return;
  userMode(null);
  await reloadUsers().catch((e) => sayError(st, e));
}

// --- Roles --------------------------------------------------------------------------------
let rolesView = null;
// The role being edited as the API returned it: fields the form does not show go back
// unchanged.
let editingRole = null;
let pick = null;

function rolePickers() {
  if (pick) return pick;
  pick = {
    candidates: picker($("role-candidates"), "cand", "candidates", { searchable: true }),
    approvers: picker($("role-approvers"), "appr", "approvers", { searchable: true }),
    providers: picker($("role-providers"), "prov", "MFA providers", { ordered: true }),
    shadow: picker($("role-shadow"), "shadow", "shadow providers", {}),
  };
  return pick;
}

function roleMode(r) {
  editingRole = r;
  const p = rolePickers();
  $("role-name").readOnly = !!r;
  $("role-save").textContent = r ? "Save changes to " + r.name : "Save role";
  $("role-form-h").textContent = r ? "Edit role " + r.name : "New role";
  $("role-cancel").hidden = !r;
  if (!r) {
    $("role-form").reset();
    for (const k of ["candidates", "approvers", "providers", "shadow"]) p[k].set([]);
    return;
  }
  $("role-name").value = r.name;
  p.candidates.set(r.candidates);
  p.approvers.set(r.approvers);
  p.providers.set(r.providers);
  p.shadow.set(r.shadow || []);
  $("role-mfa").checked = r.mfa_enabled;
  $("role-factor-down").value = r.when_factor_down || "fail_closed";
  $("role-approval").checked = r.approval_enabled;
  $("role-justification").checked = r.justification_required;
  $("role-ttl").value = minutes(r.ttl_s);
  $("role-max-ttl").value = minutes(r.max_ttl_s);
  const w = r.availability || { days: [], from: "", to: "", time_zone: "" };
  $("role-days").value = w.days.join(", ");
  $("role-from").value = w.from;
  $("role-to").value = w.to;
  $("role-tz").value = w.time_zone;
  $("role-form-h").scrollIntoView({ block: "start" });
  $("role-candidates").querySelector("input").focus();
}

const commaList = (text) => text.split(",").map((s) => s.trim()).filter((s) => s);

// The window the form describes: none when its four fields are empty; anything else goes to
// the API as typed, which names what it refuses.
function windowSpec() {
  const [days, from, to, tz] = ["role-days", "role-from", "role-to", "role-tz"].map((id) => $(id).value.trim());
  if (!days && !from && !to && !tz) return null;
  return { days: commaList(days), from, to, time_zone: tz };
}

async function reloadRoles() { rolesView.set(await api("GET", "/v1/roles")); }

async function saveRole() {
  const p = rolePickers();
  const spec = Object.assign({}, editingRole || {}, {
    name: $("role-name").value.trim(),
    candidates: p.candidates.get(),
    approvers: p.approvers.get(),
    providers: p.providers.get(),
    shadow: p.shadow.get(),
    mfa_enabled: $("role-mfa").checked,
    when_factor_down: $("role-factor-down").value,
    approval_enabled: $("role-approval").checked,
    justification_required: $("role-justification").checked,
    ttl_s: parseInt($("role-ttl").value, 10) * 60,
    max_ttl_s: parseInt($("role-max-ttl").value, 10) * 60,
    availability: windowSpec(),
  });
  delete spec.warnings;
  const editing = !!editingRole;
  const st = $("role-status");
  const ok = await run(st, () => (editing ? api("PUT", path("/v1/roles", spec.name), spec) : api("POST", "/v1/roles", spec)),
    (editing ? "Saved changes to " : "Created role ") + spec.name + ".");
  if (!ok) return;
  roleMode(null);
  await reloadRoles().catch((e) => sayError(st, e));
}

screens["admin-roles"] = async () => {
  if (!rolesView) {
    rolesView = listView($("roles-list"), {
      id: "roles-body",
      caption: "Roles",
      empty: "No roles yet: create one below.",
      sortBy: 0,
      columns: [
        { label: "Role", value: (r) => r.name },
        { label: "MFA", value: mfaText },
        { label: "Approval", value: (r) => (r.approval_enabled ? "on" : "off") },
        { label: "Candidates", value: (r) => r.candidates.join(", "), sort: (r) => r.candidates.length },
        { label: "Approvers", value: (r) => r.approvers.join(", "), sort: (r) => r.approvers.length },
        { label: "Minutes", value: (r) => minutes(r.ttl_s) + " (max " + minutes(r.max_ttl_s) + ")", sort: (r) => r.ttl_s },
        { label: "Available", value: (r) => windowText(r.availability) },
      ],
      actions: (td, r, view) => {
        button(td, "Edit", () => roleMode(r));
        confirmButton(td, "Roll back providers", "of " + r.name, () => run(view.status, async () => {
          await api("POST", path("/v1/roles", r.name) + "/rollback");
          await reloadRoles();
        }, "Rolled back the providers of " + r.name + "."));
        confirmButton(td, "Remove", r.name, () => run(view.status, async () => {
          await api("DELETE", path("/v1/roles", r.name));
          if (editingRole && editingRole.name === r.name) roleMode(null);
          await reloadRoles();
        }, "Removed role " + r.name + "."));
      },
    });
  }
  const p = rolePickers();
  await Promise.all([reloadRoles(), loadUsersList(), loadProviderNames()]);
  p.candidates.setItems(userItems());
  p.approvers.setItems(userItems());
  p.providers.setItems(providerItems());
  p.shadow.setItems(providerItems());
  const tz = $("time-zones");
  if (!tz.children.length && Intl.supportedValuesOf) {
    tz.replaceChildren(...Intl.supportedValuesOf("timeZone").map((z) => el("option", { value: z })));
  }
};

// --- Providers and readiness ----------------------------------------------------------------
let providersView = null;
let readinessView = null;
screens.providers = async () => {
  if (!providersView) {
    providersView = listView($("providers-list"), {
      id: "providers-body",
      caption: "Providers",
      sortBy: 0,
      columns: [
        { label: "Id", value: (p) => p.id },
        { label: "Name", value: (p) => (p.info ? p.info.name + (p.info.version ? " " + p.info.version : "") : "") },
        { label: "Isolation", value: (p) => p.isolation },
        { label: "Health", value: (p) => (p.health ? p.health.status : ""), render: (td, p) => {
          const s = p.health ? p.health.status : "";
          td.appendChild(el("span", { class: "badge " + s }, s));
        } },
        // Why, when not ok: what the host saw of its calls, else the provider's own word.
        { label: "Why", value: (p) => {
          const seen = p.health && p.health.seen;
          return seen && seen.reason ? seen.reason + " (" + seen.failures_in_window + " failed calls)" : (p.health && p.health.message) || "";
        } },
        { label: "Sunset", value: (p) => (p.sunset ? (p.retired ? "retired since " : "retires ") + p.sunset : "") },
      ],
    });
    readinessView = listView($("readiness-list"), {
      id: "readiness-body",
      caption: "Readiness",
      empty: "No roles.",
      columns: [
        { label: "Role", value: (x) => x.r.role },
        { label: "Provider", value: (x) => x.p.provider },
        { label: "Shadow", value: (x) => (x.p.shadow ? "shadow" : "") },
        { label: "Status", value: (x) => x.p.status },
        { label: "Ready", value: (x) => x.p.ready + " of " + x.p.candidates, sort: (x) => x.p.ready },
        { label: "Completed in shadow", value: (x) => (x.p.shadow ? x.p.shadow_completed_by + " of " + x.p.candidates : "") },
      ],
    });
  }
  const [list, all] = await Promise.all([loadProviderNames(), api("GET", "/v1/readiness")]);
  providersView.set(list);
  const rows = [];
  for (const r of all) for (const p of r.providers) rows.push({ r, p });
  readinessView.set(rows);
  const ul = $("readiness-summary");
  ul.replaceChildren();
  for (const r of all) for (const s of r.summary) ul.appendChild(el("li", {}, r.role + ": " + s));
};

// --- Tokens ---------------------------------------------------------------------------------
let tokensView = null;
let issued = "";
async function reloadTokens() { tokensView.set(await api("GET", "/v1/tokens")); }
screens.tokens = async () => {
  if (!tokensView) {
    tokensView = listView($("tokens-list"), {
      id: "tokens-body",
      caption: "Tokens",
      empty: "No tokens.",
      sortBy: 4,
      sortDir: "descending",
      columns: [
        { label: "Id", value: (t) => t.id, render: (td, t) => shortId(td, t.id, "token id") },
        { label: "Account", value: (t) => t.account },
        { label: "Admin", value: (t) => (t.admin ? "yes" : "no") },
        { label: "Label", value: (t) => t.label },
        { label: "Created", value: (t) => when(t.created_at), sort: (t) => t.created_at },
        { label: "Expires", value: (t) => (t.expires_at ? when(t.expires_at) : "never"), sort: (t) => t.expires_at || Infinity },
      ],
      actions: (td, t, view) => {
        const what = (t.label ? "`" + t.label + "` " : "") + "of " + t.account;
        confirmButton(td, "Revoke", what, () => run(view.status, async () => {
          await api("DELETE", path("/v1/tokens", t.id));
          await reloadTokens();
        }, "Revoked the token " + what + "."));
      },
    });
  }
  await Promise.all([reloadTokens(), loadUsersList()]);
};

async function issueToken() {
  const body = { account: $("token-account").value.trim(), label: $("token-label").value, admin: $("token-admin").checked };
  const t = await run($("token-status"), () => api("POST", "/v1/tokens", body), "Issued a token for " + body.account + ".");
  if (!t) return;
  // Shown once, here only; it is not kept by the page.
  issued = t.token;
  $("token-issued").textContent = "Token for " + body.account + " (shown once): " + t.token;
  $("token-issued-box").hidden = false;
  $("token-form").reset();
  await reloadTokens().catch((e) => sayError($("token-status"), e));
}

// --- Events ---------------------------------------------------------------------------------
let eventsView = null;
let events = [];
function eventQuery(before) {
  const ms = (id) => { const v = $(id).value; return v ? String(new Date(v).getTime()) : ""; };
  return query("/v1/events", {
    id: $("ev-id").value.trim(), account: $("ev-account").value.trim(), role: $("ev-role").value.trim(),
    provider: $("ev-provider").value.trim(), since_ms: ms("ev-since"), until_ms: ms("ev-until"),
    limit: $("ev-limit").value, before_seq: before,
  });
}
async function loadEvents(older) {
  const before = older && events.length ? Math.min(...events.map((e) => e.seq)) : undefined;
  const got = await api("GET", eventQuery(before));
  events = older ? events.concat(got) : got;
  eventsView.set(events);
  return got.length;
}
screens.events = async () => {
  if (!eventsView) {
    eventsView = listView($("events-list"), {
      id: "events-body",
      caption: "Events",
      empty: "No events match the filters.",
      pageSize: 50,
      sortBy: 0,
      sortDir: "descending",
      columns: [
        { label: "Time", value: (e) => when(e.at), sort: (e) => e.seq },
        { label: "Id", value: (e) => e.id, sort: (e) => e.id },
        { label: "Severity", value: (e) => e.severity },
        { label: "Account", value: (e) => e.account },
        { label: "Role", value: (e) => e.role },
        { label: "Provider", value: (e) => e.provider },
        { label: "Message", value: (e) => e.message },
      ],
    });
  }
  const n = await loadEvents(false);
  say($("events-status"), n + " events.", "ok");
};

function wireAdmin() {
  $("elevated-refresh").onclick = () => run(elevatedView.status, reloadElevated, "Refreshed.");
  onSubmit("all-requests-form", () => run(allRequestsView.status, reloadAllRequests, ""));
  onSubmit("user-form", saveUser);
  $("user-cancel").onclick = () => { userMode(null); say($("user-status"), "", ""); };
  $("credentials-close").onclick = () => { $("credentials").hidden = true; credentialsOf = null; };
  onSubmit("unlock-form", () => {
    const account = $("unlock-account").value.trim();
    const provider = $("unlock-provider").value;
    run($("unlock-result"), () => api("POST", path("/v1/users", account) + "/unlock", { provider }), (v) => (v.unlocked
      ? account + " may use " + provider + " again."
      : account + " was not locked out of " + provider + "."));
  });
  onSubmit("role-form", saveRole);
  $("role-cancel").onclick = () => { roleMode(null); say($("role-status"), "", ""); };
  onSubmit("token-form", issueToken);
  $("token-copy").onclick = () => copy(issued, $("token-copy"));
  onSubmit("events-form", () => run($("events-status"), () => loadEvents(false), (n) => n + " events."));
  $("ev-older").onclick = () => run($("events-status"), () => loadEvents(true), (n) => (n ? n + " older events loaded." : "No older events."));
  $("verify").onclick = () => run($("verify-result"), () => api("GET", "/v1/events/verify"), (v) => (v.intact
    ? "Intact: " + v.events + " events."
    : "BROKEN at event " + v.seq + ": " + v.reason));
}
