// The C++ engine against PyTorch on the committed fixture slices (tests/data/engine_reference.json, made by
// training/engine_reference.py): bit-identical preprocessing, probabilities, OOD score, and CAM == Grad-CAM.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <array>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "nephra/engine/classifier.h"
#include "nephra/engine/model.h"
#include "nephra/engine/slice.h"

namespace fs = std::filesystem;
namespace ng = nephra::engine;

namespace {

const fs::path kSource = NEPHRA_SOURCE_DIR;

std::string sha256_of(const cv::Mat& m) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  const cv::Mat c = m.isContinuous() ? m : m.clone();
  EVP_Digest(c.data, c.total() * c.elemSize(), md.data(), &len, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    static constexpr const char* kDigits = "0123456789abcdef";
    hex += kDigits[md[i] >> 4U];
    hex += kDigits[md[i] & 15U];
  }
  return hex;
}

TEST(EngineParity, FixtureSlicesMatchPyTorch) {
  const auto ref = nlohmann::json::parse(std::ifstream(kSource / "tests/data/engine_reference.json"));
  ng::Classifier clf(ng::load_model(kSource / "models/nephra-kidney.json"), {.threads = 2, .batch = 4});
  ASSERT_EQ(clf.model().onnx_sha256, ref["model_onnx_sha256"].get<std::string>())
      << "the model changed: regenerate tests/data/engine_reference.json with training/engine_reference.py";
  for (const auto& r : ref["slices"]) {
    SCOPED_TRACE(r["file"].get<std::string>());
    const auto slices =
        ng::load_slices(kSource / "tests/data/tcia-kidney-slices" / r["file"].get<std::string>(), clf.model());
    ASSERT_EQ(slices.size(), 1U);
    EXPECT_EQ(sha256_of(slices[0].input), r["input_sha256"].get<std::string>()) << "preprocessing differs";
    const auto res = clf.classify(slices)[0];
    const auto probs = r["probabilities"].get<std::vector<double>>();
    for (size_t c = 0; c < probs.size(); ++c) EXPECT_NEAR(res.probabilities[c], probs[c], 1e-3);
    EXPECT_NEAR(res.ood_score, r["ood_score"].get<double>(), 1e-3 * std::max(1.0, r["ood_score"].get<double>()));
    for (size_t c = 0; c < probs.size(); ++c) {
      cv::Mat cam = cv::max(res.cams[c], 0.0F);
      double max = 0;
      cv::minMaxLoc(cam, nullptr, &max);
      if (max > 0) cam /= max;
      const auto grad_cam = r["gradcam"][c];
      for (int y = 0; y < cam.rows; ++y) {
        for (int x = 0; x < cam.cols; ++x) {
          EXPECT_NEAR(cam.at<float>(y, x), grad_cam[static_cast<size_t>(y)][static_cast<size_t>(x)].get<double>(), 2e-3)
              << "class " << c << " cell " << y << "," << x;
        }
      }
    }
  }
}

}  // namespace
