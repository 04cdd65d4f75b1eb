// medfed explorer: a small single-page app over the explorer's JSON API.
// Everything is built with DOM calls (never innerHTML with chain data), charts are hand-made SVG,
// and the page polls /api/status to follow new blocks without a reload.
"use strict";

(function () {
  const POLL_MS = 2000;
  const PALETTE = ["#2557c9", "#d9480f", "#1f8a4c", "#8e44ad", "#c2255c", "#0b7285", "#e67700", "#5c677d"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const state = { lastBlock: null, token: { symbol: "", decimals: 18 }, memberOrder: [], names: {}, verifyPanel: null, rendering: false, pending: false };

  // ---------- DOM helpers -------------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "style") Object.assign(node.style, v); // CSSOM, allowed by the CSP (style attributes are not)
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    append(node, kids);
    return node;
  }
  function append(node, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }
  function svg(tag, attrs, ...kids) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined) continue;
      node.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  // ---------- formatting --------------------------------------------------------------------
  function shortHex(s, head, tail) {
    if (!s) return "";
    return s.length <= head + tail + 1 ? s : s.slice(0, head) + "…" + s.slice(-tail);
  }
  function copyText(text, btn) {
    const done = () => { btn.textContent = "copied"; btn.classList.add("done"); setTimeout(() => { btn.textContent = "copy"; btn.classList.remove("done"); }, 1200); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => legacyCopy(text) && done());
    } else if (legacyCopy(text)) done();
  }
  function legacyCopy(text) {
    const ta = el("textarea", { style: { position: "fixed", top: "-1000px" }, readonly: true });
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    ta.remove();
    return ok;
  }
  function copyBtn(text, label) {
    const b = el("button", { class: "copy", type: "button", title: "copy " + (label || "") + " " + text, "aria-label": "copy " + (label || "value") });
    b.textContent = "copy";
    b.addEventListener("click", (ev) => { ev.preventDefault(); ev.stopPropagation(); copyText(text, b); });
    return b;
  }
  // An institution's display name (published with its peer record) beside its address. Names are
  // chain data: they only ever become text nodes, and the API drops names with control characters.
  function instName(a) {
    const n = state.names[a];
    return n ? el("span", { class: "inst-name", "data-testid": "inst-name", title: n }, n) : null;
  }
  function addr(a, link) {
    if (!a) return el("span", { class: "muted" }, "—");
    const text = el("span", { class: "hash", title: a, "data-full": a }, shortHex(a, 6, 4));
    const name = instName(a);
    const main = link === false ? text : el("a", { href: "#/member/" + a }, name ? [name, " "] : null, text);
    return el("span", { class: "addr" }, link === false && name ? [name, " "] : null, main, copyBtn(a, "address"));
  }
  function label(a) { return state.names[a] || shortHex(a, 6, 4); }
  function num(x, digits) { return x === null || x === undefined ? "—" : Number(x).toFixed(digits); }
  // A reported figure in words: which metric it is (node/metric_report.py), its value, its companion.
  function figure(m) {
    const k = m.metric || { kind: "accuracy" };
    const shown = figureOnly(k);
    if (!k.privacy) return shown;
    // a DP-SGD site's privacy spend rides on its metrics report (docs/privacy.md)
    return el("span", {}, shown, el("span", { class: "muted", "data-testid": "privacy" }, " · ε spent " + num(k.privacy.epsilon, 3) + " of " + num(k.privacy.budget, 3)));
  }
  function figureOnly(k) {
    if (k.kind === "sft") return el("span", { "data-testid": "figure", "data-kind": "sft" }, "held-out loss ", el("strong", {}, num(k.value, 4)), el("span", { class: "muted" }, " · perplexity " + num(k.aux, 2)));
    if (k.kind === "mc") return el("span", { "data-testid": "figure", "data-kind": "mc" }, "accuracy ", el("strong", {}, pct(k.value)), el("span", { class: "muted" }, " · NLL of correct option " + num(k.aux, 4)));
    return el("span", { "data-testid": "figure", "data-kind": "accuracy" }, "accuracy ", el("strong", {}, pct(k.value)));
  }
  function hash(h, label) {
    if (!h) return el("span", { class: "muted" }, "—");
    return el("span", {}, el("span", { class: "hash", title: h, "data-full": h }, shortHex(h, 8, 6)), copyBtn(h, label || "hash"));
  }
  function cid(c) {
    if (!c) return el("span", { class: "muted" }, "—");
    return el("span", {}, el("span", { class: "hash", title: c, "data-full": c }, shortHex(c, 10, 6)), copyBtn(c, "CID"));
  }
  function tx(where) {
    if (!where || !where.tx) return el("span", { class: "muted" }, "—");
    return el("span", {}, el("span", { class: "hash", title: where.tx, "data-full": where.tx }, shortHex(where.tx, 8, 4)), copyBtn(where.tx, "tx hash"));
  }
  function time(ms) {
    if (ms === null || ms === undefined) return el("span", { class: "muted" }, "—");
    const d = new Date(ms);
    return el("time", { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
  }
  function amount(wei) {
    const dec = state.token.decimals || 0;
    let v;
    try { v = BigInt(wei || "0"); } catch (e) { return String(wei); }
    const base = 10n ** BigInt(dec);
    const whole = v / base;
    let frac = (v % base).toString().padStart(dec, "0").slice(0, 4).replace(/0+$/, "");
    const s = whole.toLocaleString() + (frac ? (1.1).toLocaleString().charAt(1) + frac : "");
    return s + (state.token.symbol ? " " + state.token.symbol : "");
  }
  function pct(x) { return x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%"; }
  function badge(text, cls) { return el("span", { class: "badge " + (cls || String(text).replace(/\s+/g, "-")) }, text); }
  function outcomeBadge(o) {
    if (o === "accepted") return badge("accepted", "accepted");
    if (o === "rejected") return badge("rejected", "rejected");
    if (o === "pending") return badge("pending", "pending");
    return badge(o, "timeout");
  }
  // A member keeps its colour on every page: its position in the federation's member list.
  function colorOf(member) {
    let i = state.memberOrder.indexOf(member);
    if (i < 0) i = parseInt(member.slice(2, 8), 16) || 0;
    return PALETTE[i % PALETTE.length];
  }
  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  function table(headers, rows, emptyText) {
    if (!rows.length) return el("div", { class: "empty" }, emptyText || "none yet");
    const head = el("tr", {}, headers.map((h) => el("th", { class: (h.endsWith("#") ? "num" : "") + (h.startsWith("0x") ? " plain" : "") || null }, h.replace(/#$/, ""))));
    const body = rows.map((cells) => el("tr", {}, cells.map((c, i) => el("td", { class: headers[i].endsWith("#") ? "num" : null }, c))));
    return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
  }
  function card(label, value, sub, testid) {
    return el("div", { class: "card", "data-testid": testid }, el("div", { class: "label" }, label), el("div", { class: "value" }, value), sub ? el("div", { class: "sub" }, sub) : null);
  }
  function panel(title, ...kids) { return el("section", { class: "panel" }, title ? el("h2", {}, title) : null, kids); }

  // ---------- API ---------------------------------------------------------------------------
  async function api(path) {
    const r = await fetch("/api/" + path, { headers: { Accept: "application/json" } });
    const body = await r.json().catch(() => ({ error: "bad response (" + r.status + ")" }));
    if (!r.ok) { const e = new Error(body.error || "HTTP " + r.status); e.status = r.status; throw e; }
    return body;
  }

  // ---------- charts ------------------------------------------------------------------------
  // series: [{name, color, points: [[x, y], ...], dash}] with y in [0, 1]; x = round numbers.
  function lineChart(series, opts) {
    const W = 640, H = 250, L = 44, R = 14, T = 12, B = 32;
    const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    const box = el("div", { class: "chart", "data-testid": opts.testid });
    if (!xs.length) { box.appendChild(el("div", { class: "empty" }, opts.empty || "no metrics reported yet")); return box; }
    const ys = series.flatMap((s) => s.points.map((p) => p[1]));
    let yMin = Math.max(0, Math.floor((Math.min(...ys) - 0.02) * 10) / 10);
    let yMax = Math.min(1, Math.ceil((Math.max(...ys) + 0.02) * 10) / 10);
    if (yMax - yMin < 0.2) { yMin = Math.max(0, yMax - 0.2); yMax = Math.min(1, yMin + 0.2); }
    const tickStep = yMax - yMin > 0.5 ? 0.2 : 0.1;
    const xMin = xs[0], xMax = xs[xs.length - 1];
    const X = (x) => (xMax === xMin ? L + (W - L - R) / 2 : L + ((x - xMin) / (xMax - xMin)) * (W - L - R));
    const Y = (y) => T + (1 - (y - yMin) / (yMax - yMin)) * (H - T - B);
    const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || "chart" });
    for (let v = yMin; v <= yMax + 1e-9; v += tickStep) {
      g.appendChild(svg("line", { class: "grid", x1: L, x2: W - R, y1: Y(v), y2: Y(v) }));
      g.appendChild(svg("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" }, (100 * v).toFixed(0) + "%"));
    }
    g.appendChild(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    g.appendChild(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    const step = Math.max(1, Math.ceil(xs.length / 12));
    xs.forEach((x, i) => { if (i % step === 0) g.appendChild(svg("text", { x: X(x), y: H - B + 16, "text-anchor": "middle" }, String(x))); });
    g.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle" }, opts.xLabel || "round"));
    for (const s of series) {
      const pts = [...s.points].sort((a, b) => a[0] - b[0]);
      if (pts.length > 1) {
        g.appendChild(svg("polyline", {
          points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" "),
          fill: "none", stroke: s.color, "stroke-width": s.width || 2.2, "stroke-dasharray": s.dash || "none",
          "stroke-linejoin": "round",
        }));
      }
      for (const p of pts) {
        g.appendChild(svg("circle", { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 3.6, fill: s.color, "data-series": s.name, "data-value": p[1] },
          svg("title", {}, `${s.name}, round ${p[0]}: ${pct(p[1])}`)));
      }
    }
    box.appendChild(g);
    box.appendChild(el("div", { class: "legend" }, series.map((s) => el("span", {}, el("i", { style: { background: s.color } }), s.label || s.name))));
    return box;
  }
  function fairnessChart(metrics) {
    const mk = (key, name, color, dash) => ({ name, color, dash, points: metrics.rounds.filter((r) => r[key] !== null).map((r) => [r.round, r[key]]) });
    return lineChart([mk("macro", "Macro-Acc", "#2557c9"), mk("min", "Min-Acc", "#c0392b", "5 3"), mk("hmean", "H-mean", "#1f8a4c", "2 3")],
      { testid: "chart-fairness", label: "Macro-Acc, Min-Acc and H-mean per round" });
  }
  function memberChart(metrics) {
    const series = metrics.members.map((m) => ({
      name: m, label: shortHex(m, 6, 4), color: colorOf(m),
      points: metrics.rounds.filter((r) => m in r.accuracy).map((r) => [r.round, r.accuracy[m]]),
    }));
    return lineChart(series, { testid: "chart-members", label: "accuracy per institution per round" });
  }

  // ---------- verify box (one persistent element, so its state survives live refreshes) -----
  function verifyPanel() {
    if (state.verifyPanel) return state.verifyPanel;
    const verdict = el("div", { class: "verdict-slot", "data-testid": "verify-result" });
    const input = el("input", { type: "file", "data-testid": "verify-file", "aria-label": "adapter file to verify" });
    const drop = el("label", { class: "drop", "data-testid": "verify-drop" },
      el("strong", {}, "Drop an adapter file here"), el("div", { class: "muted" }, "or choose one; it is hashed in your browser and never uploaded"), input);
    const text = el("input", { type: "text", placeholder: "…or paste a sha256 (64 hex characters)", spellcheck: "false", "data-testid": "verify-text", "aria-label": "sha256 to look up" });
    const go = el("button", { class: "go", type: "button" }, "Look up");
    const box = el("section", { class: "panel verify", id: "verify" },
      el("h2", {}, "Verify a file"),
      el("p", { class: "muted" }, "Check whether a file is exactly an update, an aggregate or the initial adapter committed on-chain."),
      drop, el("div", { class: "or" }, text, go), verdict);

    async function check(sha, name, method) {
      setVerdict("working", ["Looking up ", el("span", { class: "hash" }, sha), "…"]);
      try {
        const res = await api("verify/" + sha);
        const m = res.matches;
        const what = name ? [el("strong", {}, name), " has sha256 "] : ["sha256 "];
        const head = [what, el("span", { class: "hash", "data-testid": "verify-sha" }, res.sha256), method ? el("span", { class: "muted" }, " (" + method + ")") : null];
        if (!m.length) {
          setVerdict("nomatch", [el("div", {}, "✗ No commitment on this chain matches."), el("div", {}, head)]);
        } else {
          setVerdict("match", [el("div", {}, "✓ Matches " + m.length + " on-chain commitment" + (m.length > 1 ? "s" : "") + "."), el("div", {}, head),
            el("ul", {}, m.map((x) => el("li", { "data-testid": "verify-match" }, describeMatch(x))))]);
        }
      } catch (e) {
        setVerdict("nomatch", "✗ " + e.message);
      }
    }
    function setVerdict(kind, content) {
      verdict.replaceChildren(el("div", { class: "verdict " + kind, "data-verdict": kind }, content));
    }
    async function onFile(file) {
      if (!file) return;
      setVerdict("working", ["Hashing ", el("strong", {}, file.name), " (" + file.size.toLocaleString() + " bytes)…"]);
      try {
        const r = await window.medfedSha256.sha256File(file);
        await check(r.hex, file.name, r.method);
      } catch (e) { setVerdict("nomatch", "✗ could not read the file: " + e.message); }
    }
    input.addEventListener("change", () => onFile(input.files[0]));
    drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); onFile(ev.dataTransfer.files[0]); });
    const lookup = () => {
      const v = text.value.trim().toLowerCase().replace(/^0x/, "");
      if (!/^[0-9a-f]{64}$/.test(v)) { setVerdict("nomatch", "✗ a sha256 is 64 hex characters"); return; }
      check(v, null, null);
    };
    go.addEventListener("click", lookup);
    text.addEventListener("keydown", (ev) => { if (ev.key === "Enter") lookup(); });
    state.verifyPanel = box;
    return box;
  }
  function describeMatch(x) {
    const round = el("a", { href: "#/round/" + x.round }, "round " + x.round);
    if (x.kind === "update") return [badge("update", "role"), " committed by ", addr(x.member), " in ", round, " (", (x.num_samples || 0).toLocaleString(), " samples, block ", x.block, ")"];
    if (x.kind === "aggregate") {
      return [badge("aggregate", "role"), " submitted by ", addr(x.member), " in ", round, ", attempt ", x.attempt, " — ", outcomeBadge(x.outcome),
        x.outcome === "accepted" ? " (the global adapter from round " + x.round + " on)" : null];
    }
    return [badge("initial adapter", "role"), " recorded at deployment"];
  }

  // ---------- views -------------------------------------------------------------------------
  function statusBadge(s, phase) { return badge(s === "open" && phase && phase !== "open" ? "open · " + phase : s, s); }

  function membersTable(members) {
    return table(["Institution", "PeerID", "Commits#", "Included#", "Aggregated#", "Votes#", "Earned#"],
      members.map((m) => [addr(m.address), m.peer_id ? hash(m.peer_id, "PeerID") : el("span", { class: "muted" }, "not published"),
        m.commits, m.included, m.aggregated, m.votes, amount(m.earned)]), "no members yet");
  }
  function roundsTable(rounds) {
    return table(["Round", "Status", "Commits#", "Attempts#", "Aggregator", "Global adapter", "Rewards#", "Opened"],
      rounds.map((r) => [el("a", { href: "#/round/" + r.round }, "#" + r.round), statusBadge(r.status, r.phase), r.commits, r.attempts,
        r.aggregator ? addr(r.aggregator) : el("span", { class: "muted" }, r.reason || "—"), hash(r.global_sha256, "sha256"), amount(r.rewards_paid), time(r.opened.time_ms)]),
      "no rounds yet");
  }
  function eventsList(events) {
    if (!events.length) return el("div", { class: "empty" }, "no events yet");
    return el("ul", { class: "events" }, events.map((e) => el("li", {},
      el("span", { class: "muted" }, "#" + e.block + " "), el("strong", {}, e.name),
      e.round !== null ? [" ", el("a", { href: "#/round/" + e.round }, "round " + e.round)] : null,
      e.address ? [" ", addr(e.address)] : null, " ", el("span", { class: "muted" }, time(e.time_ms)))));
  }

  async function viewOverview() {
    const [o, metrics] = await Promise.all([api("overview"), api("metrics")]);
    const t = o.token;
    state.token = { symbol: t.symbol || "", decimals: t.decimals ?? 18 };
    state.memberOrder = o.members.map((m) => m.address);
    const fin = o.rounds.filter((r) => r.status === "finalized").length;
    const failed = o.rounds.filter((r) => r.status === "failed").length;
    const ga = o.global_adapter;
    return [
      el("h1", {}, "Federation overview"),
      el("div", { class: "cards" },
        card("Members", String(o.members.filter((m) => m.active).length), o.members.length + " ever admitted", "card-members"),
        card("Rounds", String(o.rounds.length), fin + " finalized · " + failed + " failed", "card-rounds"),
        card("Token supply", t.total_supply !== null && t.total_supply !== undefined ? amount(t.total_supply) : "—", "rewards paid: " + amount(t.rewards_paid), "card-supply"),
        card("Global adapter", ga ? el("span", { class: "hash", title: ga.sha256, "data-full": ga.sha256 }, shortHex(ga.sha256, 8, 6)) : "—",
          ga ? ["from ", ga.round ? el("a", { href: "#/round/" + ga.round }, "round " + ga.round) : "deployment", ga.cid ? [" · CID ", shortHex(ga.cid, 8, 4)] : null] : null, "card-global")),
      panel("Institutions", membersTable(o.members)),
      panel("Rounds", roundsTable(o.rounds)),
      el("div", { class: "grid2" },
        panel("Macro-Acc, Min-Acc and H-mean per round", fairnessChart(metrics)),
        panel("Accuracy per institution", memberChart(metrics))),
      el("div", { class: "grid2 spaced" },
        verifyPanel(),
        panel("Latest events", eventsList(o.recent_events))),
      el("div", { class: "spaced" }, federationFacts(o)),
    ];
  }
  function federationFacts(o) {
    const f = o.federation, p = f.params || {};
    const facts = [
      ["Chain id", o.status.chain_id], ["Coordinator", addr(o.status.coordinator, false)], ["Token", addr(o.token.address, false)],
      ["Base model", f.base_model || "—"], ["LoRA config hash", hash(f.lora_config_hash)],
      ["Initial adapter", f.initial_adapter ? [hash(f.initial_adapter.sha256), " CID ", cid(f.initial_adapter.cid)] : "—"],
    ];
    const unit = o.status.time_unit_ms ? 1000 : 1;
    for (const [k, v] of Object.entries(p)) {
      const label = k.replace(/_/g, " ");
      if (k.endsWith("_duration")) facts.push([label, (Number(v) / unit).toLocaleString() + " s"]);
      else if (k.endsWith("_reward")) facts.push([label, amount(String(v))]);
      else facts.push([label, String(v)]);
    }
    return panel("Federation", el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  }

  async function viewRounds() {
    const r = await api("rounds");
    return [el("h1", {}, "Rounds"), panel(null, roundsTable(r.rounds))];
  }
  async function viewMembers() {
    const m = await api("members");
    return [el("h1", {}, "Institutions"), panel(null, membersTable(m.members))];
  }

  async function viewRound(n) {
    const r = await api("rounds/" + encodeURIComponent(n));
    const facts = [
      ["Status", [statusBadge(r.status, r.phase), r.reason ? " " + r.reason : ""]],
      ["Base adapter", [hash(r.base_sha256, "sha256"), " CID ", cid(r.base_cid)]],
      ["Opened", [time(r.opened.time_ms), " · block ", r.opened.block, " · tx ", tx(r.opened)]],
      ["Commit deadline", time(r.commit_deadline_ms)],
      ["Closed", r.closed ? [time(r.closed.time_ms), " · block ", r.closed.block, " · tx ", tx(r.closed)] : "—"],
      ["Election", r.election ? el("span", { "data-testid": "round-election" }, "seed ", hash(r.election.seed), " from block ", r.election.seed_block, " · first aggregator: committer #", r.election.first_index, " · tx ", tx(r.election)) : "—"],
      ["Aggregate", r.aggregate ? [hash(r.aggregate.sha256, "sha256"), " CID ", cid(r.aggregate.cid), " by ", addr(r.aggregate.aggregator), " (attempt ", r.aggregate.attempt, ")"] : "none accepted"],
      ["Serving only", r.serving && r.serving.length ? el("span", { "data-testid": "round-serving" }, r.serving.map((x) => [addr(x.member), " "])) : "—"],
      ["Left out", r.excluded && r.excluded.length ? el("span", { "data-testid": "round-excluded" }, r.excluded.map((x) => [addr(x.member), " "])) : "—"],
      ["Rewards paid", el("span", { "data-testid": "round-rewards-total" }, amount(r.rewards_total))],
    ];
    const commits = table(["Member", "sha256", "CID", "Samples#", "Block#", "Tx", "Time"],
      r.commits.map((c) => [addr(c.member), hash(c.sha256, "sha256"), cid(c.cid), el("span", { "data-testid": "commit-samples" }, c.num_samples.toLocaleString()), c.block, tx(c), time(c.time_ms)]), "no commits");
    const attempts = r.attempts.length ? r.attempts.map((a) => el("div", { class: "attempt " + (a.outcome === "aggregator timeout" ? "timeout" : a.outcome), "data-testid": "attempt" },
      el("div", { class: "head" }, el("strong", {}, "Attempt " + a.attempt), outcomeBadge(a.outcome), el("span", {}, "aggregator ", addr(a.aggregator)),
        el("span", { class: "muted" }, "elected block ", a.elected.block ?? "—", ", deadline ", time(a.aggregate_deadline_ms))),
      el("dl", { class: "facts" },
        el("dt", {}, "Aggregate"), el("dd", {}, a.sha256 ? [hash(a.sha256, "sha256"), " CID ", cid(a.cid), " · tx ", tx(a.submitted)] : el("span", { class: "muted" }, "not submitted")),
        el("dt", {}, "Included"), el("dd", {}, a.included ? a.included.map((x) => [addr(x), " "]) : "—"),
        el("dt", {}, "Votes"), el("dd", {}, a.approvals + " approve · " + a.rejections + " reject" + (a.verify_deadline_ms ? " · verify deadline " : ""), a.verify_deadline_ms ? time(a.verify_deadline_ms) : null)),
      a.votes.length ? table(["Verifier", "Vote", "Block#", "Tx"], a.votes.map((v) => [addr(v.voter), badge(v.approve ? "approve" : "reject"), v.block, tx(v)])) : null))
      : el("div", { class: "empty" }, "no aggregator elected yet");
    const rewards = table(["To", "Role", "Amount#", "Block#", "Tx"], r.rewards.map((w) => [addr(w.to), badge(w.role, "role"), amount(w.amount), w.block, tx(w)]), r.status === "failed" ? "nothing paid: the round failed" : "no rewards paid");
    const mt = r.metrics;
    const metrics = mt.members.length
      ? [table(["Member", "Metric", "Eval n#", "Eval set"], mt.members.map((m) => [addr(m.member), figure(m), m.n, hash(m.eval_set_hash)])),
        el("p", {}, "Macro-Acc ", el("strong", {}, pct(mt.macro)), " · Min-Acc ", el("strong", {}, pct(mt.min)), " · H-mean ", el("strong", {}, pct(mt.hmean)))]
      : el("div", { class: "empty" }, "no metrics reported for this round");
    return [
      el("h1", {}, "Round " + r.round + " ", statusBadge(r.status, r.phase)),
      panel("Summary", el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))),
      panel("Commits (" + r.commits.length + ")", commits),
      r.serving && r.serving.length ? panel("Serving only (" + r.serving.length + "): verifier/aggregator without an update",
        table(["Member", "Block#", "Tx", "Time"], r.serving.map((x) => [addr(x.member), x.block, tx(x), time(x.time_ms)]))) : null,
      panel("Aggregation attempts (" + r.attempts.length + ")", attempts),
      el("div", { class: "grid2" }, panel("Rewards", rewards), panel("Reported metrics", metrics)),
    ];
  }

  async function viewMember(a) {
    const [m, metrics] = await Promise.all([api("members/" + encodeURIComponent(a)), api("metrics")]);
    const mine = { members: [m.address], rounds: metrics.rounds.filter((r) => m.address in r.accuracy) };
    return [
      el("h1", {}, "Institution ", m.name ? [el("span", { class: "inst-name", "data-testid": "member-name" }, m.name), " "] : null, el("span", { class: "hash" }, shortHex(m.address, 10, 8)), copyBtn(m.address, "address")),
      el("div", { class: "cards" },
        card("Updates committed", String(m.commits.length), m.updates_included.length + " included in a global adapter", "card-commits"),
        card("Rounds aggregated", String(m.rounds_aggregated.length), "elected " + plural(m.aggregations.length, "time"), "card-aggregated"),
        card("Votes cast", String(m.votes.length), m.votes.filter((v) => v.approve).length + " approve", "card-votes"),
        card("Tokens earned", amount(m.earned), Object.entries(m.earned_by_role).map(([k, v]) => k + " " + amount(v)).join(" · "), "card-earned")),
      panel("Identity", el("dl", { class: "facts" },
        el("dt", {}, "Name"), el("dd", {}, m.name || el("span", { class: "muted" }, "not published")),
        el("dt", {}, "Address"), el("dd", {}, el("span", { class: "hash" }, m.address), copyBtn(m.address, "address")),
        el("dt", {}, "PeerID"), el("dd", {}, m.peer_id ? [el("span", { class: "hash" }, m.peer_id), copyBtn(m.peer_id, "PeerID")] : "not published"),
        el("dt", {}, "Multiaddrs"), el("dd", {}, m.multiaddrs.length ? m.multiaddrs.map((x) => el("div", { class: "mono" }, x)) : "—"),
        el("dt", {}, "Status"), el("dd", {}, m.active ? badge("member", "accepted") : badge("removed", "failed"), " since block ", m.added.block ?? "—"))),
      panel("Updates", table(["Round", "sha256", "CID", "Samples#", "Included", "Tx"], m.commits.map((c) => [el("a", { href: "#/round/" + c.round }, "#" + c.round), hash(c.sha256), cid(c.cid), c.num_samples.toLocaleString(), badge(c.included ? "yes" : "no"), tx(c)]), "no updates committed")),
      el("div", { class: "grid2" },
        panel("Aggregations", table(["Round", "Attempt#", "Outcome", "Aggregate"], m.aggregations.map((x) => [el("a", { href: "#/round/" + x.round }, "#" + x.round), x.attempt, outcomeBadge(x.outcome), hash(x.sha256)]), "never elected")),
        panel("Votes", table(["Round", "Attempt#", "Vote", "Attempt outcome"], m.votes.map((v) => [el("a", { href: "#/round/" + v.round }, "#" + v.round), v.attempt, badge(v.approve ? "approve" : "reject"), outcomeBadge(v.outcome || "pending")]), "no votes"))),
      el("div", { class: "grid2 spaced" },
        panel("Rewards", table(["Round", "Role", "Amount#", "Tx"], m.rewards.map((w) => [el("a", { href: "#/round/" + w.round }, "#" + w.round), badge(w.role, "role"), amount(w.amount), tx(w)]), "nothing earned yet")),
        panel("Accuracy", memberChart(mine))),
      panel("Reported metrics", table(["Round", "Metric", "Eval n#"], m.metrics.map((x) => [el("a", { href: "#/round/" + x.round }, "#" + x.round), figure(x), x.n]), "nothing reported yet")),
    ];
  }

  async function viewMetrics() {
    const metrics = await api("metrics");
    const rows = metrics.rounds.map((r) => [el("a", { href: "#/round/" + r.round }, "#" + r.round), pct(r.macro), pct(r.min), pct(r.hmean), ...metrics.members.map((m) => (m in r.accuracy ? pct(r.accuracy[m]) : "—"))]);
    return [
      el("h1", {}, "Metrics"),
      el("p", { class: "muted" }, "From MetricsReported events: each institution's figure on its own held-out set after a round finalized. A multiple-choice site reports its accuracy (accuracyPpm / 10⁶) and the mean NLL of the correct option; a chat (SFT) site reports its held-out loss (tagged in evalSetHash, see docs/explorer.md). Macro-Acc is the mean of the accuracies, Min-Acc the worst, H-mean the harmonic mean."),
      el("div", { class: "grid2" }, panel("Macro-Acc, Min-Acc and H-mean", fairnessChart(metrics)), panel("Per institution", memberChart(metrics))),
      el("div", { class: "spaced" }, panel("Accuracy (multiple choice)", table(["Round", "Macro-Acc#", "Min-Acc#", "H-mean#", ...metrics.members.map((m) => label(m) + "#")], rows, "no accuracy reported yet"))),
      metrics.privacy_rounds.length ? el("div", { class: "spaced", "data-testid": "privacy-table" }, panel("Privacy budget (DP-SGD sites: (ε, δ)-DP epsilon spent by each institution's updates up to each round, of its budget)",
        table(["Round", ...metrics.privacy_members.map((m) => label(m) + " (budget " + num(metrics.privacy_budgets[m], 3) + ")#")], metrics.privacy_rounds.map((r) => [el("a", { href: "#/round/" + r.round }, "#" + r.round), ...metrics.privacy_members.map((m) => (m in r.epsilon ? num(r.epsilon[m], 3) : "—"))]), "no privacy spend reported yet"))) : null,
      metrics.loss_rounds.length ? el("div", { class: "spaced" }, panel("Held-out loss (chat / SFT sites, nats per reply token; lower is better)",
        table(["Round", ...metrics.loss_members.map((m) => label(m) + "#")], metrics.loss_rounds.map((r) => [el("a", { href: "#/round/" + r.round }, "#" + r.round), ...metrics.loss_members.map((m) => (m in r.loss ? num(r.loss[m], 4) : "—"))]), "no loss reported yet"))) : null,
    ];
  }

  async function viewVerify() { return [verifyPanel()]; }

  // issue 21: membership and parameters are decided by the members' votes, on-chain.
  async function viewGovernance() {
    const g = await api("proposals");
    const what = (p) => p.kind === "set" ? ["set ", el("strong", {}, p.param), " = ", String(p.value)] : [p.kind + " ", addr(p.target)];
    const rows = g.proposals.map((p) => [
      el("span", { "data-testid": "proposal-id" }, "#" + p.id), el("span", { "data-testid": "proposal-what" }, what(p)), addr(p.proposer),
      el("span", { "data-testid": "proposal-status" }, badge(p.status), p.reason ? " " + p.reason : ""),
      el("span", { "data-testid": "proposal-count" }, p.yes + " yes · " + p.no + " no · " + (p.required ?? "—") + " needed"),
      p.votes.length ? p.votes.map((v) => el("div", {}, addr(v.voter), " ", badge(v.support ? "yes" : "no"))) : el("span", { class: "muted" }, "—"),
      time(p.deadline_ms), tx(p.created)]);
    return [
      el("h1", {}, "Governance"),
      g.successor ? el("div", { class: "error", "data-testid": "successor" }, "The members handed this federation over to the coordinator at ", addr(g.successor, false), ".") : null,
      el("p", { class: "muted" }, "Members propose and vote: a proposal passes with at least 2/3 of the current members (never fewer than two; the target of a removal does not vote) before its deadline. A change passed during a round is queued and applied when the next round opens. The deployer (", addr(g.deployer, false), ") only admitted the first members."),
      panel("Proposals (" + g.proposals.length + ")", table(["ID", "Proposal", "Proposer", "Outcome", "Ballots", "Votes", "Deadline", "Tx"], rows, "no proposals yet")),
    ];
  }

  // ---------- router + live updates ---------------------------------------------------------
  function parseRoute() {
    const h = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    const [name, arg] = h.split("/");
    if (name === "round" && arg) return { nav: "rounds", run: () => viewRound(arg) };
    if (name === "member" && arg) return { nav: "members", run: () => viewMember(arg) };
    if (name === "rounds") return { nav: "rounds", run: viewRounds };
    if (name === "members") return { nav: "members", run: viewMembers };
    if (name === "metrics") return { nav: "metrics", run: viewMetrics };
    if (name === "verify") return { nav: "verify", run: viewVerify };
    if (name === "governance") return { nav: "governance", run: viewGovernance };
    return { nav: "overview", run: viewOverview };
  }

  async function render(keepScroll) {
    // One render at a time; a block that arrives meanwhile triggers one more render afterwards.
    if (state.rendering) { state.pending = true; return; }
    state.rendering = true;
    const route = parseRoute();
    document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.route === route.nav));
    const view = document.getElementById("view");
    const y = window.scrollY;
    try {
      if (!state.token.symbol || !state.memberOrder.length) {
        try {
          const o = await api("overview");
          state.token = { symbol: o.token.symbol || "", decimals: o.token.decimals ?? 18 };
          state.memberOrder = o.members.map((m) => m.address);
        } catch (e) { /* the view shows the error */ }
      }
      try {
        const ms = await api("members");
        state.names = Object.fromEntries(ms.members.filter((m) => m.name).map((m) => [m.address, m.name]));
      } catch (e) { /* names are optional */ }
      const content = await route.run();
      view.replaceChildren(...content.flat().filter(Boolean));
      view.dataset.block = String(state.lastBlock);
      if (keepScroll) window.scrollTo(0, y);
    } catch (e) {
      view.replaceChildren(el("div", { class: "error", "data-testid": "error" }, e.message), el("p", {}, el("a", { href: "#/" }, "Back to the overview")));
    } finally {
      state.rendering = false;
    }
    if (state.pending) { state.pending = false; await render(true); }
  }

  async function poll() {
    const box = document.getElementById("chainstatus");
    try {
      const s = await api("status");
      const changed = s.last_block !== state.lastBlock;
      const dot = el("span", { class: "dot" + (changed && state.lastBlock !== null ? " flash" : "") });
      const behind = s.head_block !== null && s.last_block !== null && s.head_block > s.last_block ? " (indexing, head " + s.head_block + ")" : "";
      box.replaceChildren(dot, el("span", { "data-testid": "last-block" }, "block " + (s.last_block ?? "—") + behind),
        el("span", {}, " · chain " + s.chain_id), el("span", { class: "muted" }, s.last_block_time_ms ? [" · ", time(s.last_block_time_ms)] : null));
      if (changed) {
        const first = state.lastBlock === null;
        state.lastBlock = s.last_block;
        await render(!first);
      }
    } catch (e) {
      box.replaceChildren(el("span", { class: "dot stale" }), "explorer unreachable, retrying…");
    }
    setTimeout(poll, POLL_MS);
  }

  window.addEventListener("hashchange", () => { render(false); window.scrollTo(0, 0); });
  window.medfedExplorer = { render, shortHex };
  // The first poll renders the page (once the last indexed block is known); if the explorer
  // cannot be reached, render anyway so the reader sees the error.
  poll().then(() => { if (!document.getElementById("view").dataset.block) render(false); });
})();
