// Ingest against real DCMTK peers on loopback: storescu, echoscu, and a raw client for hostile bytes.
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <regex>
#include <set>
#include <sstream>

#include "nephra/store/round_store.h"
#include "node.h"

namespace fs = std::filesystem;
using nephra::test::TempDir;
using nephra::test::TestNode;

namespace {

size_t dicom_files_in(const fs::path& dir) {
  size_t n = 0;
  for (const auto& entry : fs::directory_iterator(dir))
    n += (entry.is_regular_file() && entry.path().extension() != ".md") ? 1U : 0U;
  return n;
}

std::string sop_instance_of(const fs::path& file) {
  DcmFileFormat ff;
  if (ff.loadFile(file.c_str(), EXS_Unknown, EGL_noChange, 1024).bad()) return "";
  OFString uid;
  ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, uid);
  return uid.c_str();
}

bool loads_completely(const fs::path& file) {
  DcmFileFormat ff;
  return ff.loadFile(file.c_str()).good() && ff.getDataset()->tagExistsWithValue(DCM_PixelData);
}

// Files whose C-STORE storescu saw answered with Success, from its -v log.
std::vector<fs::path> acknowledged_files(const std::string& storescu_log) {
  std::vector<fs::path> acked;
  std::istringstream lines(storescu_log);
  std::string line;
  std::string current;
  while (std::getline(lines, line)) {
    if (const auto pos = line.find("Sending file: "); pos != std::string::npos) current = line.substr(pos + 14);
    if (line.find("Received Store Response (Success)") != std::string::npos && !current.empty()) {
      acked.emplace_back(current);
    }
  }
  return acked;
}

std::string raw_scu(const TestNode& node, const std::string& mode, const std::string& file = "") {
  TempDir out;
  std::vector<std::string> argv = {"/usr/bin/python3",
                                   NEPHRA_SOURCE_DIR "/tests/tools/raw_scu.py",
                                   "127.0.0.1",
                                   std::to_string(node.port()),
                                   "STORESCU",
                                   "NEPHRA",
                                   mode};
  if (!file.empty()) argv.push_back(file);
  nephra::test::run(argv, out.path() / "out.txt");
  return nephra::test::read_file(out.path() / "out.txt");
}

class Ingest : public ::testing::Test {
 protected:
  TempDir work;
  fs::path series = nephra::test::ct_series_dir();
  size_t series_size = dicom_files_in(series);

  void SetUp() override {
    if (nephra::test::shared_dir().empty()) {
      std::cout << "[ NOTE     ] ../shared is absent: using the committed 5-slice fixture instead of 134 slices\n";
    }
  }
};

}  // namespace

TEST_F(Ingest, WholeSeriesBecomesOneJobWithFullManifest) {
  TestNode node(work.path());
  node.start();
  ASSERT_EQ(node.storescu("STORESCU", {series.string()}), 0);
  ASSERT_TRUE(node.wait_for_manifests(1));
  const auto manifests = node.manifests();
  ASSERT_EQ(manifests.size(), 1U);
  EXPECT_EQ(manifests[0]["instances"], series_size);
  EXPECT_EQ(manifests[0]["calling_ae"], "STORESCU");
  ASSERT_EQ(manifests[0]["series"].size(), 1U);
  EXPECT_EQ(manifests[0]["series"][0]["modality"], "CT");
  EXPECT_EQ(manifests[0]["series"][0]["transfer_syntaxes"][0], "1.2.840.10008.1.2");
  node.stop();
  EXPECT_NE(node.log().find("STUDY_STABLE"), std::string::npos);
}

struct Codec {
  const char* tool;
  const char* transfer_syntax;
  const char* storescu_proposal;  // storescu proposes compressed syntaxes only when told to
};

class IngestCompressed : public Ingest, public ::testing::WithParamInterface<Codec> {};

TEST_P(IngestCompressed, AcceptedAsSent) {
  const fs::path compressed = work.path() / "compressed";
  fs::create_directories(compressed);
  for (const auto& entry : fs::directory_iterator(series)) {
    if (entry.path().extension() != ".dcm") continue;
    ASSERT_EQ(
        nephra::test::run({GetParam().tool, entry.path().string(), (compressed / entry.path().filename()).string()},
                          work.path() / "codec.log"),
        0)
        << nephra::test::read_file(work.path() / "codec.log");
  }
  TestNode node(work.path());
  node.start();
  ASSERT_EQ(node.storescu("STORESCU", {compressed.string()}, "storescu.log", {GetParam().storescu_proposal}), 0)
      << nephra::test::read_file(work.path() / "storescu.log");
  ASSERT_TRUE(node.wait_for_manifests(1));
  const auto manifest = node.manifests().at(0);
  EXPECT_EQ(manifest["instances"], series_size);
  ASSERT_EQ(manifest["series"][0]["transfer_syntaxes"].size(), 1U);
  EXPECT_EQ(manifest["series"][0]["transfer_syntaxes"][0], GetParam().transfer_syntax);
  node.stop();
}

