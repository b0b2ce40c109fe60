// Engine input handling on synthetic DICOM: frames, photometric, sign, sizes, broken files. Needs the shipped model.
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "nephra/engine/classifier.h"
#include "nephra/engine/model.h"
#include "nephra/engine/slice.h"
#include "nephra/engine/study.h"
#include "process.h"

namespace fs = std::filesystem;
namespace ng = nephra::engine;

namespace {

fs::path model_manifest() {
  if (const char* env = std::getenv("NEPHRA_MODEL"); env != nullptr && *env != '\0') return env;
  return fs::path(NEPHRA_SOURCE_DIR) / "models" / "nephra-kidney.json";
}

struct CtSpec {
  int rows = 64;
  int cols = 64;
  int frames = 1;
  bool is_signed = false;
  std::string photometric = "MONOCHROME2";
  double intercept = -1000;
  bool pixels = true;
  bool lungs = false;                          // two air-filled regions inside the body, as in a chest slice
  std::string orientation = R"(1\0\0\0\1\0)";  // axial
};

bool in_lung(const CtSpec& s, int r, int c) {
  if (!s.lungs) return false;
  const double radius = s.rows / 8.0;
  return std::hypot(r - s.rows / 2.0, c - s.cols / 2.0 - s.cols / 7.0) < radius ||
         std::hypot(r - s.rows / 2.0, c - s.cols / 2.0 + s.cols / 7.0) < radius;
}

// A CT-like image: a bright disc ("body") on air, written as a DICOM file.
fs::path write_ct(const fs::path& path, const CtSpec& s) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  char uid[100];
  ds->putAndInsertString(DCM_SOPClassUID, UID_CTImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(uid));
  ds->putAndInsertString(DCM_StudyInstanceUID, dcmGenerateUniqueIdentifier(uid));
  ds->putAndInsertString(DCM_SeriesInstanceUID, dcmGenerateUniqueIdentifier(uid));
  ds->putAndInsertString(DCM_Modality, "CT");
  ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(s.rows));
  ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(s.cols));
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  ds->putAndInsertString(DCM_PhotometricInterpretation, s.photometric.c_str());
  ds->putAndInsertUint16(DCM_BitsAllocated, 16);
  ds->putAndInsertUint16(DCM_BitsStored, 16);
  ds->putAndInsertUint16(DCM_HighBit, 15);
  ds->putAndInsertUint16(DCM_PixelRepresentation, s.is_signed ? 1 : 0);
  ds->putAndInsertString(DCM_RescaleIntercept, std::to_string(s.intercept).c_str());
  ds->putAndInsertString(DCM_RescaleSlope, "1");
  ds->putAndInsertString(DCM_ImagePositionPatient, "0\\0\\100");
  ds->putAndInsertString(DCM_ImageOrientationPatient, s.orientation.c_str());
  if (s.frames > 1) ds->putAndInsertString(DCM_NumberOfFrames, std::to_string(s.frames).c_str());
  if (s.pixels) {
    std::vector<Uint16> px(static_cast<size_t>(s.rows * s.cols * s.frames));
    for (int f = 0; f < s.frames; ++f) {
      for (int r = 0; r < s.rows; ++r) {
        for (int c = 0; c < s.cols; ++c) {
          const double d = std::hypot(r - s.rows / 2.0, c - s.cols / 2.0);
          const double hu = d < s.rows / 3.0 && !in_lung(s, r, c) ? 40.0 + 10 * f : -1000.0;
          const auto at = (static_cast<size_t>(f) * static_cast<size_t>(s.rows) + static_cast<size_t>(r)) *
                              static_cast<size_t>(s.cols) +
                          static_cast<size_t>(c);
          px[at] = static_cast<Uint16>(hu - s.intercept);
        }
      }
    }
    ds->putAndInsertUint16Array(DCM_PixelData, px.data(), static_cast<unsigned long>(px.size()));
  }
  EXPECT_TRUE(file.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
  return path;
}

