// The pool page: a node heatmap on a canvas (one tile per node, coloured by state, running
// nodes shaded by how many of their task slots are busy, low-priority nodes striped, a
// tooltip, click or Enter to open a node), a chart of nodes by state over time, and the
// pool's counts and resize errors, all refreshed from live.json without reloading.
"use strict";

const STATES = {
  idle: "#b7d7a8", running: "#2e7d32", creating: "#9fc5e8", starting: "#6fa8dc",
  waitingforstarttask: "#b4a7d6", starttaskfailed: "#cc0000", unusable: "#e06666",
  leavingpool: "#f6b26b", rebooting: "#ffd966", reimaging: "#ffe599", preempted: "#999999",
  offline: "#666666", unknown: "#d9d9d9",
};
const POLL_MS = 1500;
const HISTORY = 240;

function stripePattern(ctx) {
  const tile = document.createElement("canvas");
  tile.width = tile.height = 6;
  const t = tile.getContext("2d");
  t.strokeStyle = "rgba(255,255,255,0.65)";
  t.lineWidth = 1.5;
  t.beginPath(); t.moveTo(0, 6); t.lineTo(6, 0); t.stroke();
  return ctx.createPattern(tile, "repeat");
}

class Heatmap {
  constructor(canvas, tip, onOpen) {
    this.canvas = canvas; this.tip = tip; this.onOpen = onOpen;
    this.ctx = canvas.getContext("2d");
    this.stripes = stripePattern(this.ctx);
    this.nodes = []; this.slots = 1; this.side = 20; this.cols = 1; this.selected = -1;
    this.lastDrawMs = 0;
    canvas.addEventListener("mousemove", (e) => this.hover(e));
    canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    canvas.addEventListener("click", (e) => { const i = this.at(e); if (i >= 0) this.onOpen(this.nodes[i][0]); });
    canvas.addEventListener("keydown", (e) => this.key(e));
    window.addEventListener("resize", () => this.draw(this.nodes, this.slots));
  }

  layout(count) {
    const width = Math.max(200, this.canvas.clientWidth || 800);
    const gap = 2;
    // tiles as large as fit a 420 px tall area, between 6 and 36 px
    let side = Math.floor(Math.sqrt((width * 420) / Math.max(count, 1))) - gap;
    side = Math.max(6, Math.min(36, side));
    const cols = Math.max(1, Math.floor(width / (side + gap)));
    const rows = Math.max(1, Math.ceil(count / cols));
    const ratio = window.devicePixelRatio || 1;
    const height = rows * (side + gap);
    if (this.canvas.width !== Math.round(width * ratio) || this.canvas.height !== Math.round(height * ratio)) {
      this.canvas.width = Math.round(width * ratio);
      this.canvas.height = Math.round(height * ratio);
      this.canvas.style.height = height + "px";
    }
    this.ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    this.side = side; this.gap = gap; this.cols = cols; this.width = width; this.height = height;
  }

  draw(nodes, slots) {
    const started = performance.now();
    this.nodes = nodes; this.slots = Math.max(1, slots || 1);
    this.layout(nodes.length);
    const { ctx, side, gap, cols } = this;
    ctx.clearRect(0, 0, this.width, this.height);
    const step = side + gap;
    for (let i = 0; i < nodes.length; i++) {
      const [, state, busy, dedicated] = nodes[i];
      const x = (i % cols) * step, y = Math.floor(i / cols) * step;
      ctx.fillStyle = STATES[state] || STATES.unknown;
      if (state === "running") {
        // the busy share of the tile in the dark green, the rest lighter
        const used = Math.min(1, busy / this.slots);
        ctx.fillStyle = "#a5d6a7"; ctx.fillRect(x, y, side, side);
        ctx.fillStyle = STATES.running; ctx.fillRect(x, y + side * (1 - used), side, side * used);
      } else {
        ctx.fillRect(x, y, side, side);
      }
      if (!dedicated) { ctx.fillStyle = this.stripes; ctx.fillRect(x, y, side, side); }
    }
    if (this.selected >= 0 && this.selected < nodes.length) {
      const i = this.selected;
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
      ctx.strokeRect((i % cols) * step + 1, Math.floor(i / cols) * step + 1, side - 2, side - 2);
    }
    this.lastDrawMs = performance.now() - started;
    return this.lastDrawMs;
  }

  at(event) {
    const rect = this.canvas.getBoundingClientRect();
    const step = this.side + this.gap;
    const col = Math.floor((event.clientX - rect.left) / step), row = Math.floor((event.clientY - rect.top) / step);
    const i = row * this.cols + col;
    return col < this.cols && i >= 0 && i < this.nodes.length ? i : -1;
  }

