/* An image flowing through the network: one row per layer call, its top-k channels
 * (ranked by mean or max activation) as heat maps on one colour scale per layer, drawn
 * when the row scrolls into view. Clicking a pixel asks how that number was computed.
 */
"use strict";
(function (CK) {
  const MINOR = { act: true, norm: true, identity: true, other: true };
  let observer = null;
  const inflight = [];
  const MAX_INFLIGHT = 4;

  const MAP_SIZE = 76;   // CSS pixels of the longer side of one heat map
  function mapScale(H, W) { return MAP_SIZE / Math.max(H, W); }

  function queue(task) {
    return new Promise(function (resolve, reject) {
      inflight.push({ task: task, resolve: resolve, reject: reject });
      pump();
    });
  }
  let running = 0;
  function pump() {
    while (running < MAX_INFLIGHT && inflight.length) {
      const job = inflight.shift();
      running++;
      job.task().then(job.resolve, job.reject).finally(function () { running--; pump(); });
    }
  }

  function mapsUrl(run, unit) {
    return "/api/images/" + run.id + "/maps/" + unit + "?k=" + CK.state.k + "&order=" + CK.state.order;
  }

  /** Fetch and draw one row's heat maps (once per run, k and order). */
  function fill(row) {
    const run = CK.state.run;
    const key = run.id + ":" + CK.state.k + ":" + CK.state.order;
    if (row.dataset.drawn === key || row.dataset.loading === key) return row._promise || Promise.resolve();
    row.dataset.loading = key;
    const unit = Number(row.dataset.unit);
    row._promise = queue(function () { return CK.api(mapsUrl(run, unit)); }).then(function (answer) {
      if (CK.state.run !== run) return;
      drawRow(row, answer);
      row.dataset.drawn = key;
    }).catch(function (e) { row.dataset.loading = ""; CK.fail(e); });
    return row._promise;
  }

  function drawRow(row, answer) {
    const box = CK.clear(row.querySelector(".maps"));
    const lut = CK.lutFor(answer.scale);
    const data = CK.b64(answer.data);
    const unit = answer.unit;
    if (answer.shape.length === 3) {
      const H = answer.shape[1], W = answer.shape[2];
      const s = mapScale(H, W);
      answer.channels.forEach(function (ch, k) {
        const canvas = CK.paint(document.createElement("canvas"), data, k * H * W, H, W, lut);
        canvas.style.width = (W * s) + "px";
        canvas.style.height = (H * s) + "px";
        canvas.className = "map" + (s >= 1.5 ? " pixelated" : "");
        canvas.title = "channel " + ch.index + ": click a pixel";
        canvas.addEventListener("click", function (e) {
          const r = canvas.getBoundingClientRect();
          const y = Math.min(H - 1, Math.floor((e.clientY - r.top) / r.height * H));
          const x = Math.min(W - 1, Math.floor((e.clientX - r.left) / r.width * W));
          CK.inspect(unit, [ch.index, y, x], canvas);
        });
        const frame = CK.el("div", { class: "map-frame", "data-channel": ch.index }, [canvas]);
        box.appendChild(CK.el("figure", { class: "map-cell" }, [frame,
          CK.el("figcaption", { title: "channel " + ch.index + ": mean " + ch.mean + ", max " + ch.max }, [CK.el("b", {}, "ch " + ch.index), " " +
            (CK.state.order === "max" ? "max " : "μ ") + CK.fmt(CK.state.order === "max" ? ch.max : ch.mean, 2)])]));
      });
      const C = answer.shape[0];
      if (C > answer.channels.length) box.appendChild(CK.el("div", { class: "note more" }, "top " + answer.channels.length + " of " + C + " channels"));
    } else {
      const D = answer.shape.reduce(function (a, b) { return a * b; }, 1);
      const canvas = CK.paint(document.createElement("canvas"), data, 0, 1, D, lut);
      canvas.className = "strip pixelated";
      canvas.style.width = Math.min(720, Math.max(120, D * 6)) + "px";
      canvas.title = D + " values: click one";
      canvas.addEventListener("click", function (e) {
        const r = canvas.getBoundingClientRect();
        const d = Math.min(D - 1, Math.floor((e.clientX - r.left) / r.width * D));
        CK.inspect(unit, [d], canvas);
      });
      const names = CK.state.model.classes;
      const isOutput = unit === CK.state.model.overview.units.length - 1;
      const top = CK.el("div", { class: "top-values" }, answer.top.map(function (i) {
        const label = isOutput && names[i] !== undefined ? names[i] : "#" + i;
        return CK.el("button", { class: "chip", onclick: function () { CK.inspect(unit, [i], canvas); } }, label + ": " + CK.fmt(answer.values[i], 3));
      }));
      box.appendChild(CK.el("div", { class: "strip-frame" }, [canvas]));
      box.appendChild(top);
    }
  }

  function rowFor(u, info) {
    const f = CK.family(u);
    const head = CK.el("div", { class: "row-head" }, [
      CK.el("span", { class: "badge " + f }, u.type),
      CK.el("b", { class: "row-name", title: u.name }, u.name),
      CK.el("span", { class: "shape" }, CK.shape(u.shape)),
      info ? CK.legend(info.lo, info.hi, info.scale) : null,
      CK.download("/api/images/" + CK.state.run.id + "/layers/" + u.index + ".npy", ".npy", "this layer's output as a NumPy .npy file"),
    ]);
    const row = CK.el("div", { class: "flow-row " + f + (MINOR[f] ? " minor" : ""), id: "row-" + u.index, "data-unit": u.index }, [
      head, CK.el("div", { class: "maps" }, u.kind === "identity" ? CK.el("span", { class: "note" }, "identity in eval mode: the same values as its input") : CK.el("span", { class: "note" }, "…")),
    ]);
    if (u.kind === "identity") row.dataset.drawn = "identity";
    return row;
  }

  CK.renderFlow = function () {
    const rows = CK.clear(CK.$("#flow-rows"));
    const run = CK.state.run;
    if (!run) { rows.appendChild(CK.el("p", { class: "note" }, "Pick, drop or draw an image to see it flow through the network.")); return Promise.resolve(); }
    if (observer) observer.disconnect();
    const units = CK.state.model.overview.units;
    const runUnits = run.units;
    const inputRow = CK.el("div", { class: "flow-row input", id: "row--1", "data-unit": "-1" }, [
      CK.el("div", { class: "row-head" }, [CK.el("span", { class: "badge input" }, "Input"), CK.el("b", {}, run.name),
        CK.el("span", { class: "shape" }, CK.shape(run.shape)), CK.download("/api/images/" + run.id + "/input.npy", ".npy", "the normalized model input as .npy")]),
      CK.el("div", { class: "maps" }, [CK.el("div", { class: "map-frame input-frame" }, [CK.el("img", { class: "input-thumb pixelated", src: run.picture, alt: "input",
        "data-h": run.shape[1], "data-w": run.shape[2] })])]),
    ]);
    rows.appendChild(inputRow);
    units.forEach(function (u, i) {
      const info = runUnits[i];
      const merged = Object.assign({}, u, { shape: info ? info.shape : u.shape });
      rows.appendChild(rowFor(merged, info));
    });
    applyFilter();
    observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) { if (e.isIntersecting && e.target.dataset.unit !== "-1") fill(e.target); });
    }, { root: null, rootMargin: "400px 0px" });
    rows.querySelectorAll(".flow-row").forEach(function (r) { observer.observe(r); });
    // "Ready" once the rows in view are drawn: the tests and the benchmark wait for this.
    return new Promise(function (resolve) { requestAnimationFrame(resolve); }).then(function () {
      const visible = Array.from(rows.querySelectorAll(".flow-row")).filter(function (r) {
        const b = r.getBoundingClientRect();
        return r.dataset.unit !== "-1" && r.offsetParent !== null && b.bottom > 0 && b.top < window.innerHeight;
      });
      return Promise.all(visible.map(fill));
    }).then(function () {
      document.body.dataset.flowReady = String(run.id);
      CK.emit("flow-ready", run);
    });
  };

  // Every shown row drawn (not only those scrolled into view): before the view is saved as a PNG.
  CK.fillFlow = function () {
    const rows = Array.from(document.querySelectorAll("#flow-rows .flow-row")).filter(function (r) {
      return r.dataset.unit !== "-1" && !r.hidden;
    });
    return Promise.all(rows.map(fill));
  };

  function applyFilter() {
    const hide = CK.$("#hide-minor").checked;
    document.querySelectorAll("#flow-rows .flow-row.minor").forEach(function (r) { r.hidden = hide; });
  }

  CK.redrawFlow = function () {
    document.querySelectorAll("#flow-rows .flow-row").forEach(function (r) {
      if (r.dataset.drawn && r.dataset.drawn !== "identity") r.dataset.drawn = "";
      const b = r.getBoundingClientRect();
      if (r.dataset.unit !== "-1" && !r.hidden && b.bottom > -400 && b.top < window.innerHeight + 400) fill(r);
    });
  };

  CK.scrollToUnit = function (index) {
    const row = document.getElementById("row-" + index);
    if (row) { row.hidden = false; row.scrollIntoView({ block: "center" }); fill(row); }
  };

  CK.initFlow = function () {
    CK.$("#top-k").addEventListener("change", function () {
      const k = Math.max(1, Math.min(64, Number(this.value) || 8));
      this.value = k;
      CK.state.k = k;
      CK.redrawFlow();
    });
    CK.$("#order").addEventListener("change", function () { CK.state.order = this.value; CK.redrawFlow(); });
    CK.$("#hide-minor").addEventListener("change", applyFilter);
  };
})(window.CK);
