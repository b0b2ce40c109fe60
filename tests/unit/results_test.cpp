// The SR and SC result writers on the committed CT fixture slices, checked with DICOM's own validators
// (dciodvfy, dsrdump, dcentvfy) and read back with DCMTK.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmsr/dsrdoc.h>
#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "nephra/engine/model.h"
#include "nephra/engine/slice.h"
#include "nephra/engine/study.h"
#include "nephra/pipeline/results.h"
#include "process.h"

namespace fs = std::filesystem;
namespace ng = nephra::engine;
namespace np = nephra::pipeline;

namespace {

const char* const kRoot = "1.2.826.0.1.3680043.10.1234";

std::vector<fs::path> fixtures() {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(NEPHRA_SOURCE_DIR) / "tests/data/tcia-kidney-slices")) {
    if (e.path().extension() == ".dcm") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::unique_ptr<DcmFileFormat> load(const fs::path& path) {
  auto file = std::make_unique<DcmFileFormat>();
  if (file->loadFile(path.c_str()).bad()) throw std::runtime_error("cannot read " + path.string());
  return file;
}

std::string get(DcmItem& item, const DcmTagKey& tag) {
  OFString value;
  item.findAndGetOFStringArray(tag, value);
  return value.c_str();
}

ng::Model test_model() {
  ng::Model m;
  m.name = "nephra-kidney";
  m.version = "1.2.0";
  m.onnx_sha256 = std::string(64, 'a');
  m.classes = {"Normal", "Cyst", "Stone", "Tumor"};
  m.decision_thresholds = {{"Cyst", 0.5}, {"Stone", 0.5}, {"Tumor", 0.5}};
  m.min_run_slices = 2;
  m.preprocessing.body_crop.enabled = true;  // a crop smaller than the slice exercises the heatmap placement
  return m;
}

np::ResultContext test_context() { return np::make_result_context(test_model(), kRoot, "0.1.0"); }

// Class activation maps with a hot spot left of centre for every class.
ng::SliceResult slice_result(double tumour, bool not_assessed = false) {
  ng::SliceResult r;
  r.probabilities = {1.0 - tumour, 0.0, 0.0, tumour};
  r.predicted = tumour >= 0.5 ? 3 : 0;
  r.not_assessed = not_assessed;
  for (int c = 0; c < 4; ++c) {
    cv::Mat cam = cv::Mat::zeros(7, 7, CV_32F);
    cam.at<float>(3, 2) = 4.0F;
    cam.at<float>(3, 3) = 2.0F;
    cam.at<float>(0, 0) = -1.0F;
    r.cams.push_back(cam);
  }
  return r;
}

ng::SliceSource source_of(const fs::path& path) {
  auto file = load(path);
  DcmDataset& ds = *file->getDataset();
  ng::SliceSource s;
  s.path = path.string();
  s.sop_class_uid = get(ds, DCM_SOPClassUID);
  s.sop_instance_uid = get(ds, DCM_SOPInstanceUID);
  s.series_instance_uid = get(ds, DCM_SeriesInstanceUID);
  s.instance_number = std::stoi(get(ds, DCM_InstanceNumber));
  return s;
}

// Five fixture slices; `tumour` gives the probability on slices 2 to 4, slice 5 is out of distribution.
ng::StudyResult study_with(double tumour) {
  std::vector<ng::SliceRecord> records;
  const auto files = fixtures();
  for (size_t i = 0; i < files.size(); ++i) {
    const bool run = i >= 1 && i <= 3;
    records.push_back({source_of(files[i]), slice_result(run ? tumour : 0.01, i == 4), 0});
  }
  return ng::aggregate(std::move(records), test_model());
}

struct ToolRun {
  int status = 0;
  std::string output;
  [[nodiscard]] std::vector<std::string> lines_starting(const std::string& prefix) const {
    std::vector<std::string> found;
    std::istringstream in(output);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(prefix, 0) == 0) found.push_back(line);
    }
    return found;
  }
};

ToolRun run_tool(const std::vector<std::string>& argv, const fs::path& dir) {
  const fs::path log = dir / (fs::path(argv.at(0)).filename().string() + ".log");
  ToolRun r;
  r.status = nephra::test::run(argv, log);
  r.output = nephra::test::read_file(log);
  return r;
}

