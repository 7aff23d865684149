/* What was learned: each convolution's filters (three-channel first layers in colour),
 * and per layer the statistics and histograms of weights, activations and gradients.
 */
"use strict";
(function (CK) {
  function convUnits() {
    const seen = new Set();
    return CK.state.model.overview.units.filter(function (u) {
      if (CK.family(u) !== "conv" || u.kind !== "layer" || seen.has(u.path)) return false;
      seen.add(u.path);
      return true;
    });
  }

  async function drawFilters() {
    const box = CK.clear(CK.$("#filters"));
    const select = CK.$("#filter-layer");
    if (!select.value) { box.appendChild(CK.el("p", { class: "note" }, "This model has no convolution.")); return; }
    const n = Math.max(1, Math.min(256, Number(CK.$("#max-filters").value) || 64));
    let f;
    try { f = await CK.api("/api/filters/" + select.value + "?filters=" + n + "&channels=16"); } catch (e) { CK.fail(e); return; }
    const [F, C, KH, KW] = f.shape;
    const [nf, nc] = f.shown;
    const scale = Math.max(3, Math.floor(36 / Math.max(KH, KW)));
    const unit = CK.state.model.overview.units[f.unit];
    box.appendChild(CK.el("p", { class: "note" }, [unit.name + ": " + F + " filters of " + C + "x" + KH + "x" + KW + " (showing " + nf + (nc < C && !f.rgb ? ", " + nc + " input channels each" : "") +
      "), one symmetric colour scale for the layer ", CK.legend(-f.max_abs, f.max_abs, "diverging"), " ",
      CK.download("/api/parameters/" + encodeURIComponent(unit.path + ".weight") + ".npy", "weights .npy")]));
    if (f.rgb) {
      const data = CK.b64(f.rgb);
      const tiles = CK.el("div", { class: "filter-grid rgb" });
      for (let k = 0; k < nf; k++) {
        const c = document.createElement("canvas");
        c.width = KW; c.height = KH;
        const ctx = c.getContext("2d");
        const img = ctx.createImageData(KW, KH);
        for (let i = 0; i < KH * KW; i++) {
          const o = (k * KH * KW + i) * 3;
          img.data[4 * i] = data[o]; img.data[4 * i + 1] = data[o + 1]; img.data[4 * i + 2] = data[o + 2]; img.data[4 * i + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
        c.className = "pixelated";
        c.style.width = (KW * scale * 1.5) + "px"; c.style.height = (KH * scale * 1.5) + "px";
        tiles.appendChild(CK.el("figure", {}, [c, CK.el("figcaption", {}, String(k))]));
      }
      box.appendChild(CK.el("h4", {}, "In colour: each channel's weight drives its colour, mid-grey = 0"));
      box.appendChild(tiles);
    }
    const data = CK.b64(f.data);
    if (C === 1) {                       // one tile per filter, in a grid
      const tiles = CK.el("div", { class: "filter-grid" });
      const big = Math.max(4, Math.floor(64 / Math.max(KH, KW)));
      for (let k = 0; k < nf; k++) {
        const canvas = CK.paint(document.createElement("canvas"), data, k * KH * KW, KH, KW, CK.luts.diverging);
        canvas.className = "pixelated";
        canvas.style.width = (KW * big) + "px"; canvas.style.height = (KH * big) + "px";
        tiles.appendChild(CK.el("figure", {}, [canvas, CK.el("figcaption", {}, "filter " + k)]));
      }
      box.appendChild(tiles);
      return;
    }
    const rows = CK.el("div", { class: "filter-rows" });
    for (let k = 0; k < nf; k++) {
      const cells = [];
      for (let c = 0; c < nc; c++) {
        const canvas = CK.paint(document.createElement("canvas"), data, (k * nc + c) * KH * KW, KH, KW, CK.luts.diverging);
        canvas.className = "pixelated";
        canvas.style.width = (KW * scale) + "px"; canvas.style.height = (KH * scale) + "px";
        canvas.title = "filter " + k + ", input channel " + c;
        cells.push(canvas);
      }
      rows.appendChild(CK.el("div", { class: "filter-row" }, [CK.el("span", { class: "filter-name" }, "filter " + k)].concat(cells)));
    }
    if (f.rgb) box.appendChild(CK.el("h4", {}, "Per channel (R, G, B)"));
    box.appendChild(rows);
  }

  function histogram(stats, width, height, color) {
    const svg = CK.svg("svg", { width: width, height: height, class: "hist", viewBox: "0 0 " + width + " " + height });
    if (!stats || !stats.histogram) return svg;
    const counts = stats.histogram.counts;
    const max = Math.max.apply(null, counts.concat([1]));
    const bw = width / counts.length;
    counts.forEach(function (c, i) {
      const h = c ? Math.max(1, Math.sqrt(c / max) * (height - 2)) : 0;   // sqrt: small bins stay visible
      svg.appendChild(CK.svg("rect", { x: i * bw, y: height - h, width: Math.max(0.5, bw - 0.5), height: h, fill: color }));
    });
    const lo = stats.histogram.edges[0], hi = stats.histogram.edges[1];
    if (lo < 0 && hi > 0) {
      const x0 = (-lo) / (hi - lo) * width;
      svg.appendChild(CK.svg("line", { x1: x0, x2: x0, y1: 0, y2: height, stroke: "#888", "stroke-dasharray": "2,2" }));
    }
    svg.appendChild(CK.svg("title", { text: "histogram (bar height: square root of the count) from " + CK.fmt(lo) + " to " + CK.fmt(hi) }));
    return svg;
  }

  function statCell(s, color, what, link) {
    if (!s || !s.count) return CK.el("td", { class: "empty" }, "–");
    return CK.el("td", { class: "stat" }, [
      histogram(s, 120, 26, color),
      CK.el("div", { class: "stat-line" }, ["[" + CK.fmt(s.min, 3) + ", " + CK.fmt(s.max, 3) + "]  μ " + CK.fmt(s.mean, 3) + "  σ " + CK.fmt(s.std, 3) +
        (what === "act" ? "  zeros " + (100 * s.zeros).toFixed(1) + "%" : "") + " ", link || null]),
    ]);
  }

  async function drawStats() {
    const box = CK.clear(CK.$("#stats"));
    if (!CK.state.run) { box.appendChild(CK.el("p", { class: "note" }, "Pick an image: activation and gradient statistics are for one image.")); return; }
    box.appendChild(CK.el("p", { class: "note" }, "computing the gradients…"));
    let s;
    try { s = await CK.api("/api/images/" + CK.state.run.id + "/statistics"); } catch (e) { CK.fail(e); return; }
    CK.clear(box);
    const names = CK.state.model.classes;
    const weightsOf = {};
    s.weights.forEach(function (w) {
      const path = w.name.slice(0, w.name.lastIndexOf("."));
      (weightsOf[path] = weightsOf[path] || []).push(w);
    });
    box.appendChild(CK.el("p", { class: "note" }, "Activations of this image; gradients of the cross-entropy loss with label “" +
      (names[s.target] || s.target) + "” (the predicted class) for activations and weights. Histogram bars: square root of the count; dashed line: 0."));
    const head = CK.el("tr", {}, ["layer", "activations", "d loss / d activation", "weights", "d loss / d weights"].map(function (h) { return CK.el("th", {}, h); }));
    const shown = new Set();
    const base = "/api/images/" + CK.state.run.id + "/layers/";
    const rows = s.units.map(function (st) {
      const u = CK.state.model.overview.units[st.index];
      const params = u.kind === "layer" && !shown.has(u.path) ? (weightsOf[u.path] || []) : [];
      if (params.length) shown.add(u.path);
      const weight = params.find(function (p) { return p.name.endsWith(".weight"); }) || params[0];
      return CK.el("tr", { class: CK.family(u) }, [
        CK.el("td", { class: "layer" }, [CK.el("b", {}, u.name), CK.el("div", { class: "sub" }, u.type + " " + CK.shape(CK.state.run.units[st.index].shape))]),
        statCell(st.activation, "#3b7dd8", "act", CK.download(base + st.index + ".npy", ".npy", "this layer's output as .npy")),
        statCell(st.gradient, "#d8633b", "grad", CK.download(base + st.index + ".npy?what=gradient&target=" + s.target, ".npy",
          "d score / d (this layer's output) for the predicted class, as .npy")),
        weight ? statCell(weight, "#2e9e6a", "w", CK.el("span", {}, params.map(function (p) {
          return CK.download("/api/parameters/" + encodeURIComponent(p.name) + ".npy", p.name.slice(p.name.lastIndexOf(".") + 1), p.name + " as .npy");
        }))) : CK.el("td", { class: "empty" }, ""),
        weight ? statCell(weight.gradient, "#9b59b6") : CK.el("td", { class: "empty" }, ""),
      ]);
    });
    box.appendChild(CK.el("table", { class: "stats-table" }, [head].concat(rows)));
    document.body.dataset.statsReady = String(CK.state.run.id);
  }

  CK.renderLearned = function () {
    const select = CK.clear(CK.$("#filter-layer"));
    convUnits().forEach(function (u) { select.appendChild(CK.el("option", { value: u.index }, u.name + " (" + u.module + ")")); });
    return Promise.all([drawFilters(), drawStats()]).then(function () { document.body.dataset.learnedReady = "1"; });
  };
  CK.initLearned = function () {
    CK.$("#filter-layer").addEventListener("change", drawFilters);
    CK.$("#max-filters").addEventListener("change", drawFilters);
  };
  CK.refreshStats = drawStats;
})(window.CK);
