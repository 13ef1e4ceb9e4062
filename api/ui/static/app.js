// driftline dashboard: one small script for every page (body[data-page] picks the page).
// Data comes from /ui/data/* and the /v1 API with the session cookie; actions send the
// page's CSRF token; /v1/feed (Server-Sent Events) keeps pages current without reloading.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const CSRF = $('meta[name="csrf-token"]')?.content || "";
const CAN_WRITE = $('meta[name="can-write"]')?.content === "true";
const RANGES = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };

// -- helpers ------------------------------------------------------------------------------------

async function api(method, url, body, headers = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
  if (method !== "GET") init.headers["X-CSRF-Token"] = CSRF;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (response.status === 401) {
    location.href = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("session expired");
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const detail = data && data.detail;
    const message = Array.isArray(detail)
      ? detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ")
      : detail || response.statusText;
    const error = new Error(`${response.status}: ${message}`);
    error.status = response.status;
    throw error;
  }
  return { data, etag: response.headers.get("ETag") };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

const fmtTime = (ms) => (ms == null ? "—" : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z");
const fmtPct = (x) => (x == null ? "—" : (100 * x).toFixed(1) + "%");
const fmtNum = (x, d = 3) => (x == null ? "—" : Number(x).toLocaleString(undefined, { maximumFractionDigits: d }));

function toast(message, error = false) {
  const box = $("#toast");
  box.textContent = message;
  box.className = error ? "show error" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.className = ""), 5000);
}

function param(name, fallback = "") {
  return new URLSearchParams(location.search).get(name) ?? fallback;
}

function setParam(name, value) {
  const params = new URLSearchParams(location.search);
  if (value) params.set(name, value);
  else params.delete(name);
  history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
}

function timeRange() {
  const key = $("#range")?.value || "7d";
  if (key === "custom") return { since: Number(param("from")), until: Number(param("to")) };
  const until = Date.now();
  return { since: Math.floor(until - RANGES[key]), until };
}

// Presets, or a custom range (?from=&to= in ms) set by dragging across a chart.
function setupRange(reload) {
  const select = $("#range");
  if (!select) return;
  const custom = Number(param("from")) > 0 && Number(param("to")) > Number(param("from"));
  if (custom) {
    showCustom(Number(param("from")), Number(param("to")));
  } else {
    select.value = RANGES[param("range")] ? param("range") : "7d";
  }
  select.addEventListener("change", () => {
    setParam("from", "");
    setParam("to", "");
    $("#custom-range").hidden = true;
    setParam("range", select.value === "7d" ? "" : select.value);
    reload();
  });
  setupRange.reload = reload;
}

function showCustom(from, to) {
  const option = $("#custom-range");
  option.hidden = false;
  option.textContent = `${fmtTime(from)} – ${fmtTime(to)}`;
  $("#range").value = "custom";
}

function zoomTo(from, to) {
  if (!(to > from) || !setupRange.reload) return;
  setParam("range", "");
  setParam("from", String(Math.floor(from)));
  setParam("to", String(Math.ceil(to)));
  showCustom(from, to);
  setupRange.reload();
}

// A refresh at most every 1.5 s however many events arrive.
function debounce(fn, ms = 1500) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, ms);
  };
}

// -- live feed ----------------------------------------------------------------------------------

function connectFeed(handlers) {
  const badge = $("#live");
  if (!window.EventSource || !badge) return;
  // EventSource reconnects by itself and sends Last-Event-ID, so the feed resumes in place.
  const source = new EventSource("/v1/feed");
  // "ready" comes once the feed is positioned on the topics: from then on nothing is missed.
  source.addEventListener("ready", () => {
    badge.textContent = "● live";
    badge.className = "live on";
  });
  source.onerror = () => {
    badge.textContent = "● reconnecting";
    badge.className = "live off";
  };
  for (const kind of ["alert", "drift"]) {
    source.addEventListener(kind, (event) => {
      const record = JSON.parse(event.data);
      (handlers[kind] || (() => {}))(record);
    });
  }
  window.driftlineFeed = source;
}

