#pragma once
// Per-study aggregation: slices ordered along the patient axis, per-class findings from flagged slices.
#include <filesystem>
#include <string>
#include <vector>

#include "nephra/engine/classifier.h"
#include "nephra/engine/model.h"
#include "nephra/engine/slice.h"

namespace nephra::engine {

struct SliceRecord {
  SliceSource source;
  SliceResult result;
  int number = 0;  // 1-based position in the ordered study
};

struct SliceRun {
  int first = 0;  // slice numbers, inclusive
  int last = 0;
};

struct Finding {
  std::string label;  // model class name (Cyst, Stone, Tumor)
  bool present = false;
  double max_probability = 0.0;  // over the slices in qualifying runs (present) or over all assessed slices
  int peak_slice = 0;            // slice number of max_probability
  std::vector<int> flagged;      // slice numbers with p >= threshold
  std::vector<SliceRun> runs;    // contiguous flagged runs of at least min_run_slices
  double threshold = 0.0;        // the operating point: calibrated probability a slice must reach...
  int min_run_slices = 1;        // ...on this many adjacent assessed slices
  // The rule in words, e.g. "present when at least 2 adjacent slices have calibrated probability >= 0.60".
  [[nodiscard]] std::string operating_point() const;
};

struct StudyResult {
  std::string model_id;
  std::vector<SliceRecord> slices;  // ordered
  std::vector<Finding> findings;    // one per non-Normal class
  int assessed = 0;
  int not_assessed = 0;
  int failed = 0;  // slices that could not be read
  // Where classify_files spent its time: inferring, and waiting for a chunk still loading (decode + preprocess).
  double inference_seconds = 0;
  double load_wait_seconds = 0;
  [[nodiscard]] bool any_present() const;
  [[nodiscard]] std::string summary() const;
};

// A slice to show with its heatmap: one in a qualifying run of a present finding (never a slice below the finding's
// threshold, never one of an absent finding).
struct HeatmapSlice {
  int slice = 0;  // study slice number
  int cls = 0;
  std::string label;
  double p = 0;
};
// The node's SC series and `nephra classify --study --heatmap` both show these: most probable first, at most `cap`.
std::vector<HeatmapSlice> heatmap_slices(const StudyResult& study, const Model& model, int cap);

// Orders slices by position (then instance number, then file name) and applies the model's decision rule.
StudyResult aggregate(std::vector<SliceRecord> slices, const Model& model, int failed = 0);

}  // namespace nephra::engine

namespace nephra::engine {

struct FileError {
  std::string path;
  std::string reason;
};

// Loads and classifies files a chunk at a time, then aggregates. The next chunk loads while one is inferred: pixels
// of at most two chunks of `chunk` files are in memory; a slice outside the abdomen skips the network.
StudyResult classify_files(const std::vector<std::filesystem::path>& files, Classifier& classifier,
                           std::vector<FileError>& errors, size_t chunk = 32);

// JSON (nlohmann dump) of one slice result and of a study result; shared by the CLI and the node.
std::string slice_json(const SliceSource& source, const SliceResult& result, const Model& model);
std::string study_json(const StudyResult& study, const Model& model);

}  // namespace nephra::engine
