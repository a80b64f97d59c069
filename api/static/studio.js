// seem-vos studio: prompt, watch, correct and export, on a session of the /v1/sessions API.
// Plain modern JavaScript, no build step. window.studio exposes the state for the browser tests and benchmark.

const $ = (selector) => document.querySelector(selector);
const PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
  "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000"];
const DRAG_PIXELS = 6; // a press that moves further than this (screen pixels) is a box, not a click

const state = {
  session: null, // the session status from the API
  frame: 0,
  objects: [], // {id, name, color}
  selected: null,
  masks: new Map(), // frame -> {revision, objects: [{object_id, rle, score}]}
  lastEventId: null,
  run: null, // {id, total, done, startedAt}
  playing: null,
  finishedRuns: 0,
  tracked: false, // a propagation ran: a later correction offers "re-track from here"
  lastLatencyMs: null, // from the release of the mouse button to the mask drawn on screen
  lastRequestMs: null, // of which the prompt request took this long
  lastWorkerMs: null, // of which the worker took this long (frame decoding and the engine)
  lastTimings: null, // the last click's breakdown: request, server (Server-Timing), draw (ms)
  lastDrawMs: null, // the last overlay painting: decoding the masks and drawing them (from a response or the stream)
  latencies: [],
  prepared: new Map(), // frame -> ms the worker took to prepare it (for the frame shown, while the user looks)
  errors: [],
};
const config = {
  prepare: true, // ask the worker to prepare the frame shown, so a click there costs only the engine's decision
  prepareDelayMs: 120, // ... once the frame has stayed on screen this long (not while scrubbing or playing)
};
window.studio = {
  state,
  config,
  maskOf: (frame, objectId) => state.masks.get(frame)?.objects.find((o) => o.object_id === objectId)?.rle ?? null,
};

// ---------------------------------------------------------------------------------------------- API

function apiHeaders(extra = {}) {
  const key = $("#api-key").value.trim();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function readableError(response) {
  let detail = response.statusText || "request failed";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
  } catch { /* not JSON: keep the status text */ }
  return new Error(`${response.status}: ${detail}`);
}

async function api(path, options = {}) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

async function request(path, { method = "GET", json, form } = {}) {
  const options = { method, headers: apiHeaders() };
  if (json !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  } else if (form) {
    options.body = form;
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new Error(`the server cannot be reached (${error.message})`);
  }
  if (!response.ok) throw await readableError(response);
  return response;
}

const sessionPath = (suffix = "") => `/v1/sessions/${state.session.id}${suffix}`;

function showError(error) {
  const message = error instanceof Error ? error.message : String(error);
  state.errors.push(message);
  const box = document.createElement("div");
  box.className = "error";
  box.innerHTML = "<span></span><button title='dismiss'>×</button>";
  box.querySelector("span").textContent = message;
  box.querySelector("button").onclick = () => box.remove();
  $("#errors").prepend(box);
  while ($("#errors").children.length > 5) $("#errors").lastChild.remove();
}

const guarded = (fn) => async (...args) => {
  try { return await fn(...args); } catch (error) { showError(error); }
};

// ---------------------------------------------------------------------------------------------- opening

function uploadVideo(file) {
  const form = new FormData();
  form.append("video", file, file.name);
  form.append("engine", $("#engine").value);
  const progress = $("#upload-progress");
  progress.hidden = false;
  progress.value = 0;
  $("#upload-text").textContent = `uploading ${file.name}…`;
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/sessions");
    for (const [name, value] of Object.entries(apiHeaders())) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) progress.value = event.loaded / event.total;
      if (event.loaded === event.total) $("#upload-text").textContent = "checking the video…";
    };
    request.onload = () => {
      progress.hidden = true;
      $("#upload-text").textContent = "";
      let body = {};
      try { body = JSON.parse(request.responseText); } catch { /* keep empty */ }
      if (request.status === 201) resolve(body);
      else reject(new Error(`${request.status}: ${body.detail ?? request.statusText ?? "upload failed"}`));
    };
    request.onerror = () => {
      progress.hidden = true;
      reject(new Error("the upload failed: the server cannot be reached"));
    };
    request.send(form);
  });
}

