// spade-anime studio: paint a rough on a canvas, the server turns it into a face.
//
// The rough canvas holds exactly the model's size; every tool writes whole pixels into its
// ImageData (a hard-edged brush, an exact-colour fill), so only chosen colours ever appear.
// Faces: at most one request in flight; while it runs, later changes only mark the canvas as
// wanted, and the newest canvas is sent when it returns. Page state for tests and tools lives in
// data attributes on <body>: want/shown (face requests), busy, canvas-version, tool, error,
// region (the selected blob's point), regions (how many have a style of their own).
//
// Regions: the Region tool selects the blob (one colour, 4-connected) under the pointer; a blob
// restyled (a seed or a z of its own) is sent as its point, and the server finds the blob under
// that point in each rough it gets, so the style follows the blob as it is repainted. Region
// styles are part of the document: undo and redo take them back with the pixels.

const state = document.body.dataset;
const $ = (id) => document.getElementById(id);

const rough = $("rough");
const roughCtx = rough.getContext("2d", { willReadFrequently: true });
const face = $("face");
const faceCtx = face.getContext("2d");
const overlay = $("overlay");
const overlayCtx = overlay.getContext("2d");

let info = null;
let size = 64;
let pixels = null; // ImageData of the rough: the document being painted
let colour = [0, 0, 0];
let background = [255, 255, 255];
let tool = "brush";
let lastPaintTool = "brush";
let seed = 0;
let styleZ = null; // z of a reference picture, or null for the seed's own style
let regions = []; // [{x, y, seed} | {x, y, z}]: blobs with a style of their own (never mutated)
let selected = null; // {x, y}: a point of the blob the Region tool selected
let stripOf = null; // the strip shown: {point (its region, or null), seed, seedTo, k}
const undoStack = []; // documents: {pixels, regions}
const redoStack = [];
const THROTTLE_MS = 120; // face requests while a stroke is still being drawn
const SPINNER_MS = 1000;

// ------------------------------------------------------------------------------ helpers

const hex = (rgb) => "#" + rgb.map((v) => v.toString(16).padStart(2, "0")).join("");
const fromHex = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
const sameRgb = (a, b) => a[0] === b[0] && a[1] === b[1] && a[2] === b[2];