INSTANTIATE_TEST_SUITE_P(Codecs, IngestCompressed,
                         ::testing::Values(Codec{"dcmcjpls", "1.2.840.10008.1.2.4.80", "-xt"},
                                           Codec{"dcmcjpeg", "1.2.840.10008.1.2.4.70", "-xs"},
                                           Codec{"dcmcrle", "1.2.840.10008.1.2.5", "-xr"}),
                         [](const auto& param_info) { return std::string(param_info.param.tool); });

TEST_F(Ingest, TwoSendersTwoStudiesInterleavedStayApart) {
  const fs::path other = nephra::test::shared_dir() / "data" / "dicom" / "dicom-numpy-dupe-positions";
  if (nephra::test::shared_dir().empty()) GTEST_SKIP() << "../shared/data/dicom is absent: no second study to send";
  TestNode node(work.path());
  node.start();
  const std::vector<std::string> base = {
      "storescu", "-aec", "NEPHRA", "+sd", "-R", "127.0.0.1", std::to_string(node.port())};
  auto a = base;
  a.insert(a.begin() + 1, {"-aet", "SENDER_A"});
  a.push_back(series.string());
  auto b = base;
  b.insert(b.begin() + 1, {"-aet", "SENDER_B"});
  b.push_back(other.string());
  nephra::test::Process first(a, work.path() / "a.log");
  nephra::test::Process second(b, work.path() / "b.log");
  ASSERT_EQ(first.wait(), 0);
  ASSERT_EQ(second.wait(), 0);
  ASSERT_TRUE(node.wait_for_manifests(2));
  std::map<std::string, size_t> by_sender;
  for (const auto& m : node.manifests()) by_sender[m["calling_ae"]] = m["instances"];
  EXPECT_EQ(by_sender["SENDER_A"], series_size);
  EXPECT_EQ(by_sender["SENDER_B"], dicom_files_in(other));
  EXPECT_EQ(node.manifests().size(), 2U);
  node.stop();
}

TEST_F(Ingest, UnknownCallingAeIsRejected) {
  TestNode node(work.path());
  node.start();
  EXPECT_NE(node.echoscu("INTRUDER"), 0);
  EXPECT_NE(node.storescu("INTRUDER", {series.string()}), 0);
  EXPECT_NE(node.log().find("SCP_ASSOC_REJECTED reason=calling_ae_not_recognised calling_ae=\"INTRUDER\""),
            std::string::npos);
  EXPECT_EQ(node.echoscu("STORESCU"), 0);
  EXPECT_EQ(node.open_instances(), 0U);
  node.stop();
}

TEST_F(Ingest, BadInputGetsFailureStatusAndTheNodeGoesOn) {
  TestNode node(work.path());
  node.start();
  raw_scu(node, "junk-socket");
  EXPECT_EQ(node.echoscu("STORESCU"), 0);
  EXPECT_NE(raw_scu(node, "garbage").find("status=0xC000"), std::string::npos);
  EXPECT_EQ(node.echoscu("STORESCU"), 0);
  const fs::path slice = *fs::directory_iterator(series);
  EXPECT_NE(raw_scu(node, "truncated", slice.string()).find("status=0xC000"), std::string::npos);
  EXPECT_EQ(node.echoscu("STORESCU"), 0);
  if (!nephra::test::shared_dir().empty()) {
    // The TotalSegmentator slice carries empty SOP, series and study UIDs in its data set.
    const fs::path blank_dir = nephra::test::shared_dir() / "data" / "dicom" / "totalsegmentator-example-ct-j2k";
    const fs::path blank = *fs::directory_iterator(blank_dir);
    EXPECT_NE(raw_scu(node, "as-is", blank.string()).find("status=0xA900"), std::string::npos);
  }
  EXPECT_EQ(node.echoscu("STORESCU"), 0);
  EXPECT_EQ(node.open_instances(), 0U);
  EXPECT_TRUE(node.running());
  ASSERT_EQ(node.storescu("STORESCU", {series.string()}), 0);
  ASSERT_TRUE(node.wait_for_manifests(1));
  node.stop();
}

TEST_F(Ingest, KillDashNineLosesNoAcknowledgedInstance) {
  // A quiet period long enough that the resumed instances wait for the re-send even on a loaded machine.
  nephra::test::NodeOptions options;
  options.stable_seconds = 5.0;
  TestNode node(work.path(), options);
  node.start();
  std::vector<std::string> argv = {
      "storescu", "-v", "-aet", "STORESCU", "-aec", "NEPHRA", "-R", "127.0.0.1", std::to_string(node.port())};
  for (const auto& entry : fs::directory_iterator(series)) {
    if (entry.path().extension() == ".dcm") argv.push_back(entry.path().string());
  }
  nephra::test::Process sender(argv, work.path() / "killed-send.log");
  const size_t kill_after = std::min<size_t>(20, series_size - 1);
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.open_instances() >= kill_after; }, std::chrono::seconds(30)));
  node.kill9();
  sender.wait();

  const auto acked = acknowledged_files(nephra::test::read_file(work.path() / "killed-send.log"));
  ASSERT_GE(acked.size(), kill_after - 1);
  std::set<std::string> spooled;
  for (const auto& study : fs::directory_iterator(node.spool() / "studies")) {
    for (const auto& f : fs::recursive_directory_iterator(study.path())) spooled.insert(f.path().filename().string());
  }
  for (const auto& file : acked) {
    const std::string name = nephra::store::hash_hex(sop_instance_of(file)) + ".dcm";
    EXPECT_TRUE(spooled.count(name) == 1) << file << " was acknowledged but is not in the spool";
  }

  node.start();
  ASSERT_EQ(node.storescu("STORESCU", {series.string()}), 0);
  ASSERT_TRUE(node.wait_for_manifests(1));
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.open_instances() == 0; }, std::chrono::seconds(10)));
  const auto manifests = node.manifests();
  ASSERT_EQ(manifests.size(), 1U) << "exactly one job follows";
  EXPECT_EQ(manifests[0]["instances"], series_size);
  node.stop();  // results are still being written and sent while it runs, through tmp/
  std::string left;
  for (const auto& f : fs::directory_iterator(node.spool() / "tmp")) left += f.path().filename().string() + " ";
  EXPECT_TRUE(left.empty()) << "left in spool/tmp: " << left;
}