async function openJob(jobId) {
  const form = new FormData();
  form.append("job_id", jobId);
  form.append("engine", $("#engine").value);
  return api("/v1/sessions", { method: "POST", form });
}

let events = null; // the AbortController of the open session's event stream

function openSession(session) {
  events?.abort(); // the previous session's stream: its events must not reach this one
  events = new AbortController();
  for (const url of frameCache.values()) URL.revokeObjectURL(url);
  frameCache.clear();
  decoded.clear();
  state.run = null;
  state.session = session;
  state.masks.clear();
  state.prepared.clear();
  state.lastEventId = null;
  state.frame = 0;
  state.tracked = false;
  state.objects = [];
  addObject();
  const { width, height, num_frames: frames } = session.video;
  for (const canvas of [$("#overlay"), $("#sketch")]) { canvas.width = width; canvas.height = height; }
  $("#placeholder").hidden = true;
  $("#stage").classList.add("ready");
  $("#scrubber").max = frames - 1;
  for (const element of ["#scrubber", "#play", "#track"]) $(element).disabled = false;
  document.querySelectorAll(".export").forEach((button) => { button.disabled = false; });
  $("#session-info").textContent = `session ${session.id.slice(0, 8)}… · ${session.engine} · ${width}×${height} · `
    + `${frames} frames @ ${session.video.fps.toFixed(2)} fps`;
  setCapabilities(session);
  loadStrip();
  layoutStage();
  showFrame(0);
  followEvents(session.id, events.signal);
}

function setCapabilities(session) {
  const supports = (kind) => session.supported_prompts.includes(kind);
  $("#text-prompt").disabled = !supports("text");
  $("#text-send").disabled = !supports("text");
  $("#reference").disabled = !supports("reference");
  const missing = ["text", "reference"].filter((kind) => !supports(kind));
  $("#text-reason").textContent = missing.length
    ? `The ${session.engine} engine cannot use ${missing.join(" or ")} prompts: ${session.unsupported_hint}.`
    : "";
}

async function loadStrip() {
  const count = Math.min(state.session.video.num_frames, 24);
  const response = await fetch(sessionPath(`/thumbnails?count=${count}&height=54`), { headers: apiHeaders() });
  if (!response.ok) throw await readableError(response);
  $("#strip").src = URL.createObjectURL(await response.blob());
  drawMarks();
}

// ---------------------------------------------------------------------------------------------- frames

function layoutStage() {
  if (!state.session) return;
  const stage = $("#stage");
  const { width, height } = state.session.video;
  const scale = Math.min(stage.clientWidth / width, stage.clientHeight / height);
  const w = Math.round(width * scale), h = Math.round(height * scale);
  const left = Math.round((stage.clientWidth - w) / 2), top = Math.round((stage.clientHeight - h) / 2);
  for (const element of [$("#frame"), $("#overlay"), $("#sketch")]) {
    Object.assign(element.style, { left: `${left}px`, top: `${top}px`, width: `${w}px`, height: `${h}px` });
  }
}

function frameUrl(index) {
  const width = Math.min(state.session.video.width, Math.ceil($("#frame").clientWidth * devicePixelRatio) || 854);
  return sessionPath(`/frames/${index}?width=${Math.max(16, width)}`);
}

const frameCache = new Map(); // "session:index" -> object URL (frames are fetched with the API key header)

async function frameImage(index) {
  const key = `${state.session.id}:${index}`;
  if (!frameCache.has(key)) {
    const response = await fetch(frameUrl(index), { headers: apiHeaders() });
    if (!response.ok) throw await readableError(response);
    frameCache.set(key, URL.createObjectURL(await response.blob()));
    if (frameCache.size > 300) {
      const [oldest, url] = frameCache.entries().next().value;
      URL.revokeObjectURL(url);
      frameCache.delete(oldest);
    }
  }
  return frameCache.get(key);
}