// write_ct's header, 8 bits, with one JPEG baseline fragment `jpeg` (whatever the bytes decode to).
fs::path write_jpeg_ct(const fs::path& path, std::vector<Uint8> jpeg) {
  write_ct(path, {.rows = 8, .cols = 8, .pixels = false});
  DcmFileFormat file;
  EXPECT_TRUE(file.loadFile(path.c_str()).good());
  DcmDataset* ds = file.getDataset();
  ds->putAndInsertUint16(DCM_BitsAllocated, 8);
  ds->putAndInsertUint16(DCM_BitsStored, 8);
  ds->putAndInsertUint16(DCM_HighBit, 7);
  auto* fragments = new DcmPixelSequence(DCM_PixelSequenceTag);
  fragments->insert(new DcmPixelItem(DCM_PixelItemTag));  // the (empty) offset table
  auto* fragment = new DcmPixelItem(DCM_PixelItemTag);
  fragment->putUint8Array(jpeg.data(), static_cast<unsigned long>(jpeg.size()));
  fragments->insert(fragment);
  auto* pixels = new DcmPixelData(DCM_PixelData);
  pixels->putOriginalRepresentation(EXS_JPEGProcess1, nullptr, fragments);
  ds->insert(pixels);
  EXPECT_TRUE(file.saveFile(path.c_str(), EXS_JPEGProcess1).good());
  return path;
}

class EngineInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = new ng::Model(ng::load_model(model_manifest())); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static ng::Model* model_;
  nephra::test::TempDir tmp_;
};
ng::Model* EngineInput::model_ = nullptr;

TEST_F(EngineInput, SingleFrameBecomesOneWindowedCroppedSlice) {
  const auto slices = ng::load_slices(write_ct(tmp_.path() / "a.dcm", {}), *model_);
  ASSERT_EQ(slices.size(), 1U);
  EXPECT_EQ(slices[0].input.rows, model_->input_size);
  EXPECT_EQ(slices[0].input.type(), CV_8U);
  EXPECT_EQ(slices[0].display.size(), cv::Size(64, 64));
  EXPECT_DOUBLE_EQ(slices[0].source.position, 100.0);
  if (model_->preprocessing.body_crop.enabled) {
    EXPECT_LT(slices[0].crop.width, 64);  // cropped to the disc
  }
}

TEST_F(EngineInput, AxialSlicesThroughTheLungsAreNotAssessed) {
  if (model_->preprocessing.body_crop.max_air_fraction >= 1.0) GTEST_SKIP() << "the model has no air-fraction check";
  const auto abdomen = ng::load_slices(write_ct(tmp_.path() / "abdomen.dcm", {}), *model_);
  const auto chest = ng::load_slices(write_ct(tmp_.path() / "chest.dcm", {.lungs = true}), *model_);
  const auto coronal = ng::load_slices(
      write_ct(tmp_.path() / "coronal.dcm", {.lungs = true, .orientation = R"(1\0\0\0\0\-1)"}), *model_);
  EXPECT_LT(abdomen[0].body_air, 0.01);
  EXPECT_GT(chest[0].body_air, 0.2);
  EXPECT_FALSE(abdomen[0].outside_abdomen);
  EXPECT_TRUE(chest[0].outside_abdomen);
  EXPECT_FALSE(coronal[0].outside_abdomen);  // a coronal reformat through the kidneys shows the lungs too
  ng::Classifier clf(*model_, {.threads = 1, .batch = 2});
  const auto results = clf.classify(std::vector<ng::Slice>{abdomen[0], chest[0]});
  EXPECT_FALSE(results[0].outside_abdomen);
  EXPECT_TRUE(results[1].outside_abdomen);
  EXPECT_TRUE(results[1].not_assessed);
  EXPECT_TRUE(results[1].probabilities.empty()) << "a slice outside the abdomen never reaches the network";
  EXPECT_TRUE(results[1].cams.empty());
  EXPECT_EQ(results[0].probabilities.size(), model_->classes.size());
}

TEST_F(EngineInput, MultiFrameGivesOneSlicePerFrame) {
  const auto slices = ng::load_slices(write_ct(tmp_.path() / "mf.dcm", {.frames = 3}), *model_);
  ASSERT_EQ(slices.size(), 3U);
  for (int f = 0; f < 3; ++f) EXPECT_EQ(slices[static_cast<size_t>(f)].source.frame, f + 1);
  // frames differ by 10 HU inside the disc: the windowed centre pixel rises frame by frame
  EXPECT_LT(slices[0].display.at<uchar>(32, 32), slices[2].display.at<uchar>(32, 32));
}

