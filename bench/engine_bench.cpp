// Engine throughput: slices per second through nephra::engine::Classifier (preprocessed 224x224 inputs, so only
// inference + calibration + OOD + CAM is timed), and the machine's single-precision GEMM peak with Eigen.
//   nephra_engine_bench MODEL.json SLICES THREADS BATCH    → one JSON line
//   nephra_engine_bench --gemm THREADS                     → GFLOP/s of a 1024^3 sgemm
#include <Eigen/Core>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <string>

#include "nephra/engine/classifier.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int gemm(int threads) {
  Eigen::setNbThreads(threads);
  const Eigen::Index n = 1024;
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n);
  const Eigen::MatrixXf b = Eigen::MatrixXf::Random(n, n);
  Eigen::MatrixXf c(n, n);
  c.noalias() = a * b;  // warm-up
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    c.noalias() = a * b;
    best = std::max(best, 2.0 * static_cast<double>(n * n * n) / seconds_since(t0) / 1e9);
  }
  std::cout << R"({"bench":"eigen_sgemm_1024","threads":)" << threads << R"(,"gflops":)" << best << "}\n";
  return c(0, 0) == 12345.0F ? 1 : 0;  // keeps the product alive
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--gemm") return gemm(std::atoi(argv[2]));
  if (argc != 5) {
    std::cerr << "usage: nephra_engine_bench MODEL.json SLICES THREADS BATCH | --gemm THREADS\n";
    return 2;
  }
  const int slices = std::atoi(argv[2]);
  const int threads = std::atoi(argv[3]);
  const int batch = std::atoi(argv[4]);
  nephra::engine::Classifier clf(nephra::engine::load_model(argv[1]), {threads, batch});
  cv::setNumThreads(threads);
  cv::RNG rng(7);
  std::vector<cv::Mat> inputs;
  for (int i = 0; i < slices; ++i) {
    cv::Mat m(clf.model().input_size, clf.model().input_size, CV_8U);
    rng.fill(m, cv::RNG::UNIFORM, 0, 256);
    inputs.push_back(m);
  }
  (void)clf.classify(std::vector<cv::Mat>(inputs.begin(), inputs.begin() + std::min(slices, 2 * batch)));  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  const auto results = clf.classify(inputs);
  const double secs = seconds_since(t0);
  std::cout << R"({"bench":"nephra_engine","slices":)" << results.size() << R"(,"threads":)" << threads
            << R"(,"batch":)" << batch << R"(,"seconds":)" << secs << R"(,"slices_per_s":)" << slices / secs << "}\n";
  return 0;
}
