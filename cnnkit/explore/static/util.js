/* cnnkit explore: shared helpers (API access, colour scales, DOM, PNG export).
 * Plain JavaScript, no build step: every file attaches to the one global `CK`.
 * In the static report (`cnnkit explore --export`), window.CNNKIT_SNAPSHOT holds the
 * answers of the API routes the report needs, and `CK.api` reads them from there.
 */
"use strict";
window.CK = window.CK || {};
(function (CK) {
  CK.snapshot = window.CNNKIT_SNAPSHOT || null;
  CK.state = { model: null, run: null, k: 8, order: "mean", view: "network", unit: null, neuron: null, target: null };

  /* ------------------------------------------------------------------ events */
  const listeners = {};
  CK.on = function (name, fn) { (listeners[name] = listeners[name] || []).push(fn); };
  CK.emit = function (name, data) { (listeners[name] || []).forEach(function (fn) { fn(data); }); };

  /* ------------------------------------------------------------------ the API */
  CK.api = async function (url, options) {
    if (CK.snapshot) {
      if (Object.prototype.hasOwnProperty.call(CK.snapshot.responses, url)) return CK.snapshot.responses[url];
      throw new Error("this static report does not include " + url + "; run `cnnkit explore` for the live page");
    }
    const response = await fetch(url, options || {});
    let payload = null;
    try { payload = await response.json(); } catch (e) { payload = null; }
    if (!response.ok) {
      const message = payload && payload.error ? payload.error : ("HTTP " + response.status);
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return payload;
  };
  CK.live = function () { return !CK.snapshot; };

  /* ------------------------------------------------------------------ colour scales */
  function decodeHex(hex) {
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
    return out;
  }
  // 256 RGB entries each, sampled from matplotlib's viridis, RdBu_r and inferno.
  const LUT_HEX = {
    viridis: (
      "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769" +
      "48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a" +
      "472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85" +
      "4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b" +
      "3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d" +
      "33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e" +
      "2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e" +
      "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d" +
      "21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88" +
      "1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81" +
      "28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74" +
      "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863" +
      "5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d" +
      "84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32" +
      "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a" +
      "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725"
    ),
    diverging: (
      "05306106326407346708366a09386d0a3b700c3d730d3f760e41790f437b10457e114781124984134c87144e8a15508d" +
      "1752901854931956961a58991b5a9c1c5c9f1d5fa21e61a51f63a82065ab2267ac2369ad246aae266caf276eb02870b1" +
      "2a71b22b73b32c75b42e77b52f79b5307ab6327cb7337eb83480b93681ba3783bb3885bc3a87bd3b88be3c8abe3e8cbf" +
      "3f8ec0408fc14291c24393c34695c44997c54c99c64f9bc7529dc8569fc959a1ca5ca3cb5fa5cd62a7ce65a9cf68abd0" +
      "6bacd16eaed271b0d375b2d478b4d57bb6d67eb8d781bad884bcd987beda8ac0db8dc2dc90c4dd93c6de96c7df98c8e0" +
      "9bc9e09dcbe1a0cce2a2cde3a5cee3a7d0e4a9d1e5acd2e5aed3e6b1d5e7b3d6e8b6d7e8b8d8e9bbdaeabddbeac0dceb" +
      "c2ddecc5dfecc7e0edcae1eecce2efcfe4efd1e5f0d2e6f0d4e6f1d5e7f1d7e8f1d8e9f1dae9f2dbeaf2ddebf2deebf2" +
      "e0ecf3e1edf3e3edf3e4eef4e6eff4e7f0f4e9f0f4eaf1f5ecf2f5edf2f5eff3f5f0f4f6f2f5f6f3f5f6f5f6f7f6f7f7" +
      "f7f6f6f7f5f4f8f4f2f8f3f0f8f2eff8f1edf9f0ebf9efe9f9eee7f9ede5f9ebe3faeae1fae9dffae8defae7dcfbe6da" +
      "fbe5d8fbe4d6fbe3d4fce2d2fce0d0fcdfcffcdecdfdddcbfddcc9fddbc7fdd9c4fcd7c2fcd5bffcd3bcfbd0b9fbceb7" +
      "fbccb4facab1fac8aff9c6acf9c4a9f9c2a7f8bfa4f8bda1f8bb9ef7b99cf7b799f7b596f6b394f6b191f6af8ef5ac8b" +
      "f5aa89f5a886f4a683f3a481f2a17ff19e7df09c7bef9979ee9677ec9374eb9172ea8e70e98b6ee8896ce6866ae58368" +
      "e48066e37e64e27b62e17860df765ede735cdd7059dc6e57db6b55da6853d86551d7634fd6604dd55d4cd35a4ad25849" +
      "d05548cf5246ce4f45cc4c44cb4942c94741c84440c6413ec53e3dc43b3cc2383ac13639bf3338be3036bd2d35bb2a34" +
      "ba2832b82531b72230b61f2eb41c2db3192cb1182bae172aab162aa81529a51429a213289f12289c1127991027960f27" +
      "930e26900d268d0c258a0b25870a248409248108237f08237c07227906227605217304217003206d02206a011f67001f"
    ),
    inferno: (
      "00000401000501010601010802010a02020c02020e03021004031204031405041706041907051b08051d09061f0a0722" +
      "0b07240c08260d08290e092b10092d110a30120a32140b34150b37160b39180c3c190c3e1b0c411c0c431e0c451f0c48" +
      "210c4a230c4c240c4f260c51280b53290b552b0b572d0b592f0a5b310a5c320a5e340a5f3609613809623909633b0964" +
      "3d09653e0966400a67420a68440a68450a69470b6a490b6a4a0c6b4c0c6b4d0d6c4f0d6c510e6c520e6d540f6d550f6d" +
      "57106e59106e5a116e5c126e5d126e5f136e61136e62146e64156e65156e67166e69166e6a176e6c186e6d186e6f196e" +
      "71196e721a6e741a6e751b6e771c6d781c6d7a1d6d7c1d6d7d1e6d7f1e6c801f6c82206c84206b85216b87216b88226a" +
      "8a226a8c23698d23698f24699025689225689326679526679727669827669a28659b29649d29649f2a63a02a63a22b62" +
      "a32c61a52c60a62d60a82e5fa92e5eab2f5ead305dae305cb0315bb1325ab3325ab43359b63458b73557b93556ba3655" +
      "bc3754bd3853bf3952c03a51c13a50c33b4fc43c4ec63d4dc73e4cc83f4bca404acb4149cc4248ce4347cf4446d04545" +
      "d24644d34743d44842d54a41d74b3fd84c3ed94d3dda4e3cdb503bdd513ade5238df5337e05536e15635e25734e35933" +
      "e45a31e55c30e65d2fe75e2ee8602de9612bea632aeb6429eb6628ec6726ed6925ee6a24ef6c23ef6e21f06f20f1711f" +
      "f1731df2741cf3761bf37819f47918f57b17f57d15f67e14f68013f78212f78410f8850ff8870ef8890cf98b0bf98c0a" +
      "f98e09fa9008fa9207fa9407fb9606fb9706fb9906fb9b06fb9d07fc9f07fca108fca309fca50afca60cfca80dfcaa0f" +
      "fcac11fcae12fcb014fcb216fcb418fbb61afbb81dfbba1ffbbc21fbbe23fac026fac228fac42afac62df9c72ff9c932" +
      "f9cb35f8cd37f8cf3af7d13df7d340f6d543f6d746f5d949f5db4cf4dd4ff4df53f4e156f3e35af3e55df2e661f2e865" +
      "f2ea69f1ec6df1ed71f1ef75f1f179f2f27df2f482f3f586f3f68af4f88ef5f992f6fa96f8fb9af9fc9dfafda1fcffa4"
    ),
  };
  CK.luts = {};
  Object.keys(LUT_HEX).forEach(function (k) { CK.luts[k] = decodeHex(LUT_HEX[k]); });
  CK.lutFor = function (scale) { return scale === "diverging" ? CK.luts.diverging : CK.luts.viridis; };

  CK.b64 = function (text) {
    const raw = atob(text);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  };

  /** Draw H x W quantized values (from `data` at `offset`) into `canvas` through a colour table. */
  CK.paint = function (canvas, data, offset, H, W, lut, alpha) {
    canvas.width = W; canvas.height = H;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(W, H);
    const px = image.data;
    for (let i = 0; i < H * W; i++) {
      const v = data[offset + i];
      px[4 * i] = lut[3 * v]; px[4 * i + 1] = lut[3 * v + 1]; px[4 * i + 2] = lut[3 * v + 2];
      px[4 * i + 3] = alpha ? alpha(v) : 255;
    }
    ctx.putImageData(image, 0, 0);
    return canvas;
  };

  /** A colour bar with the layer's range written at both ends (and 0 for a diverging scale). */
  CK.legend = function (lo, hi, scale) {
    const bar = document.createElement("canvas");
    const lut = CK.lutFor(scale);
    const data = new Uint8Array(256);
    for (let i = 0; i < 256; i++) data[i] = i;
    CK.paint(bar, data, 0, 1, 256, lut);
    bar.className = "legend-bar";
    const m = Math.max(Math.abs(lo), Math.abs(hi));
    const left = scale === "diverging" ? -m : lo;
    const right = scale === "diverging" ? m : hi;
    const box = CK.el("span", { class: "legend", title: "one colour scale for the whole layer" }, [
      CK.el("span", { class: "legend-lo" }, CK.fmt(left)), bar, CK.el("span", { class: "legend-hi" }, CK.fmt(right)),
    ]);
    if (scale === "diverging") box.appendChild(CK.el("span", { class: "legend-note" }, "0 = white"));
    return box;
  };

  /* ------------------------------------------------------------------ DOM */
  CK.el = function (tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function ([k, v]) {
      if (v === null || v === undefined || v === false) return;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "style") node.style.cssText = v;   // CSSOM: allowed by the page's style-src 'self
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    });
    CK.append(node, children);
    return node;
  };
  CK.append = function (node, children) {
    if (children === null || children === undefined) return node;
    (Array.isArray(children) ? children : [children]).forEach(function (c) {
      if (c === null || c === undefined || c === false) return;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    });
    return node;
  };
  const SVGNS = "http://www.w3.org/2000/svg";
  CK.svg = function (tag, attrs, children) {
    const node = document.createElementNS(SVGNS, tag);
    Object.entries(attrs || {}).forEach(function ([k, v]) {
      if (v === null || v === undefined) return;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  };
  CK.clear = function (node) { while (node.firstChild) node.removeChild(node.firstChild); return node; };
  CK.$ = function (selector, root) { return (root || document).querySelector(selector); };

  /* ------------------------------------------------------------------ numbers */
  CK.fmt = function (x, digits) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    if (!isFinite(x)) return String(x);
    const d = digits || 4;
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(d - 1);
    return String(Number(x.toPrecision(d)));
  };
  CK.int = function (n) { return Number(n).toLocaleString("en-US"); };
  CK.si = function (n) {
    const units = [["G", 1e9], ["M", 1e6], ["K", 1e3]];
    for (const [u, s] of units) if (Math.abs(n) >= s) return (n / s).toFixed(2) + " " + u;
    return String(n);
  };
  CK.shape = function (shape) { return "(" + shape.join(", ") + ")"; };

  /* ------------------------------------------------------------------ messages */
  CK.toast = function (message, kind) {
    const box = CK.$("#messages");
    if (!box) return;
    const note = CK.el("div", { class: "message " + (kind || "error"), role: kind === "info" ? "status" : "alert" }, [
      CK.el("span", {}, message),
      CK.el("button", { class: "close", title: "dismiss", onclick: function () { note.remove(); } }, "×"),
    ]);
    box.appendChild(note);
    if (kind === "info") setTimeout(function () { note.remove(); }, 4000);
  };
  CK.fail = function (error) { CK.toast(error && error.message ? error.message : String(error), "error"); };

  /* ------------------------------------------------------------------ PNG export */
  function svgImage(svg) {
    const copy = svg.cloneNode(true);
    const rect = svg.getBoundingClientRect();
    copy.setAttribute("width", rect.width);
    copy.setAttribute("height", rect.height);
    copy.setAttribute("xmlns", SVGNS);
    inlineStyles(svg, copy);
    const text = new XMLSerializer().serializeToString(copy);
    return new Promise(function (resolve, reject) {
      const img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error("could not rasterize a drawing")); };
      img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(text);
    });
  }
  function inlineStyles(source, target) {
    const props = ["fill", "stroke", "stroke-width", "stroke-dasharray", "font-size", "font-family", "font-weight",
      "opacity", "fill-opacity", "stroke-opacity", "text-anchor", "dominant-baseline"];
    const s = source.querySelectorAll("*"), t = target.querySelectorAll("*");
    for (let i = 0; i < s.length; i++) {
      const cs = getComputedStyle(s[i]);
      props.forEach(function (p) { t[i].style.setProperty(p, cs.getPropertyValue(p)); });
    }
  }
  /** Rasterize an element of the page (its backgrounds, text, canvases and drawings) to a PNG download. */
  CK.exportPNG = async function (root, filename) {
    const base = root.getBoundingClientRect();
    const scale = 2;
    const width = Math.ceil(Math.max(root.scrollWidth, base.width)), height = Math.ceil(Math.max(root.scrollHeight, base.height));
    const canvas = document.createElement("canvas");
    canvas.width = width * scale; canvas.height = height * scale;
    const ctx = canvas.getContext("2d");
    ctx.scale(scale, scale);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, height);
    const jobs = [];
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
    let node = walker.currentNode;
    while (node) {
      if (node.nodeType === Node.ELEMENT_NODE) {
        const cs = getComputedStyle(node);
        if (cs.display === "none" || cs.visibility === "hidden") { node = skip(walker); continue; }
        const r = node.getBoundingClientRect();
        const x = r.left - base.left, y = r.top - base.top;
        const bg = cs.backgroundColor;
        if (bg && bg !== "rgba(0, 0, 0, 0)" && bg !== "transparent") jobs.push({ kind: "rect", x: x, y: y, w: r.width, h: r.height, color: bg });
        const bw = parseFloat(cs.borderTopWidth);
        if (bw > 0 && cs.borderTopStyle !== "none") jobs.push({ kind: "stroke", x: x, y: y, w: r.width, h: r.height, color: cs.borderTopColor, width: bw });
        if (node.tagName === "CANVAS") jobs.push({ kind: "canvas", node: node, x: x, y: y, w: r.width, h: r.height, smooth: cs.imageRendering !== "pixelated" });
        else if (node.tagName === "IMG") jobs.push({ kind: "canvas", node: node, x: x, y: y, w: r.width, h: r.height, smooth: true });
        else if (node.tagName.toLowerCase() === "svg") { jobs.push({ kind: "svg", node: node, x: x, y: y, w: r.width, h: r.height }); node = skip(walker); continue; }
      } else if (node.nodeType === Node.TEXT_NODE && node.textContent.trim()) {
        const parent = node.parentElement;
        const cs = getComputedStyle(parent);
        const range = document.createRange();
        range.selectNodeContents(node);
        const rects = range.getClientRects();
        if (rects.length) {
          const r = rects[0];
          jobs.push({ kind: "text", text: node.textContent.replace(/\s+/g, " ").trim(), x: r.left - base.left, y: r.top - base.top, h: r.height,
            font: cs.fontStyle + " " + cs.fontWeight + " " + cs.fontSize + " " + cs.fontFamily, color: cs.color, maxw: rects.length === 1 ? r.width + 4 : undefined });
        }
      }
      node = walker.nextNode();
    }
    for (const job of jobs) {
      if (job.kind === "rect") { ctx.fillStyle = job.color; ctx.fillRect(job.x, job.y, job.w, job.h); }
      else if (job.kind === "stroke") { ctx.strokeStyle = job.color; ctx.lineWidth = job.width; ctx.strokeRect(job.x, job.y, job.w, job.h); }
      else if (job.kind === "canvas") { ctx.imageSmoothingEnabled = job.smooth; ctx.drawImage(job.node, job.x, job.y, job.w, job.h); }
      else if (job.kind === "svg") { ctx.drawImage(await svgImage(job.node), job.x, job.y, job.w, job.h); }
      else if (job.kind === "text") { ctx.font = job.font; ctx.fillStyle = job.color; ctx.textBaseline = "middle"; ctx.fillText(job.text, job.x, job.y + job.h / 2, job.maxw); }
    }
    const blob = await new Promise(function (resolve) { canvas.toBlob(resolve, "image/png"); });
    const link = CK.el("a", { href: URL.createObjectURL(blob), download: filename });
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
    return blob;
  };
  function skip(walker) {
    let n = walker.currentNode;
    while (n) {
      const next = walker.nextSibling();
      if (next) return next;
      n = walker.parentNode();
      if (!n) return null;
    }
    return null;
  }

  /** A link that downloads a file from the server (hidden in the static report). */
  CK.download = function (href, label, title) {
    if (!CK.live()) return null;
    return CK.el("a", { class: "download", href: href, download: "", title: title || "download as a NumPy .npy file" }, label || ".npy");
  };
})(window.CK);
