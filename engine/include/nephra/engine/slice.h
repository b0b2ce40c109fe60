#pragma once
// Loading slices from DICOM (any transfer syntax DCMTK decodes, multi-frame) and PNG/JPEG, and preprocessing them
// exactly as the model manifest says.
#include <filesystem>
#include <limits>
#include <opencv2/core.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "nephra/engine/model.h"

namespace nephra::engine {

class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Identity of a slice in its study: what the SR and SC refer to.
struct SliceSource {
  std::string path;
  int frame = 0;  // 1-based frame of a multi-frame image; 0 for single-frame and image files
  std::string sop_class_uid;
  std::string sop_instance_uid;
  std::string series_instance_uid;
  int instance_number = 0;
  double position = std::numeric_limits<double>::quiet_NaN();  // along the patient axis (mm); NaN when unknown
  [[nodiscard]] std::string label() const;
};

struct Slice {
  SliceSource source;
  cv::Mat display;               // 8-bit windowed slice at its own size (what a radiologist would see)
  cv::Rect crop;                 // region of `display` that became the network input
  cv::Mat input;                 // model input_size², 8-bit, preprocessed
  cv::Mat body;                  // the patient at `display`'s size, holes filled (255); empty when not found
  double body_air = 0.0;         // fraction of the body (holes filled) that is air (or below an export's threshold)
  bool outside_abdomen = false;  // axial DICOM slice with body_air above the manifest's max_air_fraction
};

// Every slice of a file (one per frame). Throws InputError with a clear reason.
std::vector<Slice> load_slices(const std::filesystem::path& path, const Model& model);

// The slice `source` came from, loaded again (its pixels are not kept between classification and the heatmaps),
// carrying `source` itself. Throws InputError when the file no longer holds that frame.
Slice reload_slice(const SliceSource& source, const Model& model);

// DICOM path: HU image (float) → window → body crop → resize → CLAHE. Exposed for tests and the bench.
Slice preprocess_hu(const cv::Mat& hu, const Model& model);
// Image-file path. An export (any size but the network's): gray → body crop → resize → CLAHE, as DICOM gets it.
// An image already render_size² is the dataset's own form (cropped, resized, CLAHE-processed): taken as it is.
// Either way the rendering is then resized to the network's input size where the two differ.
// Manifests without image_files.body_threshold_gray take every image file as already processed.
Slice preprocess_image(const cv::Mat& gray_u8, const Model& model);

bool is_dicom_file(const std::filesystem::path& path);

}  // namespace nephra::engine