function showMessage(text, isError = false) {
  const el = $("message");
  el.textContent = text;
  el.classList.toggle("error", isError);
  state.error = isError ? text : "";
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body.error || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function fetchOk(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch {
    throw new Error("cannot reach the studio's server: is `spade studio` still running?");
  }
  if (!response.ok) throw new Error(await errorOf(response));
  return response;
}

async function blobToImageData(blob) {
  const bitmap = await createImageBitmap(blob, {
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
}

function download(canvas, name) {
  canvas.toBlob((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, "image/png");
}

function timings(response) {
  const out = {};
  for (const part of (response.headers.get("Server-Timing") || "").split(",")) {
    const m = part.trim().match(/^(\w+);dur=([\d.]+)/);
    if (m) out[m[1]] = parseFloat(m[2]);
  }
  return out;
}

// ------------------------------------------------------------------------------ the document

function commit() {
  roughCtx.putImageData(pixels, 0, 0);
  state.canvasVersion = String(Number(state.canvasVersion) + 1);
  drawOverlay(); // the selected blob may have changed shape
}

const copyPixels = () => new ImageData(new Uint8ClampedArray(pixels.data), size, size);

function remember(doc) {
  undoStack.push(doc);
  const limit = Math.max(20, Math.floor((32 << 20) / pixels.data.length));
  if (undoStack.length > limit) undoStack.shift();
  redoStack.length = 0;
  updateHistoryButtons();
}

function snapshot() {
  remember({ pixels: copyPixels(), regions });
}

function restore(from, to) {
  if (!from.length) return;
  to.push({ pixels, regions });
  ({ pixels, regions } = from.pop());
  commit();
  updateRegionControls();
  updateHistoryButtons();
  wantFace();
}

const undo = () => restore(undoStack, redoStack);
const redo = () => restore(redoStack, undoStack);

function updateHistoryButtons() {
  $("undo").disabled = !undoStack.length;
  $("redo").disabled = !redoStack.length;
}

function replaceDocument(imageData) {
  snapshot();
  pixels = imageData;
  commit();
  setBackground(pixelAt(0, 0));
  wantFace();
}

// The blob under (x, y): a mask of the 4-connected pixels of exactly its colour (the server's
// spade.regions.region_at).
function blobMask(x, y) {
  const mask = new Uint8Array(size * size);
  const data = pixels.data;
  const t = (y * size + x) * 4;
  const same = (p) =>
    data[p * 4] === data[t] && data[p * 4 + 1] === data[t + 1] && data[p * 4 + 2] === data[t + 2];
  const stack = [y * size + x];
  while (stack.length) {
    const p = stack.pop();
    if (mask[p] || !same(p)) continue;
    mask[p] = 1;
    const px = p % size;
    if (px > 0) stack.push(p - 1);
    if (px < size - 1) stack.push(p + 1);
    if (p >= size) stack.push(p - size);
    if (p < size * (size - 1)) stack.push(p + size);
  }
  return mask;
}

const sameBlob = (a, b) => blobMask(a.x, a.y)[b.y * size + b.x] === 1;

function pixelAt(x, y) {
  const i = (y * size + x) * 4;
  return [pixels.data[i], pixels.data[i + 1], pixels.data[i + 2]];
}

function setPixel(x, y, rgb) {
  if (x < 0 || y < 0 || x >= size || y >= size) return;
  const i = (y * size + x) * 4;
  pixels.data[i] = rgb[0];
  pixels.data[i + 1] = rgb[1];
  pixels.data[i + 2] = rgb[2];
  pixels.data[i + 3] = 255;
}

// A disc of diameter d around (x, y) in canvas pixels: every pixel whose centre lies inside,
// and always the pixel under the point itself (so a 1 px brush paints).
function stamp(x, y, d, rgb) {
  const r = d / 2;
  for (let py = Math.floor(y - r); py <= Math.ceil(y + r); py++) {
    for (let px = Math.floor(x - r); px <= Math.ceil(x + r); px++) {
      const dx = px + 0.5 - x;
      const dy = py + 0.5 - y;
      if (dx * dx + dy * dy <= r * r) setPixel(px, py, rgb);
    }
  }
  setPixel(Math.floor(x), Math.floor(y), rgb);
}

function line(from, to, d, rgb) {
  const steps = Math.max(1, Math.ceil(Math.hypot(to.x - from.x, to.y - from.y) * 2));
  for (let s = 1; s <= steps; s++) {
    const t = s / steps;
    stamp(from.x + (to.x - from.x) * t, from.y + (to.y - from.y) * t, d, rgb);
  }
}

// Exact-colour, 4-connected flood fill: the blob under (x, y) takes the colour.
function fill(x, y, rgb) {
  if (sameRgb(pixelAt(x, y), rgb)) return false;
  const mask = blobMask(x, y);
  for (let p = 0; p < mask.length; p++) {
    if (mask[p]) setPixel(p % size, Math.floor(p / size), rgb);
  }
  return true;
}

// ------------------------------------------------------------------------------ faces

let inFlight = false;
let requested = false;
let spinnerTimer = 0;
// This page's id: the server keeps its last face and redraws only what a stroke changed.
const PAGE = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) =>
  b.toString(16).padStart(2, "0"),
).join("");

// Something that changes the face happened: the newest state is sent as soon as possible.
function wantFace() {
  state.want = String(Number(state.want) + 1);
  requested = true;
  pump();
}

async function pump() {
  if (inFlight || !requested || !pixels) return;
  requested = false;
  inFlight = true;
  state.busy = "1";
  const version = state.want;
  const body = JSON.stringify({
    rough: rough.toDataURL("image/png"),
    seed,
    z: styleZ,
    regions,
    page: PAGE,
  });
  const sentSeed = seed;
  const started = performance.now();
  spinnerTimer = setTimeout(() => ($("spinner").hidden = false), SPINNER_MS);
  try {
    const response = await fetchOk("/api/face", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
    const image = await blobToImageData(await response.blob());
    faceCtx.putImageData(image, 0, 0);
    showLatency(performance.now() - started, timings(response), response.headers.get("X-Redraw"));
    state.faceSeed = String(sentSeed);
    if (state.error) showMessage("");
  } catch (err) {
    showMessage(err.message, true);
  } finally {
    clearTimeout(spinnerTimer);
    $("spinner").hidden = true;
    state.shown = version;
    inFlight = false;
    state.busy = requested ? "1" : "0";
    pump();
  }
}

function showLatency(roundTrip, server, redraw) {
  const parts = [`face in ${Math.round(roundTrip)} ms`];
  if (server.total !== undefined) parts.push(`server ${Math.round(server.total)} ms`);
  if (server.infer !== undefined) parts.push(`model ${Math.round(server.infer)} ms`);
  const recomputed = /^incremental;.*recomputed=([\d.]+)/.exec(redraw || "");
  if (recomputed) parts.push(`redrew ${Math.round(Number(recomputed[1]) * 100)}%`);
  $("latency").textContent = parts.join(" · ");
  state.latencyMs = String(Math.round(roundTrip));
}

// A strip of the whole face (the restyled regions keep their styles) or, with `point`, of that
// region alone (the rest of the face keeps its styles).
async function makeStrip(point = null) {
  const k = Number($("frames").value);
  const seedTo = Number($("seed-to").value);
  const button = $(point ? "region-strip" : "strip-button");
  const what = point ? " in the region" : "";
  const request = { rough: rough.toDataURL("image/png"), seed, seed_to: seedTo, k, regions };
  if (point) Object.assign(request, { region: point, z: styleZ });
  button.disabled = true;
  showMessage(`computing ${k} faces from seed ${seed} to seed ${seedTo}${what}…`);
  try {
    const response = await fetchOk("/api/strip", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    const image = await blobToImageData(await response.blob());
    const strip = $("strip");
    strip.width = image.width;
    strip.height = image.height;
    strip.style.maxWidth = `${k * 8}rem`; // frames 8rem tall at most
    strip.getContext("2d").putImageData(image, 0, 0);
    strip.hidden = false;
    stripOf = { point, seed, seedTo, k };
    state.stripKind = point ? "region" : "face";
    state.stripVersion = String(Number(state.stripVersion) + 1);
    const pick = point ? ": click one to give the region its style" : "";
    showMessage(`${k} faces from seed ${seed} to seed ${seedTo}${what}${pick}`);
  } catch (err) {
    showMessage(err.message, true);
  } finally {
    button.disabled = false;
    updateRegionControls();
  }
}

// A click on a region strip gives its region the style of the face clicked.
async function adoptStripFace(event) {
  if (!stripOf || !stripOf.point) return;
  const { point, seed: from, seedTo, k } = stripOf;
  const box = $("strip").getBoundingClientRect();
  const at = Math.floor(((event.clientX - box.left) / box.width) * k);
  const i = Math.min(k - 1, Math.max(0, at));
  if (i === 0 || i === k - 1) {
    setRegionStyle(point, { seed: i === 0 ? from : seedTo });
    return;
  }
  try {
    const query = new URLSearchParams({ seed: from, seed_to: seedTo, k });
    const codes = (await (await fetchOk(`/api/path?${query}`)).json()).z;
    setRegionStyle(point, { z: codes[i] });
  } catch (err) {
    showMessage(err.message, true);
  }
}

// ------------------------------------------------------------------------------ regions

// The regions' entry for the blob under `point`, or null when it has the face's style.
function regionAt(point) {
  return regions.findLast((r) => sameBlob(r, point)) || null;
}

function select(point) {
  selected = point;
  state.region = point ? `${point.x},${point.y}` : "";
  drawOverlay();
  updateRegionControls();
}

// The selected blob, tinted, with a dashed outline along its edge pixels: on a canvas of its
// own over the rough, never in the rough's pixels.
function drawOverlay() {
  overlayCtx.clearRect(0, 0, overlay.width, overlay.height);
  if (!selected || !pixels) return;
  const mask = blobMask(selected.x, selected.y);
  const image = overlayCtx.createImageData(size, size);
  const inside = (x, y) => x >= 0 && y >= 0 && x < size && y < size && mask[y * size + x];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      if (!mask[y * size + x]) continue;
      const edge =
        !inside(x - 1, y) || !inside(x + 1, y) || !inside(x, y - 1) || !inside(x, y + 1);
      const dash = (x + y) % 4 < 2 ? [255, 255, 255, 255] : [107, 79, 216, 255];
      image.data.set(edge ? dash : [107, 79, 216, 60], (y * size + x) * 4);
    }
  }
  overlayCtx.putImageData(image, 0, 0);
}

function describeRegion(entry) {
  if (!entry) return "the face's style";
  return entry.seed !== undefined ? `seed ${entry.seed}` : "a style of its own (a code)";
}

function updateRegionControls() {
  const max = info ? info.max_regions : 0;
  const on = Boolean(selected) && max > 0;
  const entry = on ? regionAt(selected) : null;
  const picture = on && info.has_style_encoder;
  for (const id of ["region-restyle", "region-strip", "region-lock"]) $(id).disabled = !on;
  $("region-reset").disabled = !entry;
  $("region-lock").checked = Boolean(entry);
  $("region-style-file").disabled = !picture;
  $("region-style-label").classList.toggle("disabled", !picture);
  state.regions = String(regions.length);
  const count = `${regions.length} of ${max} regions restyled`;
  $("region-note").textContent = !max
    ? "This model's style reaches only its first layer: its regions cannot be restyled."
    : selected
      ? `Region at ${selected.x},${selected.y}: ${describeRegion(entry)} · ${count}`
      : `Region tool (R): click a blob of the rough to restyle it alone · ${count}`;
}

// Give the blob under `point` a style of its own ({seed} or {z}), or with null the face's
// style back; undoable.
function setRegionStyle(point, code) {
  const others = regions.filter((r) => !sameBlob(r, point));
  if (code && others.length >= info.max_regions) {
    showMessage(`at most ${info.max_regions} restyled regions: reset one first`, true);
    updateRegionControls();
    return;
  }
  snapshot();
  regions = code ? [...others, { x: point.x, y: point.y, ...code }] : others;
  updateRegionControls();
  wantFace();
}

// Lock: the region keeps the style it shows now (the face's seed or reference z, stored as
// its own) when the seed or the style picture changes; unlocked, it follows the face again.
function lockRegion(locked) {
  if (!selected) return;
  setRegionStyle(selected, locked ? (styleZ ? { z: styleZ } : { seed }) : null);
}

const dataUrl = (file) =>
  new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("cannot read the file"));
    reader.readAsDataURL(file);
  });

