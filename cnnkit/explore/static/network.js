/* The network at a glance: every layer call as a node, residual additions and
 * concatenations as merge nodes, edges following the data (an SVG drawing), and the
 * selected layer's numbers: output shape, parameters, MACs, (W - F + 2P)/S + 1.
 */
"use strict";
(function (CK) {
  const NODE_W = 250, NODE_H = 42, GAP_X = 36, GAP_Y = 22, MERGE_R = 15, MARGIN = 16;

  /** An addition or concatenation joining paths: an op outside any layer, or a node (ONNX) reading two or more. */
  function isMerge(u) {
    return (u.type === "Add" || u.type === "Concat") && (u.kind === "op" || u.inputs.length >= 2);
  }

  function family(u) {
    if (isMerge(u) && u.type === "Add") return "add";
    if (isMerge(u)) return "concat";
    if (u.kind === "input") return "input";
    if (/Conv/.test(u.type)) return "conv";
    if (/Pool/.test(u.type)) return "pool";
    if (/Norm/.test(u.type)) return "norm";
    if (/ReLU|ELU|Sigmoid|Tanh|Softmax/.test(u.type)) return "act";
    if (/Linear/.test(u.type)) return "linear";
    if (u.kind === "identity") return "identity";
    return "other";
  }
  CK.family = family;

  /** Ranks by longest path from the input; within a rank, order by the mean column of the inputs. */
  function layout(units) {
    const rank = { "-1": 0 };
    units.forEach(function (u) {
      rank[u.index] = 1 + Math.max.apply(null, u.inputs.length ? u.inputs.map(function (i) { return rank[i]; }) : [0]);
    });
    const byRank = [[-1]];
    units.forEach(function (u) { (byRank[rank[u.index]] = byRank[rank[u.index]] || []).push(u.index); });
    const col = { "-1": 0 };
    const unitOf = {};
    units.forEach(function (u) { unitOf[u.index] = u; });
    for (let r = 1; r < byRank.length; r++) {
      const row = byRank[r] || [];
      const keyed = row.map(function (i) {
        const ins = unitOf[i].inputs;
        const mean = ins.length ? ins.reduce(function (s, k) { return s + col[k]; }, 0) / ins.length : 0;
        return { i: i, mean: mean };
      });
      keyed.sort(function (a, b) { return a.mean - b.mean || a.i - b.i; });
      // Place at the nearest free column to the inputs' mean (keeps chains straight).
      const taken = new Set();
      keyed.forEach(function (k) {
        const u = unitOf[k.i];
        const merge = isMerge(u);
        // a merge stays on its first input's column (the main path); others near their inputs' mean
        let c = merge && u.inputs.length ? col[u.inputs[0]] : Math.max(0, Math.round(k.mean - 0.01));
        while (taken.has(c)) c++;
        taken.add(c);
        col[k.i] = c;
      });
      byRank[r] = row;
    }
    const columns = 1 + Math.max.apply(null, Object.values(col));
    return { rank: rank, col: col, ranks: byRank.length, columns: columns };
  }

  CK.drawNetwork = function (overview) {
    const units = overview.units;
    const L = layout(units);
    const width = MARGIN * 2 + L.columns * (NODE_W + GAP_X) + NODE_W * 0.6;
    const height = MARGIN * 2 + L.ranks * (NODE_H + GAP_Y);
    const svg = CK.svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, class: "network", role: "img",
      "aria-label": "the layers of the network and how data flows between them" });
    const pos = function (i) {
      return { x: MARGIN + L.col[i] * (NODE_W + GAP_X) + NODE_W / 2, y: MARGIN + L.rank[i] * (NODE_H + GAP_Y) + NODE_H / 2 };
    };
    const edges = CK.svg("g", { class: "edges" });
    const nodes = CK.svg("g", { class: "nodes" });
    svg.appendChild(edges); svg.appendChild(nodes);
    const isMerge = function (u) { const f = family(u); return f === "add" || f === "concat"; };
    const unitOf = {};
    units.forEach(function (u) { unitOf[u.index] = u; });
    const half = function (i) { return i >= 0 && isMerge(unitOf[i]) ? MERGE_R : NODE_H / 2; };
    units.forEach(function (u) {
      u.inputs.forEach(function (src) {
        const a = pos(src), b = pos(u.index);
        const y0 = a.y + half(src), y1 = b.y - half(u.index);
        let d;
        const long = L.rank[u.index] - L.rank[src] > 1;
        if (long) {                                     // an edge past other layers: bulge to the right
          const off = NODE_W * 0.85;
          d = "M" + a.x + "," + y0 + " C" + (a.x + off) + "," + (y0 + 30) + " " + (b.x + off) + "," + (y1 - 30) + " " + b.x + "," + y1;
        } else {
          const my = (y0 + y1) / 2;
          d = "M" + a.x + "," + y0 + " C" + a.x + "," + my + " " + b.x + "," + my + " " + b.x + "," + y1;
        }
        // a residual connection (into an addition) in colour; other long edges (branches of unequal depth) in grey
        const cls = long ? (family(u) === "add" ? " skip" : " long") : "";
        edges.appendChild(CK.svg("path", { d: d, class: "edge" + cls, "marker-end": "url(#arrow)" }));
      });
    });
    const defs = CK.svg("defs", {}, [CK.svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "6", markerHeight: "6", orient: "auto-start-reverse" },
      [CK.svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" })])]);
    svg.insertBefore(defs, edges);

    const inputNode = { index: -1, name: "input", type: "Input", kind: "input", shape: overview.input_shape, inputs: [] };
    [inputNode].concat(units).forEach(function (u) {
      const p = pos(u.index);
      const f = family(u);
      const g = CK.svg("g", { class: "node " + f, "data-unit": u.index, tabindex: "0", role: "button",
        "aria-label": u.name + " " + u.type + " " + CK.shape(u.shape) });
      const title = CK.svg("title", { text: u.name + "\n" + u.type + "  " + CK.shape(u.shape) +
        (u.macs ? "\n" + CK.int(u.macs) + " MACs" : "") });
      g.appendChild(title);
      if (isMerge(u)) {
        g.appendChild(CK.svg("circle", { cx: p.x, cy: p.y, r: MERGE_R, class: "shape" }));
        g.appendChild(CK.svg("text", { x: p.x, y: p.y + 1, class: "merge-sign", "text-anchor": "middle", "dominant-baseline": "middle",
          text: f === "add" ? "+" : "‖" }));
        // the label sits left of the circle: skip connections arrive from the right
        g.appendChild(CK.svg("text", { x: p.x - MERGE_R - 8, y: p.y - 4, class: "label", "text-anchor": "end",
          text: f === "add" ? "add" : "concat ×" + u.inputs.length }));
        g.appendChild(CK.svg("text", { x: p.x - MERGE_R - 8, y: p.y + 11, class: "sub", "text-anchor": "end", text: CK.shape(u.shape) }));
      } else {
        g.appendChild(CK.svg("rect", { x: p.x - NODE_W / 2, y: p.y - NODE_H / 2, width: NODE_W, height: NODE_H, rx: 7, class: "shape" }));
        // MACs per layer, right-aligned on the name's line (the name is shortened to leave room)
        const macs = u.macs ? CK.si(u.macs).replace(/\.?0+ /, " ") + " MACs" : "";
        const room = macs ? 34 - Math.ceil(macs.length * 0.85) - 2 : 34;
        const name = u.name.length > room ? "…" + u.name.slice(-(room - 1)) : u.name;
        g.appendChild(CK.svg("text", { x: p.x - NODE_W / 2 + 9, y: p.y - 6, class: "label", text: name }));
        if (macs) g.appendChild(CK.svg("text", { x: p.x + NODE_W / 2 - 8, y: p.y - 6, class: "sub macs", "text-anchor": "end", text: macs }));
        const extra = u.params ? "  ·  " + CK.si(u.params) + " params" : "";
        g.appendChild(CK.svg("text", { x: p.x - NODE_W / 2 + 9, y: p.y + 11, class: "sub",
          text: u.type + "  " + CK.shape(u.shape) + extra }));
      }
      g.addEventListener("click", function () { CK.selectLayer(u.index); });
      g.addEventListener("keydown", function (e) { if (e.key === "Enter") CK.selectLayer(u.index); });
      nodes.appendChild(g);
    });
    return svg;
  };

  CK.layerDetail = function (index) {
    const overview = CK.state.model.overview;
    const box = CK.el("div", {});
    if (index === -1) {
      box.appendChild(CK.el("h3", {}, "input"));
      box.appendChild(CK.el("p", {}, "shape " + CK.shape(overview.input_shape) + " (C, H, W), normalized with mean " +
        JSON.stringify(CK.state.model.mean) + " and std " + JSON.stringify(CK.state.model.std)));
      return box;
    }
    const u = overview.units[index];
    const names = function (list) {
      return list.map(function (i) { return i === -1 ? "input" : overview.units[i].name; }).join(", ");
    };
    box.appendChild(CK.el("h3", {}, u.name));
    const rows = [
      ["type", u.type + (u.kind === "op" ? " (an op outside any layer, run in " + (u.path || "the model's") + " forward)" : "")],
      u.module ? ["layer", CK.el("code", {}, u.module)] : null,
      ["reads", names(u.inputs) || "–"],
      ["output shape", CK.shape(u.shape) + "  (without the batch axis)"],
      ["parameters", u.shared ? "shared with its first call" : CK.int(u.params)],
      ["MACs", CK.int(u.macs) + (u.macs ? "  (" + CK.si(u.macs) + " multiply-accumulates)" : "  (not counted for this type)")],
      u.arithmetic ? ["output size", CK.el("code", { class: "arith" }, u.arithmetic.split("; ").join("\n"))] : null,
      u.receptive_field ? ["receptive field", u.receptive_field.join(" x ") + " input pixels, jump " + u.jump.join(" x ")] : null,
      u.kind === "identity" ? ["note", "this layer ran no operation: in eval mode it returns its input"] : null,
    ];
    box.appendChild(CK.el("table", { class: "kv" }, rows.filter(Boolean).map(function (r) {
      return CK.el("tr", {}, [CK.el("th", {}, r[0]), CK.el("td", {}, r[1])]);
    })));
    const consumers = overview.units.filter(function (v) { return v.inputs.indexOf(index) >= 0; }).map(function (v) { return v.index; });
    if (consumers.length) box.appendChild(CK.el("p", { class: "note" }, "feeds: " + names(consumers)));
    if (CK.state.run) {
      box.appendChild(CK.el("button", { class: "secondary", onclick: function () { CK.showView("flow"); CK.scrollToUnit(index); } },
        "Show this layer in the image flow"));
    }
    return box;
  };

  CK.selectLayer = function (index) {
    CK.state.unit = index;
    document.querySelectorAll("#network-graph .node.selected").forEach(function (n) { n.classList.remove("selected"); });
    const node = document.querySelector('#network-graph .node[data-unit="' + index + '"]');
    if (node) node.classList.add("selected");
    CK.clear(CK.$("#network-detail")).appendChild(CK.layerDetail(index));
  };

  CK.renderNetwork = function () {
    const overview = CK.state.model.overview;
    const convs = overview.units.filter(function (u) { return family(u) === "conv"; }).length;
    const merges = overview.units.filter(function (u) { return family(u) === "add" || family(u) === "concat"; }).length;
    CK.clear(CK.$("#network-totals")).appendChild(CK.el("span", {}, [
      CK.el("b", {}, overview.units.length + " layer calls"), " (" + convs + " convolutions, " + merges + " merges)  ·  ",
      CK.el("b", {}, CK.int(overview.total_params)), " parameters  ·  ",
      CK.el("b", {}, CK.si(overview.total_macs) + "MACs"), " for one " + CK.shape(overview.input_shape) + " image  ·  output " + CK.shape(overview.output_shape),
    ]));
    CK.clear(CK.$("#network-graph")).appendChild(CK.drawNetwork(overview));
    CK.$("#summary-table").textContent = CK.state.model.summary_table;
    CK.selectLayer(overview.units.length ? 0 : -1);
  };
})(window.CK);
