#include "nephra/engine/classifier.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <opencv2/core/utility.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>

#include "dnnl_net.h"

namespace nephra::engine {
namespace {

std::vector<double> calibrated(const float* logits, size_t n, double temperature) {
  std::vector<double> p(n);
  double max = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < n; ++i) max = std::max(max, static_cast<double>(logits[i]) / temperature);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i] = std::exp(static_cast<double>(logits[i]) / temperature - max);
  for (auto& v : p) v /= sum;
  return p;
}

// Mahalanobis distance in PCA space, plus the energy outside the PCA space (see training/calibrate_ood.py).
double ood_score(const OodModel& ood, const Eigen::RowVectorXd& pooled) {
  const Eigen::RowVectorXd centred = pooled - ood.pca_mean;
  const Eigen::RowVectorXd z = centred * ood.components.transpose();
  double best = INFINITY;
  for (Eigen::Index c = 0; c < ood.class_means.rows(); ++c) {
    const Eigen::RowVectorXd d = z - ood.class_means.row(c);
    best = std::min(best, (d * ood.precision * d.transpose())(0, 0));
  }
  if (ood.residual_scale <= 0) return best;
  const double residual = (centred - z * ood.components).squaredNorm();
  return best / static_cast<double>(ood.components.rows()) + residual / ood.residual_scale;
}

}  // namespace

struct Classifier::Impl {
  Model model;
  ClassifierOptions options;
  std::mutex mutex;
  std::unique_ptr<DnnlNet> fast;  // null: OpenCV DNN runs the network
  cv::dnn::Net net;
  std::string fallback_reason;

  // One batch through the network; fills results[first .. first + n).
  void run_batch(const std::vector<cv::Mat>& inputs, size_t first, size_t n, std::vector<SliceResult>& results) {
    const int side = model.input_size;
    const std::array<int, 4> shape{static_cast<int>(n), 3, side, side};
    cv::Mat blob(4, shape.data(), CV_32F);
    for (size_t i = 0; i < n; ++i) {
      const cv::Mat& in = inputs[first + i];
      if (in.type() != CV_8U || in.rows != side || in.cols != side) throw std::invalid_argument("bad network input");
      for (int ch = 0; ch < 3; ++ch) {
        cv::Mat plane(side, side, CV_32F, blob.ptr<float>(static_cast<int>(i), ch));
        in.convertTo(plane, CV_32F);
      }
    }
    std::vector<cv::Mat> outs = forward(blob);
    const cv::Mat& logits = outs[0];
    const cv::Mat& features = outs[1];  // N x C x h x w
    const int channels = features.size[1];
    const int cells = features.size[2] * features.size[3];
    for (size_t i = 0; i < n; ++i) {
      results[first + i] = one_result(logits.ptr<float>(static_cast<int>(i)), features.ptr<float>(static_cast<int>(i)),
                                      channels, cells, features.size[2]);
    }
  }

  std::vector<cv::Mat> forward(const cv::Mat& blob) {
    const std::lock_guard guard(mutex);
    if (fast) {
      try {
        return fast->forward(blob);
      } catch (const UnsupportedGraph& err) {  // a batch size whose primitives oneDNN cannot build
        fallback_reason = err.what();
        fast.reset();
      }
    }
    std::vector<cv::Mat> outs;
    net.setInput(blob, "input");
    net.forward(outs, std::vector<cv::String>{model.logits_output, model.features_output});
    return outs;
  }

  [[nodiscard]] SliceResult one_result(const float* logits, const float* features, int channels, int cells,
                                       int rows) const {
    const auto n_classes = model.classes.size();
    for (size_t c = 0; c < n_classes; ++c) {
      if (!std::isfinite(logits[c])) throw std::runtime_error("the network produced a non-finite logit");
    }
    const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> fmap(features,
                                                                                                       channels, cells);
    SliceResult r;
    r.probabilities = calibrated(logits, n_classes, model.temperature);
    r.predicted =
        static_cast<int>(std::max_element(r.probabilities.begin(), r.probabilities.end()) - r.probabilities.begin());
    const Eigen::RowVectorXd pooled = fmap.rowwise().mean().transpose().cast<double>();
    r.ood_score = ood_score(model.ood, pooled);
    r.not_assessed = !(r.ood_score <= model.ood.threshold);  // NaN counts as not assessed
    // CAM_c = W_c · F: its spatial mean plus b_c is the logit; Grad-CAM of this head is ReLU(CAM_c) / cells.
    const Eigen::MatrixXf cam = model.head_weight * fmap;
    for (size_t c = 0; c < n_classes; ++c) {
      cv::Mat m(rows, cells / rows, CV_32F);
      for (int k = 0; k < cells; ++k) m.at<float>(k) = cam(static_cast<Eigen::Index>(c), k);
      r.cams.push_back(m);
    }
    return r;
  }
};

Classifier::Classifier(Model model, ClassifierOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->model = std::move(model);
  impl_->options = options;
  if (options.threads > 0) cv::setNumThreads(options.threads);
  try {
    impl_->net = cv::dnn::readNetFromONNX(impl_->model.onnx_path.string());
  } catch (const cv::Exception& err) {
    throw ModelError("OpenCV DNN cannot load " + impl_->model.onnx_path.string() + ": " + err.what());
  }
  impl_->net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  impl_->net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  if (options.backend == Backend::onednn) {
    try {
      impl_->fast = std::make_unique<DnnlNet>(
          impl_->model.onnx_path, std::vector<std::string>{impl_->model.logits_output, impl_->model.features_output},
          options.threads);
      impl_->fast->prepare({static_cast<int>(batch_size()), 3, impl_->model.input_size, impl_->model.input_size});
    } catch (const UnsupportedGraph& err) {
      impl_->fast.reset();
      impl_->fallback_reason = err.what();
    }
  }
}

