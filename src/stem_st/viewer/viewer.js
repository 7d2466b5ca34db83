// Stem-ST viewer: one offline page; the data sits in <script id="stem-data" type="application/json">.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("stem-data").textContent);
  const SVGNS = "http://www.w3.org/2000/svg";
  const n = D.spots.ids.length, g = D.genes.length;

  function decode(b64) {  // float32 little-endian, genes × spots
    const bin = atob(b64), buf = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) buf[i] = bin.charCodeAt(i);
    return new Float32Array(buf.buffer);
  }
  const layers = {}, spotLayers = {};
  for (const k of Object.keys(D.layers)) layers[k] = decode(D.layers[k]);
  for (const k of Object.keys(D.spot_layers || {})) spotLayers[k] = decode(D.spot_layers[k]);
  // a per-spot layer (the shift score) is the same for every gene
  const value = (layer, gi, si) => (layer in spotLayers ? spotLayers[layer][si] : layers[layer][gi * n + si]);

  // --- the picture: H&E, spots at their physical diameter, pan and zoom ---------------------
  const svg = document.getElementById("map");
  const W = D.image.width, H = D.image.height;
  let view = {x: 0, y: 0, w: W, h: H};
  const setView = () => svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
  setView();
  if (D.image.href) {
    const img = document.createElementNS(SVGNS, "image");
    img.setAttribute("href", D.image.href);
    img.setAttribute("width", W); img.setAttribute("height", H);
    svg.appendChild(img);
  }
  const group = document.createElementNS(SVGNS, "g");
  svg.appendChild(group);
  const circles = [];
  for (let i = 0; i < n; i++) {
    const c = document.createElementNS(SVGNS, "circle");
    c.setAttribute("cx", D.spots.x[i]); c.setAttribute("cy", D.spots.y[i]);
    c.setAttribute("r", D.spots.radius); c.setAttribute("data-i", i);
    c.setAttribute("data-id", D.spots.ids[i]);
    group.appendChild(c); circles.push(c);
  }
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect(), f = e.deltaY > 0 ? 1.2 : 1 / 1.2;
    const px = view.x + (e.clientX - r.left) / r.width * view.w, py = view.y + (e.clientY - r.top) / r.height * view.h;
    view = {x: px - (px - view.x) * f, y: py - (py - view.y) * f, w: view.w * f, h: view.h * f};
    setView();
  }, {passive: false});
  let drag = null;
  svg.addEventListener("mousedown", (e) => { drag = {x: e.clientX, y: e.clientY, v: {...view}}; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const r = svg.getBoundingClientRect();
    view.x = drag.v.x - (e.clientX - drag.x) / r.width * view.w;
    view.y = drag.v.y - (e.clientY - drag.y) / r.height * view.h;
    setView();
  });
  document.getElementById("reset").addEventListener("click", () => { view = {x: 0, y: 0, w: W, h: H}; setView(); });

  // --- colour: one scale for truth and prediction, its own for std, a diverging one for error -
  const lut = (name) => D.colormaps[name];
  function colour(name, v, lo, hi) {
    const t = hi > lo ? Math.min(1, Math.max(0, (v - lo) / (hi - lo))) : 0.5;
    const table = lut(name);
    return table[Math.min(table.length - 1, Math.floor(t * table.length))];
  }
  function scale(layer, gi) {
    if (layer in spotLayers) return {lo: D.spot_scales[layer][0], hi: D.spot_scales[layer][1], cmap: "sequential"};
    const s = D.scales[layer === "error" ? "error" : layer === "std" ? "std" : "expression"][gi];
    return {lo: s[0], hi: s[1], cmap: layer === "error" ? "diverging" : "sequential"};
  }

  // --- controls -----------------------------------------------------------------------------
  const geneBox = document.getElementById("gene"), list = document.getElementById("genes");
  for (const name of D.genes) { const o = document.createElement("option"); o.value = name; list.appendChild(o); }
  const layerBox = document.getElementById("layer");
  for (const k of D.layer_order) {
    const o = document.createElement("option"); o.value = k; o.textContent = D.layer_names[k]; layerBox.appendChild(o);
  }
  const state = {gene: D.genes.indexOf(D.default_gene), layer: D.layer_order[0]};

  function draw() {
    const s = scale(state.layer, state.gene);
    for (let i = 0; i < n; i++) circles[i].setAttribute("fill", colour(s.cmap, value(state.layer, state.gene, i), s.lo, s.hi));
    const legend = document.getElementById("legend");
    legend.dataset.lo = s.lo; legend.dataset.hi = s.hi; legend.dataset.cmap = s.cmap;
    legend.dataset.gene = D.genes[state.gene]; legend.dataset.layer = state.layer;
    document.getElementById("bar").style.background =
      `linear-gradient(to right, ${lut(s.cmap).filter((_, k) => k % 16 === 0).join(",")})`;
    document.getElementById("lo").textContent = s.lo.toFixed(2);
    document.getElementById("hi").textContent = s.hi.toFixed(2);
    document.getElementById("title").textContent = state.layer in spotLayers ? D.layer_names[state.layer] :
      `${D.genes[state.gene]} — ${D.layer_names[state.layer]} (${D.units})`;
  }
  function pickGene() {
    const gi = D.genes.indexOf(geneBox.value.trim());
    if (gi >= 0 && gi !== state.gene) { state.gene = gi; draw(); }
    geneBox.classList.toggle("unknown", gi < 0 && geneBox.value.trim() !== "");
  }
  geneBox.addEventListener("input", pickGene);
  geneBox.addEventListener("change", pickGene);
  layerBox.addEventListener("change", () => { state.layer = layerBox.value; draw(); });

  // --- hover: spot id, coordinates, every layer's value of the current gene ------------------
  const tip = document.getElementById("tip");
  group.addEventListener("mousemove", (e) => {
    const i = e.target.getAttribute && e.target.getAttribute("data-i");
    if (i === null || i === undefined) return;
    const k = +i, rows = D.layer_order.map((l) => `<tr><td>${D.layer_names[l]}</td><td class="v" data-layer="${l}">` +
      `${value(l, state.gene, k).toFixed(3)}</td></tr>`).join("");
    tip.innerHTML = `<b data-id="${D.spots.ids[k]}">${D.spots.ids[k]}</b> · x ${D.spots.fullres_x[k].toFixed(0)}, ` +
      `y ${D.spots.fullres_y[k].toFixed(0)} px<br>${D.genes[state.gene]}<table>${rows}</table>`;
    tip.style.left = (e.pageX + 14) + "px"; tip.style.top = (e.pageY + 14) + "px"; tip.hidden = false;
  });
  group.addEventListener("mouseleave", () => { tip.hidden = true; });

  geneBox.value = D.default_gene;
  draw();
  document.body.dataset.ready = "1";
})();
