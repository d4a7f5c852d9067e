// isokl report.html: sortable tables, the steered-text view (tokens coloured by per-token KL) and each cell's
// calibration history. Reads the page's one JSON block; fetches nothing.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const $ = (sel, root) => (root || document).querySelector(sel);
  const el = (tag, attrs, kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids || []) e.append(k);
    return e;
  };

  // ---- sortable tables: a header button sorts by its column's data-v (numbers as numbers, empty last) ----
  document.querySelectorAll("table.sortable").forEach((table) => {
    table.querySelectorAll("th").forEach((th, col) => {
      th.querySelector("button").addEventListener("click", () => {
        const down = th.getAttribute("aria-sort") === "ascending";
        table.querySelectorAll("th").forEach((h) => h.setAttribute("aria-sort", "none"));
        th.setAttribute("aria-sort", down ? "descending" : "ascending");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        const val = (r) => r.cells[col].dataset.v;
        rows.sort((a, b) => {
          const x = val(a), y = val(b);
          if (x === "" || y === "") return (x === "") - (y === "");
          const nx = Number(x), ny = Number(y);
          const c = !isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y);
          return down ? -c : c;
        });
        rows.forEach((r) => body.append(r));
      });
    });
  });

  // ---- anchors: report.html#R3 opens that requirement's evidence ----
  const openHash = () => {
    const id = decodeURIComponent(location.hash.slice(1));
    const d = id && document.getElementById(id);
    if (d && d.tagName === "DETAILS") d.open = true;
  };
  window.addEventListener("hashchange", openHash);
  openHash();

  // ---- the token colour scale: fixed, 0 .. data.scale nats (the legend's gradient) ----
  const STOPS = [[0, [255, 255, 255]], [0.25, [253, 212, 158]], [0.5, [252, 141, 89]], [0.75, [227, 74, 51]], [1, [179, 0, 0]]];
  const colour = (kl) => {
    const x = Math.min(Math.max(kl / data.scale, 0), 1);
    let i = 1;
    while (i < STOPS.length - 1 && STOPS[i][0] < x) i++;
    const [a, ca] = STOPS[i - 1], [b, cb] = STOPS[i];
    const f = (x - a) / (b - a);
    return "rgb(" + ca.map((v, j) => Math.round(v + f * (cb[j] - v))).join(",") + ")";
  };

  const tip = document.getElementById("tip");
  const showTip = (e) => {
    const t = e.target.closest(".tok");
    if (!t) return;
    tip.textContent = t.dataset.tip;
    tip.hidden = false;
    const r = t.getBoundingClientRect();
    tip.style.left = window.scrollX + r.left + "px";
    tip.style.top = window.scrollY + r.bottom + 4 + "px";
  };
  const hideTip = () => (tip.hidden = true);
  document.addEventListener("mouseover", showTip);
  document.addEventListener("focusin", showTip);
  document.addEventListener("mouseout", (e) => e.target.closest(".tok") && hideTip());
  document.addEventListener("focusout", hideTip);

  const view = $("#tokens");
  if (!view) return;
  const same = (sel, want, fields) => fields.every((f) => sel[f] === want[f]);
  const label = (f, v) => (v === null || v === undefined ? "" : String(v));

  // selectors: one per field (model, method, seed, window; or vector), then the dose
  const state = {};
  const box = $("#selectors");
  const choices = (f) => {
    const seen = [];
    for (const r of data.steered) {
      if (data.fields.slice(0, data.fields.indexOf(f)).every((g) => r.sel[g] === state[g]) && !seen.includes(r.sel[f])) seen.push(r.sel[f]);
    }
    return seen;
  };
  const selects = {};
  const addSelect = (f, name) => {
    name = (data.labels && data.labels[f]) || name;
    const s = el("select", { id: "sel-" + f, "aria-label": name });
    selects[f] = s;
    box.append(el("label", { for: "sel-" + f }, [name, s]));
    s.addEventListener("change", () => {
      state[f] = f === "dose" ? s.value : JSON.parse(s.value);
      refresh(f);
    });
  };
  data.fields.forEach((f) => addSelect(f, f));
  addSelect("dose", "dose (x c*)");

  const fill = (f, values, fmt) => {
    const s = selects[f];
    s.replaceChildren(...values.map((v) => el("option", { value: f === "dose" ? v : JSON.stringify(v), text: fmt(v) })));
    const cur = f === "dose" ? state.dose : JSON.stringify(state[f]);
    const keep = values.map((v) => (f === "dose" ? v : JSON.stringify(v))).includes(cur);
    if (!keep) state[f] = f === "dose" ? (values.includes("1") ? "1" : values[0]) : values[0];
    s.value = f === "dose" ? state.dose : JSON.stringify(state[f]);
  };

  const tokenSpan = (piece, kl, t, steered) => {
    const empty = piece === "";
    const s = el("span", { class: "tok" + (empty ? " empty" : ""), tabindex: "0" });
    s.textContent = empty ? "\u00b7" : piece;
    let what;
    if (!steered) what = "KL 0 (the base model's own text)";
    else if (kl === null || kl === undefined) what = "KL not scored";
    else {
      what = "KL " + kl.toFixed(3) + " nat";
      s.style.background = colour(kl);
      if (kl / data.scale > 0.7) s.style.color = "#fff";
      if (kl >= 1) s.classList.add("hot");
      s.dataset.kl = kl;
    }
    s.dataset.tip = "token " + t + (empty ? " (no text of its own)" : "") + ": " + what;
    return s;
  };

  const continuation = (title, r, steered) => {
    const body = el("div", { class: "text" });
    if (!r) body.textContent = "(not recorded)";
    else if (!data.recorded || !r.tokens) body.textContent = r.text || "(empty: the first token ended the turn)";
    else r.tokens.forEach((p, i) => body.append(tokenSpan(p, steered && r.kl ? r.kl[i] : null, i + 1, steered)));
    return el("div", { class: "cont", "data-alpha": steered && r ? String(r.alpha) : "0" }, [el("h4", { text: title }), body]);
  };

  const render = () => {
    const rows = data.steered.filter((r) => same(r.sel, state, data.fields));
    const doses = state.dose === "all" ? [...new Set(rows.map((r) => r.alpha))] : [Number(state.dose)];
    const frag = [];
    for (const [pid, text] of Object.entries(data.prompts)) {
      if (!rows.some((r) => r.prompt === pid)) continue;
      const b = data.base.find((r) => r.prompt === pid && same(r.sel, state, data.base_fields));
      const cols = [continuation("base model (alpha 0)", b, false)];
      for (const a of doses) {
        const r = rows.find((x) => x.prompt === pid && x.alpha === a);
        cols.push(continuation("alpha " + a + (r ? " (c = " + r.c.toPrecision(4) + ")" : ""), r, true));
      }
      frag.push(el("div", { class: "prompt" }, [el("p", { text: pid + ": " + text }), el("div", { class: "cols" }, cols)]));
    }
    view.replaceChildren(...frag);
    renderCell();
  };

  const refresh = (from) => {
    const start = from === undefined ? 0 : data.fields.indexOf(from) + 1;
    if (from !== "dose") {
      for (const f of data.fields.slice(start)) fill(f, choices(f), (v) => label(f, v));
      const rows = data.steered.filter((r) => same(r.sel, state, data.fields));
      const doses = [...new Set(rows.map((r) => r.alpha))].sort((a, b) => a - b).map(String);
      fill("dose", doses.concat(["all"]), (v) => (v === "all" ? "all recorded doses" : v + " x"));
    }
    render();
  };

  // ---- the selected cell's calibration: c and p95 per solver step, the target band ----
  const NS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  };
  const renderCell = () => {
    const line = $("#cell-line"), hist = $("#history");
    if (!line) return;
    const cell = (data.cells || []).find((c) => same(c.sel, state, data.fields));
    hist.replaceChildren();
    if (!cell) {
      line.textContent = "no calibration record for this selection";
      return;
    }
    line.textContent = cell.line;
    const pts = cell.history.filter((h) => h[1] > 0 && h[2] > 0);
    if (!pts.length) {
      hist.textContent = "calibration history not recorded";
      return;
    }
    const W = 420, H = 240, L = 56, B = 36, R = 12, T = 10;
    const lx = pts.map((h) => Math.log10(h[1])), ly = pts.map((h) => Math.log10(h[2])).concat([Math.log10(data.band[0]), Math.log10(data.band[1])]);
    const pad = (lo, hi) => (hi - lo < 0.2 ? [lo - 0.1, hi + 0.1] : [lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)]);
    const [x0, x1] = pad(Math.min(...lx), Math.max(...lx)), [y0, y1] = pad(Math.min(...ly), Math.max(...ly));
    const X = (c) => L + ((Math.log10(c) - x0) / (x1 - x0)) * (W - L - R);
    const Y = (p) => H - B - ((Math.log10(p) - y0) / (y1 - y0)) * (H - B - T);
    const g = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "calibration history: p95 against c per solver step" });
    g.append(svg("rect", { x: L, width: W - L - R, y: Y(data.band[1]), height: Y(data.band[0]) - Y(data.band[1]), fill: "#dafbe1" }));
    g.append(svg("line", { x1: L, x2: W - R, y1: Y(1), y2: Y(1), stroke: "#1a7f37", "stroke-dasharray": "4 3" }));
    g.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#57606a" }));
    g.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#57606a" }));
    const text = (x, y, s, anchor) => {
      const t = svg("text", { x, y, "font-size": 11, "text-anchor": anchor || "middle", fill: "#1f2328" });
      t.textContent = s;
      g.append(t);
    };
    text(L + (W - L - R) / 2, H - 4, "c (log scale)");
    text(12, T + 8, "p95", "start");
    text(L - 4, Y(1) + 4, "1 nat", "end");
    const ends = [Math.min(...pts.map((h) => h[1])), Math.max(...pts.map((h) => h[1]))];
    ends.forEach((c) => text(X(c), H - B + 14, c.toPrecision(3)));
    let prev = null;
    for (const [step, c, p, complete] of pts) {
      const x = X(c), y = Y(p);
      if (prev) g.append(svg("line", { x1: prev[0], y1: prev[1], x2: x, y2: y, stroke: "#8c959f" }));
      const dot = svg("circle", { cx: x, cy: y, r: 4, fill: complete ? "#0969da" : "#fff", stroke: "#0969da" });
      const tt = svg("title", {});
      tt.textContent = `step ${step}: c = ${c.toPrecision(4)}, p95 = ${p.toFixed(3)}` + (complete ? "" : " (stopped early: above the band)");
      dot.append(tt);
      g.append(dot);
      text(x + 7, y - 5, String(step), "start");
      prev = [x, y];
    }
    const table = el("table", {}, [
      el("caption", { text: "solver steps (band " + data.band[0] + "-" + data.band[1] + " nats; open dot: rollout stopped early, p95 a lower bound)" }),
      el("thead", {}, [el("tr", {}, ["step", "c", "p95"].map((h) => el("th", { scope: "col", text: h })))]),
      el("tbody", {}, cell.history.map((h) => el("tr", {}, [el("td", { text: String(h[0]) }), el("td", { class: "num", text: h[1] === null ? "" : h[1].toPrecision(4) }), el("td", { class: "num", text: h[2] === null ? "" : h[2].toFixed(3) })]))),
    ]);
    hist.append(g, table);
  };

  if (data.steered.length) refresh();
  else view.textContent = "no example continuations in this folder";
})();