// A power cut after an instance's data were synced in its slot but before the study folder it moved into was:
// the instance is found in its slot at the next start and joins its study; a slot cut short while its data set
// was arriving (never acknowledged) is removed.
TEST_F(Ingest, InstancesLeftInTheirSlotsByACrashJoinTheirStudyAtTheNextStart) {
  nephra::test::NodeOptions options;
  options.stable_seconds = 1.0;
  TestNode node(work.path(), options);
  const fs::path incoming = node.spool() / "incoming";
  fs::create_directories(incoming);
  int n = 0;
  for (const auto& entry : fs::directory_iterator(series)) {
    if (entry.path().extension() != ".dcm") continue;
    DcmFileFormat file;
    ASSERT_TRUE(file.loadFile(entry.path().c_str()).good()) << entry.path();
    DcmMetaInfo& meta = *file.getMetaInfo();
    meta.putAndInsertString(DCM_SourceApplicationEntityTitle, "STORESCU");  // what a receive writes
    meta.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange, EXS_LittleEndianExplicit, EET_ExplicitLength);
    const fs::path slot = incoming / ("1-" + std::to_string(n++) + ".slot");
    ASSERT_TRUE(file.saveFile(slot.c_str(), EXS_Unknown, EET_ExplicitLength, EGL_noChange, EPD_noChange, 0, 0,
                              EWM_dontUpdateMeta)
                    .good());
  }
  const fs::path whole = incoming / "1-0.slot";
  const fs::path cut = incoming / "1-999.slot";
  fs::copy_file(whole, cut);
  fs::resize_file(cut, fs::file_size(whole) / 2);

  node.start();
  ASSERT_TRUE(node.wait_for_manifests(1));
  const auto manifests = node.manifests();
  ASSERT_EQ(manifests.size(), 1U);
  EXPECT_EQ(manifests[0]["instances"], series_size) << "every whole instance, none twice";
  EXPECT_EQ(manifests[0]["calling_ae"], "STORESCU");
  const std::string log = node.log();
  size_t recovered = 0;
  for (auto pos = log.find("SPOOL_SLOT_RECOVERED"); pos != std::string::npos;
       pos = log.find("SPOOL_SLOT_RECOVERED", pos + 1)) {
    ++recovered;
  }
  EXPECT_EQ(recovered, series_size);
  EXPECT_NE(log.find("SPOOL_SLOT_DISCARDED slot=1-999.slot reason=not_a_whole_instance"), std::string::npos) << log;
  for (const auto& entry : fs::directory_iterator(incoming)) {
    EXPECT_EQ(fs::file_size(entry.path()), 0U) << entry.path() << " is left holding data";
  }
  node.stop();
}

TEST_F(Ingest, FullDiskAnswersOutOfResourcesAndKeepsRunning) {
  const fs::path spool = work.path() / "tiny";
  const nephra::test::SmallTmpfs tmpfs(spool, "1536k");
  if (!tmpfs.mounted()) GTEST_SKIP() << tmpfs.error();

  nephra::test::NodeOptions options;
  options.stable_seconds = 30.0;
  options.spool_dir = spool / "spool";
  TestNode node(work.path(), options);
  node.start();
  node.storescu("STORESCU", {series.string()});
  EXPECT_NE(node.log().find("SPOOL_WRITE_FAILED"), std::string::npos);
  EXPECT_NE(node.log().find("status=0xA700"), std::string::npos);
  EXPECT_NE(nephra::test::read_file(work.path() / "storescu.log").find("Refused: OutOfResources"), std::string::npos)
      << nephra::test::read_file(work.path() / "storescu.log");
  EXPECT_TRUE(fs::is_empty(spool / "spool" / "tmp")) << "no partial file";
  for (const auto& f : fs::recursive_directory_iterator(spool / "spool" / "studies")) {
    if (f.path().extension() == ".dcm") {
      EXPECT_TRUE(loads_completely(f.path())) << f.path();
    }
  }
  EXPECT_TRUE(node.running());
  EXPECT_EQ(node.echoscu("STORESCU"), 0);
  node.stop();
}