Classifier::~Classifier() = default;

const Model& Classifier::model() const { return impl_->model; }

size_t Classifier::batch_size() const { return static_cast<size_t>(std::max(1, impl_->options.batch)); }

Backend Classifier::backend() const {
  const std::lock_guard guard(impl_->mutex);
  return impl_->fast ? Backend::onednn : Backend::opencv;
}

std::string Classifier::fallback_reason() const {
  const std::lock_guard guard(impl_->mutex);
  return impl_->fallback_reason;
}

std::vector<SliceResult> Classifier::classify(const std::vector<cv::Mat>& inputs) {
  std::vector<SliceResult> results(inputs.size());
  const size_t batch = batch_size();
  for (size_t first = 0; first < inputs.size(); first += batch) {
    impl_->run_batch(inputs, first, std::min(batch, inputs.size() - first), results);
  }
  return results;
}

std::vector<SliceResult> Classifier::classify(const std::vector<Slice>& slices) {
  // A slice already known to be outside the abdomen is "not assessed" whatever the network says: it never reaches it.
  std::vector<cv::Mat> inputs;
  std::vector<size_t> inferred;
  for (size_t i = 0; i < slices.size(); ++i) {
    if (slices[i].outside_abdomen) continue;
    inputs.push_back(slices[i].input);
    inferred.push_back(i);
  }
  auto network = classify(inputs);
  std::vector<SliceResult> results(slices.size());
  for (size_t k = 0; k < inferred.size(); ++k) results[inferred[k]] = std::move(network[k]);
  for (size_t i = 0; i < slices.size(); ++i) {
    results[i].outside_abdomen = slices[i].outside_abdomen;
    results[i].not_assessed = results[i].not_assessed || slices[i].outside_abdomen;
  }
  return results;
}

cv::Mat heatmap(const Slice& slice, const SliceResult& result, int cls) {
  const cv::Mat cam = cv::max(result.cams.at(static_cast<size_t>(cls)), 0.0F);
  cv::Mat up;
  cv::resize(cam, up, slice.crop.size(), 0, 0, cv::INTER_CUBIC);
  cv::Mat heat = cv::Mat::zeros(slice.display.size(), CV_32F);
  const cv::Rect inside = slice.crop & cv::Rect(0, 0, heat.cols, heat.rows);
  up(cv::Rect(inside.x - slice.crop.x, inside.y - slice.crop.y, inside.width, inside.height)).copyTo(heat(inside));
  // Activation on the table or in the air around the patient points at nothing a reader could check.
  if (!slice.body.empty()) heat.setTo(0.0F, slice.body == 0);
  double max = 0;
  cv::minMaxLoc(heat, nullptr, &max);
  if (max > 0) heat /= max;
  return cv::min(cv::max(heat, 0.0F), 1.0F);
}

std::vector<cv::Point2f> hot_region(const cv::Mat& heat) {
  constexpr size_t kMaxPoints = 64;
  double peak = 0;
  cv::Point at;
  cv::minMaxLoc(heat, nullptr, &peak, nullptr, &at);
  if (peak <= 0) return {};
  cv::Mat mask = heat >= static_cast<float>(peak / 2);
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(mask, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
  const auto holds_peak = [&](const std::vector<cv::Point>& c) { return cv::pointPolygonTest(c, at, false) >= 0; };
  const auto found = std::find_if(contours.begin(), contours.end(), holds_peak);
  if (found == contours.end()) return {};
  std::vector<cv::Point> outline = *found;
  for (double epsilon = 1.0; outline.size() > kMaxPoints; epsilon *= 1.5)
    cv::approxPolyDP(*found, outline, epsilon, true);
  std::vector<cv::Point2f> out;
  out.reserve(outline.size() + 1);
  for (const auto& p : outline) out.emplace_back(static_cast<float>(p.x) + 0.5F, static_cast<float>(p.y) + 0.5F);
  if (out.size() < 3) {  // a line or a single pixel: its bounding box, so the region has an inside
    const cv::Rect box = cv::boundingRect(outline);
    const auto x0 = static_cast<float>(box.x), y0 = static_cast<float>(box.y);
    const auto x1 = static_cast<float>(box.x + box.width), y1 = static_cast<float>(box.y + box.height);
    out = {{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}};
  }
  out.push_back(out.front());
  return out;
}

cv::Mat overlay(const Slice& slice, const cv::Mat& heat) {
  cv::Mat gray_bgr;
  cv::cvtColor(slice.display, gray_bgr, cv::COLOR_GRAY2BGR);
  cv::Mat heat_u8;
  heat.convertTo(heat_u8, CV_8U, 255.0);
  cv::Mat colour;
  cv::applyColorMap(heat_u8, colour, cv::COLORMAP_JET);
  cv::Mat out = gray_bgr.clone();
  for (int r = 0; r < out.rows; ++r) {
    for (int c = 0; c < out.cols; ++c) {
      // Weak activations stay gray so the anatomy under them remains readable.
      const float a = std::clamp((heat.at<float>(r, c) - 0.2F) / 0.8F, 0.0F, 1.0F) * 0.55F;
      const auto& g = gray_bgr.at<cv::Vec3b>(r, c);
      const auto& h = colour.at<cv::Vec3b>(r, c);
      auto& o = out.at<cv::Vec3b>(r, c);
      for (int k = 0; k < 3; ++k)
        o[k] = cv::saturate_cast<uchar>((1.0F - a) * static_cast<float>(g[k]) + a * static_cast<float>(h[k]));
    }
  }
  return out;
}

}  // namespace nephra::engine