// -- sortable, filterable tables ----------------------------------------------------------------

function sortableTable(table, rowsFn, render, filterInput, filterKeys) {
  let key = table.dataset.sort || null;
  let desc = false;
  const draw = () => {
    let rows = rowsFn().slice();
    const q = (filterInput?.value || "").trim().toLowerCase();
    if (q) rows = rows.filter((r) => filterKeys.some((k) => String(r[k] ?? "").toLowerCase().includes(q)));
    if (key) {
      rows.sort((a, b) => {
        const x = a[key], y = b[key];
        const c = x == null ? 1 : y == null ? -1 : x < y ? -1 : x > y ? 1 : 0;
        return desc ? -c : c;
      });
    }
    const body = table.tBodies[0];
    body.replaceChildren(...rows.map(render));
    return rows.length;
  };
  table.querySelectorAll("th[data-key]").forEach((th) => {
    th.classList.add("sortable");
    th.addEventListener("click", () => {
      desc = key === th.dataset.key ? !desc : false;
      key = th.dataset.key;
      table.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", desc ? "descending" : "ascending");
      draw();
    });
  });
  filterInput?.addEventListener("input", draw);
  return draw;
}

// -- charts (uPlot) -----------------------------------------------------------------------------

// Vertical markers (drift, retraining, versions, firings) drawn on a uPlot chart.
function markersPlugin(markers) {
  return {
    hooks: {
      draw: (u) => {
        const { ctx } = u;
        const { top, height } = u.bbox;
        markers.forEach((m, i) => {
          const x = Math.round(u.valToPos(m.t, "x", true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
          ctx.save();
          ctx.strokeStyle = m.color;
          ctx.lineWidth = (m.width || 1.5) * devicePixelRatio;
          if (m.dash) ctx.setLineDash(m.dash.map((d) => d * devicePixelRatio));
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          if (m.label) {
            ctx.fillStyle = m.color;
            ctx.font = `${10 * devicePixelRatio}px sans-serif`;
            // Staggered, so markers at about the same time keep readable labels.
            ctx.fillText(m.label, x + 3 * devicePixelRatio, top + (11 + 11 * (i % 4)) * devicePixelRatio);
          }
          ctx.restore();
        });
      },
    },
  };
}

function chart(container, data, series, { markers = [], height = 260, bars = false, yRange } = {}) {
  container.replaceChildren();
  const width = Math.max(300, container.clientWidth || 800);
  const opts = {
    width,
    height,
    // Bars start at zero; ratios keep 0..1.
    scales: { x: { time: true }, y: yRange ? { range: yRange } : bars ? { range: (u, lo, hi) => [0, Math.max(1, hi)] } : {} },
    // Axes in UTC, like every time in the tables.
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    axes: [{}, { size: 60 }],
    series: [{}, ...series.map((s) => ({ spanGaps: false, width: 2, ...s, ...(bars ? { paths: uPlot.paths.bars({ size: [0.9, 40] }), fill: s.stroke + "99" } : {}) }))],
    plugins: [markersPlugin(markers)],
    legend: { live: true },
    // Drag across the chart: that time span becomes the page's range (charts, heatmap, table).
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 5) return;
        const from = u.posToVal(u.select.left, "x") * 1000;
        const to = u.posToVal(u.select.left + u.select.width, "x") * 1000;
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        zoomTo(from, to);
      }],
    },
    cursor: { drag: { x: true, y: false, setScale: false } },
  };
  return new uPlot(opts, data, container);
}

// -- page: models overview ----------------------------------------------------------------------

