/* Training: loss and accuracy curves from the run folder's log, updated live
 * (server-sent events) while `cnnkit train` writes into that folder.
 */
"use strict";
(function (CK) {
  let source = null;
  const COLORS = ["#3b7dd8", "#d8633b", "#2e9e6a", "#9b59b6", "#c0392b", "#16a085"];

  function groups(logs) {
    const out = { "loss": [], "accuracy": [], "learning rate": [], "other": [] };
    Object.keys(logs).forEach(function (k) {
      if (/loss/.test(k)) out.loss.push(k);
      else if (/acc|top/.test(k)) out.accuracy.push(k);
      else if (/^lr$|learning/.test(k)) out["learning rate"].push(k);
      else out.other.push(k);
    });
    return Object.entries(out).filter(function (e) { return e[1].length; });
  }

  function chart(title, epochs, logs, keys) {
    const W = 460, L = 56, R = 14, B = 34;
    // the key first: one entry per series, wrapped into lines; the plot starts below it
    const keyAt = [];
    let keyX = L, keyY = 32;
    keys.forEach(function (k) {
      const label = "— " + k + " " + CK.fmt(logs[k][logs[k].length - 1], 4);
      const w = label.length * 7.2 + 14;
      if (keyX > L && keyX + w > W - R) { keyX = L; keyY += 14; }
      keyAt.push({ label: label, x: keyX, y: keyY });
      keyX += w;
    });
    const T = keyY + 14, H = 206 + T;
    const values = [].concat.apply([], keys.map(function (k) { return logs[k]; })).filter(isFinite);
    let lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (hi === lo) { hi += 1e-9 + Math.abs(hi) * 0.05; lo -= 1e-9 + Math.abs(lo) * 0.05; }
    const e0 = Math.min.apply(null, epochs), e1 = Math.max(Math.max.apply(null, epochs), e0 + 1);
    const sx = function (e) { return L + (e - e0) / (e1 - e0) * (W - L - R); };
    const sy = function (v) { return T + (1 - (v - lo) / (hi - lo)) * (H - T - B); };
    const svg = CK.svg("svg", { width: W, height: H, class: "chart", viewBox: "0 0 " + W + " " + H, "data-chart": title });
    svg.appendChild(CK.svg("text", { x: L, y: 16, class: "chart-title", text: title }));
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4;
      svg.appendChild(CK.svg("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid-line" }));
      svg.appendChild(CK.svg("text", { x: L - 6, y: sy(v) + 4, class: "tick", "text-anchor": "end", text: CK.fmt(v, 3) }));
    }
    const step = Math.max(1, Math.ceil(epochs.length / 8));
    epochs.forEach(function (e, i) {
      if (i % step === 0 || i === epochs.length - 1) svg.appendChild(CK.svg("text", { x: sx(e), y: H - B + 16, class: "tick", "text-anchor": "middle", text: String(e) }));
    });
    svg.appendChild(CK.svg("text", { x: (L + W - R) / 2, y: H - 4, class: "tick", "text-anchor": "middle", text: "epoch" }));
    keys.forEach(function (k, j) {
      const ys = logs[k];
      const pts = ys.map(function (v, i) { return sx(epochs[i] !== undefined ? epochs[i] : i + 1) + "," + sy(v); }).join(" ");
      svg.appendChild(CK.svg("polyline", { points: pts, fill: "none", stroke: COLORS[j % COLORS.length], "stroke-width": "2" }));
      ys.forEach(function (v, i) {
        svg.appendChild(CK.svg("circle", { cx: sx(epochs[i] !== undefined ? epochs[i] : i + 1), cy: sy(v), r: 2.5, fill: COLORS[j % COLORS.length] },
          [CK.svg("title", { text: k + " epoch " + epochs[i] + ": " + CK.fmt(v, 5) })]));
      });
      svg.appendChild(CK.svg("text", { x: keyAt[j].x, y: keyAt[j].y, class: "key", fill: COLORS[j % COLORS.length], text: keyAt[j].label }));
    });
    return svg;
  }

  function staleNote(log) {
    // A training run saved newer weights over the file this page loaded: the views still show the old ones.
    if (!log.checkpoint || !log.checkpoint.changed) return null;
    document.body.dataset.checkpointChanged = "1";
    return CK.el("p", { class: "note stale", id: "checkpoint-changed" }, log.checkpoint.name + " has changed on disk since this page " +
      "loaded it: the curves are the run's, but the other views still show the weights loaded at the start; restart " +
      "`cnnkit explore` to look inside the new ones.");
  }

  function draw(log) {
    const box = CK.clear(CK.$("#curves"));
    const stale = staleNote(log);
    if (stale) box.appendChild(stale);
    if (!log.epochs || !log.epochs.length) {
      box.appendChild(CK.el("p", { class: "note" }, "No epoch has been logged yet" + (CK.live() ? ": the curves appear here while `cnnkit train` writes into this run folder." : ".")));
      document.body.dataset.trainingEpochs = "0";
      return;
    }
    groups(log.logs).forEach(function ([title, keys]) { box.appendChild(chart(title, log.epochs, log.logs, keys)); });
    const last = log.epochs[log.epochs.length - 1];
    CK.$("#training-status").textContent = "from " + log.file + ": " + log.epochs.length + " epoch" + (log.epochs.length === 1 ? "" : "s") + " (last: " + last + ")" +
      (source ? " · live: updated " + new Date().toLocaleTimeString() : "");
    document.body.dataset.trainingEpochs = String(log.epochs.length);
  }

  CK.renderTraining = async function () {
    const box = CK.clear(CK.$("#curves"));
    if (!CK.state.model.has_training) {
      box.appendChild(CK.el("p", { class: "note" }, "The checkpoint's run folder is not known here, so there are no training curves. " +
        "Checkpoints written by `cnnkit train` sit in their run folder, next to its log.csv."));
      document.body.dataset.trainingEpochs = "none";
      return;
    }
    try {
      const log = await CK.api("/api/training");
      draw(log);
    } catch (e) {
      box.appendChild(CK.el("p", { class: "note" }, e.message));
    }
    if (CK.live() && !source && window.EventSource) {
      source = new EventSource("/api/training/events");
      source.addEventListener("log", function (ev) { draw(JSON.parse(ev.data)); });
    }
  };
})(window.CK);