  describe(i) {
    const [id, state, busy, dedicated] = this.nodes[i];
    return `${id}: ${state}, ${busy}/${this.slots} task slots busy, ${dedicated ? "dedicated" : "low-priority"}`;
  }

  hover(event) {
    const i = this.at(event);
    if (i < 0) { this.tip.hidden = true; return; }
    const rect = this.canvas.getBoundingClientRect();
    this.tip.textContent = this.describe(i);
    this.tip.style.left = Math.min(event.clientX - rect.left + 12, rect.width - 200) + "px";
    this.tip.style.top = (event.clientY - rect.top + 12) + "px";
    this.tip.hidden = false;
  }

  key(event) {
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: this.cols, ArrowUp: -this.cols, Home: -1e9, End: 1e9 };
    if (event.key === "Enter" && this.selected >= 0) { this.onOpen(this.nodes[this.selected][0]); return; }
    if (!(event.key in moves) || !this.nodes.length) return;
    event.preventDefault();
    const from = this.selected < 0 ? 0 : this.selected + moves[event.key];
    this.selected = Math.max(0, Math.min(this.nodes.length - 1, from));
    this.draw(this.nodes, this.slots);
    document.getElementById("node-summary").textContent = "Selected " + this.describe(this.selected);
  }
}

class History {
  constructor(canvas) { this.canvas = canvas; this.samples = []; }

  add(nodes) {
    const counts = {};
    for (const n of nodes) counts[n[1]] = (counts[n[1]] || 0) + 1;
    this.samples.push(counts);
    if (this.samples.length > HISTORY) this.samples.shift();
    this.draw();
  }

  draw() {
    const c = this.canvas, ratio = window.devicePixelRatio || 1;
    const width = Math.max(200, c.clientWidth || 800), height = 160;
    c.width = width * ratio; c.height = height * ratio;
    const ctx = c.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const max = Math.max(1, ...this.samples.map((s) => Object.values(s).reduce((a, b) => a + b, 0)));
    const dx = width / HISTORY;
    const order = Object.keys(STATES);
    // one stacked column per sample, oldest on the left
    this.samples.forEach((sample, i) => {
      let y = height;
      for (const state of order) {
        const h = ((sample[state] || 0) / max) * (height - 4);
        if (!h) continue;
        y -= h;
        ctx.fillStyle = STATES[state];
        ctx.fillRect(i * dx, y, Math.ceil(dx), h);
      }
    });
    ctx.fillStyle = "#333"; ctx.font = "12px system-ui"; ctx.fillText(String(max) + " nodes", 4, 14);
  }
}

function text(id, value) { const el = document.getElementById(id); if (el) el.textContent = value; }

function showPool(pool) {
  text("allocation-state", pool.allocationState);
  text("current-dedicated", pool.currentDedicatedNodes); text("target-dedicated", pool.targetDedicatedNodes);
  text("current-low", pool.currentLowPriorityNodes); text("target-low", pool.targetLowPriorityNodes);
  const box = document.getElementById("resize-errors");
  box.replaceChildren(...pool.resizeErrors.map((e) => {
    const p = document.createElement("p"), code = document.createElement("strong");
    p.className = "banner error"; code.textContent = e.code;
    p.append(code, ": " + e.message);
    return p;
  }));
}

function legend() {
  const box = document.getElementById("legend");
  for (const [state, colour] of Object.entries(STATES)) {
    const s = document.createElement("span"); s.style.setProperty("--c", colour); s.textContent = state; box.append(s);
  }
  const s = document.createElement("span"); s.className = "striped"; s.textContent = "low-priority (striped)"; box.append(s);
}

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("pool-page");
  if (!root) return;
  legend();
  const open = (id) => { location.href = root.dataset.nodeBase + encodeURIComponent(id); };
  const heatmap = new Heatmap(document.getElementById("heatmap"), document.getElementById("heatmap-tip"), open);
  const history = new History(document.getElementById("history"));
  window.batchyardHeatmap = heatmap;
  function poll() {
    fetch(root.dataset.liveUrl, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .then((live) => {
        if (!live) return;
        showPool(live.pool);
        heatmap.draw(live.nodes, live.pool.taskSlotsPerNode);
        history.add(live.nodes);
        const counts = {};
        live.nodes.forEach((n) => { counts[n[1]] = (counts[n[1]] || 0) + 1; });
        root.dataset.nodeStates = Object.entries(counts).map(([k, v]) => `${k}=${v}`).sort().join(",");
        if (heatmap.selected < 0) {
          text("node-summary", live.nodes.length + " nodes: " +
            (Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ") || "none"));
        }
      })
      .catch(() => {})
      .finally(() => setTimeout(poll, document.hidden ? POLL_MS * 4 : POLL_MS));
  }
  poll();
});