async function showFrame(index) {
  const session = state.session;
  const frames = session.video.num_frames;
  index = Math.max(0, Math.min(frames - 1, index));
  state.frame = index;
  $("#scrubber").value = index;
  $("#frame-label").textContent = `${index + 1} / ${frames}`;
  drawMasks();
  const url = await frameImage(index);
  if (state.session === session && state.frame === index) { // still what is wanted
    $("#frame").src = url;
    schedulePrepare(index);
  }
  if (index + 1 < frames) frameImage(index + 1).catch(() => {}); // prefetch for playing and stepping
}

let prepareTimer = null;

function schedulePrepare(index) {
  // The worker decodes the frame and computes the engine's per-frame data (the motion cue, SEEM's features) while
  // the user looks at it; the click then finds them cached. Only once the frame stays on screen: not per frame
  // while scrubbing or playing, nor while tracking (the worker is busy; asked again when the run ends).
  clearTimeout(prepareTimer);
  if (!config.prepare || state.playing || state.run || state.prepared.has(index)) return;
  const session = state.session;
  prepareTimer = setTimeout(async () => {
    if (state.session !== session || state.frame !== index || state.playing || state.run) return;
    try {
      const reply = await api(sessionPath(`/frames/${index}/prepare`), { method: "POST" });
      if (reply.prepared && state.session === session) state.prepared.set(index, reply.worker_ms);
    } catch { /* only a head start: the click works without it */ }
  }, config.prepareDelayMs);
}

function serverTiming(response) {
  // "check;dur=1.2, relay;dur=150.3, ..." -> {check: 1.2, relay: 150.3, ...}
  const timings = {};
  for (const part of (response.headers.get("Server-Timing") ?? "").split(",")) {
    const [name, ...fields] = part.trim().split(";");
    const duration = fields.find((f) => f.trim().startsWith("dur="));
    if (name && duration) timings[name] = Number(duration.trim().slice(4));
  }
  return timings;
}

function togglePlay() {
  if (!state.session) return;
  if (state.playing) {
    clearInterval(state.playing);
    state.playing = null;
    $("#play").innerHTML = "&#9654;";
    schedulePrepare(state.frame);
    return;
  }
  $("#play").innerHTML = "&#10073;&#10073;";
  state.playing = setInterval(() => {
    if (state.frame + 1 >= state.session.video.num_frames) { togglePlay(); return; }
    showFrame(state.frame + 1).catch(showError);
  }, 1000 / Math.min(30, state.session.video.fps || 24));
}

// ---------------------------------------------------------------------------------------------- masks

function decodeRle(rle) {
  // COCO compressed RLE (column-major run lengths, LEB128-like characters) -> row-major Uint8Array.
  const [h, w] = rle.size;
  const counts = [];
  const s = rle.counts;
  for (let p = 0; p < s.length;) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1; k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  const mask = new Uint8Array(h * w);
  let position = 0;
  counts.forEach((run, i) => {
    if (i % 2 === 1) {
      for (let j = position; j < position + run; j += 1) mask[(j % h) * w + Math.floor(j / h)] = 1;
    }
    position += run;
  });
  return mask;
}

const decoded = new Map(); // "frame:object:revision" -> mask

