// WebPage: the page at `GET /`: drop or choose an image, see it with its caption, the concepts
// as bars with their scores and the time of each stage; a bad file shows the service's error.
// One self-contained HTML file (no scripts or styles from elsewhere), kept in the binary.

enum WebPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LightCap</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; color: #1d1d1f; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  #drop { display: block; margin-top: 1rem; border: 2px dashed #8a8a8e; border-radius: 10px; padding: 1.6rem; text-align: center; cursor: pointer; }
  #drop.over { background: #eef4ff; border-color: #2c6ecb; }
  #result { display: none; margin-top: 1.4rem; gap: 1.4rem; align-items: flex-start; }
  #result.shown { display: flex; flex-wrap: wrap; }
  #preview { max-width: 256px; max-height: 256px; border-radius: 8px; }
  #caption { font-size: 1.25rem; font-weight: 600; margin: 0 0 .8rem; }
  .bar { display: flex; align-items: center; gap: .5rem; margin: .15rem 0; font-size: .9rem; }
  .bar span.name { width: 6.5rem; text-align: right; }
  .bar div { height: .8rem; background: #2c6ecb; border-radius: 3px; }
  table { border-collapse: collapse; font-size: .85rem; margin-top: .8rem; }
  td { padding: .1rem .6rem .1rem 0; }
  #error { display: none; margin-top: 1rem; padding: .7rem 1rem; border-radius: 8px; background: #fdecea; color: #8a1c12; }
  #error.shown { display: block; }
  .muted { color: #6e6e73; font-size: .85rem; }
</style>
</head>
<body>
<h1>LightCap</h1>
<p class="muted" id="model">An on-device image captioner.</p>
<label id="drop" for="file">Drop an image here, or click to choose one (JPEG, PNG, WebP)
  <input id="file" type="file" accept="image/jpeg,image/png,image/webp" hidden>
</label>
<div id="error" role="alert"></div>
<div id="result">
  <img id="preview" alt="the image captioned">
  <div style="flex: 1; min-width: 16rem">
    <p id="caption"></p>
    <div id="concepts"></div>
    <table id="timings"></table>
  </div>
</div>
<script>
const $ = (id) => document.getElementById(id);
fetch("v1/model").then(r => r.ok ? r.json() : null).then(m => {
  if (m) $("model").textContent = `Model ${m.name}: ${m.parameters ?? "?"} parameters, ${m.concepts} concepts.`;
}).catch(() => {});
function showError(message) {
  $("error").textContent = message; $("error").classList.add("shown"); $("result").classList.remove("shown");
}
async function caption(file) {
  $("error").classList.remove("shown");
  $("caption").textContent = "Captioning…";
  $("preview").src = URL.createObjectURL(file);
  $("result").classList.add("shown");
  let answer;
  try {
    const response = await fetch("v1/caption", { method: "POST", body: file,
      headers: { "Content-Type": file.type || "application/octet-stream" } });
    answer = await response.json();
    if (!response.ok) return showError(`${file.name}: ${answer.error ?? response.statusText}`);
  } catch (e) {
    return showError(`${file.name}: the service did not answer (${e})`);
  }
  $("caption").textContent = answer.caption;
  const top = Math.max(...answer.concepts.map(c => c.score), 1e-6);
  $("concepts").replaceChildren(...answer.concepts.map(c => {
    const row = document.createElement("div"); row.className = "bar";
    const name = document.createElement("span"); name.className = "name"; name.textContent = c.name;
    const bar = document.createElement("div"); bar.style.width = `${Math.max(0, c.score / top) * 12}rem`;
    const value = document.createElement("span"); value.textContent = c.score.toFixed(3);
    row.append(name, bar, value); return row;
  }));
  const stages = ["queue", "decode", "preprocess", "backbone", "concepts", "fusion", "total"];
  $("timings").replaceChildren(...stages.filter(s => s in answer.timings).map(s => {
    const row = document.createElement("tr");
    row.innerHTML = `<td>${s}</td><td>${answer.timings[s].toFixed(1)} ms</td>`; return row;
  }));
  document.body.dataset.captioned = answer.caption;
}
$("file").addEventListener("change", e => { if (e.target.files[0]) caption(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) caption(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""#
}