// dciodvfy: no Error line and exit status 0. Warnings are printed so that a reviewer sees them, and the file is kept
// in $NEPHRA_KEEP_RESULTS (when set) to be looked at with dsr2html or dcmj2pnm.
void expect_valid_iod(const fs::path& file, const fs::path& dir) {
  if (const char* keep = std::getenv("NEPHRA_KEEP_RESULTS"); keep != nullptr && *keep != '\0') {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    fs::create_directories(keep);
    fs::copy_file(file, fs::path(keep) / (std::string(test->name()) + "-" + file.filename().string()),
                  fs::copy_options::overwrite_existing);
  }
  const ToolRun r = run_tool({"dciodvfy", file.string()}, dir);
  EXPECT_TRUE(r.lines_starting("Error").empty()) << r.output;
  EXPECT_EQ(r.status, 0) << r.output;
  for (const auto& w : r.lines_starting("Warning")) std::cout << file.filename().string() << ": " << w << "\n";
}

// TEXT content items the document CONTAINS (observation context left out), in order, as "concept name: value".
std::vector<std::string> sr_texts(const fs::path& file) {
  auto ff = load(file);
  DSRDocument doc;
  if (doc.read(*ff->getDataset()).bad()) throw std::runtime_error("DSRDocument cannot read " + file.string());
  std::vector<std::string> texts;
  DSRDocumentTree& tree = doc.getTree();
  if (tree.gotoRoot() > 0) {
    do {
      const DSRContentItem& item = tree.getCurrentContentItem();
      if (item.getValueType() == DSRTypes::VT_Text && item.getRelationshipType() == DSRTypes::RT_contains) {
        texts.push_back(std::string(item.getConceptName().getCodeMeaning().c_str()) + ": " +
                        item.getStringValue().c_str());
      }
    } while (tree.iterate() > 0);
  }
  return texts;
}

class ResultsTest : public ::testing::Test {
 protected:
  nephra::test::TempDir tmp;
  std::unique_ptr<DcmFileFormat> ct = load(fixtures().at(0));
  DcmDataset& source = *ct->getDataset();
  np::ResultContext ctx = test_context();
};

}  // namespace

TEST(ResultUids, DeterministicValidAndBounded) {
  const std::string a = np::derive_uid(kRoot, {"study", "sha", "sr"});
  EXPECT_EQ(a, np::derive_uid(kRoot, {"study", "sha", "sr"}));
  EXPECT_NE(a, np::derive_uid(kRoot, {"study", "sha", "sc"}));
  EXPECT_NE(np::derive_uid(kRoot, {"ab", "c"}), np::derive_uid(kRoot, {"a", "bc"}));
  EXPECT_TRUE(np::is_valid_uid(a)) << a;
  EXPECT_EQ(a.rfind(std::string(kRoot) + ".", 0), 0U);

  const std::string long_root = "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.1718";  // 43 characters leaves 20 digits
  const std::string b = np::derive_uid(long_root, {"x"});
  EXPECT_EQ(b.size(), 64U);
  EXPECT_TRUE(np::is_valid_uid(b)) << b;
  EXPECT_THROW(np::derive_uid(long_root + "9", {"x"}), np::ResultError);
}

TEST(ResultUids, RejectsInvalidRoots) {
  for (const char* root : {"", "1..2", "1.02", "1.2.", ".1", "1.2a", "01.2"}) {
    EXPECT_FALSE(np::is_valid_uid(root)) << root;
    EXPECT_THROW(np::derive_uid(root, {"x"}), np::ResultError) << root;
  }
  EXPECT_TRUE(np::is_valid_uid("1.2.0.3"));
  EXPECT_FALSE(np::is_valid_uid(std::string(65, '1')));
}

