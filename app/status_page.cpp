#include "status_page.h"

#include <algorithm>
#include <cmath>

namespace nephra::app {
namespace {

constexpr double kHour = 3600;
constexpr int kMinutes = 60;
constexpr size_t kReasonChars = 240;  // a page row, not a log: the full reason is in the journal

// The counters as they were at time t: the last sample at or before it (zero before the first).
// At most `bytes` of UTF-8 text, never cutting a character in two (nlohmann::json refuses broken UTF-8).
std::string clip_utf8(const std::string& text, size_t bytes) {
  if (text.size() <= bytes) return text;
  while (bytes > 0 && (static_cast<unsigned char>(text[bytes]) & 0xC0U) == 0x80U) --bytes;
  return text.substr(0, bytes);
}

Throughput::Sample at_or_before(const std::deque<Throughput::Sample>& samples, double t) {
  Throughput::Sample found;
  for (const auto& s : samples) {
    if (s.at > t) break;
    found = s;
  }
  if (found.at == 0 && !samples.empty()) found = samples.front();  // the node started within the window
  return found;
}

constexpr const char* kPage = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Nephra node status</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2430;background:#f4f6f8}
header{background:#1d2430;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0} main{padding:12px 20px;max-width:1200px}
.badge{padding:2px 10px;border-radius:10px;font-weight:600}
.ready{background:#2e7d32;color:#fff}.not_ready{background:#c62828;color:#fff}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border-radius:6px;padding:10px 14px;min-width:140px;box-shadow:0 1px 2px #0002}
.card b{display:block;font-size:22px}.warn b{color:#c62828}
section{background:#fff;border-radius:6px;padding:10px 14px;margin:12px 0;box-shadow:0 1px 2px #0002}
h2{font-size:15px;margin:4px 0 8px} table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:4px 6px;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{font-weight:600;color:#555} .mono{font-family:ui-monospace,monospace}
.muted{color:#666} .error{color:#c62828;font-weight:600} svg rect{fill:#1976d2}
#try-result img{max-width:512px;width:100%;border:1px solid #ccc} #try-result table{width:auto}
</style></head><body>
<header><h1>Nephra node</h1><span id="health" class="badge">loading</span>
<span id="shadow" class="badge not_ready" hidden>shadow mode: results are kept, nothing is sent</span><span id="reason"></span>
<span class="muted" id="ident"></span><span class="muted" id="updated"></span></header>
<main>
<p class="muted">Research prototype, not for diagnosis. Studies are shown by a hash of their calling AE title and
Study Instance UID; no patient data appear on this page.</p>
<div class="cards" id="cards"></div>
<section><h2>Last hour</h2><div id="hour"></div><svg id="chart" width="600" height="60" role="img"
aria-label="instances received per minute"></svg><div class="muted">instances received per minute, oldest left</div>
</section>
<section><h2>Recent study rounds</h2><table><thead><tr><th>study</th><th>from</th><th>round</th><th>state</th>
<th>instances</th><th>findings</th><th>sealed&rarr;classified</th><th>classified&rarr;delivered</th>
<th>changed</th><th>note</th></tr></thead><tbody id="rounds"></tbody></table></section>
<!--TRY-->
</main>
<script>
"use strict";
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null)
  e.textContent = String(text); if (cls) e.className = cls; return e; }
function ago(s) { if (s === null || s === undefined) return ""; if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago"; return (s / 3600).toFixed(1) + " h ago"; }
function secs(s) { return s === null || s === undefined ? "" : s + " s"; }
function card(label, value, warn) { const c = el("div", null, "card" + (warn ? " warn" : ""));
  c.appendChild(el("b", value)); c.appendChild(el("span", label)); return c; }
function render(s) {
  const h = document.getElementById("health");
  h.textContent = s.ready ? "ready" : "not ready"; h.className = "badge " + (s.ready ? "ready" : "not_ready");
  document.getElementById("reason").textContent = s.reason;
  document.getElementById("shadow").hidden = !s.shadow;
  document.getElementById("ident").textContent = "AE " + s.ae_title + " · nephrad " + s.version + " · model " +
    s.model;
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  const cards = document.getElementById("cards"); cards.replaceChildren(
    card("studies queued", s.queue.depth), card("jobs running", s.queue.running),
    card("studies done", s.queue.done), card("rounds quarantined", s.queue.quarantined, s.queue.quarantined > 0),
    card("results pending", s.deliveries.pending), card("retrying", s.deliveries.retrying, s.deliveries.retrying > 0),
    card("dead-lettered", s.deliveries.dead_lettered, s.deliveries.dead_lettered > 0),
    card("kept in shadow mode", s.deliveries.shadowed));
  const t = s.throughput;
  document.getElementById("hour").textContent = t.instances + " instances received, " + t.studies +
    " study rounds classified, " + t.results + " result instances sent";
  const svg = document.getElementById("chart"); svg.replaceChildren();
  const max = Math.max(1, ...t.per_minute.map(m => m.instances));
  t.per_minute.forEach((m, i) => { const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const hgt = Math.round(56 * m.instances / max); r.setAttribute("x", i * 10); r.setAttribute("width", 8);
    r.setAttribute("y", 58 - hgt); r.setAttribute("height", hgt); svg.appendChild(r); });
  const body = document.getElementById("rounds"); body.replaceChildren();
  if (s.rounds.length === 0) { const tr = el("tr"); const td = el("td", "no study yet since the node started",
    "muted"); td.colSpan = 10; tr.appendChild(td); body.appendChild(tr); }
  for (const r of s.rounds) { const tr = el("tr"); tr.className = "round";
    [[r.study, "mono"], [r.calling_ae], [r.round], [r.state], [r.instances], [r.findings], [secs(r.classify_s)],
     [secs(r.deliver_s)], [ago(r.changed_ago_s)], [r.reason, r.state === "quarantined" ||
     r.state === "dead-lettered" ? "error" : "muted"]].forEach(([v, c]) => tr.appendChild(el("td", v, c)));
    body.appendChild(tr); }
}
async function refresh() {
  try { const r = await fetch("status.json", {cache: "no-store"}); render(await r.json()); }
  catch (e) { const h = document.getElementById("health"); h.textContent = "node unreachable";
    h.className = "badge not_ready"; }
}
refresh(); setInterval(refresh, 5000);
</script>
<!--TRYSCRIPT-->
</body></html>
)HTML";

// Shown only with http.try_page.
constexpr const char* kTryForm = R"HTML(<section id="try"><h2>Try a slice</h2>
<p class="muted">A DICOM file or a PNG/JPEG export of one CT slice (at most 32 MB). It is classified by the node's
model and not kept. Not for diagnosis.</p>
<form id="try-form"><input type="file" id="try-file" name="file" accept=".dcm,.png,.jpg,.jpeg,application/dicom,image/*">
<button type="submit">Classify</button></form><div id="try-result"></div></section>)HTML";

constexpr const char* kTryScript = R"HTML(<script>
"use strict";
document.getElementById("try-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = document.getElementById("try-result"); out.replaceChildren(el("p", "classifying…", "muted"));
  const file = document.getElementById("try-file").files[0];
  if (!file) { out.replaceChildren(el("p", "choose a file first", "error")); return; }
  try {
    const r = await fetch("try", {method: "POST", body: file, headers: {"Content-Type": "application/octet-stream"}});
    const text = await r.text(); let j; try { j = JSON.parse(text); } catch (e) { j = {error: text.trim()}; }
    if (!r.ok || j.error) { out.replaceChildren(el("p", j.error || ("HTTP " + r.status), "error")); return; }
    out.replaceChildren();
    for (const s of j.slices) {
      const d = el("div", null, "slice");
      d.appendChild(el("h3", (s.frame ? "frame " + s.frame + ": " : "") + s["class"]));
      if (s.not_assessed) d.appendChild(el("p", "not assessed: " + s.reason, "error"));
      if (s.probabilities) { const tb = el("table");
        for (const [k, v] of Object.entries(s.probabilities)) { const tr = el("tr"); tr.appendChild(el("td", k));
          tr.appendChild(el("td", (100 * v).toFixed(1) + " %")); tb.appendChild(tr); }
        d.appendChild(tb); }
      if (s.heatmap_png) { const img = el("img"); img.alt = "heatmap for " + s.heatmap_class;
        img.src = "data:image/png;base64," + s.heatmap_png; d.appendChild(el("p", "heatmap: " + s.heatmap_class,
        "muted")); d.appendChild(img); }
      out.appendChild(d);
    }
    out.appendChild(el("p", "model " + j.model + "; calibrated probabilities of this one slice, not a study finding",
      "muted"));
  } catch (e) { out.replaceChildren(el("p", "upload failed: " + e, "error")); }
});
</script>)HTML";

}  // namespace

void Throughput::record(const Sample& sample) {
  const std::lock_guard guard(mutex_);
  samples_.push_back(sample);
  while (samples_.size() > 2 && samples_[1].at < sample.at - kHour - 60) samples_.pop_front();
}

nlohmann::json Throughput::last_hour(const Sample& now) const {
  std::deque<Sample> samples;
  {
    const std::lock_guard guard(mutex_);
    samples = samples_;
  }
  samples.push_back(now);
  nlohmann::json per_minute = nlohmann::json::array();
  for (int m = kMinutes; m > 0; --m) {
    const auto from = at_or_before(samples, now.at - m * 60.0);
    const auto to = at_or_before(samples, now.at - (m - 1) * 60.0);
    per_minute.push_back({{"instances", to.instances - from.instances},
                          {"studies", to.studies - from.studies},
                          {"results", to.results - from.results}});
  }
  const auto from = at_or_before(samples, now.at - kHour);
  return {{"instances", now.instances - from.instances},
          {"studies", now.studies - from.studies},
          {"results", now.results - from.results},
          {"since", std::max(from.at, now.at - kHour)},
          {"per_minute", per_minute}};
}

nlohmann::json rounds_json(const std::vector<store::RoundView>& rounds, double now) {
  nlohmann::json out = nlohmann::json::array();
  const auto seconds = [](double from, double to) -> nlohmann::json {
    if (from <= 0 || to <= 0 || to < from) return nullptr;
    return std::round((to - from) * 10) / 10;
  };
  for (const auto& v : rounds) {
    const auto& r = v.record;
    const bool delivered = r.state == store::RoundState::kDone && r.classified_at > 0 && r.reason.empty();
    out.push_back({{"study", v.study_key.substr(0, 12)},
                   {"calling_ae", v.calling_ae},
                   {"round", v.round},
                   {"state", std::string(store::to_string(r.state))},
                   {"instances", r.instances},
                   {"findings", r.findings},
                   {"attempts", r.attempts},
                   {"reason", clip_utf8(r.reason, kReasonChars)},
                   {"sealed_ago_s", seconds(r.sealed_at, now)},
                   {"classify_s", seconds(r.sealed_at, r.classified_at)},
                   {"deliver_s", delivered ? seconds(r.classified_at, r.changed) : nullptr},
                   {"changed_ago_s", seconds(r.changed, now)}});
  }
  return out;
}

std::string status_page_html(bool try_page) {
  std::string page = kPage;
  if (!try_page) return page;
  page.replace(page.find("<!--TRY-->"), 10, kTryForm);
  page.replace(page.find("<!--TRYSCRIPT-->"), 16, kTryScript);
  return page;
}

}  // namespace nephra::app
