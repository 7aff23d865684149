/* Click a neuron: how its number was computed, checked against the forward pass.
 * The input region it sees is outlined on the input picture and on the layers it reads.
 */
"use strict";
(function (CK) {
  const TOLERANCE = 1e-4;   // relative: float32 forward vs the float64 rebuild

  function compact(v) {
    // At most 5 characters, for the narrow cells of 4x4 to 11x11 grids (the cell's title has every digit):
    // two significant digits, no leading zero (-0.033 -> "-.033"), exponents without padding (8e-5).
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a < 1e-2 || a >= 1e4) return v.toExponential(0).replace("e+", "e");
    const s = String(Number(v.toPrecision(2)));
    return s.replace(/^(-?)0\./, "$1.");
  }

  function grid(values, opts) {
    // A small table of numbers coloured on a symmetric scale; `mark` highlights one cell.
    const flat = [].concat.apply([], values).filter(function (v) { return v !== null && isFinite(v); });
    const m = Math.max(1e-12, Math.max.apply(null, flat.map(Math.abs).concat([0])));
    const lut = opts.sequential ? CK.luts.viridis : CK.luts.diverging;
    const lo = opts.sequential ? Math.min.apply(null, flat.concat([0])) : -m;
    const hi = opts.sequential ? Math.max.apply(null, flat.concat([1e-12])) : m;
    const n = Math.max(values.length, values[0].length);
    const size = n > 11 ? " tiny" : n > 5 ? " dense" : n > 3 ? "" : " wide";
    return CK.el("table", { class: "grid" + size }, values.map(function (row, i) {
      return CK.el("tr", {}, row.map(function (v, j) {
        const pad = opts.inside && !opts.inside[i][j];
        if (v === null || pad) return CK.el("td", { class: "pad", title: "padding" }, "pad");
        const q = Math.max(0, Math.min(255, Math.round((v - lo) / (hi - lo || 1) * 255)));
        const rgb = "rgb(" + lut[3 * q] + "," + lut[3 * q + 1] + "," + lut[3 * q + 2] + ")";
        const dark = (lut[3 * q] * 0.299 + lut[3 * q + 1] * 0.587 + lut[3 * q + 2] * 0.114) < 128;
        const mark = opts.mark && opts.mark[0] === i && opts.mark[1] === j;
        return CK.el("td", { style: "background:" + rgb + ";color:" + (dark ? "#fff" : "#111"), class: mark ? "winner" : null, title: String(v) }, size === " wide" ? CK.fmt(v, 2) : compact(v));
      }));
    }));
  }

  function check(answer) {
    if (answer.computed === null || answer.computed === undefined) {
      return CK.el("p", { class: "check none" }, "forward value " + CK.fmt(answer.value, 7) + " (no step-by-step rebuild for " + answer.type + ")");
    }
    const diff = Math.abs(answer.computed - answer.value);
    const ok = diff <= TOLERANCE * Math.max(1, Math.abs(answer.value));
    return CK.el("p", { class: "check " + (ok ? "ok" : "bad"), "data-check": ok ? "ok" : "bad" }, [
      CK.el("span", {}, "rebuilt here: "), CK.el("b", { class: "computed" }, CK.fmt(answer.computed, 7)),
      CK.el("span", {}, "  ·  forward pass: "), CK.el("b", { class: "forward" }, CK.fmt(answer.value, 7)),
      CK.el("span", {}, ok ? "  ✓ equal (|difference| " + CK.fmt(diff, 2) + ", float32 rounding)" : "  ✗ differ by " + CK.fmt(diff, 3)),
    ]);
  }

  function unitName(i) { return i === -1 || i === "-1" ? "the input" : CK.state.model.overview.units[Number(i)].name; }

  function convBody(a) {
    const box = CK.el("div", {});
    const src = a.inputs[0];
    box.appendChild(CK.el("p", {}, [
      "Filter " + a.index[0] + " (" + a.kernel.join("x") + ", stride " + a.stride.join("x") + ", padding " + a.padding.join("x") +
      (a.dilation[0] > 1 || a.dilation[1] > 1 ? ", dilation " + a.dilation.join("x") : "") + ") slides over " + unitName(src) +
      "; at output (" + a.index[1] + ", " + a.index[2] + ") it reads rows " + a.rows[0] + "…" + a.rows[a.rows.length - 1] +
      " and columns " + a.cols[0] + "…" + a.cols[a.cols.length - 1] + " of all " + a.input_channels + " input channels" +
      (a.groups > 1 ? " of its group" : "") + ".",
    ]));
    box.appendChild(CK.el("p", { class: "formula" }, "y = Σ over c, kh, kw of  x[c, " + a.stride[0] + "·i − " + a.padding[0] + " + kh, " + a.stride[1] + "·j − " + a.padding[1] + " + kw] · w[f, c, kh, kw]  + b[f]"));
    a.channels.forEach(function (ch) {
      box.appendChild(CK.el("div", { class: "channel-terms" }, [
        CK.el("div", { class: "term-head" }, "input channel " + ch.channel + ":  Σ x·w = " + CK.fmt(ch.sum, 5)),
        CK.el("div", { class: "term-grids" }, [
          CK.el("figure", {}, [grid(ch.x, { inside: a.inside }), CK.el("figcaption", {}, "x (window)")]),
          CK.el("span", { class: "op" }, "×"),
          CK.el("figure", {}, [grid(ch.w, {}), CK.el("figcaption", {}, "w (kernel)")]),
          CK.el("span", { class: "op" }, "="),
          CK.el("figure", {}, [grid(ch.products, { inside: a.inside }), CK.el("figcaption", {}, "x · w")]),
        ]),
      ]));
    });
    const rows = [];
    a.channels.forEach(function (ch) { rows.push(["channel " + ch.channel, ch.sum]); });
    if (a.other_channels.count) rows.push(["the other " + a.other_channels.count + " channels", a.other_channels.sum]);
    rows.push(["Σ of all products", a.sum]);
    if (a.bias !== null) rows.push(["+ bias b[" + a.index[0] + "]", a.bias]);
    rows.push(["= output", a.computed]);
    box.appendChild(sumTable(rows));
    return box;
  }

  function sumTable(rows) {
    return CK.el("table", { class: "sum" }, rows.map(function (r, i) {
      return CK.el("tr", { class: i === rows.length - 1 ? "total" : null }, [CK.el("td", {}, r[0]), CK.el("td", { class: "num" }, CK.fmt(r[1], 7))]);
    }));
  }

  function poolBody(a) {
    const box = CK.el("div", {});
    const where = a.adaptive ? "adaptive window for output size " + a.output_size.join("x") :
      a.kernel.join("x") + " window, stride " + a.stride.join("x") + ", padding " + a.padding.join("x");
    box.appendChild(CK.el("p", {}, "Channel " + a.channel + " of " + unitName(a.inputs[0]) + ", " + where + ": rows " +
      a.rows[0] + "…" + a.rows[a.rows.length - 1] + ", columns " + a.cols[0] + "…" + a.cols[a.cols.length - 1] + "."));
    box.appendChild(grid(a.window, { inside: a.inside, mark: a.winner, sequential: false }));
    if (a.kind === "maxpool") {
      box.appendChild(CK.el("p", {}, ["The largest value wins (outlined): ", CK.el("b", {}, CK.fmt(a.computed, 7)),
        " at window row " + a.winner[0] + ", column " + a.winner[1] + " (the first maximum, as PyTorch)."]));
    } else {
      box.appendChild(sumTable([["Σ over the window", a.sum], ["÷ " + a.divisor + (a.divisor === 1 ? "" : " (elements counted)"), a.divisor], ["= output", a.computed]]));
    }
    return box;
  }

  function linearBody(a) {
    const box = CK.el("div", {});
    box.appendChild(CK.el("p", {}, "Output " + a.index[a.index.length - 1] + " adds up all " + a.in_features + " inputs, each times its weight, plus a bias. The largest contributions:"));
    const head = CK.el("tr", {}, ["input", a.source_shape ? "from (c, y, x)" : null, "x", "w", "x · w"].filter(Boolean).map(function (h) { return CK.el("th", {}, h); }));
    const rows = a.terms.map(function (t) {
      return CK.el("tr", {}, [CK.el("td", {}, "#" + t.input), a.source_shape ? CK.el("td", {}, "(" + t.source.join(", ") + ")") : null,
        CK.el("td", { class: "num" }, CK.fmt(t.x, 4)), CK.el("td", { class: "num" }, CK.fmt(t.w, 4)), CK.el("td", { class: "num" }, CK.fmt(t.product, 5))].filter(Boolean));
    });
    box.appendChild(CK.el("table", { class: "terms" }, [head].concat(rows)));
    const sums = [["the " + a.terms.length + " inputs above", a.terms.reduce(function (s, t) { return s + t.product; }, 0)]];
    if (a.other_inputs.count) sums.push(["the other " + a.other_inputs.count + " inputs", a.other_inputs.sum]);
    sums.push(["Σ of all products", a.sum]);
    if (a.bias !== null) sums.push(["+ bias", a.bias]);
    sums.push(["= output", a.computed]);
    box.appendChild(sumTable(sums));
    return box;
  }

  function simpleBody(a) {
    const box = CK.el("div", {});
    if (a.formula) box.appendChild(CK.el("p", { class: "formula" }, a.formula));
    if (a.kind === "batchnorm") {
      box.appendChild(sumTable([["x", a.x], ["running mean", a.mean], ["running var", a.var], ["(x − mean) / √(var + " + a.eps + ")", a.x_hat],
        ["× gamma", a.gamma], ["+ beta", a.beta], ["= output", a.computed]]));
    } else if (a.kind === "pointwise") {
      box.appendChild(sumTable([["x (from " + unitName(a.inputs[0]) + ")", a.x], ["= output", a.computed]]));
    } else if (a.kind === "add") {
      box.appendChild(sumTable(a.terms.map(function (t) { return [t.input === null ? "constant" : unitName(t.input), t.value]; }).concat([["= sum", a.computed]])));
    } else if (a.kind === "concat") {
      box.appendChild(CK.el("p", {}, "Copied from " + unitName(a.source) + " at (" + a.source_index.join(", ") + "): its channels start at " + a.offset + " in the concatenation."));
    } else if (a.kind === "reshape") {
      box.appendChild(CK.el("p", {}, "Taken from (" + a.source_index.join(", ") + ") of " + unitName(a.inputs[0]) + "."));
    }
    return box;
  }

  function chain(a) {
    if (!a.after || !a.after.length) return null;
    return CK.el("div", { class: "chain" }, [CK.el("h4", {}, "Then, the same position through the layers that follow")].concat(a.after.map(function (s) {
      return CK.el("p", {}, [CK.el("b", {}, s.name), " (" + s.type + (s.formula ? ": " + s.formula : "") + ") → ", CK.el("b", {}, CK.fmt(s.value, 6))]);
    })));
  }

  /** Outline the receptive field on the input picture and on the layers this neuron reads. */
  function highlight(a, canvas) {
    document.querySelectorAll(".rf-overlay, .pick-overlay").forEach(function (n) { n.remove(); });
    CK.showInputBox(a.input_box);
    if (canvas) {
      const frame = canvas.parentElement;
      const pick = CK.el("div", { class: "pick-overlay" });
      if (a.index.length === 3) {
        const H = canvas.height, W = canvas.width;
        place(pick, [a.index[1], a.index[1], a.index[2], a.index[2]], H, W);
      } else {
        const D = canvas.width;
        pick.style.left = (a.index[0] / D * 100) + "%"; pick.style.width = Math.max(100 / D, 0.6) + "%";
        pick.style.top = "0"; pick.style.height = "100%";
      }
      frame.appendChild(pick);
    }
    const direct = a.inputs || [];
    direct.forEach(function (src) {
      const box = a.boxes[String(src)];
      const row = document.getElementById("row-" + src);
      if (!box || !row) return;
      row.querySelectorAll(".map-frame").forEach(function (frame) {
        const c = frame.querySelector("canvas");
        const img = frame.querySelector("img");
        const H = c ? c.height : Number(img.dataset.h), W = c ? c.width : Number(img.dataset.w);
        const o = CK.el("div", { class: "rf-overlay", title: "the part of this layer that output reads" });
        place(o, box, H, W);
        frame.appendChild(o);
      });
    });
  }
  function place(node, box, H, W) {
    node.style.top = (box[0] / H * 100) + "%";
    node.style.height = ((box[1] - box[0] + 1) / H * 100) + "%";
    node.style.left = (box[2] / W * 100) + "%";
    node.style.width = ((box[3] - box[2] + 1) / W * 100) + "%";
  }
  CK.placeBox = place;

  CK.inspect = async function (unit, index, canvas) {
    const run = CK.state.run;
    const panel = CK.$("#neuron");
    if (!CK.live()) {
      CK.clear(panel).appendChild(CK.el("p", { class: "note" }, "This is a static report: run `cnnkit explore` on the checkpoint to click neurons and see how each number is computed."));
      return;
    }
    let a;
    try {
      a = await CK.api("/api/images/" + run.id + "/neuron/" + unit + "?index=" + index.join(","));
    } catch (e) { CK.fail(e); return; }
    CK.state.neuron = a;
    const where = index.length === 3 ? "channel " + index[0] + " at (y " + index[1] + ", x " + index[2] + ")" : "output " + index[0];
    const body = a.kind === "conv" ? convBody(a) : a.kind === "linear" ? linearBody(a) :
      (a.kind === "maxpool" || a.kind === "avgpool") ? poolBody(a) : simpleBody(a);
    const rf = a.input_box ? "sees input rows " + a.input_box[0] + "…" + a.input_box[1] + ", columns " + a.input_box[2] + "…" + a.input_box[3] +
      " (" + (a.input_box[1] - a.input_box[0] + 1) + "x" + (a.input_box[3] - a.input_box[2] + 1) + " pixels, outlined on the input)" : null;
    CK.clear(panel).appendChild(CK.el("div", { class: "neuron", "data-kind": a.kind }, [
      CK.el("h3", {}, [a.name, CK.el("span", { class: "sub" }, "  " + a.type + " · " + where)]),
      check(a),
      rf ? CK.el("p", { class: "note" }, rf) : null,
      body,
      chain(a),
    ]));
    highlight(a, canvas);
    document.body.dataset.neuronReady = unit + ":" + index.join(",");
  };
})(window.CK);