TEST_F(ResultsTest, SrWithTumourPassesValidatorsAndSaysWhatWasFound) {
  const ng::StudyResult study = study_with(0.97);
  ASSERT_TRUE(study.any_present());
  const fs::path sr = tmp.path() / "sr.dcm";
  np::write_sr(study, source, ctx, sr);

  expect_valid_iod(sr, tmp.path());
  const ToolRun dump = run_tool({"dsrdump", sr.string()}, tmp.path());
  EXPECT_EQ(dump.status, 0) << dump.output;
  EXPECT_TRUE(dump.lines_starting("E:").empty()) << dump.output;

  const auto texts = sr_texts(sr);
  ASSERT_FALSE(texts.empty());
  EXPECT_EQ(texts.front(), "Impression: " + study.summary());  // first, and the en dash kept under ISO_IR 192
  EXPECT_NE(texts.front().find("suspected kidney tumour on slices 2\xE2\x80\x93"
                               "4"),
            std::string::npos)
      << texts.front();
  EXPECT_NE(dump.output.find("Neoplasm of kidney"), std::string::npos);
  EXPECT_NE(dump.output.find("Probability"), std::string::npos);
  EXPECT_NE(dump.output.find("Absent"), std::string::npos);  // cyst and stone stated absent
  EXPECT_NE(dump.output.find("Slices not assessed"), std::string::npos);
}

TEST_F(ResultsTest, SrHeaderCarriesStudyEvidenceAndAlgorithm) {
  const ng::StudyResult study = study_with(0.97);
  const fs::path sr = tmp.path() / "sr.dcm";
  np::write_sr(study, source, ctx, sr);
  auto file = load(sr);
  DcmDataset& ds = *file->getDataset();

  EXPECT_EQ(get(ds, DCM_SOPClassUID), UID_Comprehensive3DSRStorage);
  EXPECT_EQ(get(ds, DCM_StudyInstanceUID), get(source, DCM_StudyInstanceUID));
  EXPECT_EQ(get(ds, DCM_PatientName), get(source, DCM_PatientName));
  EXPECT_EQ(get(ds, DCM_SpecificCharacterSet), "ISO_IR 192");
  EXPECT_EQ(get(ds, DCM_SeriesNumber), "9901");
  EXPECT_EQ(get(ds, DCM_SeriesDescription), "Nephra AI kidney findings");
  EXPECT_EQ(get(ds, DCM_VerificationFlag), "UNVERIFIED");
  EXPECT_EQ(get(ds, DCM_CompletionFlag), "PARTIAL");  // one slice was not assessed

  DcmItem* evidence = nullptr;
  ASSERT_TRUE(ds.findAndGetSequenceItem(DCM_CurrentRequestedProcedureEvidenceSequence, evidence, 0).good());
  DcmItem* series = nullptr;
  ASSERT_TRUE(evidence->findAndGetSequenceItem(DCM_ReferencedSeriesSequence, series, 0).good());
  DcmSequenceOfItems* sops = nullptr;
  ASSERT_TRUE(series->findAndGetSequence(DCM_ReferencedSOPSequence, sops).good());
  EXPECT_EQ(sops->card(), study.slices.size());

  DcmItem* algo = nullptr;
  ASSERT_TRUE(ds.findAndGetSequenceItem(DCM_ContributingEquipmentSequence, algo, 0).good());
  EXPECT_EQ(get(*algo, DCM_ManufacturerModelName), "nephra-kidney");
  EXPECT_EQ(get(*algo, DCM_SoftwareVersions), "1.2.0\\0.1.0");
  EXPECT_TRUE(np::is_valid_uid(get(*algo, DCM_DeviceUID)));
  DcmItem* purpose = nullptr;
  ASSERT_TRUE(algo->findAndGetSequenceItem(DCM_PurposeOfReferenceCodeSequence, purpose, 0).good());
  EXPECT_EQ(get(*purpose, DCM_CodeValue), "Newcode1");
  EXPECT_EQ(get(*purpose, DCM_CodingSchemeDesignator), "99IHE");
}

TEST_F(ResultsTest, SrReferencesTheSlicesOfTheRun) {
  const ng::StudyResult study = study_with(0.97);
  const fs::path sr = tmp.path() / "sr.dcm";
  np::write_sr(study, source, ctx, sr);
  const std::string dump = run_tool({"dsrdump", "+Pu", sr.string()}, tmp.path()).output;
  for (const auto& s : study.slices) {
    const bool in_run = s.number >= 2 && s.number <= 4;
    EXPECT_EQ(dump.find(s.source.sop_instance_uid) != std::string::npos, in_run) << s.number << "\n" << dump;
  }
}

