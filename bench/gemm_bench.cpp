// The machine's single-precision GEMM peak with Eigen, the reference for the engine's GFLOP/s (bench/README.md).
// Built apart from the engine bench with -march=native: the engine's Eigen objects are built for the default target,
// and one program mixing both alignments frees Eigen memory the wrong way.
//   nephra_gemm_bench THREADS   -> GFLOP/s of a 1024^3 sgemm, one JSON line
#include <Eigen/Core>
#include <chrono>
#include <cstdlib>
#include <iostream>

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
  if (argc != 2) {
    std::cerr << "usage: nephra_gemm_bench THREADS\n";
    return 2;
  }
  return gemm(std::atoi(argv[1]));
}
