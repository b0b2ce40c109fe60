#pragma once
// POST /try: one uploaded DICOM file or PNG/JPEG export classified as `nephra classify` would, with its heatmap.
// Nothing uploaded is kept.
#include <filesystem>
#include <string>

#include "http_endpoint.h"
#include "nephra/engine/classifier.h"

namespace nephra::app {

inline constexpr size_t kMaxTryUploadBytes = size_t{32} * 1024 * 1024;

// `scratch`: a path the upload may be written to for the engine to read (removed before returning).
HttpResponse try_slice(engine::Classifier& classifier, const std::string& upload, const std::filesystem::path& scratch);

}  // namespace nephra::app
