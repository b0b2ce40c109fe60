#pragma once
// CNN inference: calibrated probabilities, OOD score and class activation maps per slice. The network runs with
// oneDNN, or with OpenCV DNN (the reference, and the fallback for a graph the oneDNN path does not support).
#include <memory>
#include <opencv2/core.hpp>
#include <vector>

#include "nephra/engine/model.h"
#include "nephra/engine/slice.h"

namespace nephra::engine {

struct SliceResult {
  // Calibrated, in model.classes order; empty (and no CAMs) for a slice that never reached the network: one outside
  // the abdomen is known not assessed before inference.
  std::vector<double> probabilities;
  int predicted = 0;
  double ood_score = 0.0;
  bool not_assessed = false;     // out of distribution, or outside the abdomen
  bool outside_abdomen = false;  // an axial slice through the lungs (Slice::outside_abdomen)
  std::vector<cv::Mat> cams;     // per class, feature-map sized (7x7) float, before ReLU
};

enum class Backend { onednn, opencv };

struct ClassifierOptions {
  int threads = 0;  // inference threads; 0 = the library's default (every core)
  int batch = 8;
  Backend backend = Backend::onednn;
};

class Classifier {
 public:
  explicit Classifier(Model model, ClassifierOptions options = {});
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  [[nodiscard]] const Model& model() const;
  [[nodiscard]] size_t batch_size() const;
  // The backend that runs the network: the one asked for, unless oneDNN could not run this graph.
  [[nodiscard]] Backend backend() const;
  // Why oneDNN was asked for and OpenCV DNN runs the network; empty otherwise.
  [[nodiscard]] std::string fallback_reason() const;
  // Thread-safe (one network, serialised): results in the order of `inputs` (each model input_size², CV_8U).
  std::vector<SliceResult> classify(const std::vector<cv::Mat>& inputs);
  std::vector<SliceResult> classify(const std::vector<Slice>& slices);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The heatmap for class `cls`: ReLU(CAM) upsampled onto the slice's crop, kept inside the patient's body, normalised
// to 0..1, full display size.
cv::Mat heatmap(const Slice& slice, const SliceResult& result, int cls);
// Where the heatmap points: the outline of the connected area at or above half its peak that holds the peak, in
// the display's pixel coordinates as DICOM spatial coordinates count them (a pixel's centre at +0.5), closed (the
// last point repeats the first), at most 64 points. Empty for an all-zero heatmap.
std::vector<cv::Point2f> hot_region(const cv::Mat& heat);
// The display slice in colour with the heatmap blended in (BGR, 8-bit).
cv::Mat overlay(const Slice& slice, const cv::Mat& heat);

}  // namespace nephra::engine