function maskFor(frame, entry, revision) {
  const key = `${frame}:${entry.object_id}:${revision}`;
  if (!decoded.has(key)) {
    decoded.set(key, decodeRle(entry.rle));
    if (decoded.size > 400) decoded.delete(decoded.keys().next().value);
  }
  return decoded.get(key);
}

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function drawMasks() {
  if (!state.session) return;
  const startedAt = performance.now();
  const canvas = $("#overlay");
  const context = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  const record = state.masks.get(state.frame);
  if (!record) { context.clearRect(0, 0, w, h); return; }
  const image = context.createImageData(w, h);
  const pixels = image.data;
  for (const entry of record.objects) {
    const object = state.objects.find((o) => o.id === entry.object_id);
    if (!object || !entry.area) continue;
    const mask = maskFor(state.frame, entry, record.revision);
    const [r, g, b] = hexToRgb(object.color);
    const [bx, by, bw, bh] = entry.bbox ?? [0, 0, w, h]; // COCO [x, y, width, height]: only its pixels are visited
    const x0 = Math.max(0, Math.floor(bx)), x1 = Math.min(w, Math.ceil(bx + bw));
    const y0 = Math.max(0, Math.floor(by)), y1 = Math.min(h, Math.ceil(by + bh));
    for (let y = y0; y < y1; y += 1) {
      for (let x = x0; x < x1; x += 1) {
        const i = y * w + x;
        if (!mask[i]) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1
          || !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
        const o = i * 4;
        if (edge) { pixels[o] = 255; pixels[o + 1] = 255; pixels[o + 2] = 255; pixels[o + 3] = 255; } else {
          pixels[o] = r; pixels[o + 1] = g; pixels[o + 2] = b; pixels[o + 3] = 120;
        }
      }
    }
  }
  context.putImageData(image, 0, 0); // filled in the object's colour, outlined in white so it reads on any frame
  state.lastDrawMs = performance.now() - startedAt;
}

function storeMasks(record) {
  const known = state.masks.get(record.frame);
  if (known && known.revision >= record.revision) return false; // an older or repeated revision
  state.masks.set(record.frame, record);
  let added = false;
  for (const entry of record.objects) { // objects of an opened job, or made by another client
    if (!state.objects.some((o) => o.id === entry.object_id)) {
      state.objects.push({ id: entry.object_id, name: `object ${entry.object_id}`,
        color: PALETTE[(entry.object_id - 1) % PALETTE.length] });
      added = true;
    }
  }
  if (added) { state.objects.sort((a, b) => a.id - b.id); renderObjects(); }
  scheduleMarks();
  if (record.frame === state.frame) drawMasks();
  return true;
}

let marksPending = false;

function scheduleMarks() { // at most once per animation frame, however fast frames stream in
  if (marksPending) return;
  marksPending = true;
  requestAnimationFrame(() => { marksPending = false; drawMarks(); });
}

function drawMarks() {
  const canvas = $("#marks");
  canvas.width = canvas.clientWidth;
  canvas.height = canvas.clientHeight;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.session) return;
  const frames = state.session.video.num_frames;
  context.fillStyle = "rgba(80, 200, 120, 0.9)";
  for (const [frame, record] of state.masks) {
    if (!record.objects.some((o) => o.area)) continue;
    const x = (frame / Math.max(1, frames - 1)) * (canvas.width - 2);
    context.fillRect(x, canvas.height - 5, Math.max(2, canvas.width / frames), 5);
  }
}

// ---------------------------------------------------------------------------------------------- objects

function addObject() {
  const used = new Set(state.objects.map((o) => o.id));
  let id = 1;
  while (used.has(id)) id += 1;
  if (id > 254) { showError(new Error("at most 254 objects per session")); return; }
  state.objects.push({ id, name: `object ${id}`, color: PALETTE[(id - 1) % PALETTE.length] });
  state.selected = id;
  renderObjects();
}

function renderObjects() {
  const list = $("#objects");
  list.replaceChildren();
  state.objects.forEach((object, position) => {
    const item = document.createElement("li");
    item.dataset.id = object.id;
    item.className = object.id === state.selected ? "selected" : "";
    item.innerHTML = `<span class="key">${position < 9 ? position + 1 : ""}</span>
      <input type="color" title="colour"><input type="text" aria-label="name">
      <button title="remove this object">✕</button>`;
    const [colour, name] = item.querySelectorAll("input");
    colour.value = object.color;
    name.value = object.name;
    item.onclick = () => selectObject(object.id);
    colour.oninput = () => { object.color = colour.value; drawMasks(); };
    name.onchange = () => { object.name = name.value; };
    item.querySelector("button").onclick = guarded(async (event) => {
      event.stopPropagation();
      await removeObject(object);
    });
    list.append(item);
  });
}

