// The fleet dashboard refreshes itself from the live events stream (GET /api/events, the admin
// session): heartbeats update a node's GPU cells in place, other events refresh the cards.
(function () {
  "use strict";
  const root = document.getElementById("fleet-dashboard");
  if (!root) return;
  const liveState = document.getElementById("live-state");
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  // The badges' colours by status: the page carries the server's own list (aiwm_project/admin.py).
  const kindsScript = document.getElementById("aiwm-status-kinds");
  const kinds = kindsScript ? JSON.parse(kindsScript.textContent) : {};
  const badge = (v) => `<span class="aiwm-badge ${kinds[v] || ""}" data-status="${esc(v)}">${esc(v)}</span>`;
  const when = (iso) => { const d = new Date(iso); return isNaN(d) ? "never" : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC"); };

  function nodeRows(id) { return root.querySelectorAll(`tr[data-node="${CSS.escape(id)}"]`); }

  function applyNode(data) {
    const rows = nodeRows(data._id);
    if (!rows.length) return;
    if (data.status) rows[0].querySelector('[data-field="status"]').innerHTML = badge(data.status);
    if (data.lastHeartbeat) rows[0].querySelector('[data-field="lastHeartbeat"]').textContent = when(data.lastHeartbeat);
    for (const gpu of data.gpuDevices || []) {
      const row = root.querySelector(`tr[data-node="${CSS.escape(data._id)}"][data-device="${CSS.escape(gpu.deviceId)}"]`);
      if (!row) continue;
      if (gpu.utilization != null) row.querySelector('[data-field="utilization"]').textContent = `${gpu.utilization} %`;
      if (gpu.temperature != null) row.querySelector('[data-field="temperature"]').textContent = `${gpu.temperature} °C`;
      if (gpu.memoryTotal != null && gpu.memoryFree != null) {
        const used = Math.max(gpu.memoryTotal - gpu.memoryFree, 0), share = gpu.memoryTotal ? Math.round(100 * used / gpu.memoryTotal) : 0;
        row.querySelector('[data-field="memory"]').innerHTML = `<span class="aiwm-bar"><span style="width: ${share}%"></span></span> ${used} / ${gpu.memoryTotal}`;
      }
    }
  }

  // Cards refresh 1 s after a status change, at most every 10 s from heartbeats alone (a fleet
  // sends hundreds a second: their GPU cells update in place, the totals need not follow each one).
  let summaryTimer = null;
  function scheduleSummary(delay) {
    if (summaryTimer || !root.dataset.summaryUrl) return;  // a node's page has the chart only
    summaryTimer = setTimeout(async () => {
      summaryTimer = null;
      const response = await fetch(root.dataset.summaryUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      const summary = await response.json();
      for (const el of root.querySelectorAll("[data-card]")) {
        const value = el.dataset.card.split(".").reduce((o, k) => (o == null ? o : o[k]), summary);
        if (value != null) el.textContent = value;
      }
    }, typeof delay === "number" ? delay : 1000);
  }

  function connect() {
    const events = new EventSource("/api/events");
    events.onopen = () => { liveState.className = "aiwm-live on"; liveState.textContent = "live"; };
    events.onerror = () => { liveState.className = "aiwm-live off"; liveState.textContent = "live updates: reconnecting…"; };
    events.addEventListener("node.heartbeat", (e) => { applyNode(JSON.parse(e.data)); scheduleSummary(10000); });
    events.addEventListener("node.status", (e) => { applyNode(JSON.parse(e.data)); scheduleSummary(); });
    for (const type of ["deployment.status", "execution.progress", "command.status"]) {
      events.addEventListener(type, () => scheduleSummary(1000));
    }
    events.addEventListener("reset", () => window.location.reload());
  }

  // GPU history: utilization (blue) and memory in use (orange), 0-100 %, per device, as inline SVG.
  const chartNode = document.getElementById("chart-node"), chartRange = document.getElementById("chart-range");
  const charts = document.getElementById("gpu-charts");
  async function drawCharts() {
    if (!chartNode || !chartNode.value) return;
    const url = `${root.dataset.seriesUrl}?node=${encodeURIComponent(chartNode.value)}&seconds=${chartRange.value}`;
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) { charts.textContent = "history unavailable"; return; }
    const series = await response.json();
    const W = 640, H = 140, span = Math.max(series.to - series.from, 1);
    const x = (t) => ((t - series.from) / span) * W, y = (v) => H - (Math.min(Math.max(v, 0), 100) / 100) * H;
    const line = (ts, vs, color) => {
      const pts = ts.map((t, i) => (vs[i] == null ? null : `${x(t).toFixed(1)},${y(vs[i]).toFixed(1)}`)).filter(Boolean).join(" ");
      return pts ? `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts}"/>` : "";
    };
    const devices = Object.entries(series.devices);
    charts.innerHTML = devices.length ? devices.map(([device, s]) =>
      `<div><strong>${esc(device)}</strong> <small>utilization <span style="color:#218bff">■</span> memory <span style="color:#fb8500">■</span></small><br>` +
      `<svg class="aiwm-chart" data-device="${esc(device)}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">` +
      `<line x1="0" y1="${y(50)}" x2="${W}" y2="${y(50)}" stroke="#d0d7de" stroke-dasharray="4"/>` +
      line(s.t, s.utilization, "#218bff") + line(s.t, s.memory, "#fb8500") + `</svg></div>`).join("")
      : "<small>no metric points in this range</small>";
  }
  if (chartNode) { chartNode.addEventListener("change", drawCharts); chartRange.addEventListener("change", drawCharts); drawCharts(); setInterval(drawCharts, 60000); }

  connect();
})();