TEST_F(EngineInput, SignedAndUnsignedAndMonochrome1GiveTheSameHu) {
  const auto u = ng::load_slices(write_ct(tmp_.path() / "u.dcm", {}), *model_);
  const auto s = ng::load_slices(write_ct(tmp_.path() / "s.dcm", {.is_signed = true, .intercept = 0}), *model_);
  const auto m1 = ng::load_slices(write_ct(tmp_.path() / "m1.dcm", {.photometric = "MONOCHROME1"}), *model_);
  EXPECT_EQ(cv::norm(u[0].display, s[0].display, cv::NORM_INF), 0.0);
  EXPECT_EQ(cv::norm(u[0].display, m1[0].display, cv::NORM_INF), 0.0);  // HU do not depend on display polarity
}

TEST_F(EngineInput, TinyAndHugeImagesClassifyWithoutNaN) {
  ng::Classifier clf(*model_, {.threads = 1, .batch = 2});
  std::vector<ng::Slice> slices;
  for (const int side : {1, 4096}) {
    auto loaded = ng::load_slices(
        write_ct(tmp_.path() / ("s" + std::to_string(side) + ".dcm"), {.rows = side, .cols = side}), *model_);
    slices.push_back(std::move(loaded[0]));
  }
  for (const auto& r : clf.classify(slices)) {
    double sum = 0;
    for (const double p : r.probabilities) {
      EXPECT_TRUE(std::isfinite(p));
      sum += p;
    }
    EXPECT_NEAR(sum, 1.0, 1e-9);
    EXPECT_TRUE(std::isfinite(r.ood_score));
  }
}

// Found by fuzz_preprocess (fuzz/regressions/fuzz_preprocess/nan-hu-window-u8.bin): NaN and infinite HU values
// used to reach an undefined float-to-byte cast; UBSan in the asan preset catches a regression.
TEST_F(EngineInput, TheHeatmapAndItsRegionStayOnThePatient) {
  if (!model_->preprocessing.body_crop.enabled) GTEST_SKIP() << "the model crops nothing to a body";
  const ng::Slice slice = ng::load_slices(write_ct(tmp_.path() / "a.dcm", {}), *model_).at(0);
  ASSERT_EQ(slice.body.size(), slice.display.size());
  EXPECT_EQ(slice.body.at<uchar>(32, 32), 255);
  EXPECT_EQ(slice.body.at<uchar>(1, 1), 0);
  // A CAM whose strongest cell lies in the crop's corner, in the air beside the disc, and a weaker one in the middle.
  ng::SliceResult result;
  cv::Mat cam = cv::Mat::zeros(7, 7, CV_32F);
  cam.at<float>(0, 0) = 5.0F;
  cam.at<float>(3, 3) = 1.0F;
  result.cams.assign(model_->classes.size(), cam);
  const cv::Mat heat = ng::heatmap(slice, result, 0);
  cv::Mat outside;
  heat.copyTo(outside, slice.body == 0);
  EXPECT_EQ(cv::countNonZero(outside), 0) << "no heat outside the body";
  double peak = 0;
  cv::Point at;
  cv::minMaxLoc(heat, nullptr, &peak, nullptr, &at);
  EXPECT_FLOAT_EQ(static_cast<float>(peak), 1.0F) << "normalised within the body";
  EXPECT_EQ(slice.body.at<uchar>(at), 255);
  for (const auto& p : ng::hot_region(heat)) {
    EXPECT_LT(std::hypot(p.x - 32.0, p.y - 32.0), 64 / 3.0 + 1.5) << "region point " << p << " off the patient";
  }
}

TEST_F(EngineInput, NanAndInfiniteHuGiveADefinedImage) {
  cv::Mat hu(64, 64, CV_32F, cv::Scalar(40.0F));
  hu(cv::Rect(0, 0, 32, 64)).setTo(std::numeric_limits<float>::quiet_NaN());
  hu.at<float>(40, 40) = std::numeric_limits<float>::infinity();
  hu.at<float>(41, 41) = -std::numeric_limits<float>::infinity();
  const ng::Slice slice = ng::preprocess_hu(hu, *model_);
  EXPECT_EQ(slice.display.at<uchar>(10, 10), 0);
  EXPECT_EQ(slice.display.at<uchar>(40, 40), 255);
  EXPECT_EQ(slice.display.at<uchar>(41, 41), 0);
}

