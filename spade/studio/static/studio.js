// spade-anime studio: paint a rough on a canvas, the server turns it into a face.
//
// The rough canvas holds exactly the model's size; every tool writes whole pixels into its
// ImageData (a hard-edged brush, an exact-colour fill), so only chosen colours ever appear.
// Faces: at most one request in flight; while it runs, later changes only mark the canvas as
// wanted, and the newest canvas is sent when it returns. Page state for tests and tools lives in
// data attributes on <body>: want/shown (face requests), busy, canvas-version, tool, error.

const state = document.body.dataset;
const $ = (id) => document.getElementById(id);

const rough = $("rough");
const roughCtx = rough.getContext("2d", { willReadFrequently: true });
const face = $("face");
const faceCtx = face.getContext("2d");

let info = null;
let size = 64;
let pixels = null; // ImageData of the rough: the document being painted
let colour = [0, 0, 0];
let background = [255, 255, 255];
let tool = "brush";
let lastPaintTool = "brush";
let seed = 0;
let styleZ = null; // z of a reference picture, or null for the seed's own style
const undoStack = [];
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
}

function snapshot() {
  undoStack.push(new ImageData(new Uint8ClampedArray(pixels.data), size, size));
  const limit = Math.max(20, Math.floor((32 << 20) / pixels.data.length));
  if (undoStack.length > limit) undoStack.shift();
  redoStack.length = 0;
  updateHistoryButtons();
}

function restore(from, to) {
  if (!from.length) return;
  to.push(pixels);
  pixels = from.pop();
  commit();
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

// Exact-colour, 4-connected flood fill.
function fill(x, y, rgb) {
  const target = pixelAt(x, y);
  if (sameRgb(target, rgb)) return false;
  const data = pixels.data;
  const stack = [y * size + x];
  const matches = (p) =>
    data[p * 4] === target[0] && data[p * 4 + 1] === target[1] && data[p * 4 + 2] === target[2];
  while (stack.length) {
    const p = stack.pop();
    if (!matches(p)) continue;
    setPixel(p % size, Math.floor(p / size), rgb);
    const px = p % size;
    if (px > 0) stack.push(p - 1);
    if (px < size - 1) stack.push(p + 1);
    if (p >= size) stack.push(p - size);
    if (p < size * (size - 1)) stack.push(p + size);
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

async function makeStrip() {
  const k = Number($("frames").value);
  const seedTo = Number($("seed-to").value);
  const button = $("strip-button");
  button.disabled = true;
  showMessage(`computing ${k} faces from seed ${seed} to seed ${seedTo}…`);
  try {
    const response = await fetchOk("/api/strip", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ rough: rough.toDataURL("image/png"), seed, seed_to: seedTo, k }),
    });
    const image = await blobToImageData(await response.blob());
    const strip = $("strip");
    strip.width = image.width;
    strip.height = image.height;
    strip.style.maxWidth = `${k * 8}rem`; // frames 8rem tall at most
    strip.getContext("2d").putImageData(image, 0, 0);
    strip.hidden = false;
    state.stripVersion = String(Number(state.stripVersion) + 1);
    showMessage(`${k} faces from seed ${seed} to seed ${seedTo}`);
  } catch (err) {
    showMessage(err.message, true);
  } finally {
    button.disabled = false;
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
  if (tool === "picker") {
    setColour(pixelAt(x, y));
    setTool(lastPaintTool === "eraser" ? "brush" : lastPaintTool);
    return;
  }
  if (tool === "fill") {
    const before = new ImageData(new Uint8ClampedArray(pixels.data), size, size);
    if (fill(x, y, colour)) {
      undoStack.push(before);
      redoStack.length = 0;
      updateHistoryButtons();
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
  tool = name;
  if (name !== "picker") lastPaintTool = name;
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
        if (tool === "picker" || tool === "eraser") setTool("brush");
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
    const tools = { b: "brush", f: "fill", i: "picker", e: "eraser" };
    if (event.key === "[") setSize(brushSize() - 1);
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
  $("random-seed").addEventListener("click", () =>
    setSeed(crypto.getRandomValues(new Uint32Array(1))[0] % (info.max_seed + 1)),
  );
  $("strip-button").addEventListener("click", makeStrip);
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

async function start() {
  wire();
  try {
    info = await (await fetchOk("/api/info")).json();
    size = info.size;
    for (const c of [rough, face]) c.width = c.height = size;
    $("size").max = String(Math.max(4, Math.round(size / 4)));
    setSize(Math.max(2, Math.round(size / 16)));
    $("seed").max = $("seed-to").max = String(info.max_seed);
    $("frames").max = String(info.limits.max_strip);
    $("model-info").textContent =
      `${info.model} · ${size}×${size} px · ${info.runtime} on ${info.device} · ${info.precision}`;
    buildPalette(info.palette);
    setUpStyle();
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
