#pragma once
// The ONNX graph run with oneDNN: convolutions with their Clip (ReLU6) and residual Add fused in as post-ops, in the
// memory formats oneDNN picks for this CPU, activations in a few reused buffers. Supports what a MobileNet-style
// classifier uses (Conv, Clip, Relu, Add, GlobalAveragePool, Flatten, Gemm); anything else is an UnsupportedGraph,
// and the classifier then runs OpenCV DNN, which stays the reference the parity tests compare against.
#include <filesystem>
#include <memory>
#include <opencv2/core.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace nephra::engine {

struct UnsupportedGraph : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class DnnlNet {
 public:
  // `outputs`: the tensors forward() returns, in order. `threads` 0 = OpenMP's default.
  DnnlNet(const std::filesystem::path& onnx, std::vector<std::string> outputs, int threads);
  ~DnnlNet();
  DnnlNet(const DnnlNet&) = delete;
  DnnlNet& operator=(const DnnlNet&) = delete;

  // `blob`: N x C x H x W float, as OpenCV DNN takes it. Returns each output as OpenCV DNN would (N x C x h x w or
  // N x K). Not thread-safe: the caller serialises.
  std::vector<cv::Mat> forward(const cv::Mat& blob);
  // Builds the primitives for this input shape (N, C, H, W) now rather than at the first forward().
  void prepare(const std::vector<int>& shape);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nephra::engine