function overviewPage() {
  let rows = [];
  const table = $("#models");
  const render = (r) =>
    el("tr", { "data-model": r.model_id },
      el("td", {}, el("a", { href: `/ui/models/${encodeURIComponent(r.model_id)}` }, r.model_id)),
      el("td", {}, r.model_version || "—"),
      el("td", { class: "num" }, fmtNum(r.predictions, 0)),
      el("td", { class: "num" }, fmtPct(r.label_coverage)),
      el("td", { class: "num" }, r.accuracy != null ? fmtPct(r.accuracy) : r.mae != null ? "MAE " + fmtNum(r.mae) : "—"),
      el("td", { class: "num" + (r.open_alerts ? " bad" : "") }, String(r.open_alerts)),
      el("td", { class: "num" + (r.drift_events ? " warn" : "") }, String(r.drift_events)),
      el("td", {}, fmtTime(r.last_drift)),
      el("td", {}, fmtTime(r.last_seen)));
  const draw = sortableTable(table, () => rows, render, $("#filter"), ["model_id", "model_version"]);
  const load = async () => {
    const { since, until } = timeRange();
    try {
      rows = (await api("GET", `/ui/data/overview?since=${since}&until=${until}`)).data.data;
      $("#empty").hidden = draw() > 0;
    } catch (e) {
      toast(e.message, true);
    }
  };
  setupRange(load);
  load();
  const refresh = debounce(load);
  connectFeed({ alert: refresh, drift: refresh });
}

// -- page: one model ----------------------------------------------------------------------------

