// libFuzzer harness: bytes → a small HU image (float32, any value including NaN, ±inf and huge magnitudes) →
// nephra::engine::preprocess_hu. The first two bytes pick the size (1..64 × 1..64); the rest fills the pixels
// (4 bytes each, repeated when short). DICOM decoding only ever produces integer HU, so this reaches corners of
// window/crop/resize/CLAHE that load_slices cannot; preprocess_hu is public API (tests, bench).
// NEPHRA_FUZZ_FINITE_HU=1 replaces NaN/±inf by 0 (fuzz/run.sh sets it while the NaN reproducer in
// fuzz/regressions/fuzz_preprocess/ still fails, so that the run looks for other problems).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "nephra/engine/model.h"
#include "nephra/engine/slice.h"

namespace {
std::unique_ptr<nephra::engine::Model> g_model;
bool g_finite_only = false;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* env = std::getenv("NEPHRA_MODEL");
  const std::filesystem::path manifest =
      env != nullptr && *env != '\0' ? std::filesystem::path(env)
                                     : std::filesystem::path(NEPHRA_SOURCE_DIR) / "models" / "nephra-kidney.json";
  g_model = std::make_unique<nephra::engine::Model>(nephra::engine::load_model(manifest));
  g_finite_only = std::getenv("NEPHRA_FUZZ_FINITE_HU") != nullptr;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return -1;
  const int rows = 1 + data[0] % 64;
  const int cols = 1 + data[1] % 64;
  const uint8_t* px = data + 2;
  const size_t n = size - 2;
  cv::Mat hu(rows, cols, CV_32F);
  auto* dst = hu.ptr<float>();
  for (size_t i = 0; i < hu.total(); ++i) {
    uint8_t b[4];
    for (size_t k = 0; k < 4; ++k) b[k] = px[(i * 4 + k) % n];
    std::memcpy(&dst[i], b, sizeof(float));
    if (g_finite_only && !std::isfinite(dst[i])) dst[i] = 0.0F;
  }
  const auto slice = nephra::engine::preprocess_hu(hu, *g_model);
  if (slice.input.rows != g_model->input_size || slice.input.cols != g_model->input_size) std::abort();
  return 0;
}
