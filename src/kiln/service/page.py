"""``GET /jobs``: one HTML page listing the caller's jobs, refreshed every 2 s.

The page holds no data: its script asks the REST API with the bearer token (from the URL
fragment ``#token=...`` once, then kept in the browser's localStorage).
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kiln compilation jobs</title>
<style>
 body{font:14px system-ui,sans-serif;margin:2em;color:#222}
 table{border-collapse:collapse;width:100%} th,td{padding:.35em .6em;border-bottom:1px solid #ddd;text-align:left}
 th{background:#f4f4f4} .COMPLETED{color:#060} .FAILED{color:#b00} .INPROGRESS,.STARTING{color:#a60}
 .STOPPED,.STOPPING{color:#666} #err{color:#b00} small{color:#666}
</style></head><body>
<h1>Kiln compilation jobs</h1>
<p><small id="meta">loading...</small> <span id="err"></span></p>
<table><thead><tr><th>name</th><th>status</th><th>target</th><th>created</th><th>duration</th>
<th>artifact</th></tr></thead><tbody id="jobs"></tbody></table>
<script>
const m = location.hash.match(/token=([^&]+)/);
if (m) { localStorage.setItem("kilnToken", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }
let token = localStorage.getItem("kilnToken");
if (!token) { token = prompt("Kiln API token (kiln keys create)") || ""; localStorage.setItem("kilnToken", token); }
const auth = {headers: {Authorization: "Bearer " + token}};
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
function duration(j) {
  if (!j.CompilationStartTime) return "";
  const end = j.CompilationEndTime ? Date.parse(j.CompilationEndTime) : Date.now();
  return ((end - Date.parse(j.CompilationStartTime)) / 1000).toFixed(1) + " s";
}
async function download(name) {
  const r = await fetch("/v1/compilation-jobs/" + encodeURIComponent(name) + "/artifact", auth);
  if (!r.ok) { document.getElementById("err").textContent = (await r.json()).error.message; return; }
  const a = document.createElement("a"); a.href = URL.createObjectURL(await r.blob());
  a.download = (r.headers.get("content-disposition") || "").split("filename=")[1] || name + ".tar.gz"; a.click();
}
async function refresh() {
  try {
    let rows = [], next = null;
    do {
      const q = new URLSearchParams({max_results: 100, sort_order: "Descending"}); if (next) q.set("next_token", next);
      const r = await fetch("/v1/compilation-jobs?" + q, auth);
      const body = await r.json();
      if (!r.ok) throw new Error(body.error.code + ": " + body.error.message);
      rows = rows.concat(body.CompilationJobSummaries); next = body.NextToken;
    } while (next);
    const tbody = document.getElementById("jobs"); tbody.replaceChildren();
    for (const j of rows) {
      const tr = document.createElement("tr"); tr.dataset.name = j.CompilationJobName;
      tr.append(cell(j.CompilationJobName), cell(j.CompilationJobStatus, j.CompilationJobStatus),
        cell(j.CompilationTargetDevice || [j.CompilationTargetPlatformOs, j.CompilationTargetPlatformArch, j.CompilationTargetPlatformAccelerator].filter(Boolean).join("/")),
        cell(new Date(j.CreationTime).toLocaleString()), cell(duration(j)));
      const td = document.createElement("td");
      if (j.CompilationJobStatus === "COMPLETED") {
        const a = document.createElement("a"); a.href = "#"; a.textContent = "download"; a.className = "artifact";
        a.onclick = (e) => { e.preventDefault(); download(j.CompilationJobName); }; td.append(a);
      }
      tr.append(td); tbody.append(tr);
    }
    document.getElementById("meta").textContent = rows.length + " jobs, updated " + new Date().toLocaleTimeString();
    document.getElementById("err").textContent = "";
  } catch (e) { document.getElementById("err").textContent = String(e.message || e); }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