function modelPage() {
  const model = document.body.dataset.model;
  const enc = encodeURIComponent(model);
  const seen = new Set();
  let bucket = 60;

  const driftRow = (d) =>
    el("tr", { "data-event": d.event_id, class: d.live ? "new" : "" },
      el("td", {}, fmtTime(d.at)),
      el("td", {}, `${d.stream_kind}:${d.stream_name}`),
      el("td", {}, d.detector),
      el("td", {}, d.model_version || "—"),
      el("td", { class: "num" }, fmtNum(d.position, 0)),
      el("td", { class: "num" }, fmtNum(d.statistic)),
      el("td", { class: "num" }, fmtNum(d.threshold)),
      el("td", { class: "evidence" }, Object.entries(d.evidence || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "—"),
      el("td", {}, d.source_event_id
        ? el("a", { href: "#", class: "evidence-link", title: "the event that triggered the detection",
            onclick: (e) => { e.preventDefault(); showEvent(d.source_event_id); } }, d.source_event_id)
        : "—"));

  const showEvent = async (id) => {
    try {
      const found = (await api("GET", `/ui/data/models/${enc}/events/${encodeURIComponent(id)}`)).data;
      $("#event-id").textContent = id;
      $("#event-json").textContent = JSON.stringify(found, null, 2);
      $("#event-dialog").showModal();
    } catch (e) {
      toast(e.message, true);
    }
  };

  const showDrifts = (drifts) => {
    seen.clear();
    drifts.forEach((d) => seen.add(d.event_id));
    $("#drifts").tBodies[0].replaceChildren(...drifts.slice().reverse().map(driftRow));
  };

  const query = () => {
    const { since, until } = timeRange();
    const q = new URLSearchParams({ since, until, segment: $("#segment").value, version: $("#version").value });
    return { since, until, q };
  };

  const drawMetrics = (s) => {
    const t = s.points.map((p) => p.t);
    const classify = s.points.some((p) => p.accuracy != null);
    const quality = s.points.map((p) => (classify ? p.accuracy : p.mae));
    const coverage = s.points.map((p) => p.label_coverage);
    const markers = [
      ...s.drifts.map((d) => ({ t: d.at / 1000, color: "#d33", label: d.stream_kind === "ERROR" ? "error drift" : d.stream_name })),
      ...s.retraining.map((r) => ({ t: r.at / 1000, color: "#8a3ffc", width: 2.5, label: "retrain" })),
      ...s.versions.map((v) => ({ t: v.first_seen / 1000, color: "#1f6feb", dash: [5, 4], label: "v" + v.model_version })),
    ];
    $("#bucket").textContent = `per ${s.bucket_seconds} s`;
    chart($("#metrics-chart"), [t, quality, coverage], [
      { label: classify ? "accuracy" : "MAE", stroke: "#0a7d4f", value: (u, v) => (v == null ? "—" : classify ? fmtPct(v) : fmtNum(v)) },
      { label: "label coverage", stroke: "#999", dash: [4, 3], value: (u, v) => fmtPct(v) },
    ], { markers, yRange: classify ? [0, 1] : undefined });
    chart($("#traffic-chart"), [t, s.points.map((p) => p.predictions)], [
      { label: "predictions", stroke: "#1f6feb", value: (u, v) => fmtNum(v, 0) },
    ], { height: 140, bars: true, markers: markers.filter((m) => m.color === "#1f6feb") });
  };

  const drawHeatmap = (h) => {
    const box = $("#heatmap");
    if (!h.streams.length) {
      box.replaceChildren(el("p", { class: "muted" }, "No detector statistics in this range."));
      return;
    }
    const cells = new Map(h.cells.map((c) => [`${c.stream}|${c.t}`, c]));
    // Detectors report once per worker batch: between two reports a stream keeps its last
    // estimate, so carry it forward instead of leaving holes.
    for (const stream of h.streams) {
      let last = null;
      for (const t of h.times) {
        const c = cells.get(`${stream}|${t}`);
        if (c) last = c;
        else if (last) cells.set(`${stream}|${t}`, { ...last, t, drifts: 0, carried: true });
      }
    }
    const span = {};
    for (const c of cells.values()) {
      if (c.estimate == null) continue;
      const s = (span[c.stream] ||= { lo: c.estimate, hi: c.estimate });
      s.lo = Math.min(s.lo, c.estimate);
      s.hi = Math.max(s.hi, c.estimate);
    }
    const grid = el("div", { class: "hm-grid", style: `grid-template-columns: 11em repeat(${h.times.length}, minmax(3px, 1fr))` });
    for (const stream of h.streams) {
      grid.append(el("div", { class: "hm-label", title: stream }, stream));
      for (const t of h.times) {
        const c = cells.get(`${stream}|${t}`);
        let style = "background:#f4f4f4";
        let title = `${stream} ${fmtTime(t * 1000)}: no data`;
        if (c) {
          const s = span[stream];
          const rel = c.estimate == null || !s || s.hi === s.lo ? 0 : (c.estimate - s.lo) / (s.hi - s.lo);
          style = c.drifts ? `background:rgba(211,51,51,${Math.min(1, 0.55 + 0.15 * c.drifts)})` : `background:hsl(210,15%,${92 - 45 * rel}%)`;
          title = `${stream} ${fmtTime(t * 1000)}: ${c.drifts} drift event(s), estimate ${fmtNum(c.estimate)}, ${fmtNum(c.n_values, 0)} values${c.carried ? " (last report)" : ""}`;
        }
        grid.append(el("div", { class: "hm-cell" + (c && c.drifts ? " drift" : ""), style, title, "data-stream": stream, "data-t": t,
          onclick: () => showEvidence(stream, t) }));
      }
    }
    const axis = el("div", { class: "hm-axis" }, el("span", {}, fmtTime(h.times[0] * 1000)), el("span", {}, fmtTime(h.times[h.times.length - 1] * 1000)));
    box.replaceChildren(grid, axis);
  };

  const showEvidence = async (stream, t) => {
    const q = new URLSearchParams({ since: t * 1000, until: (t + bucket) * 1000, stream });
    try {
      const rows = (await api("GET", `/ui/data/models/${enc}/drifts?${q}`)).data.data;
      if (!rows.length) return toast(`no drift events of ${stream} in that bucket`);
      showDrifts(rows);
      toast(`${rows.length} drift event(s) of ${stream}; reload the range to see all`);
      $("#drifts").scrollIntoView({ behavior: "smooth" });
    } catch (e) {
      toast(e.message, true);
    }
  };

  const load = async () => {
    const { since, until, q } = query();
    setParam("segment", $("#segment").value);
    setParam("version", $("#version").value);
    try {
      const s = (await api("GET", `/ui/data/models/${enc}/series?${q}`)).data;
      bucket = s.bucket_seconds;
      drawMetrics(s);
      showDrifts(s.drifts);
      const h = (await api("GET", `/ui/data/models/${enc}/heatmap?since=${since}&until=${until}&bucket=${bucket}`)).data;
      drawHeatmap(h);
    } catch (e) {
      toast(e.message, true);
    }
  };

  (async () => {
    try {
      const dims = (await api("GET", `/ui/data/models/${enc}/dimensions`)).data;
      $("#segment").append(...dims.segments.map((s) => el("option", { value: s }, s)));
      $("#version").append(...dims.versions.map((v) => el("option", { value: v }, "v" + v)));
      $("#segment").value = param("segment");
      $("#version").value = param("version");
    } catch (e) {
      toast(e.message, true);
    }
    $("#segment").addEventListener("change", load);
    $("#version").addEventListener("change", load);
    setupRange(load);
    load();
  })();

  const refresh = debounce(load, 3000);
  connectFeed({
    drift: (d) => {
      if (d.model_id !== model || seen.has(d.event_id)) return;
      // Shown from the event itself at once; the charts catch up from ClickHouse shortly.
      seen.add(d.event_id);
      const row = driftRow({ ...d, at: d.detected_at, live: true });
      $("#drifts").tBodies[0].prepend(row);
      toast(`new drift: ${d.stream_kind}:${d.stream_name} (${d.detector})`);
      refresh();
    },
    alert: (a) => a.model_id === model && refresh(),
  });
  window.addEventListener("resize", debounce(load, 500));
}

// -- page: alerts -------------------------------------------------------------------------------

function alertsPage() {
  let alerts = [];
  const table = $("#alerts");
  const stateOf = (a) => (a.silenced && a.state !== "resolved" ? "silenced" : a.state);

  const ackDialog = $("#ack-dialog");
  const silenceDialog = $("#silence-dialog");
  let target = null;

  const render = (a) => {
    const state = stateOf(a);
    const ack = a.acknowledgement;
    return el("tr", { "data-fingerprint": a.fingerprint, class: "clickable", onclick: () => history_(a) },
      el("td", {}, el("span", { class: `pill ${state}` }, state)),
      el("td", {}, a.alertname),
      el("td", {}, el("a", { href: `/ui/models/${encodeURIComponent(a.model_id)}`, onclick: (e) => e.stopPropagation() }, a.model_id)),
      el("td", {}, a.severity),
      el("td", { class: "num" }, fmtNum(a.value)),
      el("td", {}, fmtTime(Date.parse(a.starts_at))),
      el("td", {}, fmtTime(Date.parse(a.updated_at))),
      el("td", { class: "ack" }, ack ? `${ack.acked_by}: ${ack.comment}` : "—"),
      el("td", { class: "row-actions" },
        el("button", { type: "button", class: "ack-button", disabled: !CAN_WRITE || a.state === "resolved", title: CAN_WRITE ? "acknowledge" : "needs a write key",
          onclick: (e) => { e.stopPropagation(); target = a; $("#ack-name").textContent = a.alertname; ackDialog.showModal(); } }, "Acknowledge"),
        el("button", { type: "button", class: "silence-button", disabled: !CAN_WRITE, title: CAN_WRITE ? "silence" : "needs a write key",
          onclick: (e) => { e.stopPropagation(); target = a; $("#silence-name").textContent = a.alertname; silenceDialog.showModal(); } }, "Silence")));
  };

  const draw = sortableTable(table, () => {
    const want = $("#state").value;
    return want ? alerts.filter((a) => stateOf(a) === want) : alerts;
  }, render, $("#filter"), ["model_id", "alertname", "rule_id"]);

  const history_ = async (a) => {
    try {
      const rows = (await api("GET", `/v1/alerts/history?fingerprint=${encodeURIComponent(a.fingerprint)}&limit=200`)).data.data;
      $("#history-of").textContent = `of ${a.alertname} on ${a.model_id}`;
      $("#history").tBodies[0].replaceChildren(...rows.map((h) =>
        el("tr", {}, el("td", {}, fmtTime(Date.parse(h.updated_at))), el("td", {}, el("span", { class: `pill ${h.state}` }, h.state)),
          el("td", {}, h.alertname), el("td", {}, h.model_id), el("td", { class: "num" }, fmtNum(h.value)),
          el("td", { class: "mono" }, (h.trigger_event_ids || []).join(", ") || "—"))));
    } catch (e) {
      toast(e.message, true);
    }
  };

  const loadSilences = async () => {
    const rows = (await api("GET", "/v1/silences")).data.data;
    $("#silences").tBodies[0].replaceChildren(...rows.map((s) =>
      el("tr", {}, el("td", {}, el("span", { class: `pill ${s.state === "active" ? "silenced" : "resolved"}` }, s.state)),
        el("td", { class: "mono" }, s.matchers.map((m) => `${m.name}${m.op}${m.value}`).join(", ")),
        el("td", {}, fmtTime(Date.parse(s.starts_at))), el("td", {}, fmtTime(Date.parse(s.ends_at))),
        el("td", {}, s.created_by), el("td", {}, s.comment))));
  };

  const load = async () => {
    try {
      alerts = (await api("GET", "/v1/alerts?limit=500")).data.data;
      $("#empty").hidden = draw() > 0;
      await loadSilences();
    } catch (e) {
      toast(e.message, true);
    }
  };

  ackDialog.addEventListener("close", async () => {
    if (ackDialog.returnValue !== "ok" || !target) return;
    try {
      await api("POST", `/v1/alerts/${encodeURIComponent(target.fingerprint)}/ack`, { comment: $("#ack-comment").value });
      toast(`acknowledged ${target.alertname}`);
      load();
    } catch (e) {
      toast(e.message, true);
    }
  });
  silenceDialog.addEventListener("close", async () => {
    if (silenceDialog.returnValue !== "ok" || !target) return;
    const hours = Number($("#silence-hours").value) || 1;
    const body = {
      matchers: [{ name: "model_id", value: target.model_id, op: "=" }, { name: "rule_id", value: target.rule_id, op: "=" }],
      ends_at: new Date(Date.now() + hours * 3600e3).toISOString(),
      comment: $("#silence-comment").value,
    };
    try {
      await api("POST", "/v1/silences", body);
      toast(`silenced ${target.alertname} on ${target.model_id} for ${hours} h`);
      load();
    } catch (e) {
      toast(e.message, true);
    }
  });
  $("#state").value = param("state");
  $("#state").addEventListener("change", () => {
    setParam("state", $("#state").value);
    draw();
  });
  load();
  connectFeed({ alert: debounce(load) });
}

// -- page: rules --------------------------------------------------------------------------------

const describeSignal = (s) =>
  s.kind === "verdict" ? "post-deploy verdict" :
  s.kind === "metric" ? `${s.metric} over ${s.window}` : `${s.kind} ${s.stream_kind}:${s.stream_name}${s.detector && s.detector !== "*" ? " by " + s.detector : ""}${s.kind === "statistic" ? " " + s.field : ""}`;
const describeCondition = (c) =>
  c.type === "threshold" ? `${c.op} ${c.value}` : c.type === "verdict_is" ? `is ${c.outcome}` : "drift detected";

function rulesPage() {
  let rules = [];
  const render = (r) =>
    el("tr", { "data-rule": r.id },
      el("td", {}, el("a", { href: `/ui/rules/${encodeURIComponent(r.id)}` }, r.name)),
      el("td", {}, r.models ? r.models.join(", ") : Object.entries(r.model_selector || {}).map(([k, v]) => `${k}~${v}`).join(", ")),
      el("td", {}, describeSignal(r.signal)),
      el("td", {}, describeCondition(r.condition)),
      el("td", {}, r.severity),
      el("td", {}, r.enabled ? "yes" : "no"),
      el("td", { class: "num" }, String(r.version)),
      el("td", {}, fmtTime(Date.parse(r.updated_at))));
  const draw = sortableTable($("#rules"), () => rules, render, $("#filter"), ["name", "id"]);
  const load = async () => {
    try {
      rules = (await api("GET", "/v1/rules?limit=1000")).data.data;
      $("#empty").hidden = draw() > 0;
    } catch (e) {
      toast(e.message, true);
    }
  };
  load();
  connectFeed({});
}

const META = ["id", "version", "created_at", "updated_at", "updated_by"];

function ruleEditPage() {
  const ruleId = document.body.dataset.rule;
  const box = $("#rule-json");
  let version = null;

  const showError = (message) => {
    const p = $("#rule-error");
    p.hidden = !message;
    p.textContent = message || "";
  };
  const parse = () => {
    try {
      return JSON.parse(box.value);
    } catch (e) {
      showError("not valid JSON: " + e.message);
      throw e;
    }
  };

  (async () => {
    try {
      if (ruleId) {
        const { data } = await api("GET", `/v1/rules/${encodeURIComponent(ruleId)}`);
        version = data.version;
        $("#rule-meta").textContent = `version ${data.version}, updated ${fmtTime(Date.parse(data.updated_at))} by ${data.updated_by}`;
        for (const k of META) delete data[k];
        box.value = JSON.stringify(data, null, 2);
      } else {
        const models = (await api("GET", "/ui/data/overview")).data.data;
        const model = models.length ? models[0].model_id : "my-model";
        box.value = JSON.stringify({
          name: "accuracy low",
          models: [model],
          signal: { kind: "metric", metric: "accuracy", window: "5m" },
          condition: { type: "threshold", op: "<", value: 0.8 },
          min_samples: 20,
          for: "0s",
          severity: "warning",
        }, null, 2);
      }
    } catch (e) {
      toast(e.message, true);
    }
  })();

  const drawPreview = async (rule, result, start, end) => {
    const firstModel = (rule.models && rule.models[0]) || (result.firings[0] && result.firings[0].model_id);
    const container = $("#dry-run-chart");
    if (!firstModel) {
      container.replaceChildren(el("p", { class: "muted" }, "No model to chart."));
      return;
    }
    const s = (await api("GET", `/ui/data/models/${encodeURIComponent(firstModel)}/series?since=${start}&until=${end}`)).data;
    const t = s.points.map((p) => p.t);
    const sig = rule.signal;
    let label, values;
    if (sig.kind === "metric") {
      const pick = { accuracy: (p) => p.accuracy, error_rate: (p) => (p.accuracy == null ? null : 1 - p.accuracy),
        label_coverage: (p) => p.label_coverage, mae: (p) => p.mae, rmse: (p) => p.mae, prediction_count: (p) => p.predictions }[sig.metric]
        || (() => null);  // estimated_* (CBPE windows): not in the series, nothing charted
      label = sig.metric + (sig.metric === "rmse" ? " (MAE shown)" : sig.metric.startsWith("estimated_") ? " (not charted)" : "");
      values = s.points.map(pick);
    } else if (sig.kind === "verdict") {
      label = "post-deploy verdicts (not charted: see the firing markers)";
      values = t.map(() => null);
    } else {
      label = `drift events ${sig.stream_kind}:${sig.stream_name || "*"}`;
      const counts = new Map();
      for (const d of s.drifts) {
        if (d.stream_kind !== sig.stream_kind) continue;
        const b = Math.floor(d.at / 1000 / s.bucket_seconds) * s.bucket_seconds;
        counts.set(b, (counts.get(b) || 0) + 1);
      }
      values = t.map((x) => counts.get(x) || 0);
    }
    const markers = [];
    for (const f of result.firings.filter((f) => f.model_id === firstModel)) {
      markers.push({ t: Date.parse(f.starts_at) / 1000, color: "#e8a400", label: "pending" });
      markers.push({ t: Date.parse(f.at) / 1000, color: "#d33", width: 2.5, label: "firing" });
      if (f.resolved_at) markers.push({ t: Date.parse(f.resolved_at) / 1000, color: "#0a7d4f", label: "resolved" });
    }
    const threshold = rule.condition.type === "threshold" ? t.map(() => rule.condition.value) : null;
    const series = [{ label: `${label} (${firstModel})`, stroke: "#1f6feb" }];
    const data = [t, values];
    if (threshold && sig.kind === "metric") {
      series.push({ label: `threshold ${rule.condition.op} ${rule.condition.value}`, stroke: "#d33", dash: [6, 4], width: 1, points: { show: false } });
      data.push(threshold);
    }
    const ratio = sig.kind === "metric" && ["accuracy", "error_rate", "label_coverage"].includes(sig.metric);
    chart(container, data, series, { markers, height: 280, yRange: ratio ? [0, 1] : undefined });
  };

  $("#dry-run").addEventListener("click", async () => {
    showError("");
    const rule = parse();
    const days = Number($("#preview-range").value);
    const end = Date.now();
    const start = end - days * 86400e3;
    const summary = $("#dry-run-summary");
    summary.textContent = "running…";
    try {
      const body = { rule, start: new Date(start).toISOString(), end: new Date(end).toISOString() };
      const result = (await api("POST", "/v1/rules:dry-run", body)).data;
      summary.textContent = result.would_fire
        ? `Would have fired ${result.firings.length} time(s) over ${result.evaluated} rows of history.`
        : `Would not have fired (${result.evaluated} rows of history evaluated).`;
      if (result.warnings.length) summary.textContent += " " + result.warnings.join(" ");
      summary.dataset.wouldFire = String(result.would_fire);
      $("#firings").tBodies[0].replaceChildren(...result.firings.map((f) =>
        el("tr", {}, el("td", {}, f.model_id), el("td", { class: "mono" }, Object.entries(f.group).map(([k, v]) => `${k}=${v}`).join(", ")),
          el("td", {}, fmtTime(Date.parse(f.starts_at))), el("td", {}, fmtTime(Date.parse(f.at))),
          el("td", {}, f.resolved_at ? fmtTime(Date.parse(f.resolved_at)) : "—"), el("td", { class: "num" }, fmtNum(f.value)))));
      await drawPreview(rule, result, start, end);
    } catch (e) {
      summary.textContent = "Dry-run failed.";
      showError(e.message);
    }
  });

  $("#save")?.addEventListener("click", async () => {
    showError("");
    const rule = parse();
    try {
      const { data } = ruleId
        ? await api("PUT", `/v1/rules/${encodeURIComponent(ruleId)}`, rule, { "If-Match": `"${version}"` })
        : await api("POST", "/v1/rules", rule);
      toast(`saved ${data.name} (version ${data.version})`);
      if (!ruleId) location.href = `/ui/rules/${encodeURIComponent(data.id)}`;
      else {
        version = data.version;
        $("#rule-meta").textContent = `version ${data.version}, updated ${fmtTime(Date.parse(data.updated_at))} by ${data.updated_by}`;
      }
    } catch (e) {
      showError(e.message);
    }
  });
  connectFeed({});
}

// -- start --------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#logout")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    await fetch("/ui/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": CSRF } });
    location.href = "/ui/login";
  });
  const pages = { overview: overviewPage, model: modelPage, alerts: alertsPage, rules: rulesPage, rule_edit: ruleEditPage };
  (pages[document.body.dataset.page] || (() => {}))();
});
