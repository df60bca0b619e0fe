// jasco-serve web page: the controls of audiocraft's JASCO demo, posted as multipart/form-data to
// v1/generate (relative URLs, so the page works under any route prefix). No external assets.
"use strict";

const $ = (id) => document.getElementById(id);
let objectUrl = null;

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
    const r = await fetch("v1/models");
    const m = await r.json();
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
    const r = await fetch("v1/generate", { method: "POST", body: formData(), headers: { Accept: "audio/wav" } });
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      try { message = (await r.json()).error || message; } catch (_) { /* not JSON */ }
      showError(message);
      return;
    }
    const blob = await r.blob();
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

for (const id of ["cfg_coef_all", "cfg_coef_txt"]) {
  $(id).addEventListener("input", () => { $(`${id}_value`).textContent = $(id).value; });
}
$("solver").addEventListener("change", syncSolver);
$("generate-form").addEventListener("submit", generate);
syncSolver();
loadModel();
