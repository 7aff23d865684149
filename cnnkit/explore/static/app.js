/* The page: tabs, the input panel (samples, drag and drop, drawing), and the start. */
"use strict";
(function (CK) {
  const VIEWS = ["network", "flow", "decision", "learned", "training"];
  const rendered = {};

  CK.showView = function (name) {
    if (VIEWS.indexOf(name) < 0) name = "network";
    CK.state.view = name;
    VIEWS.forEach(function (v) {
      CK.$("#view-" + v).hidden = v !== name;
      CK.$("#tab-" + v).setAttribute("aria-selected", v === name ? "true" : "false");
    });
    if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
    if (name !== "flow") CK.$("#picture-rf").hidden = true;
    return renderView(name);
  };

  function renderView(name) {
    const key = name + ":" + (CK.state.run ? CK.state.run.id : 0);
    if (rendered[name] === key) return Promise.resolve();
    rendered[name] = key;
    if (name === "flow") return CK.renderFlow();
    if (name === "decision") return CK.state.run ? CK.loadDecision(null) : Promise.resolve();
    if (name === "learned") return CK.renderLearned();
    if (name === "training") return CK.renderTraining();
    return Promise.resolve();
  }

  /* ------------------------------------------------------------------ the input picture */
  CK.showInputBox = function (box) {
    const rf = CK.$("#picture-rf");
    if (!box || !CK.state.run) { rf.hidden = true; return; }
    const [, H, W] = CK.state.run.shape;
    CK.placeBox(rf, box, H, W);
    rf.hidden = false;
  };

  function showPicture(run) {
    const canvas = CK.$("#picture");
    const img = new Image();
    img.onload = function () {
      const [, H, W] = run.shape;
      canvas.width = W; canvas.height = H;
      canvas.getContext("2d").drawImage(img, 0, 0);
      const scale = Math.min(240 / W, 240 / H);
      canvas.style.width = Math.round(W * scale) + "px";
      canvas.style.height = Math.round(H * scale) + "px";
    };
    img.src = run.picture;
    CK.$("#picture-rf").hidden = true;
    const names = CK.state.model.classes;
    const top = run.prediction.top[0];
    CK.$("#picture-note").textContent = run.name + " · " + run.shape.slice(1).join("x") + " as the model sees it";
    CK.clear(CK.$("#prediction")).appendChild(CK.el("span", {}, ["Predicted: ", CK.el("b", { id: "sidebar-class" }, names[top] !== undefined ? names[top] : String(top)),
      " (" + (100 * run.prediction.probabilities[0]).toFixed(1) + "%)"]));
  }

  /** Make `run` the current image and redraw the views that depend on it. */
  CK.setRun = function (run) {
    CK.state.run = run;
    CK.state.neuron = null;
    CK.state.target = null;
    delete document.body.dataset.flowReady;
    showPicture(run);
    CK.clear(CK.$("#neuron")).appendChild(CK.el("p", { class: "note" }, CK.live() ?
      "Click any pixel of a heat map (or a cell of a vector) to see how that number was computed." :
      "A static report: on the live page (`cnnkit explore` on the checkpoint) a click on any pixel shows how that number was computed."));
    Object.keys(rendered).forEach(function (k) { if (k !== "network") delete rendered[k]; });
    document.body.dataset.run = String(run.id);
    if (CK.state.view === "network") CK.selectLayer(CK.state.unit === null ? 0 : CK.state.unit);
    return renderView(CK.state.view);
  };

  async function runRequest(url, options, label) {
    document.body.classList.add("busy");
    const started = performance.now();
    try {
      const run = await CK.api(url, options);
      const t = performance.now() - started;
      await CK.setRun(run);
      window.__cnnkitTimings = (window.__cnnkitTimings || []).concat([{ label: label, run_ms: t, ready_ms: performance.now() - started }]);
      return run;
    } catch (e) {
      CK.fail(e);
      return null;
    } finally {
      document.body.classList.remove("busy");
    }
  }
  CK.runSample = function (i) { return runRequest("/api/samples/" + i + "/run", { method: "POST" }, "sample " + i); };
  CK.uploadFile = function (file) {
    if (!file) return Promise.resolve(null);
    return runRequest("/api/images?name=" + encodeURIComponent(file.name || "upload"),
      { method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file }, file.name || "upload");
  };

  /* ------------------------------------------------------------------ the input tools */
  function initSamples() {
    const box = CK.clear(CK.$("#samples"));
    const samples = CK.state.model.samples;
    if (!samples.length) { box.appendChild(CK.el("p", { class: "note" }, "no sample images")); return; }
    samples.slice(0, 60).forEach(function (s) {
      const label = s.label !== null ? s.label : s.name;
      box.appendChild(CK.el("button", { class: "sample", title: s.name + (s.label !== null ? " (true class: " + s.label + ")" : ""), "data-sample": s.index,
        onclick: function () { CK.runSample(s.index); } }, [
        CK.el("img", { src: "/api/samples/" + s.index + ".png", alt: s.name, loading: "lazy" }), CK.el("span", {}, label),
      ]));
    });
  }

  function initDrop() {
    const drop = CK.$("#drop");
    const input = CK.$("#file");
    input.addEventListener("change", function () { CK.uploadFile(input.files[0]); input.value = ""; });
    ["dragenter", "dragover"].forEach(function (t) {
      document.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (t) {
      document.addEventListener(t, function (e) { e.preventDefault(); if (t === "drop" || e.target === drop) drop.classList.remove("over"); });
    });
    document.addEventListener("drop", function (e) {
      const file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
      if (file) CK.uploadFile(file);
    });
  }

  function initDrawing() {
    if (!CK.state.model.can_draw) return;
    CK.$("#draw-box").hidden = false;
    const pad = CK.$("#draw");
    const ctx = pad.getContext("2d");
    const clear = function () { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); };
    clear();
    let drawing = false, last = null, inked = false;
    const point = function (e) {
      const r = pad.getBoundingClientRect();
      return [(e.clientX - r.left) / r.width * pad.width, (e.clientY - r.top) / r.height * pad.height];
    };
    pad.addEventListener("pointerdown", function (e) { drawing = true; last = point(e); pad.setPointerCapture(e.pointerId); stroke(last); });
    pad.addEventListener("pointermove", function (e) { if (drawing) stroke(point(e)); });
    const finish = function () {
      if (!drawing) return;
      drawing = false;
      if (inked) pad.toBlob(function (blob) { CK.uploadFile(new File([blob], "drawing.png", { type: "image/png" })); }, "image/png");
    };
    pad.addEventListener("pointerup", finish);
    pad.addEventListener("pointercancel", finish);
    function stroke(p) {
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 20; ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0] + 0.01, p[1]); ctx.stroke();
      last = p; inked = true;
    }
    CK.$("#draw-clear").addEventListener("click", function () { clear(); inked = false; });
  }

  /* ------------------------------------------------------------------ start */
  async function start() {
    VIEWS.forEach(function (v) { CK.$("#tab-" + v).addEventListener("click", function () { CK.showView(v); }); });
    CK.$("#save-png").addEventListener("click", function () {
      const name = CK.state.view;
      const view = CK.$("#view-" + name);
      // the flow view draws rows as they scroll into view: the PNG gets all of them
      const ready = name === "flow" && CK.state.run ? CK.fillFlow() : Promise.resolve();
      ready.then(function () { return CK.exportPNG(view, "cnnkit-" + name + ".png"); }).catch(CK.fail);
    });
    CK.initFlow();
    CK.initLearned();
    let model;
    try { model = await CK.api("/api/model"); } catch (e) { CK.fail(e); return; }
    CK.state.model = model;
    CK.$("#model-label").textContent = model.label + " · input " + model.input_shape.join("x") + (model.classes.length ? " · " + model.classes.length + " classes" : "");
    document.title = "cnnkit explore: " + model.label;
    CK.renderNetwork();
    if (CK.live()) {
      initSamples();
      initDrop();
      initDrawing();
    } else {
      CK.$("#input-tools").hidden = true;
      CK.$("#save-png").hidden = true;
      ["#top-k", "#order", "#max-filters"].forEach(function (s) { CK.$(s).disabled = true; });
      document.body.classList.add("static");
    }
    const wanted = (location.hash || "#network").slice(1);
    const first = CK.snapshot ? CK.snapshot.run : (model.samples.length ? null : undefined);
    if (first) await CK.setRun(first);
    await CK.showView(wanted);
    document.body.dataset.ready = "1";
    if (first === null) await CK.runSample(0);
  }
  document.addEventListener("DOMContentLoaded", start);
})(window.CK);