TEST_F(ResultsTest, SrOutlinesWhereTheHeatmapPointsOnTheFlaggedSlice) {
  const ng::StudyResult study = study_with(0.97);
  const auto& peak = study.slices.at(2);
  const ng::Slice slice = ng::reload_slice(peak.source, test_model());
  const cv::Mat heat = ng::heatmap(slice, peak.result, 3);
  const auto outline = ng::hot_region(heat);
  ASSERT_GE(outline.size(), 4U);
  EXPECT_EQ(outline.front(), outline.back()) << "closed";
  // The CAM's hot spot is left of centre: so is the outline's centre, inside the image, around the heatmap's peak.
  double peak_value = 0;
  cv::Point peak_at;
  cv::minMaxLoc(heat, nullptr, &peak_value, nullptr, &peak_at);
  std::vector<cv::Point2f> open(outline.begin(), outline.end() - 1);
  EXPECT_GE(cv::pointPolygonTest(open, cv::Point2f(peak_at) + cv::Point2f(0.5F, 0.5F), false), 0);
  for (const auto& p : outline) {
    EXPECT_TRUE(p.x >= 0 && p.y >= 0 && p.x <= static_cast<float>(heat.cols) && p.y <= static_cast<float>(heat.rows));
  }
  EXPECT_LT(cv::boundingRect(open).width, heat.cols / 2);

  const fs::path sr = tmp.path() / "sr.dcm";
  np::write_sr(study, source, ctx, sr, nullptr, {{"Tumor", peak.source, outline}});
  expect_valid_iod(sr, tmp.path());
  const ToolRun dump = run_tool({"dsrdump", "+Pu", sr.string()}, tmp.path());
  EXPECT_TRUE(dump.lines_starting("E:").empty()) << dump.output;
  const auto region = dump.output.find("contains SCOORD:(,,\"Image Region\")=(POLYLINE");
  ASSERT_NE(region, std::string::npos) << dump.output;
  const auto selected = dump.output.find("selected from IMAGE", region);
  ASSERT_NE(selected, std::string::npos) << dump.output;
  EXPECT_NE(dump.output.find(peak.source.sop_instance_uid, selected), std::string::npos) << dump.output;

  // A region of a finding that is not present is left out.
  const fs::path none = tmp.path() / "none";
  fs::create_directories(none);
  np::write_sr(study_with(0.01), source, ctx, none / "sr.dcm", nullptr, {{"Tumor", peak.source, outline}});
  EXPECT_EQ(run_tool({"dsrdump", (none / "sr.dcm").string()}, none).output.find("SCOORD"), std::string::npos);
}

TEST_F(ResultsTest, SrWithNothingFoundSaysSoAndIsComplete) {
  ng::StudyResult study = study_with(0.02);
  for (auto& s : study.slices) s.result.not_assessed = false;
  study.assessed = static_cast<int>(study.slices.size());
  study.not_assessed = 0;
  ASSERT_FALSE(study.any_present());
  const fs::path sr = tmp.path() / "sr.dcm";
  np::write_sr(study, source, ctx, sr);

  expect_valid_iod(sr, tmp.path());
  const ToolRun dump = run_tool({"dsrdump", sr.string()}, tmp.path());
  EXPECT_TRUE(dump.lines_starting("E:").empty()) << dump.output;
  EXPECT_EQ(sr_texts(sr).front(), "Impression: " + study.summary());
  EXPECT_NE(study.summary().find("no kidney cyst, stone or tumour"), std::string::npos);
  EXPECT_EQ(dump.output.find("Measurement Group"), std::string::npos) << dump.output;
  EXPECT_EQ(dump.output.find("Present"), std::string::npos) << dump.output;
  EXPECT_EQ(get(*load(sr)->getDataset(), DCM_CompletionFlag), "COMPLETE");
}

