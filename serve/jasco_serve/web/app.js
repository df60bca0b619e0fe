// jasco-serve web page: the controls of audiocraft's JASCO demo, posted as multipart/form-data to
// v1/generate (relative URLs, so the page works under any route prefix); a reference song goes to v1/extract
// (chord timeline, melody piano roll) and, as the 'reference' upload, to v1/generate. No external assets.
"use strict";

const $ = (id) => document.getElementById(id);
let objectUrl = null;

// API keys (jasco-serve --api-key-file): asked once, on the first 401, and kept in sessionStorage (this tab
// only, gone when it closes); sent as "Authorization: Bearer KEY" on every /v1 call.
const KEY_STORE = "jasco-serve-api-key";

function apiFetch(url, options = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  const headers = Object.assign({}, options.headers || {});
  if (key) headers.Authorization = `Bearer ${key}`;
  return fetch(url, Object.assign({}, options, { headers }));
}

function askForKey(message) {
  sessionStorage.removeItem(KEY_STORE);
  $("key-form").hidden = false;
  $("api-key").focus();
  showError(message);
}

function saveKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $("api-key").value = "";
  $("key-form").hidden = true;
  $("error").hidden = true;
  loadModel();
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function syncSolver() {
  const adaptive = $("solver").value === "dopri5";
  $("steps-label").hidden = adaptive;
  $("tol-label").hidden = !adaptive;
}

async function loadModel() {
  try {
    const r = await apiFetch("v1/models");
    const m = await r.json();
    if (r.status === 401) {
      $("model-info").textContent = "(this service needs an API key)";
      askForKey(m.error || "this service needs an API key");
      return;
    }
    if (!r.ok) throw new Error(m.error || r.statusText);
    $("model-info").textContent = `Model ${m.model} (${m.conditioners.join(", ")}), ${m.duration} s at ` +
      `${m.sample_rate} Hz, ${m.backend} ${m.precision}.`;
    $("duration").value = m.duration;
    $("duration").max = m.max_duration;
    if (!m.conditioners.includes("melody")) {
      $("melody-fieldset").hidden = true;
    }
    if (!m.conditioners.includes("drums")) {
      $("drums").disabled = true;
    }
    if (!m.drums_separator) {  // no separator exported: every drums upload is taken as a stem
      $("drums-stem-label").hidden = true;
      $("drums_stem").disabled = true;
    }
  } catch (e) {
    $("model-info").textContent = `(model description unavailable: ${e.message})`;
  }
}

function formData() {
  const data = new FormData($("generate-form"));
  for (const [key, value] of Array.from(data.entries())) {
    // empty text fields and empty file inputs mean "the server's default"
    if (key !== "text" && (value === "" || (value instanceof File && value.size === 0 && value.name === ""))) {
      data.delete(key);
    }
  }
  if ($("solver").value === "dopri5") {
    data.delete("steps");
    data.set("rtol", $("tolerance").value);
    data.set("atol", $("tolerance").value);
  }
  return data;
}

async function generate(event) {
  event.preventDefault();
  $("error").hidden = true;
  $("submit").disabled = true;
  $("status").textContent = "Generating…";
  try {
    const r = await apiFetch("v1/generate", { method: "POST", body: formData(), headers: { Accept: "audio/wav" } });
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      try { message = (await r.json()).error || message; } catch (_) { /* not JSON */ }
      if (r.status === 401) askForKey(message); else showError(message);
      return;
    }
    const blob = await r.blob();
    drawWaveform(await blob.arrayBuffer());
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(blob);
    const seed = r.headers.get("X-Jasco-Seed");
    $("audio").src = objectUrl;
    $("download").href = objectUrl;
    $("download").download = `jasco-seed${seed}.wav`;
    $("result-info").textContent = `seed ${seed} · ${r.headers.get("X-Jasco-NFE")} vector-field evaluations · ` +
      `${(Number(r.headers.get("X-Jasco-Latency-Ms")) / 1000).toFixed(2)} s`;
    $("result").hidden = false;
  } catch (e) {
    showError(`request failed: ${e.message}`);
  } finally {
    $("submit").disabled = false;
    $("status").textContent = "";
  }
}

// -- reference song: v1/extract → chord timeline (editable, written into the chord text) and a piano roll --------
let extractedChords = [];  // [[label, start], ...] as shown on the timeline

function chordText() {
  $("chords").value = extractedChords.map(([label, start]) => `${label}:${Number(start).toFixed(3)}`).join(" ");
}