TEST_F(EngineInput, BrokenInputsGiveClearErrors) {
  const auto expect_error = [&](const fs::path& p, const std::string& words) {
    try {
      (void)ng::load_slices(p, *model_);
      ADD_FAILURE() << p << " loaded";
    } catch (const ng::InputError& err) {
      EXPECT_NE(std::string(err.what()).find(words), std::string::npos) << err.what();
    }
  };
  expect_error(write_ct(tmp_.path() / "nopix.dcm", {.pixels = false}), "no pixel data");
  // a frame the engine cannot afford to decode is refused from the header, before any pixel is touched
  expect_error(write_ct(tmp_.path() / "wide.dcm", {.rows = 8192, .cols = 4097, .pixels = false}),
               "more than the engine decodes");
  std::ofstream(tmp_.path() / "junk.bin") << "this is not an image";
  expect_error(tmp_.path() / "junk.bin", "neither a DICOM file nor");
  expect_error(tmp_.path() / "missing.dcm", "not a readable file");
  const fs::path cut = tmp_.path() / "cut.dcm";
  write_ct(tmp_.path() / "whole.dcm", {});
  fs::copy_file(tmp_.path() / "whole.dcm", cut);
  fs::resize_file(cut, fs::file_size(cut) / 2);
  expect_error(cut, "");
  // DCMTK 3.6.7's JPEG decoder never gets past a TEM marker before the frame header (found by fuzz_dicom_engine)
  expect_error(write_jpeg_ct(tmp_.path() / "tem.dcm", {0xFF, 0xD8, 0xFF, 0x01, 0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00}),
               "corrupt JPEG data");
  expect_error(write_jpeg_ct(tmp_.path() / "nosof.dcm", {0xFF, 0xD8, 0xFF, 0xD9, 0x00, 0x00}), "cannot decode");
}

TEST_F(EngineInput, AnImageAtTheRenderSizeIsTakenAsItIs) {
  const int side = model_->render_side();
  cv::Mat gray(side, side, CV_8U, cv::Scalar(90));
  cv::Mat rgb;
  cv::cvtColor(gray, rgb, cv::COLOR_GRAY2BGR);
  cv::imwrite((tmp_.path() / "g.png").string(), gray);
  cv::imwrite((tmp_.path() / "c.jpg").string(), rgb);
  for (const char* name : {"g.png", "c.jpg"}) {
    const auto slices = ng::load_slices(tmp_.path() / name, *model_);
    ASSERT_EQ(slices.size(), 1U);
    EXPECT_EQ(slices[0].input.size(), cv::Size(model_->input_size, model_->input_size));
    EXPECT_NEAR(cv::mean(slices[0].input)[0], 90.0, 2.0);
  }
}

TEST_F(EngineInput, TheManifestSaysTheRenderSizeOrTheInputSizeIsIt) {
  EXPECT_GT(model_->render_side(), 0);
  auto j = nlohmann::json::parse(std::ifstream(model_manifest()));
  j["onnx"] = fs::absolute(model_->onnx_path).string();
  const auto load = [&](const nlohmann::json& manifest) {
    std::ofstream(tmp_.path() / "m.json") << manifest.dump();
    return ng::load_model(tmp_.path() / "m.json");
  };
  j["preprocessing"].erase("render_size");
  EXPECT_EQ(load(j).render_side(), load(j).input_size);  // older manifests: no enlarging
  j["preprocessing"]["render_size"] = 160;
  EXPECT_EQ(load(j).render_side(), 160);
  j["preprocessing"]["render_size"] = -1;
  EXPECT_THROW(load(j), ng::ModelError);
}