function selectObject(id) {
  state.selected = id;
  renderObjects();
}

async function removeObject(object) {
  const prompted = [...state.masks.values()].some((r) => r.objects.some((o) => o.object_id === object.id));
  if (prompted) await api(sessionPath(`/objects/${object.id}`), { method: "DELETE" });
  state.objects = state.objects.filter((o) => o.id !== object.id);
  for (const record of state.masks.values()) record.objects = record.objects.filter((o) => o.object_id !== object.id);
  if (state.selected === object.id) state.selected = state.objects[0]?.id ?? null;
  renderObjects();
  drawMasks();
  drawMarks();
}

// ---------------------------------------------------------------------------------------------- prompting

function videoPoint(event) {
  const rect = $("#overlay").getBoundingClientRect();
  const { width, height } = state.session.video;
  const x = ((event.clientX - rect.left) / rect.width) * width;
  const y = ((event.clientY - rect.top) / rect.height) * height;
  return [Math.max(0, Math.min(width - 1, x)), Math.max(0, Math.min(height - 1, y))];
}

async function sendPrompt(prompt, startedAt) {
  if (state.selected === null) throw new Error("add an object first (the + Add button)");
  const frame = state.frame;
  const requestedAt = performance.now();
  const response = await request(sessionPath("/prompts"), {
    method: "POST", json: { object_id: state.selected, frame_index: frame, ...prompt },
  });
  const record = await response.json();
  const receivedAt = performance.now();
  state.lastRequestMs = receivedAt - requestedAt;
  state.lastWorkerMs = record.worker_ms ?? null;
  state.prepared.set(frame, 0); // the prompt computed what the frame needs
  storeMasks(record); // draws it at once (or the live stream already did)
  if (state.frame !== frame) await showFrame(frame);
  drawMarks();
  const drawnAt = performance.now();
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  state.lastLatencyMs = performance.now() - startedAt;
  state.lastTimings = { total: state.lastLatencyMs, before_request: requestedAt - startedAt,
    request: state.lastRequestMs, server: serverTiming(response), draw: drawnAt - receivedAt,
    paint: performance.now() - drawnAt, overlay: state.lastDrawMs };
  state.latencies.push(state.lastLatencyMs);
  $("#retrack").hidden = !state.tracked;
  return record;
}

const pointer = { down: null, path: [], negative: false };

function tool() { return document.querySelector("input[name=tool]:checked").value; }

function onPointerDown(event) {
  if (!state.session || event.button > 2 || event.button === 1) return;
  event.preventDefault();
  $("#stage").focus();
  pointer.down = { x: event.clientX, y: event.clientY, at: performance.now(), point: videoPoint(event) };
  pointer.negative = event.button === 2 || event.shiftKey || event.altKey || event.ctrlKey;
  pointer.path = [videoPoint(event)];
}

function onPointerMove(event) {
  if (!pointer.down) return;
  pointer.path.push(videoPoint(event));
  const sketch = $("#sketch").getContext("2d");
  sketch.clearRect(0, 0, sketch.canvas.width, sketch.canvas.height);
  sketch.lineWidth = tool() === "brush" ? Number($("#brush-size").value) : 2;
  sketch.strokeStyle = pointer.negative ? "#ff5566" : "#55ff88";
  sketch.lineCap = "round";
  if (tool() === "brush") {
    sketch.beginPath();
    pointer.path.forEach(([x, y], i) => (i ? sketch.lineTo(x, y) : sketch.moveTo(x, y)));
    sketch.stroke();
  } else if (isDrag(event)) {
    const [x0, y0] = pointer.down.point, [x1, y1] = videoPoint(event);
    sketch.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
  }
}

function isDrag(event) {
  return Math.hypot(event.clientX - pointer.down.x, event.clientY - pointer.down.y) > DRAG_PIXELS;
}

