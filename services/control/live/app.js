// crlhf live page: polls the control plane's JSON endpoints and charts the run with uPlot (vendored).
// Everything user- or server-supplied is inserted with textContent, never as HTML.
(() => {
  "use strict";

  const API = new URL("../v1/", window.location.href); // the page lives at <control plane>/live/
  const TOKEN_KEY = "crlhf.controlToken";
  const POLL_MS = Math.max(250, Number(new URLSearchParams(window.location.search).get("poll_ms")) || 2000);
  const COLORS = ["#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#0c8599", "#c2255c", "#5c940d"];
  const CHART_HEIGHT = 220;
  // Iterations are integers: tick steps of 1, 2, 5, 10, 20, 50, ... (never 2.5).
  const ITERATION_TICKS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6].map((p) => m * p)).sort((a, b) => a - b);

  // Exposed for debugging and for the browser test: what each chart currently plots.
  const live = (window.crlhfLive = {
    run: null, rewards: [], constraints: [], records: [], since: 0, charts: {}, polls: 0, lastError: null,
  });

  const $ = (sel) => document.querySelector(sel);
  /** `digits` significant digits without trailing zeros after the point (0.31, not 0.3100). */
  function fmt(v, digits = 4) {
    if (v === null || v === undefined || Number.isNaN(Number(v))) return "–";
    const s = Number(v).toPrecision(digits);
    return s.includes(".") && !s.includes("e") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
  }

  async function getJSON(path) {
    const response = await fetch(new URL(path, API), { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // ---- charts ---------------------------------------------------------------------------------
  function color(i) { return COLORS[i % COLORS.length]; }

  function chartWidth(el) { return Math.max(280, el.clientWidth - 12); }

  /** Create or update a uPlot chart in `el` plotting `keys` of the records against iteration. */
  function plot(id, el, title, seriesSpec, yRange) {
    const xs = live.records.map((r) => r.iteration);
    const data = [xs, ...seriesSpec.map((s) => live.records.map((r) => (r[s.key] === undefined ? null : r[s.key])))];
    const signature = seriesSpec.map((s) => s.key).join("|");
    let entry = live.charts[id];
    if (entry && entry.signature !== signature) {
      entry.plot.destroy();
      entry = null;
    }
    const points = data.slice(1).reduce((n, ys) => n + ys.filter((y) => y !== null).length, 0);
    el.dataset.points = String(points);
    el.dataset.iterations = String(xs.length);
    if (!seriesSpec.length) {
      if (!el.querySelector(".empty")) {
        el.replaceChildren(Object.assign(document.createElement("div"), { className: "empty", textContent: `${title}: nothing recorded by this objective` }));
      }
      return;
    }
    if (!entry) {
      el.replaceChildren();
      const opts = {
        title,
        width: chartWidth(el),
        height: CHART_HEIGHT,
        scales: { x: { time: false }, y: yRange ? { range: yRange } : {} },
        axes: [{ label: "iteration", incrs: ITERATION_TICKS }, {}],
        legend: { live: true },
        series: [
          { label: "iteration" },
          ...seriesSpec.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: s.width || 2,
            dash: s.dash,
            spanGaps: true,
            points: { show: xs.length < 60 },
            paths: s.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
          })),
        ],
      };
      entry = live.charts[id] = { plot: new uPlot(opts, data, el), signature, el };
    } else {
      entry.plot.setData(data);
    }
    entry.points = points;
    entry.iterations = xs.length;
    entry.series = seriesSpec.map((s) => s.key);
  }

  function keysWithPrefix(prefix) {
    const found = new Set();
    for (const r of live.records) for (const k of Object.keys(r)) if (k.startsWith(prefix) && r[k] !== null) found.add(k);
    return [...found].sort();
  }

  function hasKey(key) { return live.records.some((r) => r[key] !== undefined && r[key] !== null); }

  function rewardChartElement(name) {
    const box = $("#reward-charts");
    let el = [...box.children].find((c) => c.dataset.reward === name);
    if (!el) {
      el = document.createElement("div");
      el.className = "chart";
      el.dataset.chart = `reward:${name}`;
      el.dataset.reward = name;
      box.appendChild(el);
    }
    return el;
  }

  function drawCharts() {
    live.rewards.forEach((name, i) => {
      const series = [{ key: `reward/${name}`, label: name, color: color(i) }];
      if (hasKey(`threshold/${name}`)) {
        series.push({ key: `threshold/${name}`, label: "threshold", color: "#495057", dash: [6, 4], width: 1.5, stepped: true });
      }
      plot(`reward:${name}`, rewardChartElement(name), `${name}`, series);
    });
    const violations = live.rewards
      .map((name, i) => ({ key: `violation/${name}`, label: name, color: color(i) }))
      .filter((s) => hasKey(s.key));
    plot("violations", $("#chart-violations"), "violation (0 = constraint met)", violations, (u, min, max) => [0, Math.max(max, 1e-6) * 1.05]);
    const weights = [...keysWithPrefix("multiplier/"), ...keysWithPrefix("weight/")].map((key, i) => ({
      key, label: key, color: color(i), dash: key.startsWith("weight/") ? [3, 3] : undefined,
    }));
    plot("weights", $("#chart-weights"), "multipliers (solid) and weights (dotted)", weights);
  }

  window.addEventListener("resize", () => {
    for (const entry of Object.values(live.charts)) entry.plot.setSize({ width: chartWidth(entry.el), height: CHART_HEIGHT });
  });

  // ---- status, constraints, audit -------------------------------------------------------------
  function setField(name, value) {
    const el = document.querySelector(`#status [data-field="${name}"]`);
    if (el) el.textContent = value;
  }

  function showStatus(status) {
    setField("objective", status.objective);
    setField("state", status.state);
    setField("iteration", status.iteration < 0 ? "none yet" : String(status.iteration));
    setField("tokens_per_second", fmt(status.throughput.tokens_per_second, 3));
    setField("seconds_per_iteration", fmt(status.throughput.seconds_per_iteration, 3));
    const score = status.last_eval && status.last_eval.metrics ? status.last_eval.metrics["eval/score"] : null;
    setField("eval_score", fmt(score));
  }

  function cell(row, text, cls) {
    const td = row.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function showConstraints(constraints) {
    live.constraints = constraints;
    const body = $("#constraints tbody");
    body.replaceChildren();
    for (const c of constraints) {
      const row = body.insertRow();
      row.dataset.reward = c.name;
      cell(row, c.name);
      cell(row, c.kind);
      cell(row, c.direction || "–");
      cell(row, fmt(c.threshold));
      cell(row, fmt(c.current));
      cell(row, fmt(c.violation), c.violation === null ? "" : c.violation > 0 ? "bad" : "good");
      cell(row, fmt(c.multiplier));
      cell(row, fmt(c.weight));
      const p = c.pending;
      cell(row, p ? `${p.threshold !== undefined ? "θ→" + fmt(p.threshold) : ""}${p.direction ? " " + p.direction : ""} @${p.applies_from}` : "");
    }
    // The form offers the constrained rewards only; keep the user's selection across refreshes.
    const select = $("#form-reward");
    const chosen = select.value;
    const names = constraints.filter((c) => c.constrained).map((c) => c.name);
    if ([...select.options].map((o) => o.value).join("|") !== names.join("|")) {
      select.replaceChildren(...names.map((n) => Object.assign(document.createElement("option"), { value: n, textContent: n })));
      if (names.includes(chosen)) select.value = chosen;
    }
    $("#form-submit").disabled = names.length === 0;
    if (!names.length) showResult("This objective has no thresholds to change.", "");
  }

  function showAudit(entries) {
    const body = $("#audit tbody");
    body.replaceChildren();
    for (const e of entries.slice().reverse()) {
      const row = body.insertRow();
      cell(row, String(e.seq));
      cell(row, new Date(e.time * 1000).toLocaleTimeString());
      cell(row, e.who);
      cell(row, e.target);
      cell(row, JSON.stringify(e.old));
      cell(row, JSON.stringify(e.new));
      cell(row, String(e.applies_from));
    }
  }

  // ---- polling --------------------------------------------------------------------------------
  async function poll() {
    try {
      const [status, constraints, history, audit] = await Promise.all([
        getJSON("status"),
        getJSON("constraints"),
        getJSON(`history?since=${live.since}`),
        getJSON("audit?limit=8"),
      ]);
      live.run = history.run;
      setField("run", history.run);
      live.rewards = history.rewards;
      if (history.records.length) {
        // A resumed run re-executes iterations after its checkpoint: newer records replace older ones.
        const first = history.records[0].iteration;
        live.records = live.records.filter((r) => r.iteration < first).concat(history.records);
      }
      live.since = history.next_since;
      showStatus(status);
      showConstraints(constraints);
      showAudit(audit);
      drawCharts();
      live.polls += 1;
      live.lastError = null;
      const c = $("#connection");
      c.className = "connection";
      c.textContent = `updated ${new Date().toLocaleTimeString()} · ${live.records.length} iterations`;
    } catch (err) {
      live.lastError = String(err);
      const c = $("#connection");
      c.className = "connection error";
      c.textContent = `cannot reach the control plane (${err.message}); retrying`;
    } finally {
      window.setTimeout(poll, POLL_MS);
    }
  }

  // ---- threshold form -------------------------------------------------------------------------
  function showResult(text, cls) {
    const el = $("#form-result");
    el.textContent = text;
    el.className = `result ${cls}`;
  }

  const tokenInput = $("#form-token");
  tokenInput.value = window.sessionStorage.getItem(TOKEN_KEY) || "";
  $("#form-forget").addEventListener("click", () => {
    window.sessionStorage.removeItem(TOKEN_KEY);
    tokenInput.value = "";
    showResult("Token forgotten.", "");
  });

  $("#threshold-form").addEventListener("submit", async (event) => {
    event.preventDefault(); // never a native submission: the token must not land in a URL or a log
    const reward = $("#form-reward").value;
    const threshold = Number($("#form-threshold").value);
    const direction = $("#form-direction").value;
    const token = tokenInput.value.trim();
    if (!reward) return showResult("Choose a reward.", "error");
    if ($("#form-threshold").value === "" || !Number.isFinite(threshold)) return showResult("Enter a finite threshold.", "error");
    if (!token) return showResult("Paste the control token (<run dir>/control.token).", "error");
    const body = { threshold };
    if (direction) body.direction = direction;
    $("#form-submit").disabled = true;
    try {
      const response = await fetch(new URL(`constraints/${encodeURIComponent(reward)}`, API), {
        method: "PUT",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}`, "X-Crlhf-User": "live-page" },
        body: JSON.stringify(body),
        cache: "no-store",
      });
      const answer = await response.json().catch(() => ({}));
      if (response.status === 202) {
        window.sessionStorage.setItem(TOKEN_KEY, token);
        const changes = answer.changes.map((c) => `${c.target}: ${JSON.stringify(c.old)} → ${JSON.stringify(c.new)}`).join("; ");
        showResult(`Queued (${changes}); applies from iteration ${answer.applies_from}.`, "ok");
      } else {
        if (response.status === 401) window.sessionStorage.removeItem(TOKEN_KEY);
        showResult(`Refused (${response.status}): ${answer.detail || response.statusText}`, "error");
      }
    } catch (err) {
      showResult(`Could not send the change: ${err.message}`, "error");
    } finally {
      $("#form-submit").disabled = false;
    }
  });

  poll();
})();