TEST_F(ResultsTest, SrUidsAreDeterministic) {
  const ng::StudyResult study = study_with(0.97);
  np::write_sr(study, source, ctx, tmp.path() / "a.dcm");
  np::write_sr(study, source, ctx, tmp.path() / "b.dcm");
  auto a = load(tmp.path() / "a.dcm");
  auto b = load(tmp.path() / "b.dcm");
  for (const auto& tag : {DCM_SOPInstanceUID, DCM_SeriesInstanceUID}) {
    const std::string uid = get(*a->getDataset(), tag);
    EXPECT_EQ(uid, get(*b->getDataset(), tag));
    EXPECT_TRUE(np::is_valid_uid(uid)) << uid;
  }
  // Another model (a retrained one) gives other instances.
  np::ResultContext other = ctx;
  other.model_sha256 = std::string(64, 'b');
  np::write_sr(study, source, other, tmp.path() / "c.dcm");
  EXPECT_NE(get(*a->getDataset(), DCM_SOPInstanceUID),
            get(*load(tmp.path() / "c.dcm")->getDataset(), DCM_SOPInstanceUID));
  // The same network with re-tuned thresholds says other things: another instance in the same series.
  np::ResultContext retuned = ctx;
  retuned.decision_key = R"({"decision_thresholds":{"Tumor":0.9}})";
  np::write_sr(study, source, retuned, tmp.path() / "d.dcm");
  const auto d = load(tmp.path() / "d.dcm");
  EXPECT_NE(get(*a->getDataset(), DCM_SOPInstanceUID), get(*d->getDataset(), DCM_SOPInstanceUID));
  EXPECT_EQ(get(*a->getDataset(), DCM_SeriesInstanceUID), get(*d->getDataset(), DCM_SeriesInstanceUID));
}

TEST_F(ResultsTest, SrKeepsLatin1NamesAndWritesAsciiText) {
  source.putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 100");
  source.putAndInsertString(DCM_PatientName, "M\xFCller^J\xF6rg");
  const ng::StudyResult study = study_with(0.97);
  const fs::path sr = tmp.path() / "sr.dcm";
  np::write_sr(study, source, ctx, sr);

  expect_valid_iod(sr, tmp.path());
  auto file = load(sr);
  EXPECT_EQ(get(*file->getDataset(), DCM_SpecificCharacterSet), "ISO_IR 100");
  EXPECT_EQ(get(*file->getDataset(), DCM_PatientName), "M\xFCller^J\xF6rg");
  const std::string summary = sr_texts(sr).front();
  EXPECT_NE(summary.find("slices 2-4"), std::string::npos) << summary;
  EXPECT_TRUE(std::all_of(summary.begin(), summary.end(), [](char c) { return (c & 0x80) == 0; }));
}

TEST_F(ResultsTest, ScPassesValidatorsAndMatchesTheSourceStudy) {
  const ng::Slice slice = ng::load_slices(fixtures().at(0), test_model()).at(0);
  const fs::path sc = tmp.path() / "sc.dcm";
  np::write_sc(slice, slice_result(0.97), 3, "Tumor", 1, source, ctx, sc);
  const fs::path sr = tmp.path() / "sr.dcm";
  np::write_sr(study_with(0.97), source, ctx, sr);

  expect_valid_iod(sc, tmp.path());
  const ToolRun ent = run_tool({"dcentvfy", fixtures().at(0).string(), sc.string(), sr.string()}, tmp.path());
  EXPECT_TRUE(ent.lines_starting("Error").empty()) << ent.output;
  EXPECT_EQ(ent.status, 0) << ent.output;

  auto file = load(sc);
  DcmDataset& ds = *file->getDataset();
  EXPECT_EQ(get(ds, DCM_SOPClassUID), UID_SecondaryCaptureImageStorage);
  EXPECT_EQ(get(ds, DCM_ImageType), "DERIVED\\SECONDARY");
  EXPECT_EQ(get(ds, DCM_BurnedInAnnotation), "YES");
  EXPECT_EQ(get(ds, DCM_PhotometricInterpretation), "RGB");
  EXPECT_EQ(get(ds, DCM_Rows), std::to_string(slice.display.rows));
  EXPECT_EQ(get(ds, DCM_SeriesNumber), "9902");
  DcmItem* ref = nullptr;
  ASSERT_TRUE(ds.findAndGetSequenceItem(DCM_SourceImageSequence, ref, 0).good());
  EXPECT_EQ(get(*ref, DCM_ReferencedSOPInstanceUID), slice.source.sop_instance_uid);
  EXPECT_EQ(get(*ref, DCM_ReferencedFrameNumber), "");
}