function onPointerUp(event) {
  if (!pointer.down) return;
  const startedAt = performance.now();
  const down = pointer.down;
  pointer.down = null;
  $("#sketch").getContext("2d").clearRect(0, 0, $("#sketch").width, $("#sketch").height);
  const positive = !pointer.negative;
  let prompt;
  if (tool() === "brush") {
    const line = pointer.path.map(([x, y]) => [Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
    prompt = { scribbles: [{ lines: [line], width: Number($("#brush-size").value), positive }] };
  } else if (Math.hypot(event.clientX - down.x, event.clientY - down.y) > DRAG_PIXELS) {
    const [x0, y0] = down.point, [x1, y1] = videoPoint(event);
    prompt = { box: { x0: Math.min(x0, x1), y0: Math.min(y0, y1), x1: Math.max(x0, x1), y1: Math.max(y0, y1) } };
  } else {
    const [x, y] = down.point;
    prompt = { points: [{ x, y, positive }] };
  }
  guarded(sendPrompt)(prompt, startedAt);
}

async function sendText() {
  const text = $("#text-prompt").value.trim();
  if (!text) throw new Error("type what to segment first");
  await sendPrompt({ text }, performance.now());
}

async function sendReference(file) {
  // The whole picture is the example of the object ("segment things like this"): its mask covers all of it.
  const bitmap = await createImageBitmap(file).catch(() => {
    throw new Error(`${file.name} is not an image the browser can read`);
  });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const image = canvas.toDataURL("image/png").split(",")[1];
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  const mask = canvas.toDataURL("image/png").split(",")[1];
  await sendPrompt({ reference: { image: { png_base64: image }, mask: { png_base64: mask } } }, performance.now());
}

async function undo() {
  if (!state.session) return;
  const record = await api(sessionPath("/undo"), { method: "POST" });
  storeMasks(record);
  await showFrame(record.frame);
  drawMarks();
}

// ---------------------------------------------------------------------------------------------- tracking

async function track(start = state.frame) {
  const run = await api(sessionPath("/propagate"), {
    method: "POST", json: { from: start, direction: $("#direction").value },
  });
  beginRun(run);
}

function beginRun(run) {
  state.run = { id: run.id, total: Math.max(1, run.total), done: 0, startedAt: performance.now() };
  state.tracked = true;
  $("#retrack").hidden = true;
  $("#stop").disabled = false;
  $("#track-progress").value = 0;
  $("#track-text").textContent = `tracking ${run.direction} from frame ${run.start + 1}…`;
}

function onRunEvent(run) {
  if (run.state === "running") {
    if (!state.run || state.run.id !== run.id) beginRun(run);
    return;
  }
  if (!state.run || state.run.id !== run.id) return;
  state.finishedRuns += 1;
  const seconds = (performance.now() - state.run.startedAt) / 1000;
  $("#stop").disabled = true;
  $("#track-text").textContent = run.state === "failed"
    ? "tracking failed" : `${run.state}: ${state.run.done} frames in ${seconds.toFixed(1)} s`;
  if (run.state === "done") $("#track-progress").value = 1;
  if (run.state === "failed") showError(new Error(`tracking failed: ${run.error}`));
  state.run = null;
  schedulePrepare(state.frame);
}

function onFrameEvent(record) {
  const fresh = storeMasks(record);
  if (!state.run || record.run !== state.run.id) return;
  if (fresh) state.run.done += 1;
  const seconds = (performance.now() - state.run.startedAt) / 1000;
  $("#track-progress").value = state.run.done / state.run.total;
  $("#track-text").textContent = `${state.run.done} / ${state.run.total} frames · `
    + `${(state.run.done / Math.max(seconds, 1e-3)).toFixed(1)} frames/s`;
  if (!state.playing && $("#follow")?.checked) showFrame(record.frame);
}

async function followEvents(sessionId, signal) {
  // NDJSON over fetch (EventSource cannot send the API key header); reconnects resume after the last event id.
  while (!signal.aborted && state.session?.id === sessionId) {
    const after = state.lastEventId ? `?after=${state.lastEventId}` : "";
    try {
      const response = await fetch(`/v1/sessions/${sessionId}/events${after}`,
        { headers: apiHeaders({ Accept: "application/x-ndjson" }), signal });
      if (!response.ok) throw await readableError(response);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (line.trim()) handleEvent(JSON.parse(line));
        }
      }
    } catch (error) {
      if (signal.aborted) return; // another session was opened
      if (String(error.message).startsWith("404")) { showError(new Error("the session expired or was deleted")); return; }
      showError(new Error(`the live stream was interrupted (${error.message}); reconnecting`));
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function handleEvent(event) {
  if (event.id) state.lastEventId = event.id;
  if (event.event === "frame") onFrameEvent(event.data);
  else if (event.event === "run") onRunEvent(event.data);
  else if (event.event === "end") { showError(new Error(event.data.detail)); state.session = null; }
}

// ---------------------------------------------------------------------------------------------- export

async function exportResult(name) {
  $("#export-text").textContent = `preparing ${name}…`;
  const response = await fetch(sessionPath(`/results/${name}`), { headers: apiHeaders() });
  if (!response.ok) { $("#export-text").textContent = ""; throw await readableError(response); }
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${state.session.id}-${name}`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  $("#export-text").textContent = `${name}: ${(blob.size / 1024).toFixed(0)} kB downloaded`;
}

// ---------------------------------------------------------------------------------------------- wiring

function onKey(event) {
  if (event.target.matches("input[type=text], input:not([type]), input[type=password]")) return;
  if (!state.session) return;
  const step = event.shiftKey ? 10 : 1;
  if (event.key === " ") { event.preventDefault(); togglePlay(); }
  else if (event.key === "ArrowRight") { event.preventDefault(); showFrame(state.frame + step).catch(showError); }
  else if (event.key === "ArrowLeft") { event.preventDefault(); showFrame(state.frame - step).catch(showError); }
  else if (/^[1-9]$/.test(event.key)) {
    const object = state.objects[Number(event.key) - 1];
    if (object) selectObject(object.id);
  } else if (event.key === "z" || event.key === "Z") guarded(undo)();
  else if (event.key === "b" || event.key === "B") {
    const other = tool() === "brush" ? "click" : "brush";
    document.querySelector(`input[name=tool][value=${other}]`).checked = true;
  }
}

function wire() {
  $("#video-file").onchange = guarded(async () => {
    const file = $("#video-file").files[0];
    if (file) openSession(await uploadVideo(file));
    $("#video-file").value = "";
  });
  $("#job-form").onsubmit = guarded(async (event) => {
    event.preventDefault();
    const jobId = $("#job-id").value.trim();
    if (!jobId) throw new Error("enter the id of a finished job");
    openSession(await openJob(jobId));
  });
  $("#api-key").value = localStorage.getItem("vos-api-key") || "";
  $("#api-key").onchange = () => localStorage.setItem("vos-api-key", $("#api-key").value.trim());
  const stage = $("#stage");
  stage.addEventListener("pointerdown", onPointerDown);
  stage.addEventListener("pointermove", onPointerMove);
  stage.addEventListener("pointerup", onPointerUp);
  stage.addEventListener("contextmenu", (event) => event.preventDefault());
  $("#scrubber").oninput = () => showFrame(Number($("#scrubber").value)).catch(showError);
  $("#play").onclick = togglePlay;
  $("#add-object").onclick = addObject;
  $("#track").onclick = guarded(() => track());
  $("#retrack").onclick = guarded(() => track(state.frame));
  $("#stop").onclick = guarded(() => api(sessionPath("/stop"), { method: "POST" }));
  $("#text-send").onclick = guarded(sendText);
  $("#reference").onchange = guarded(async () => {
    const file = $("#reference").files[0];
    $("#reference").value = "";
    if (file) await sendReference(file);
  });
  document.querySelectorAll(".export").forEach((button) => {
    button.onclick = guarded(() => exportResult(button.dataset.name));
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => { layoutStage(); drawMarks(); });
  window.addEventListener("unhandledrejection", (event) => showError(event.reason));
}

wire();