async function uploadRegionStyle(file) {
  const point = selected;
  if (!point) return;
  try {
    const picture = await dataUrl(file);
    const body = JSON.stringify({ rough: rough.toDataURL("image/png"), picture });
    const response = await fetchOk(`/api/style?x=${point.x}&y=${point.y}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
    setRegionStyle(point, { z: (await response.json()).z });
    showMessage(`region styled like the same region of ${file.name}`);
  } catch (err) {
    showMessage(`${file.name}: ${err.message}`, true);
  }
}

// ------------------------------------------------------------------------------ painting

function canvasPoint(event) {
  const box = rough.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) / box.width) * size,
    y: ((event.clientY - box.top) / box.height) * size,
  };
}

let stroke = null; // {id, last: point, rgb} while a brush or eraser stroke is on
let lastThrottled = 0;

function brushSize() {
  return Number($("size").value);
}

function onPointerDown(event) {
  if (!pixels || event.button > 0 || stroke) return; // one pointer paints at a time
  event.preventDefault();
  const p = canvasPoint(event);
  const x = Math.min(size - 1, Math.max(0, Math.floor(p.x)));
  const y = Math.min(size - 1, Math.max(0, Math.floor(p.y)));
  if (tool === "region") {
    select({ x, y });
    return;
  }
  if (tool === "picker") {
    setColour(pixelAt(x, y));
    setTool(lastPaintTool === "eraser" ? "brush" : lastPaintTool);
    return;
  }
  if (tool === "fill") {
    const before = { pixels: copyPixels(), regions };
    if (fill(x, y, colour)) {
      remember(before);
      commit();
      wantFace();
    }
    return;
  }
  rough.setPointerCapture(event.pointerId);
  snapshot();
  stroke = { id: event.pointerId, last: p, rgb: tool === "eraser" ? background : colour };
  stamp(p.x, p.y, brushSize(), stroke.rgb);
  commit();
}

function onPointerMove(event) {
  if (!stroke || event.pointerId !== stroke.id) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const p = canvasPoint(e);
    line(stroke.last, p, brushSize(), stroke.rgb);
    stroke.last = p;
  }
  commit();
  const now = performance.now();
  if (now - lastThrottled >= THROTTLE_MS) {
    lastThrottled = now;
    wantFace();
  }
}

function onPointerUp(event) {
  if (!stroke || event.pointerId !== stroke.id) return;
  stroke = null;
  wantFace();
}

// ------------------------------------------------------------------------------ controls

function setTool(name) {
  if (name === "region" && !(info && info.max_regions)) return; // this model has no regions
  tool = name;
  if (name !== "picker" && name !== "region") lastPaintTool = name;
  state.tool = name;
  for (const b of document.querySelectorAll("button.tool")) {
    b.setAttribute("aria-pressed", String(b.dataset.tool === name));
  }
}

function setColour(rgb) {
  colour = rgb;
  $("colour").value = hex(rgb);
  state.colour = hex(rgb);
  for (const b of document.querySelectorAll("#palette .swatch")) {
    b.setAttribute("aria-pressed", String(b.dataset.hex === hex(rgb)));
  }
}

function setBackground(rgb) {
  background = rgb;
  $("bg-swatch").style.background = hex(rgb);
  $("bg-swatch").title = `The eraser and Clear paint ${hex(rgb)}`;
  state.background = hex(rgb);
}

function setSize(value) {
  const max = Number($("size").max);
  const v = Math.min(max, Math.max(1, Math.round(value)));
  $("size").value = String(v);
  $("size-value").textContent = `${v} px`;
}

const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0] % (info.max_seed + 1);

function setSeed(value, request = true) {
  const v = Math.min(info.max_seed, Math.max(0, Math.floor(Number(value) || 0)));
  seed = v;
  $("seed").value = String(v);
  if (request) wantFace();
}

function buildPalette(colours) {
  const groups = new Map();
  for (const c of colours) {
    if (!groups.has(c.group)) groups.set(c.group, []);
    groups.get(c.group).push(c);
  }
  const root = $("palette");
  root.replaceChildren();
  for (const [group, items] of groups) {
    const set = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = group;
    const row = document.createElement("div");
    row.className = "swatches";
    for (const c of items) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "swatch";
      b.style.background = c.hex;
      b.dataset.hex = c.hex;
      b.dataset.group = c.group;
      b.title = `${c.name} (${c.hex})`;
      b.setAttribute("aria-label", `${group}: ${c.name}`);
      b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", () => {
        setColour(c.rgb);
        if (c.group === "background") setBackground(c.rgb);
        if (tool === "picker" || tool === "eraser" || tool === "region") setTool("brush");
      });
      row.append(b);
    }
    set.append(legend, row);
    root.append(set);
  }
}

async function uploadPicture(file, roughen) {
  try {
    const response = await fetchOk(`/api/prepare?roughen=${roughen ? 1 : 0}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" }, // the server reads the bytes
      body: file,
    });
    replaceDocument(await blobToImageData(await response.blob()));
    showMessage(roughen ? `${file.name}: roughened with the model's recipe` : `${file.name} loaded`);
  } catch (err) {
    showMessage(`${file.name}: ${err.message}`, true);
  }
}