// A network trained on enlarged slices (training/run_all.py RECIPE, since 3.0.0) gets the very rendering the
// dataset's slices have, enlarged bilinearly as training enlarged them: DICOM and image files alike.
TEST_F(EngineInput, ANetworkTrainedOnEnlargedSlicesGetsTheRenderingEnlarged) {
  const int render = model_->render_side();
  ng::Model at_render = *model_;  // a network fed the rendering as it is
  at_render.preprocessing.render_size = render;
  at_render.input_size = render;
  ng::Model enlarged = at_render;
  enlarged.input_size = render * 3 / 2;
  const fs::path dcm = write_ct(tmp_.path() / "disc.dcm", {.rows = 300, .cols = 300});
  const auto as_is = ng::load_slices(dcm, at_render);
  const auto big = ng::load_slices(dcm, enlarged);
  ASSERT_EQ(as_is.size(), 1U);
  ASSERT_EQ(big.size(), 1U);
  ASSERT_EQ(as_is[0].input.size(), cv::Size(render, render));
  cv::Mat expected;
  cv::resize(as_is[0].input, expected, cv::Size(enlarged.input_size, enlarged.input_size), 0, 0, cv::INTER_LINEAR);
  EXPECT_EQ(cv::norm(big[0].input, expected, cv::NORM_INF), 0.0);
  EXPECT_EQ(big[0].crop, as_is[0].crop);  // heatmaps map back onto the same body box

  cv::imwrite((tmp_.path() / "dataset.png").string(), as_is[0].input);
  const auto png = ng::load_slices(tmp_.path() / "dataset.png", enlarged);
  ASSERT_EQ(png.size(), 1U);
  EXPECT_EQ(cv::norm(png[0].input, expected, cv::NORM_INF), 0.0);
}

TEST_F(EngineInput, AnExportIsCroppedToTheBodyLikeDicom) {
  if (!model_->preprocessing.image_files.export_rendering) GTEST_SKIP() << "the model takes exports as they are";
  const fs::path dcm = write_ct(tmp_.path() / "disc.dcm", {.rows = 300, .cols = 300});
  const auto dicom = ng::load_slices(dcm, *model_);
  ASSERT_EQ(dicom.size(), 1U);
  cv::Mat wide = cv::Mat::zeros(300, 400, CV_8U);  // the same slice, exported with black margins on the sides
  dicom[0].display.copyTo(wide(cv::Rect(50, 0, 300, 300)));
  cv::imwrite((tmp_.path() / "disc.png").string(), wide);
  const auto png = ng::load_slices(tmp_.path() / "disc.png", *model_);
  ASSERT_EQ(png.size(), 1U);
  EXPECT_EQ(png[0].crop.size(), dicom[0].crop.size());
  EXPECT_EQ(png[0].crop.x, dicom[0].crop.x + 50);
  EXPECT_LT(cv::norm(png[0].input, dicom[0].input, cv::NORM_INF), 2.0);
  EXPECT_FALSE(png[0].outside_abdomen);
}

// Chunks load while the previous one is inferred: the study comes out the same whatever the chunk size, broken
// files and chest slices included.
TEST_F(EngineInput, AStudyIsTheSameWhateverTheChunkSize) {
  std::vector<fs::path> files;
  files.reserve(7);
  for (int i = 0; i < 7; ++i) {
    files.push_back(write_ct(tmp_.path() / ("s" + std::to_string(i) + ".dcm"), {.lungs = i % 3 == 1}));
  }
  std::ofstream(tmp_.path() / "broken.dcm") << "not DICOM";
  files.push_back(tmp_.path() / "broken.dcm");
  ng::Classifier clf(*model_, {.threads = 2, .batch = 3});
  std::vector<ng::FileError> whole_errors;
  const auto whole = ng::classify_files(files, clf, whole_errors, 100);
  for (const size_t chunk : {1U, 2U, 3U}) {
    SCOPED_TRACE(chunk);
    std::vector<ng::FileError> errors;
    const auto study = ng::classify_files(files, clf, errors, chunk);
    ASSERT_EQ(errors.size(), 1U);
    EXPECT_EQ(study.failed, 1);
    ASSERT_EQ(study.slices.size(), whole.slices.size());
    EXPECT_EQ(study.not_assessed, whole.not_assessed);
    for (size_t i = 0; i < study.slices.size(); ++i) {
      EXPECT_EQ(study.slices[i].source.path, whole.slices[i].source.path);
      const auto& got = study.slices[i].result.probabilities;
      const auto& want = whole.slices[i].result.probabilities;
      ASSERT_EQ(got.size(), want.size());
      for (size_t c = 0; c < got.size(); ++c) EXPECT_NEAR(got[c], want[c], 1e-6);
    }
  }
  const auto chest = std::count_if(whole.slices.begin(), whole.slices.end(), [](const ng::SliceRecord& r) {
    return r.result.outside_abdomen && r.result.probabilities.empty();
  });
  EXPECT_EQ(chest, 2) << "the two chest slices, never inferred";
}

}  // namespace
