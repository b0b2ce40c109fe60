#include "nephra/engine/study.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <iterator>

namespace nephra::engine {
namespace {

bool before(const SliceRecord& a, const SliceRecord& b) {
  const double pa = a.source.position;
  const double pb = b.source.position;
  if (!std::isnan(pa) && !std::isnan(pb) && pa != pb) return pa > pb;  // head first: superior (+z) to inferior
  if (std::isnan(pa) != std::isnan(pb)) return !std::isnan(pa);
  if (a.source.instance_number != b.source.instance_number) return a.source.instance_number < b.source.instance_number;
  if (a.source.path != b.source.path) return a.source.path < b.source.path;
  return a.source.frame < b.source.frame;
}

struct LoadedChunk {
  std::vector<Slice> slices;
  std::vector<FileError> errors;
};

// One file after the other, on the loader's own thread: not on OpenCV's thread pool, where a 10 ms decode task
// would hold up every layer of the network running beside it (each waits for all of the pool at its end).
LoadedChunk load_chunk(const std::vector<std::filesystem::path>& files, size_t first, size_t end, const Model& model) {
  LoadedChunk out;
  for (size_t k = first; k < end; ++k) {
    try {
      for (auto& s : load_slices(files[k], model)) out.slices.push_back(std::move(s));
    } catch (const std::exception& err) {
      out.errors.push_back({files[k].string(), err.what()});
    }
  }
  return out;
}

std::vector<SliceRun> runs_of(const std::vector<int>& flagged, int min_run) {
  std::vector<SliceRun> runs;
  for (size_t i = 0; i < flagged.size();) {
    size_t j = i;
    while (j + 1 < flagged.size() && flagged[j + 1] == flagged[j] + 1) ++j;
    if (static_cast<int>(j - i + 1) >= min_run) runs.push_back({flagged[i], flagged[j]});
    i = j + 1;
  }
  return runs;
}

Finding finding_for(const std::vector<SliceRecord>& slices, const Model& model, const std::string& label,
                    double threshold) {
  const auto cls = static_cast<size_t>(model.class_index(label));
  Finding f;
  f.label = label;
  f.threshold = threshold;
  f.min_run_slices = model.min_run_for(label);
  for (const auto& s : slices) {
    if (s.result.not_assessed) continue;
    const double p = s.result.probabilities[cls];
    if (p >= threshold) f.flagged.push_back(s.number);
  }
  f.runs = runs_of(f.flagged, f.min_run_slices);
  f.present = !f.runs.empty();
  for (const auto& s : slices) {
    if (s.result.not_assessed) continue;
    const bool in_run = std::any_of(f.runs.begin(), f.runs.end(),
                                    [&](const SliceRun& r) { return s.number >= r.first && s.number <= r.last; });
    const double p = s.result.probabilities[cls];
    if ((in_run || !f.present) && p > f.max_probability) {
      f.max_probability = p;
      f.peak_slice = s.number;
    }
  }
  return f;
}

std::string plain_name(const std::string& label) {
  if (label == "Cyst") return "kidney cyst";
  if (label == "Stone") return "kidney stone";
  if (label == "Tumor") return "kidney tumour";
  return label;
}

std::string runs_text(const std::vector<SliceRun>& runs) {
  std::string out;
  for (const auto& r : runs) {
    if (!out.empty()) out += ", ";
    out += r.first == r.last ? std::to_string(r.first) : std::to_string(r.first) + "–" + std::to_string(r.last);
  }
  return out;
}

}  // namespace

std::string Finding::operating_point() const {
  char prob[16];
  std::snprintf(prob, sizeof prob, "%.3f", threshold);
  return label + ": present when at least " + std::to_string(min_run_slices) + " adjacent slice" +
         (min_run_slices == 1 ? " has" : "s have") + " calibrated probability >= " + prob;
}

bool StudyResult::any_present() const {
  return std::any_of(findings.begin(), findings.end(), [](const Finding& f) { return f.present; });
}

std::string StudyResult::summary() const {
  std::string out;
  char prob[16];
  for (const auto& f : findings) {
    if (!f.present) continue;
    std::snprintf(prob, sizeof prob, "%.2f", f.max_probability);
    out += std::string(out.empty() ? "AI: " : "; ") + "suspected " + plain_name(f.label) + " on slice" +
           (f.runs.size() == 1 && f.runs[0].first == f.runs[0].last ? " " : "s ") + runs_text(f.runs) +
           ", probability " + prob;
  }
  if (out.empty()) out = "AI: no kidney cyst, stone or tumour found";
  out += " (" + std::to_string(assessed) + " slices assessed";
  if (not_assessed > 0) out += ", " + std::to_string(not_assessed) + " not assessed";
  if (failed > 0) out += ", " + std::to_string(failed) + " unreadable";
  return out + ")";
}

std::vector<HeatmapSlice> heatmap_slices(const StudyResult& study, const Model& model, int cap) {
  std::vector<HeatmapSlice> out;
  for (const auto& f : study.findings) {
    if (!f.present) continue;
    const int cls = model.class_index(f.label);
    for (const auto& run : f.runs) {
      for (int n = run.first; n <= run.last; ++n) {
        const auto& rec = study.slices[static_cast<size_t>(n - 1)];
        out.push_back({n, cls, f.label, rec.result.probabilities[static_cast<size_t>(cls)]});
      }
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const HeatmapSlice& a, const HeatmapSlice& b) { return a.p > b.p; });
  const auto keep = static_cast<size_t>(std::max(0, cap));
  if (out.size() > keep) out.resize(keep);
  return out;
}

StudyResult aggregate(std::vector<SliceRecord> slices, const Model& model, int failed) {
  std::stable_sort(slices.begin(), slices.end(), before);
  StudyResult study;
  study.model_id = model.id();
  study.failed = failed;
  for (size_t i = 0; i < slices.size(); ++i) {
    slices[i].number = static_cast<int>(i + 1);
    (slices[i].result.not_assessed ? study.not_assessed : study.assessed)++;
  }
  study.slices = std::move(slices);
  for (const auto& label : model.classes) {
    const auto it = model.decision_thresholds.find(label);
    if (it == model.decision_thresholds.end()) continue;  // Normal has no finding
    study.findings.push_back(finding_for(study.slices, model, label, it->second));
  }
  return study;
}

}  // namespace nephra::engine

