// The usage page: reads the JSON API (/v1) with the token of the metering_token cookie and
// renders the open period, the estimate, the daily chart, the counted users, the invoices
// and, on a click on an invoice line, the aggregate its `why` link names.
"use strict";
(function () {
  // ?limit=N on the page's address sets the users' page size (the API allows up to 1000)
  const asked = Math.floor(Number(new URLSearchParams(location.search).get("limit")));
  const PAGE = asked >= 1 ? Math.min(asked, 1000) : 50;
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
  const team = decodeURIComponent(location.pathname.replace(/^\/ui\/teams\//, ""));
  const base = `/v1/teams/${encodeURIComponent(team)}`;
  const $ = (id) => document.getElementById(id);
  let nextUsers = null;
  let loadedUsers = [];
  let usersPath = null;  // the open period's users, from its links
  let search = 0;  // the latest search: answers to earlier ones are dropped

  function token() {
    for (const part of document.cookie.split(";")) {
      const [name, ...value] = part.trim().split("=");
      if (name !== "metering_token") continue;
      try {
        return decodeURIComponent(value.join("="));  // the server percent-encodes it
      } catch (error) {
        return null;
      }
    }
    return null;
  }

  async function api(path) {
    const headers = {Accept: "application/json"};
    const given = token();
    if (given) headers.Authorization = `Bearer ${given}`;
    const response = await fetch(path, {headers});
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${path}: ${response.status} ${body.detail || ""}`);
    return body;
  }

  function cell(row, text, numeric) {
    const td = document.createElement("td");
    td.textContent = String(text);
    if (numeric) td.className = "num";
    row.appendChild(td);
    return td;
  }

  function showError(error) {
    const element = $("error");
    element.hidden = false;
    element.textContent += (element.textContent ? "; " : "") + error.message;
  }

  function renderDaily(daily) {
    const days = [...new Set(daily.days.map((d) => d.day))].sort();
    const types = [...new Set(daily.days.map((d) => d.type))].sort();
    const at = (day, type, field) => {
      const found = daily.days.find((d) => d.day === day && d.type === type);
      return found ? found[field] : 0;
    };
    const series = [];
    types.forEach((type, index) => {
      series.push({name: `users:${type}`, color: COLORS[(2 * index) % COLORS.length],
                   values: days.map((day) => at(day, type, "users"))});
      series.push({name: `events:${type}`, color: COLORS[(2 * index + 1) % COLORS.length],
                   values: days.map((day) => at(day, type, "events"))});
    });
    window.barChart($("chart"), days, series);
    const body = $("daily").querySelector("tbody");
    body.textContent = "";
    for (const d of daily.days) {
      const row = body.insertRow();
      cell(row, d.day); cell(row, d.type); cell(row, d.users, true); cell(row, d.events, true);
    }
  }

  function renderUsers(contains) {
    const body = $("users").querySelector("tbody");
    body.textContent = "";
    for (const user of loadedUsers) {
      const row = body.insertRow();
      row.className = "user";
      cell(row, user.user_id); cell(row, user.first_time); cell(row, user.source);
      cell(row, user.type);
    }
    const which = contains ? ` containing "${contains}"` : "";
    $("users-count").textContent = `${loadedUsers.length} users${which} shown` +
      (nextUsers ? " (more on the server)" : "");
    $("more").hidden = !nextUsers;
  }

  // The server searches every counted user (GET .../users?contains=), a page at a time.
  async function loadUsers(path, contains, fresh) {
    const mine = fresh ? ++search : search;
    const page = await api(path);
    if (mine !== search) return;  // a newer search started meanwhile
    loadedUsers = fresh ? page.users : loadedUsers.concat(page.users);
    nextUsers = page.next;
    renderUsers(contains);
    $("users").dataset.search = contains;
  }

  function searchUsers() {
    const contains = $("search").value.trim();
    const query = new URLSearchParams({limit: String(PAGE)});
    if (contains) query.set("contains", contains);
    return loadUsers(`${usersPath}?${query}`, contains, true);
  }

  // The users behind a line, at most WHY_MAX of them (the rest stay one API link away)
  const WHY_MAX = 10000;

  async function whyUsers(path) {
    let users = [];
    let next = path;
    while (next && users.length < WHY_MAX) {
      const page = await api(next);
      users = users.concat(page.users);
      next = page.next;
    }
    return {users: users.slice(0, WHY_MAX), more: Boolean(next) || users.length > WHY_MAX};
  }

  async function showWhy(line) {
    const panel = $("why-panel");
    panel.hidden = false;
    $("why-title").textContent = `${line.kind}: ${line.description}`;
    const list = $("why-users");
    list.textContent = "";
    $("why-summary").textContent = "loading…";
    const path = line.why.split("?")[0];
    try {
      if (path.endsWith("/users")) {
        const {users, more} = await whyUsers(`${path}?limit=1000`);
        for (const user of users) {
          const item = document.createElement("li");
          item.className = "why-user";
          item.textContent = user.user_id;
          list.appendChild(item);
        }
        $("why-summary").textContent = more
          ? `the first ${users.length} users counted in the period ${line.service_start} to ` +
            `${line.service_end}; every one at ${path}`
          : `${users.length} users counted in the period ${line.service_start} to ${line.service_end}`;
      } else {
        const body = await api(line.why);
        $("why-summary").textContent = body.mau !== undefined
          ? `period ${body.start} to ${body.end}: ${body.mau} users`
          : `${line.why}: ${JSON.stringify(body).slice(0, 300)}`;
      }
    } catch (error) {
      $("why-summary").textContent = error.message;
    }
    panel.scrollIntoView();
  }

  function renderInvoices(list) {
    const holder = $("invoices");
    holder.textContent = "";
    if (!list.invoices.length) holder.textContent = "No invoices issued.";
    for (const invoice of list.invoices) {
      const box = document.createElement("div");
      box.className = "invoice";
      box.dataset.date = invoice.invoice_date;
      box.dataset.reference = invoice.reference;
      const title = document.createElement("h3");
      title.textContent = `${invoice.document} of ${invoice.invoice_date}` +
        (invoice.reference ? ` (${invoice.reference})` : "");
      box.appendChild(title);
      const table = document.createElement("table");
      const head = table.createTHead().insertRow();
      for (const name of ["Kind", "Description", "Quantity", "Unit price", "Amount"]) {
        const th = document.createElement("th");
        th.textContent = name;
        head.appendChild(th);
      }
      const body = table.createTBody();
      for (const line of invoice.lines) {
        const row = body.insertRow();
        row.className = "line why";
        row.dataset.kind = line.kind;
        row.title = `why: ${line.why}`;
        cell(row, line.kind); cell(row, line.description); cell(row, line.quantity, true);
        cell(row, line.unit_price, true); cell(row, line.amount, true);
        row.addEventListener("click", () => showWhy(line));
      }
      box.appendChild(table);
      const total = document.createElement("p");
      total.innerHTML = "Total: <span class=\"total\"></span>";
      total.querySelector(".total").textContent = `${invoice.total} ${invoice.currency}`;
      box.appendChild(total);
      holder.appendChild(box);
    }
  }

  async function main() {
    $("team").textContent = team;
    let typing = null;
    $("search").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => searchUsers().catch(showError), 250);
    });
    $("more").addEventListener("click", () =>
      loadUsers(nextUsers, $("search").value.trim(), false).catch(showError));
    const tasks = [];
    tasks.push(api(`${base}/periods/current`).then(async (period) => {
      $("period").textContent = `${period.start} to ${period.end}`;
      $("mau").textContent = period.mau;
      usersPath = period.links.users;
      await Promise.all([api(period.links.daily).then(renderDaily), searchUsers()]);
    }));
    tasks.push(api(`${base}/estimate`).then((estimate) => {
      $("estimate").textContent = estimate.invoice
        ? `${estimate.invoice.total} ${estimate.invoice.currency}` : "none";
    }, (error) => { $("estimate").textContent = "—"; throw error; }));
    tasks.push(api(`${base}/invoices`).then(renderInvoices));
    tasks.push(api(`${base}/access`).then((access) => {
      $("state").textContent = access.state;
      $("state-why").textContent = access.why;
    }, () => { $("state").textContent = "—"; }));
    const results = await Promise.allSettled(tasks);
    for (const result of results) if (result.status === "rejected") showError(result.reason);
    document.body.dataset.loaded = "true";
  }

  main();
})();
