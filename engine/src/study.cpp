#include "nephra/engine/study.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <opencv2/core/utility.hpp>

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
  for (size_t first = 0; first < files.size(); first += chunk) {
    const size_t n = std::min(files.size(), first + chunk) - first;
    std::vector<std::vector<Slice>> loaded(n);
    std::vector<std::string> why(n);
    // Decoding and preprocessing dominate once inference is batched: spread the chunk over OpenCV's threads.
    cv::parallel_for_(cv::Range(0, static_cast<int>(n)), [&](const cv::Range& range) {
      for (int i = range.start; i < range.end; ++i) {
        const auto k = static_cast<size_t>(i);
        try {
          loaded[k] = load_slices(files[first + k], classifier.model());
        } catch (const std::exception& err) {
          why[k] = err.what();
        }
      }
    });
    std::vector<Slice> slices;
    for (size_t k = 0; k < n; ++k) {
      if (!why[k].empty()) {
        ++failed;
        errors.push_back({files[first + k].string(), why[k]});
      }
      for (auto& s : loaded[k]) slices.push_back(std::move(s));
    }
    auto results = classifier.classify(slices);
    for (size_t i = 0; i < slices.size(); ++i) records.push_back({slices[i].source, std::move(results[i]), 0});
  }
  return aggregate(std::move(records), classifier.model(), failed);
}

}  // namespace nephra::engine
