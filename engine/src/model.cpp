#include "nephra/engine/model.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>

namespace nephra::engine {
namespace {
using nlohmann::json;

template <typename Matrix>
Matrix matrix_of(const json& rows, const char* what) {
  if (!rows.is_array() || rows.empty() || !rows[0].is_array()) throw ModelError(std::string("manifest: bad ") + what);
  Matrix m(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(rows[0].size()));
  for (Eigen::Index r = 0; r < m.rows(); ++r) {
    const auto& row = rows[static_cast<size_t>(r)];
    if (row.size() != static_cast<size_t>(m.cols())) throw ModelError(std::string("manifest: ragged ") + what);
    for (Eigen::Index c = 0; c < m.cols(); ++c) m(r, c) = row[static_cast<size_t>(c)].get<typename Matrix::Scalar>();
  }
  return m;
}

template <typename Vector>
Vector vector_of(const json& values, const char* what) {
  if (!values.is_array() || values.empty()) throw ModelError(std::string("manifest: bad ") + what);
  Vector v(static_cast<Eigen::Index>(values.size()));
  for (Eigen::Index i = 0; i < v.size(); ++i) v(i) = values[static_cast<size_t>(i)].get<typename Vector::Scalar>();
  return v;
}

Preprocessing preprocessing_of(const json& pre) {
  Preprocessing p;
  const json& dicom = pre.at("dicom");
  p.window_center = dicom.at("window_center").get<double>();
  p.window_width = dicom.at("window_width").get<double>();
  if (p.window_width <= 0) throw ModelError("manifest: window_width must be > 0");
  if (dicom.contains("clahe") && dicom["clahe"].is_object()) {
    p.clahe_clip = dicom["clahe"].value("clip_limit", 4.0);
    p.clahe_tiles = dicom["clahe"].value("tile_grid", 8);
  }
  if (dicom.contains("body_crop") && dicom["body_crop"].is_object()) {
    p.body_crop.enabled = true;
    p.body_crop.threshold_hu = dicom["body_crop"].value("threshold_hu", -500.0);
    p.body_crop.margin = dicom["body_crop"].value("margin", 0.04);
    p.body_crop.max_air_fraction = dicom["body_crop"].value("max_air_fraction", 1.0);
  }
  p.render_size = pre.value("render_size", 0);
  if (const json images = pre.value("image_files", json::object()); images.contains("body_threshold_gray")) {
    p.image_files.export_rendering = true;
    p.image_files.body_threshold_gray = images["body_threshold_gray"].get<int>();
  }
  return p;
}

OodModel ood_of(const json& o, Eigen::Index channels) {
  OodModel ood;
  ood.pca_mean = vector_of<Eigen::VectorXd>(o.at("pca_mean"), "ood.pca_mean").transpose();
  ood.components = matrix_of<Eigen::MatrixXd>(o.at("pca_components"), "ood.pca_components");
  ood.class_means = matrix_of<Eigen::MatrixXd>(o.at("class_means"), "ood.class_means");
  ood.precision = matrix_of<Eigen::MatrixXd>(o.at("precision"), "ood.precision");
  ood.threshold = o.at("threshold").get<double>();
  ood.residual_scale = o.value("residual_scale", 0.0);
  const auto k = ood.components.rows();
  if (ood.pca_mean.size() != channels || ood.components.cols() != channels || ood.class_means.cols() != k ||
      ood.precision.rows() != k || ood.precision.cols() != k) {
    throw ModelError("manifest: OOD model dimensions do not agree");
  }
  return ood;
}

}  // namespace

int Model::class_index(const std::string& class_name) const {
  for (size_t i = 0; i < classes.size(); ++i) {
    if (classes[i] == class_name) return static_cast<int>(i);
  }
  return -1;
}

int Model::min_run_for(const std::string& label) const {
  const auto it = min_run_by_class.find(label);
  return std::max(1, it != min_run_by_class.end() ? it->second : min_run_slices);
}

std::string sha256_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError("cannot read " + path.string());
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::array<char, 1 << 16> buf{};
  while (in.read(buf.data(), buf.size()) || in.gcount() > 0) {
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(in.gcount()));
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md.data(), &len);
  std::string hex;
  static constexpr const char* kDigits = "0123456789abcdef";
  for (unsigned int i = 0; i < len; ++i) {
    hex += kDigits[md[i] >> 4U];
    hex += kDigits[md[i] & 15U];
  }
  return hex;
}

Model load_model(const std::filesystem::path& manifest_path) {
  std::ifstream in(manifest_path);
  if (!in) throw ModelError("cannot open model manifest " + manifest_path.string());
  json j;
  try {
    j = json::parse(in);
    Model m;
    m.name = j.at("name").get<std::string>();
    m.version = j.at("version").get<std::string>();
    m.onnx_path = manifest_path.parent_path() / j.at("onnx").get<std::string>();
    m.onnx_sha256 = j.at("onnx_sha256").get<std::string>();
    m.classes = j.at("classes").get<std::vector<std::string>>();
    m.input_size = j.at("input").at("width").get<int>();
    m.logits_output = j.at("outputs").at("logits").get<std::string>();
    m.features_output = j.at("outputs").at("features").get<std::string>();
    m.preprocessing = preprocessing_of(j.at("preprocessing"));
    if (m.input_size <= 0 || m.preprocessing.render_size < 0) {
      throw ModelError("manifest: input width must be > 0 and preprocessing.render_size >= 0");
    }
    m.head_weight = matrix_of<Eigen::MatrixXf>(j.at("head").at("weight"), "head.weight");
    m.head_bias = vector_of<Eigen::VectorXf>(j.at("head").at("bias"), "head.bias");
    m.temperature = j.at("temperature").get<double>();
    m.ood = ood_of(j.at("ood"), m.head_weight.cols());
    m.decision_thresholds = j.at("decision_thresholds").get<std::map<std::string, double>>();
    if (j.contains("study_rule")) {
      // one run length for every finding, or one per finding class (the study-level layer fitted per class)
      const auto& runs = j["study_rule"].contains("min_run_slices") ? j["study_rule"]["min_run_slices"] : json(2);
      if (runs.is_object()) {
        m.min_run_by_class = runs.get<std::map<std::string, int>>();
      } else {
        m.min_run_slices = runs.get<int>();
      }
    }
    m.decision_key =
        json{{"temperature", j.at("temperature")},
             {"decision_thresholds", j.at("decision_thresholds")},
             {"min_run_slices", j.contains("study_rule") ? j["study_rule"].value("min_run_slices", json(2)) : json(2)},
             {"ood_threshold", j.at("ood").value("threshold", json())}}
            .dump();
    if (m.head_weight.rows() != static_cast<Eigen::Index>(m.classes.size()) ||
        m.head_bias.size() != m.head_weight.rows()) {
      throw ModelError("manifest: head does not match the class list");
    }
    if (m.temperature <= 0) throw ModelError("manifest: temperature must be > 0");
    const std::string actual = sha256_file(m.onnx_path);
    if (actual != m.onnx_sha256) {
      throw ModelError("model file " + m.onnx_path.string() + " has sha256 " + actual + ", the manifest says " +
                       m.onnx_sha256);
    }
    return m;
  } catch (const json::exception& err) {
    throw ModelError("model manifest " + manifest_path.string() + ": " + err.what());
  }
}

}  // namespace nephra::engine