function drawTimeline(chords, seconds) {
  const box = $("chord-timeline");
  box.replaceChildren();
  extractedChords = chords.filter(([label]) => label !== "N").map(([label, start]) => [label, Math.max(0, start)]);
  extractedChords.forEach(([label, start], i) => {
    const end = i + 1 < extractedChords.length ? extractedChords[i + 1][1] : seconds;
    const cell = document.createElement("div");
    cell.className = "chord";
    cell.style.left = `${(100 * start) / seconds}%`;
    cell.style.width = `${(100 * Math.max(end - start, 0)) / seconds}%`;
    const input = document.createElement("input");
    input.value = label;
    input.title = `${label} from ${start.toFixed(2)} s`;
    input.setAttribute("aria-label", `chord at ${start.toFixed(2)} s`);
    input.addEventListener("input", () => {
      extractedChords[i][0] = input.value.trim() || "N";
      chordText();
    });
    cell.appendChild(input);
    box.appendChild(cell);
  });
  chordText();
}

function drawRoll(melody) {
  const canvas = $("melody-roll"), ctx = canvas.getContext("2d");
  const rows = melody.rows, nRows = melody.shape[0];
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#f3f3f3";
  for (let r = 0; r < nRows; r++) {  // black keys shaded
    if ([1, 3, 6, 8, 10].includes((melody.first_midi + r) % 12)) {
      ctx.fillRect(0, canvas.height - (r + 1) * canvas.height / nRows, canvas.width, canvas.height / nRows);
    }
  }
  ctx.fillStyle = "#2a4d9b";
  const w = canvas.width / Math.max(rows.length, 1), h = canvas.height / nRows;
  let voiced = 0;
  rows.forEach((r, t) => {
    if (r >= 0) { voiced++; ctx.fillRect(t * w, canvas.height - (r + 1) * h, Math.max(w, 1), h); }
  });
  canvas.dataset.voiced = String(voiced);
  $("melody-info").textContent = `${voiced} of ${rows.length} frames voiced (50 frames/s)`;
}

async function extractReference() {
  const file = $("reference").files[0];
  $("error").hidden = true;
  if (!file) { showError("choose a reference song first"); return; }
  const data = new FormData();
  data.append("audio", file);
  $("extract").disabled = true;
  $("extract-status").textContent = "Extracting…";
  try {
    const r = await fetch("v1/extract", { method: "POST", body: data });
    const body = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
    if (!r.ok) { showError(body.error || `${r.status} ${r.statusText}`); return; }
    $("reference-view").hidden = false;
    drawTimeline(body.chords || [], body.seconds);
    if (body.melody) drawRoll(body.melody);
    $("extract-status").textContent = `${(body.chords || []).length} chord changes over ${body.seconds.toFixed(1)} s`;
  } catch (e) {
    showError(`extraction failed: ${e.message}`);
  } finally {
    $("extract").disabled = false;
    if ($("extract-status").textContent === "Extracting…") $("extract-status").textContent = "";
  }
}

// -- the result's waveform, read from the wav itself (PCM16 or float32) -------------------------------------------
function wavSamples(buffer) {
  const view = new DataView(buffer);
  let pos = 12, format = 1, channels = 1, bits = 16;
  while (pos + 8 <= view.byteLength) {
    const id = String.fromCharCode(...new Uint8Array(buffer, pos, 4)), size = view.getUint32(pos + 4, true);
    if (id === "fmt ") {
      format = view.getUint16(pos + 8, true);
      channels = view.getUint16(pos + 10, true);
      bits = view.getUint16(pos + 22, true);
      if (format === 0xfffe) format = view.getUint16(pos + 32, true);  // WAVE_FORMAT_EXTENSIBLE
    } else if (id === "data") {
      const n = Math.floor(size / (bits / 8) / channels), out = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const at = pos + 8 + i * channels * (bits / 8);
        out[i] = format === 3 ? view.getFloat32(at, true) : view.getInt16(at, true) / 32768;
      }
      return out;
    }
    pos += 8 + size + (size % 2);
  }
  return new Float32Array(0);
}

function drawWaveform(buffer) {
  const samples = wavSamples(buffer), canvas = $("waveform"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#2a4d9b";
  const per = Math.max(1, Math.floor(samples.length / canvas.width)), mid = canvas.height / 2;
  ctx.beginPath();
  for (let x = 0; x < canvas.width; x++) {
    let lo = 0, hi = 0;
    for (let i = x * per; i < Math.min((x + 1) * per, samples.length); i++) {
      lo = Math.min(lo, samples[i]); hi = Math.max(hi, samples[i]);
    }
    ctx.moveTo(x + 0.5, mid - hi * mid);
    ctx.lineTo(x + 0.5, mid - lo * mid + 1);
  }
  ctx.stroke();
  canvas.dataset.samples = String(samples.length);
}

$("extract").addEventListener("click", extractReference);

for (const id of ["cfg_coef_all", "cfg_coef_txt"]) {
  $(id).addEventListener("input", () => { $(`${id}_value`).textContent = $(id).value; });
}
$("solver").addEventListener("change", syncSolver);
$("generate-form").addEventListener("submit", generate);
$("key-form").addEventListener("submit", saveKey);
syncSolver();
loadModel();
