#pragma once
// `nephra validate`: the product's own study pipeline (the same decision rule as the node) over a site's labelled
// studies, or over the results the node kept in shadow mode, and a report a site can act on: report.html (with PNG
// figures, nothing loaded from elsewhere) and report.json, in one folder.
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>

#include "nephra/engine/classifier.h"
#include "nephra/validate/metrics.h"

namespace nephra::validate {

struct ValidateOptions {
  std::filesystem::path labels;
  std::filesystem::path out;                   // the report folder (created)
  std::optional<std::filesystem::path> spool;  // read results.json the node kept instead of classifying
  std::filesystem::path manifest;              // the model's manifest: its card figures go beside the site's
  int bootstrap = 2000;
  int max_heatmaps = 40;  // of the studies it got wrong
};

// Throws LabelsError (a bad labels file, naming the line) or std::runtime_error. `progress` gets a progress bar.
Metrics run_validation(const ValidateOptions& options, engine::Classifier& classifier, std::ostream& progress);

}  // namespace nephra::validate
