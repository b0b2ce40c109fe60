#pragma once
// The model manifest (models/<name>.json): the only thing the engine knows about the model.
#include <Eigen/Core>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace nephra::engine {

class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct BodyCrop {
  bool enabled = false;
  double threshold_hu = -500.0;  // body = HU above this, largest connected component
  double margin = 0.04;          // fraction of the box side added on each side, then made square
  // An axial slice whose body outline (holes filled) is more than this fraction not body (lungs, with the vessels
  // inside them) cuts through the chest, not the abdomen: it is "not assessed" whatever the network says.
  // 1 = no such check (older manifests).
  double max_air_fraction = 1.0;
};

// PNG/JPEG exports are windowed already; their body is the largest region brighter than body_threshold_gray.
struct ImageFiles {
  bool export_rendering = false;  // false (older manifests): every image file is taken as the network input
  int body_threshold_gray = 10;
};

struct Preprocessing {
  double window_center = 80.0;  // HU
  double window_width = 350.0;  // HU
  BodyCrop body_crop;
  double clahe_clip = 4.0;
  int clahe_tiles = 8;
  // The square size slices are rendered at (crop, resize, CLAHE): the training slices' own size. A network trained
  // on them enlarged takes the rendering resized bilinearly to its input size, as training/augment.py does.
  // 0 (older manifests): the network's input size; Model::render_side() says which.
  int render_size = 0;
  ImageFiles image_files;
};

struct OodModel {
  Eigen::RowVectorXd pca_mean;  // 1 x C (C = feature channels)
  Eigen::MatrixXd components;   // K x C
  Eigen::MatrixXd class_means;  // classes x K
  Eigen::MatrixXd precision;    // K x K
  double residual_scale = 0.0;  // 0: score without the residual term (older manifests)
  double threshold = 0.0;       // score above → "not assessed"
};

struct Model {
  std::string name;
  std::string version;
  std::filesystem::path onnx_path;
  std::string onnx_sha256;
  // The manifest's decision parameters (temperature, thresholds, run lengths, OOD threshold) as canonical JSON:
  // results made under other parameters are other DICOM instances, even with the same network.
  std::string decision_key;
  std::vector<std::string> classes;
  int input_size = 224;
  std::string logits_output = "logits";
  std::string features_output = "features";
  Preprocessing preprocessing;
  Eigen::MatrixXf head_weight;  // classes x C
  Eigen::VectorXf head_bias;    // classes
  double temperature = 1.0;
  OodModel ood;
  std::map<std::string, double> decision_thresholds;  // finding class → calibrated probability threshold
  int min_run_slices = 2;                             // contiguous flagged slices for a study-level finding
  std::map<std::string, int> min_run_by_class;        // per finding class, where the study rule sets it

  [[nodiscard]] int class_index(const std::string& name) const;
  [[nodiscard]] int min_run_for(const std::string& label) const;
  [[nodiscard]] std::string id() const { return name + " " + version; }
  [[nodiscard]] int render_side() const {
    return preprocessing.render_size > 0 ? preprocessing.render_size : input_size;
  }
};

// Reads and checks the manifest; the ONNX path is resolved beside it and its sha256 verified.
Model load_model(const std::filesystem::path& manifest_path);

std::string sha256_file(const std::filesystem::path& path);

}  // namespace nephra::engine
