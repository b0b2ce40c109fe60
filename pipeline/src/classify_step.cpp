#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "nephra/engine/study.h"
#include "nephra/pipeline/outbox.h"
#include "nephra/pipeline/pipeline.h"
#include "nephra/pipeline/results.h"

namespace nephra::pipeline {
namespace fs = std::filesystem;
namespace {

constexpr Uint32 kMaxHeaderElement = 4096;

class ClassifyStep : public StudyStep {
 public:
  ClassifyStep(const config::Config& cfg, engine::Classifier& clf, std::string version, ClassifyStats& stats)
      : max_heatmaps_(cfg.results.max_heatmaps),
        clf_(clf),
        ctx_(make_result_context(clf.model(), cfg.results.uid_root, std::move(version))),
        stats_(stats) {}

  [[nodiscard]] std::string name() const override { return "classify"; }

  StepResult run(const store::StudyRound& round, store::RoundStore& store) override {
    const auto started = std::chrono::steady_clock::now();
    const std::vector<fs::path> files = store.inputs(round);
    std::vector<engine::FileError> errors;
    const auto study = engine::classify_files(files, clf_, errors);
    for (const auto& e : errors) {
      spdlog::warn("SLICE_UNREADABLE study={} file={} reason=\"{}\"", round.study_key,
                   fs::path(e.path).filename().string(), e.reason);
    }
    stats_.slices_unreadable.inc(errors.size());
    stats_.slices_classified.inc(study.slices.size());
    stats_.slices_not_assessed.inc(static_cast<std::uint64_t>(study.not_assessed));
    if (study.slices.empty()) return StepResult::fail("no slice of the study could be classified");
    store.write_round_file(round, "results.json", engine::study_json(study, clf_.model()) + "\n");
    const auto ms = [&] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
    };
    spdlog::info(
        "STUDY_CLASSIFIED study={} round={} slices={} not_assessed={} unreadable={} findings=\"{}\" ms={} "
        "inference_ms={:.0f} load_wait_ms={:.0f}",
        round.study_key, round.round, study.slices.size(), study.not_assessed, study.failed, findings_text(study), ms(),
        study.inference_seconds * 1000, study.load_wait_seconds * 1000);
    const auto state = write_results(round, study, store);
    spdlog::info("RESULTS_WRITTEN study={} round={} state={} ms={}", round.study_key, round.round,
                 store::to_string(state), ms());
    return StepResult::done();
  }

 private:
  int max_heatmaps_;
  engine::Classifier& clf_;
  ResultContext ctx_;
  ClassifyStats& stats_;

  static std::string findings_text(const engine::StudyResult& study) {
    std::string out;
    for (const auto& f : study.findings) {
      if (f.present) out += (out.empty() ? "" : ",") + f.label;
    }
    return out.empty() ? "none" : out;
  }

  // Where the heatmap points; a heatmap with no positive activation outlines the region the network was shown.
  static std::vector<cv::Point2f> outline(const engine::Slice& slice, const cv::Mat& heat) {
    auto region = engine::hot_region(heat);
    if (!region.empty()) return region;
    const auto c = cv::Rect2f(slice.crop & cv::Rect(0, 0, slice.display.cols, slice.display.rows));
    return {c.tl(), {c.x + c.width, c.y}, c.br(), {c.x, c.y + c.height}, c.tl()};
  }

  // SR + heatmaps into the store's staging folder, committed as a whole: a crash leaves all or nothing. The SR
  // names the SR an earlier round delivered as its predecessor: the archive holds one current SR per study.
  store::RoundState write_results(const store::StudyRound& round, const engine::StudyResult& study,
                                  store::RoundStore& store) const {
    const fs::path staging = store.begin_results(round);
    DcmFileFormat header;
    const auto& first = study.slices.front().source.path;
    if (header.loadFile(first.c_str(), EXS_Unknown, EGL_noChange, kMaxHeaderElement).bad()) {
      throw std::runtime_error("cannot re-read the study header");
    }
    // Heatmaps first: each one also outlines, for the SR, where its finding is on that slice.
    std::vector<FindingRegion> regions;
    int number = 1;
    for (const auto& f : engine::heatmap_slices(study, clf_.model(), max_heatmaps_)) {
      const auto& rec = study.slices[static_cast<size_t>(f.slice - 1)];
      const engine::Slice slice = engine::reload_slice(rec.source, clf_.model());
      const cv::Mat heat = engine::heatmap(slice, rec.result, f.cls);
      regions.push_back({f.label, rec.source, outline(slice, heat)});
      write_sc(slice, rec.result, f.cls, f.label, number, *header.getDataset(), ctx_,
               staging / ("sc-" + std::to_string(1000 + number) + ".dcm"), heat);
      ++number;
    }
    // Every present finding is outlined at least on its peak slice, even past the heatmap cap: a viewer drawing the
    // SR's measurement groups needs a region in each (OHIF's SR viewport fails on a group without one).
    for (const auto& f : study.findings) {
      const bool outlined =
          std::any_of(regions.begin(), regions.end(), [&](const auto& r) { return r.label == f.label; });
      if (!f.present || outlined || f.peak_slice < 1) continue;
      const auto& rec = study.slices[static_cast<size_t>(f.peak_slice - 1)];
      const engine::Slice slice = engine::reload_slice(rec.source, clf_.model());
      const int cls = clf_.model().class_index(f.label);
      regions.push_back({f.label, rec.source, outline(slice, engine::heatmap(slice, rec.result, cls))});
    }
    const auto predecessor = store.previous_sr(round);
    write_sr(study, *header.getDataset(), ctx_, staging / "sr.dcm", predecessor ? &*predecessor : nullptr, regions);
    return store.commit_results(round, sr_series_uid(round.study_uid, ctx_),
                                sr_instance_uid(round.study_uid, study, ctx_), study.summary());
  }
};

}  // namespace

std::unique_ptr<StudyStep> make_classify_step(const config::Config& cfg, engine::Classifier& classifier,
                                              std::string software_version, ClassifyStats& stats) {
  return std::make_unique<ClassifyStep>(cfg, classifier, std::move(software_version), stats);
}

}  // namespace nephra::pipeline