namespace nephra::engine {

StudyResult classify_files(const std::vector<std::filesystem::path>& files, Classifier& classifier,
                           std::vector<FileError>& errors, size_t chunk) {
  std::vector<SliceRecord> records;
  int failed = 0;
  chunk = std::max<size_t>(chunk, 1);
  const auto load_from = [&](size_t first) {
    return std::async(std::launch::async, [&files, &classifier, first, chunk] {
      return load_chunk(files, first, std::min(files.size(), first + chunk), classifier.model());
    });
  };
  // Two chunks at most in memory: while the network infers one, the next is decoded and preprocessed.
  std::future<LoadedChunk> next;
  if (!files.empty()) next = load_from(0);
  double inference = 0;
  double load_wait = 0;
  const auto seconds_since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // Slices wait here until a whole batch is ready: OpenCV DNN sets its layers up again whenever the batch shape
  // changes (which made inference in the node half as fast as the engine alone once chest slices were skipped),
  // and oneDNN builds primitives for each new batch size.
  std::vector<Slice> pending;
  const auto infer = [&](size_t count) {
    const auto inferred_from = std::chrono::steady_clock::now();
    const std::vector<Slice> ready(std::make_move_iterator(pending.begin()),
                                   std::make_move_iterator(pending.begin() + static_cast<std::ptrdiff_t>(count)));
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(count));
    auto results = classifier.classify(ready);
    inference += seconds_since(inferred_from);
    for (size_t i = 0; i < ready.size(); ++i) records.push_back({ready[i].source, std::move(results[i]), 0});
  };
  const size_t batch = classifier.batch_size();
  for (size_t first = 0; first < files.size(); first += chunk) {
    const auto waited_from = std::chrono::steady_clock::now();
    LoadedChunk loaded = next.get();
    load_wait += seconds_since(waited_from);
    if (first + chunk < files.size()) next = load_from(first + chunk);
    failed += static_cast<int>(loaded.errors.size());
    errors.insert(errors.end(), loaded.errors.begin(), loaded.errors.end());
    std::vector<Slice> outside;
    for (auto& s : loaded.slices) (s.outside_abdomen ? outside : pending).push_back(std::move(s));
    if (!outside.empty()) {  // not assessed, never inferred: Classifier::classify does not run the network for them
      auto results = classifier.classify(outside);
      for (size_t i = 0; i < outside.size(); ++i) records.push_back({outside[i].source, std::move(results[i]), 0});
    }
    if (pending.size() >= batch) infer(pending.size() / batch * batch);
  }
  if (!pending.empty()) infer(pending.size());
  StudyResult study = aggregate(std::move(records), classifier.model(), failed);
  study.inference_seconds = inference;
  study.load_wait_seconds = load_wait;
  return study;
}

}  // namespace nephra::engine