async function uploadStyle(file) {
  try {
    const response = await fetchOk("/api/style", {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" }, // the server reads the bytes
      body: file,
    });
    styleZ = (await response.json()).z;
    const thumb = $("style-thumb");
    if (thumb.src) URL.revokeObjectURL(thumb.src);
    thumb.src = URL.createObjectURL(file);
    thumb.hidden = false;
    $("style-clear").hidden = false;
    state.style = "reference";
    showMessage(`style taken from ${file.name}`);
    wantFace();
  } catch (err) {
    showMessage(`${file.name}: ${err.message}`, true);
  }
}

function clearStyle() {
  styleZ = null;
  $("style-thumb").hidden = true;
  $("style-clear").hidden = true;
  state.style = "seed";
  wantFace();
}

function onFile(id, handler) {
  $(id).addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) handler(file);
  });
}

function onKey(event) {
  const typing = event.target.closest("input, textarea, select");
  const mod = event.ctrlKey || event.metaKey;
  if (mod && event.key.toLowerCase() === "z" && !typing) {
    event.preventDefault();
    (event.shiftKey ? redo : undo)();
  } else if (mod && event.key.toLowerCase() === "y" && !typing) {
    event.preventDefault();
    redo();
  } else if (!mod && !event.altKey && !typing) {
    const tools = { b: "brush", f: "fill", i: "picker", e: "eraser", r: "region" };
    if (event.key === "Escape" && selected) select(null);
    else if (event.key === "[") setSize(brushSize() - 1);
    else if (event.key === "]") setSize(brushSize() + 1);
    else if (tools[event.key.toLowerCase()]) setTool(tools[event.key.toLowerCase()]);
    else return;
    event.preventDefault();
  }
}