TEST_F(ResultsTest, ScShowsHeatmapAndWarning) {
  const ng::Slice slice = ng::load_slices(fixtures().at(0), test_model()).at(0);
  const fs::path sc = tmp.path() / "sc.dcm";
  np::write_sc(slice, slice_result(0.97), 3, "Tumor", 1, source, ctx, sc);
  auto file = load(sc);
  const Uint8* pixels = nullptr;
  unsigned long count = 0;
  ASSERT_TRUE(file->getDataset()->findAndGetUint8Array(DCM_PixelData, pixels, &count).good());
  ASSERT_EQ(count, static_cast<unsigned long>(slice.display.total() * 3));
  const cv::Mat rgb(slice.display.rows, slice.display.cols, CV_8UC3, const_cast<Uint8*>(pixels));
  int yellow_in_top_band = 0;
  int coloured = 0;
  for (int r = 0; r < rgb.rows; ++r) {
    for (int c = 0; c < rgb.cols; ++c) {
      const auto& p = rgb.at<cv::Vec3b>(r, c);
      if (r < rgb.rows / 8 && p[0] > 200 && p[1] > 200 && p[2] < 80) ++yellow_in_top_band;
      if (std::abs(p[0] - p[2]) > 60) ++coloured;
    }
  }
  EXPECT_GT(yellow_in_top_band, 200);              // the burned-in warning
  EXPECT_GT(coloured, rgb.rows * rgb.cols / 100);  // the heatmap
}

TEST_F(ResultsTest, ScWithTheCallersHeatmapIsTheSameImage) {
  const ng::Slice slice = ng::load_slices(fixtures().at(0), test_model()).at(0);
  const auto result = slice_result(0.97);
  np::write_sc(slice, result, 3, "Tumor", 1, source, ctx, tmp.path() / "own.dcm");
  np::write_sc(slice, result, 3, "Tumor", 1, source, ctx, tmp.path() / "given.dcm", ng::heatmap(slice, result, 3));
  auto pixels = [&](const char* name) {
    auto file = load(tmp.path() / name);
    const Uint8* data = nullptr;
    unsigned long count = 0;
    EXPECT_TRUE(file->getDataset()->findAndGetUint8Array(DCM_PixelData, data, &count).good());
    return std::vector<Uint8>(data, data + count);
  };
  const auto own = pixels("own.dcm");
  EXPECT_FALSE(own.empty());
  EXPECT_EQ(own, pixels("given.dcm"));
}

TEST_F(ResultsTest, ScUidsAreDeterministicAndFramesAreReferenced) {
  ng::Slice slice = ng::load_slices(fixtures().at(0), test_model()).at(0);
  np::write_sc(slice, slice_result(0.97), 3, "Tumor", 1, source, ctx, tmp.path() / "a.dcm");
  np::write_sc(slice, slice_result(0.97), 3, "Tumor", 1, source, ctx, tmp.path() / "b.dcm");
  slice.source.frame = 2;  // frames exist only in multi-frame classes, e.g. Enhanced CT
  slice.source.sop_class_uid = UID_EnhancedCTImageStorage;
  np::write_sc(slice, slice_result(0.97), 3, "Tumor", 2, source, ctx, tmp.path() / "c.dcm");
  auto a = load(tmp.path() / "a.dcm");
  auto b = load(tmp.path() / "b.dcm");
  auto c = load(tmp.path() / "c.dcm");
  const std::string uid = get(*a->getDataset(), DCM_SOPInstanceUID);
  EXPECT_TRUE(np::is_valid_uid(uid)) << uid;
  EXPECT_EQ(uid, get(*b->getDataset(), DCM_SOPInstanceUID));
  EXPECT_NE(uid, get(*c->getDataset(), DCM_SOPInstanceUID));
  EXPECT_EQ(get(*a->getDataset(), DCM_SeriesInstanceUID), get(*c->getDataset(), DCM_SeriesInstanceUID));
  DcmItem* ref = nullptr;
  ASSERT_TRUE(c->getDataset()->findAndGetSequenceItem(DCM_SourceImageSequence, ref, 0).good());
  EXPECT_EQ(get(*ref, DCM_ReferencedFrameNumber), "2");
  expect_valid_iod(tmp.path() / "c.dcm", tmp.path());
}

