// Engine throughput: slices per second through nephra::engine::Classifier (inputs already at the model's input
// size, so only inference + calibration + OOD + CAM is timed). The GEMM peak it is compared with: gemm_bench.cpp.
//   nephra_engine_bench MODEL.json SLICES THREADS BATCH [--backend onednn|opencv] [DICOM...]   → one JSON line
// Inputs: random images, or the given DICOM files preprocessed as the node does (repeated up to SLICES).
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <string>

#include "nephra/engine/classifier.h"
#include "nephra/engine/slice.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::cerr << "usage: nephra_engine_bench MODEL.json SLICES THREADS BATCH [--backend onednn|opencv] [DICOM...]\n";
    return 2;
  }
  const int slices = std::atoi(argv[2]);
  const int threads = std::atoi(argv[3]);
  const int batch = std::atoi(argv[4]);
  int first_file = 5;
  std::string backend = "onednn";
  if (argc > 6 && std::string(argv[5]) == "--backend") {
    backend = argv[6];
    first_file = 7;
  }
  nephra::engine::Classifier clf(
      nephra::engine::load_model(argv[1]),
      {threads, batch, backend == "opencv" ? nephra::engine::Backend::opencv : nephra::engine::Backend::onednn});
  cv::setNumThreads(threads);
  cv::RNG rng(7);
  std::vector<cv::Mat> inputs;
  std::vector<cv::Mat> real;
  for (int a = first_file; a < argc; ++a) {
    for (const auto& s : nephra::engine::load_slices(argv[a], clf.model())) real.push_back(s.input);
  }
  for (int i = 0; i < slices; ++i) {
    if (!real.empty()) {
      inputs.push_back(real[static_cast<size_t>(i) % real.size()]);
      continue;
    }
    cv::Mat m(clf.model().input_size, clf.model().input_size, CV_8U);
    rng.fill(m, cv::RNG::UNIFORM, 0, 256);
    inputs.push_back(m);
  }
  (void)clf.classify(std::vector<cv::Mat>(inputs.begin(), inputs.begin() + std::min(slices, 2 * batch)));  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  const auto results = clf.classify(inputs);
  const double secs = seconds_since(t0);
  std::cout << R"({"bench":"nephra_engine","inputs":")" << (real.empty() ? "random" : "dicom") << R"(","slices":)"
            << results.size() << R"(,"threads":)" << threads << R"(,"batch":)" << batch << R"(,"backend":")"
            << (clf.backend() == nephra::engine::Backend::opencv ? "opencv" : "onednn") << R"(","seconds":)" << secs
            << R"(,"slices_per_s":)" << slices / secs << "}\n";
  return 0;
}