function wire() {
  rough.addEventListener("pointerdown", onPointerDown);
  rough.addEventListener("pointermove", onPointerMove);
  rough.addEventListener("pointerup", onPointerUp);
  rough.addEventListener("pointercancel", onPointerUp);
  rough.addEventListener("contextmenu", (e) => e.preventDefault());
  for (const b of document.querySelectorAll("button.tool")) {
    b.addEventListener("click", () => setTool(b.dataset.tool));
  }
  $("size").addEventListener("input", () => setSize($("size").value));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("clear").addEventListener("click", () => {
    snapshot();
    pixels = new ImageData(size, size);
    for (let i = 0; i < size * size; i++) setPixel(i % size, Math.floor(i / size), background);
    commit();
    wantFace();
  });
  $("colour").addEventListener("input", () => setColour(fromHex($("colour").value)));
  $("seed").addEventListener("change", () => setSeed($("seed").value));
  $("random-seed").addEventListener("click", () => setSeed(randomSeed()));
  $("strip-button").addEventListener("click", () => makeStrip());
  $("strip").addEventListener("click", adoptStripFace);
  $("region-restyle").addEventListener("click", () =>
    setRegionStyle(selected, { seed: randomSeed() }),
  );
  $("region-reset").addEventListener("click", () => setRegionStyle(selected, null));
  $("region-lock").addEventListener("change", () => lockRegion($("region-lock").checked));
  $("region-strip").addEventListener("click", () => makeStrip(selected));
  onFile("region-style-file", uploadRegionStyle);
  $("save-face").addEventListener("click", () => download(face, `face-seed${seed}.png`));
  $("save-rough").addEventListener("click", () => download(rough, "rough.png"));
  $("style-clear").addEventListener("click", clearStyle);
  onFile("load-rough", (f) => uploadPicture(f, false));
  onFile("load-picture", (f) => uploadPicture(f, true));
  onFile("style-file", uploadStyle);
  document.addEventListener("keydown", onKey);
}