TEST_F(ResultsTest, ScRejectsBadInput) {
  ng::Slice slice = ng::load_slices(fixtures().at(0), test_model()).at(0);
  EXPECT_THROW(np::write_sc(slice, slice_result(0.97), 7, "Tumor", 1, source, ctx, tmp.path() / "x.dcm"),
               np::ResultError);
  slice.source.sop_instance_uid.clear();
  EXPECT_THROW(np::write_sc(slice, slice_result(0.97), 3, "Tumor", 1, source, ctx, tmp.path() / "x.dcm"),
               np::ResultError);
  EXPECT_FALSE(fs::exists(tmp.path() / "x.dcm"));
}

TEST_F(ResultsTest, WritersRejectAnIncompleteContext) {
  const ng::StudyResult study = study_with(0.97);
  np::ResultContext no_model = ctx;
  no_model.model_name.clear();
  EXPECT_THROW(np::write_sr(study, source, no_model, tmp.path() / "x.dcm"), np::ResultError);
  np::ResultContext bad_root = ctx;
  bad_root.uid_root = "1.2.03";
  EXPECT_THROW(np::write_sr(study, source, bad_root, tmp.path() / "x.dcm"), np::ResultError);
  const ng::Slice slice = ng::load_slices(fixtures().at(0), test_model()).at(0);
  EXPECT_THROW(np::write_sc(slice, slice_result(0.97), 3, "Tumor", 1, source, bad_root, tmp.path() / "x.dcm"),
               np::ResultError);
  EXPECT_FALSE(fs::exists(tmp.path() / "x.dcm"));
}

// Patient names reach the archive's viewer byte for byte, under the character set the archive used.
struct CharsetCase {
  const char* name;
  const char* charset;
  const char* patient_name;
};

class ResultsCharsetTest : public ResultsTest, public ::testing::WithParamInterface<CharsetCase> {};

TEST_P(ResultsCharsetTest, SrAndScCarryThePatientNameUnchanged) {
  const CharsetCase& c = GetParam();
  source.putAndInsertString(DCM_SpecificCharacterSet, c.charset);
  source.putAndInsertString(DCM_PatientName, c.patient_name);
  const fs::path sr = tmp.path() / "sr.dcm";
  np::write_sr(study_with(0.97), source, ctx, sr);
  const ng::Slice slice = ng::load_slices(fixtures().at(0), test_model()).at(0);
  const fs::path sc = tmp.path() / "sc.dcm";
  np::write_sc(slice, slice_result(0.97), 3, "Tumor", 1, source, ctx, sc);

  for (const auto& file : {sr, sc}) {
    expect_valid_iod(file, tmp.path());
    auto ff = load(file);
    EXPECT_EQ(get(*ff->getDataset(), DCM_SpecificCharacterSet), c.charset) << file;
    EXPECT_EQ(get(*ff->getDataset(), DCM_PatientName), c.patient_name) << file;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Charsets, ResultsCharsetTest,
    ::testing::Values(
        CharsetCase{"latin1", "ISO_IR 100",
                    "M\xFC"
                    "ller^J\xF6rg"},
        CharsetCase{
            "utf8", "ISO_IR 192",
            "\xCE\x94\xCE\xB9\xCE\xBF\xCE\xBD\xCF\x85\xCF\x83\xCE\xAF\xCE\xBF\xCF\x82^\xE5\xB1\xB1\xE7\x94\xB0"},
        // The DICOM standard's own example (PS3.5 H.3.1): Yamada^Tarou in romaji, kanji and hiragana.
        CharsetCase{"iso2022_ir87", "\\ISO 2022 IR 87",
                    "Yamada^Tarou=\x1B$B;3ED\x1B(B^\x1B$BB@O:\x1B(B=\x1B$B$d$^$@\x1B(B^\x1B$B$?$m$&\x1B(B"}),
    [](const ::testing::TestParamInfo<CharsetCase>& p) { return std::string(p.param.name); });
