/* The decision: logits and probabilities as bars with class names; saliency and
 * Grad-CAM of the chosen class laid over the input picture.
 */
"use strict";
(function (CK) {
  let opacity = 0.6;
  let showAll = false;

  function loadImage(src) {
    return new Promise(function (resolve, reject) {
      const img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error("could not draw the input picture")); };
      img.src = src;
    });
  }

  async function overlay(title, note, heat, shape, hi) {
    const H = shape[0], W = shape[1];
    const picture = await loadImage(CK.state.run.picture);
    const heatCanvas = CK.paint(document.createElement("canvas"), CK.b64(heat), 0, H, W, CK.luts.inferno,
      function (v) { return Math.round(255 * Math.min(1, v / 160)); });
    const canvas = document.createElement("canvas");
    const scale = Math.max(1, Math.min(480 / W, 240 / H));   // wide strips (fully convolutional) stay readable
    canvas.width = Math.round(W * scale); canvas.height = Math.round(H * scale);
    canvas.className = "overlay";
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(picture, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = opacity;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(heatCanvas, 0, 0, canvas.width, canvas.height);
    const legend = CK.el("span", { class: "legend" }, [CK.el("span", {}, "0"), CK.paint(document.createElement("canvas"),
      Uint8Array.from({ length: 256 }, function (_, i) { return i; }), 0, 1, 256, CK.luts.inferno), CK.el("span", {}, CK.fmt(hi, 3))]);
    legend.querySelector("canvas").className = "legend-bar";
    return CK.el("figure", { class: "overlay-box" }, [CK.el("h4", {}, title), canvas, legend, CK.el("figcaption", { class: "note" }, note)]);
  }

  function percent(p) { return p >= 5e-5 || p === 0 ? (100 * p).toFixed(2) + "%" : CK.fmt(100 * p, 2) + "%"; }

  /** A fully convolutional output: the top class at every output position (the window it sees). */
  function classMap(d, names) {
    const rows = d.class_map.map(function (row, i) {
      return CK.el("tr", {}, row.map(function (k, j) {
        const chosen = d.position && d.position[0] === i && d.position[1] === j;
        return CK.el("td", { class: chosen ? "chosen" : null, title: "output position (" + i + ", " + j + ")" }, names[k] !== undefined ? names[k] : String(k));
      }));
    });
    return CK.el("div", { class: "class-map" }, [CK.el("h4", {}, "Top class at each output position (the bars: the most confident one, outlined)"),
      CK.el("table", {}, rows)]);
  }

  function bars(d) {
    const names = CK.state.model.classes;
    const K = d.probabilities.length;
    const order = Array.from({ length: K }, function (_, i) { return i; }).sort(function (a, b) { return d.probabilities[b] - d.probabilities[a] || a - b; });
    const shown = showAll || K <= 12 ? order : order.slice(0, 10);
    const sigmoid = d.task !== "multiclass" || K === 1;
    const maxLogit = Math.max.apply(null, d.logits.map(Math.abs).concat([1e-12]));
    const table = CK.el("div", { class: "bar-list", role: "list" }, shown.map(function (k) {
      const p = d.probabilities[k];
      const row = CK.el("button", { class: "bar-row" + (k === d.target ? " chosen" : "") + (k === d.top ? " top" : ""), role: "listitem",
        "data-class": k, title: "explain class " + (names[k] || k), disabled: !CK.live() && k !== d.target, onclick: function () { CK.loadDecision(k); } }, [
        CK.el("span", { class: "bar-name" }, names[k] !== undefined ? names[k] : String(k)),
        CK.el("span", { class: "bar-track" }, [CK.el("span", { class: "bar-fill", style: "width:" + (100 * p).toFixed(2) + "%" })]),
        CK.el("span", { class: "bar-p", title: "p = " + p }, percent(p)),
        CK.el("span", { class: "bar-logit", title: "logit" }, [CK.el("span", { class: "logit-fill " + (d.logits[k] < 0 ? "neg" : "pos"),
          style: "width:" + (50 * Math.abs(d.logits[k]) / maxLogit).toFixed(1) + "%" }), CK.el("span", { class: "logit-text " + (d.logits[k] < 0 ? "neg" : "pos") }, CK.fmt(d.logits[k], 4))]),
      ]);
      return row;
    }));
    const head = CK.el("div", { class: "bar-head" }, [CK.el("span", {}, "class"), CK.el("span", {}, sigmoid ? "sigmoid probability" : "softmax probability"), CK.el("span", {}, ""), CK.el("span", {}, "logit")]);
    const box = CK.el("div", {}, [
      CK.el("p", { class: "verdict", id: "predicted" }, ["Predicted: ", CK.el("b", { id: "predicted-class" }, names[d.top] !== undefined ? names[d.top] : String(d.top)),
        " (" + percent(d.probabilities[d.top]) + ")" + (d.position ? " at output position (" + d.position.join(", ") + ")" : "")]),
      head, table,
    ]);
    if (d.class_map) box.appendChild(classMap(d, names));
    if (K > 12) box.appendChild(CK.el("button", { class: "secondary", onclick: function () { showAll = !showAll; CK.loadDecision(d.target); } }, showAll ? "show the top 10" : "show all " + K + " classes"));
    box.appendChild(CK.el("p", { class: "note" }, d.task === "binary" ? "One logit z: p(" + (names[1] || "1") + ") = 1 / (1 + exp(−z)), p(" +
      (names[0] || "0") + ") = 1 − p, the sigmoid of −z (shown as its logit)." : sigmoid ? "p = 1 / (1 + exp(−logit)) for each output." :
      "p_k = exp(logit_k) / Σ_j exp(logit_j): the logits, shifted and exponentiated, shared out to sum to 1. Click a class to explain it."));
    return box;
  }

  CK.loadDecision = async function (target) {
    const run = CK.state.run;
    if (!run) return;
    let url = "/api/images/" + run.id + "/decision";
    const params = [];
    if (target !== undefined && target !== null) params.push("target=" + target);
    const camSelect = CK.$("#cam-layer");
    if (camSelect && camSelect.value !== "" && CK.live()) params.push("cam=" + camSelect.value);
    if (params.length) url += "?" + params.join("&");
    let d;
    try { d = await CK.api(url); } catch (e) { CK.fail(e); return; }
    CK.state.target = d.target;
    CK.clear(CK.$("#decision-bars")).appendChild(bars(d));
    const names = CK.state.model.classes;
    const name = names[d.target] !== undefined ? names[d.target] : String(d.target);
    const maps = CK.clear(CK.$("#decision-maps"));
    maps.appendChild(await overlay("Saliency of “" + name + "”", "max over colour channels of |d logit / d pixel| (Simonyan et al., 2014): the pixels whose change moves this class's score the most.",
      d.saliency.data, d.saliency.shape, d.saliency.hi));
    if (d.grad_cam && !d.grad_cam.error) {
      const unit = CK.state.model.overview.units[d.grad_cam.unit];
      maps.appendChild(await overlay("Grad-CAM of “" + name + "” at " + unit.name, "ReLU(Σ_k α_k A_k), α_k = the mean gradient of the class score over channel k's " +
        d.grad_cam.cam_shape.join("x") + " map (Selvaraju et al., 2017), upsampled to the input." +
        (d.grad_cam.hi > 0 ? "" : " Zero everywhere here: at this layer the gradient-weighted sum of the channels is nowhere positive " +
        "for this class (nothing in the picture raises its score through this layer); an earlier layer may show more."),
        d.grad_cam.data, d.grad_cam.shape, d.grad_cam.hi));
    } else if (d.grad_cam) {
      maps.appendChild(CK.el("p", { class: "note" }, "Grad-CAM: " + d.grad_cam.error));
    }
    const head = CK.clear(CK.$("#decision-head"));
    const select = CK.el("select", { id: "cam-layer", disabled: !CK.live() }, d.cam_units.map(function (i) {
      const u = CK.state.model.overview.units[i];
      return CK.el("option", { value: i, selected: d.grad_cam && d.grad_cam.unit === i }, u.name + " " + CK.shape(CK.state.run.units[i].shape));
    }));
    select.addEventListener("change", function () { CK.loadDecision(CK.state.target); });
    const slider = CK.el("input", { type: "range", min: "0", max: "1", step: "0.05", value: String(opacity), id: "opacity" });
    slider.addEventListener("change", function () { opacity = Number(this.value); CK.loadDecision(CK.state.target); });
    CK.append(head, [CK.el("label", {}, ["Grad-CAM layer ", select]), CK.el("label", {}, ["overlay opacity ", slider]),
      d.grad_cam && !d.grad_cam.error ? CK.download("/api/images/" + run.id + "/layers/" + d.grad_cam.unit + ".npy?what=gradient&target=" + d.target,
        "gradient .npy", "d score / d (the Grad-CAM layer's output) as .npy") : null]);
    document.body.dataset.decisionReady = run.id + ":" + d.target;
  };
})(window.CK);