function setUpStyle() {
  const has = info.has_style_encoder;
  $("style-file").disabled = !has;
  $("style-label").classList.toggle("disabled", !has);
  $("style-note").textContent = has
    ? "A reference face gives its style; the seed still drives the fine noise."
    : "This model has no style encoder (train with train.arch.use_vae: true): " +
      "styles come from the seed.";
  state.style = "seed";
}

function setUpRegions() {
  const button = document.querySelector('button.tool[data-tool="region"]');
  button.disabled = !info.max_regions;
  updateRegionControls();
}

async function start() {
  wire();
  try {
    info = await (await fetchOk("/api/info")).json();
    size = info.size;
    for (const c of [rough, face, overlay]) c.width = c.height = size;
    $("size").max = String(Math.max(4, Math.round(size / 4)));
    setSize(Math.max(2, Math.round(size / 16)));
    $("seed").max = $("seed-to").max = String(info.max_seed);
    $("frames").max = String(info.limits.max_strip);
    $("model-info").textContent =
      `${info.model} · ${size}×${size} px · ${info.runtime} on ${info.device} · ${info.precision}`;
    buildPalette(info.palette);
    setUpStyle();
    setUpRegions();
    const initial = await fetchOk("/api/default-rough");
    pixels = await blobToImageData(await initial.blob());
    commit();
    setBackground(pixelAt(0, 0));
    setColour(info.palette.find((c) => c.group === "hair").rgb);
    updateHistoryButtons();
    state.ready = "1";
    wantFace();
  } catch (err) {
    showMessage(`cannot start the studio: ${err.message}`, true);
  }
}

start();
