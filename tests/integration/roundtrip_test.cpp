// The product round trip against a real Orthanc: PACS → node → SR + heatmap SC back in the same study.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <regex>
#include <thread>

#include "node.h"
#include "orthanc.h"
#include "process.h"

namespace fs = std::filesystem;
using nephra::test::TestNode;
using nephra::test::TestOrthanc;

namespace {

std::vector<fs::path> series_files() {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(nephra::test::ct_series_dir())) {
    if (e.path().extension() == ".dcm") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> as_strings(const std::vector<fs::path>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(p.string());
  return out;
}

nephra::test::NodeOptions node_options(int orthanc_port) {
  nephra::test::NodeOptions o;
  o.stable_seconds = 2.0;
  o.peers = {"ORTHANC"};
  o.peer_ports = {{"ORTHANC", orthanc_port}};
  return o;
}

struct Counts {
  size_t sr_series = 0;
  size_t sc_series = 0;
  size_t sr_instances = 0;
  size_t sc_instances = 0;
  std::string sr_instance;
};

Counts results_in(const TestOrthanc& pacs, const std::string& study) {
  Counts c;
  for (const auto& s : pacs.series_of(study)) {
    if (s.modality == "SR") {
      ++c.sr_series;
      c.sr_instances += s.instances.size();
      if (!s.instances.empty()) c.sr_instance = s.instances.front();
    } else if (s.modality == "OT") {
      ++c.sc_series;
      c.sc_instances += s.instances.size();
    }
  }
  return c;
}

// The node's own study result (results.json of its latest round).
nlohmann::json node_result(const TestNode& node) {
  fs::path latest;
  int latest_round = 0;
  for (const auto& e : fs::recursive_directory_iterator(node.spool() / "studies")) {
    if (e.path().filename() != "results.json") continue;
    const int round = std::stoi(e.path().parent_path().filename().string());
    if (round > latest_round) {
      latest_round = round;
      latest = e.path();
    }
  }
  return latest.empty() ? nlohmann::json() : nlohmann::json::parse(nephra::test::read_file(latest));
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::string ascii_dashes(std::string s) { return std::regex_replace(s, std::regex("\xE2\x80\x93"), "-"); }

bool wait_for_results(const TestOrthanc& pacs, const std::string& study, size_t sc_expected_min = 0) {
  return nephra::test::wait_until(
      [&] {
        const Counts c = results_in(pacs, study);
        return c.sr_instances >= 1 && c.sc_instances >= sc_expected_min;
      },
      std::chrono::seconds(180));
}

void expect_one_sr_and_sc(const TestOrthanc& pacs, const std::string& study, const TestNode& node,
                          const fs::path& work) {
  const Counts c = results_in(pacs, study);
  const auto result = node_result(node);
  size_t flagged_runs = 0;
  for (const auto& f : result["findings"]) flagged_runs += f["present"].get<bool>() ? 1U : 0U;
  EXPECT_EQ(c.sr_series, 1U);
  EXPECT_EQ(c.sr_instances, 1U);
  EXPECT_EQ(c.sc_series, flagged_runs > 0 ? 1U : 0U);
  // the SR states the engine's study result
  const fs::path sr = pacs.download(c.sr_instance, "sr.dcm");
  EXPECT_EQ(nephra::test::run({"dsrdump", "+Pl", sr.string()}, work / "dsrdump.txt"), 0);
  const std::string dump = ascii_dashes(nephra::test::read_file(work / "dsrdump.txt"));
  EXPECT_NE(dump.find(ascii_dashes(result["summary"].get<std::string>())), std::string::npos) << dump;
  if (flagged_runs > 0) {
    EXPECT_NE(dump.find("Measurement Group"), std::string::npos);
  }
  EXPECT_EQ(dump.find("\nE:"), std::string::npos);
  EXPECT_EQ(nephra::test::run({"dciodvfy", sr.string()}, work / "dciodvfy.txt"), 0)
      << nephra::test::read_file(work / "dciodvfy.txt");
}

// Orthanc as the hospital PACS holding the series, and the node it routes to, both running.
struct PacsWithSeries {
  nephra::test::TempDir tmp;
  int pacs_port = nephra::test::free_port();
  TestNode node{tmp.path(), node_options(pacs_port)};
  TestOrthanc pacs{tmp.path(), node.port(), pacs_port};
  std::string study;  // Orthanc's id of the study

  PacsWithSeries() {
    pacs.start();
    node.start();
    pacs.upload(series_files());
    study = pacs.get("/studies")[0];
  }
  // What an auto-routing rule does: Orthanc C-STOREs the resource (study, series or instance) to the node.
  void route(const std::string& resource) const {
    pacs.post("/modalities/nephra/store", nlohmann::json({{"Resources", {resource}}, {"Synchronous", true}}).dump());
  }
};

TEST(RoundTrip, OrthancSendsTheStudyAndGetsOneSrAndOneScSeriesBackEvenWhenSentTwice) {
  PacsWithSeries env;
  auto& [tmp, pacs_port, node, pacs, study] = env;
  ASSERT_EQ(pacs.get("/studies").size(), 1U);
  env.route(study);
  ASSERT_TRUE(wait_for_results(pacs, study)) << node.log();
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("RESULT_DELIVERED") != std::string::npos; },
                                       std::chrono::seconds(30)));
  expect_one_sr_and_sc(pacs, study, node, tmp.path());
  const Counts first = results_in(pacs, study);

  // the archive routes the CT again (as after a lost acknowledgement): the node already holds every instance, so
  // no round opens and no result is sent again
  std::string ct_series;
  for (const auto& s : pacs.series_of(study)) {
    if (s.modality == "CT") ct_series = s.id;
  }
  env.route(ct_series);
  ASSERT_TRUE(nephra::test::wait_until(
      [&] { return occurrences(node.log(), "STUDY_DUPLICATE_INSTANCE") >= series_files().size(); },
      std::chrono::seconds(60)))
      << node.log();
  std::this_thread::sleep_for(std::chrono::seconds(4));  // two quiet periods: a round would have been sealed by now
  EXPECT_EQ(occurrences(node.log(), "STUDY_STABLE"), 1U) << node.log();
  const Counts second = results_in(pacs, study);
  EXPECT_EQ(second.sr_series, 1U);
  EXPECT_EQ(second.sr_instances, 1U);
  EXPECT_EQ(second.sc_instances, first.sc_instances);
  node.stop();
  pacs.stop();
}

// A new instance after the results went out: the whole study is classified again and the new SR names the first
// as its predecessor, so the archive holds one current SR that speaks for every slice.
TEST(RoundTrip, ALateNewInstanceReRunsTheWholeStudyAndItsSrReplacesTheFirst) {
  PacsWithSeries env;
  auto& [tmp, pacs_port, node, pacs, study] = env;
  const auto files = series_files();
  env.route(study);
  ASSERT_TRUE(nephra::test::wait_until([&] { return occurrences(node.log(), "RESULT_DELIVERED") == 1; },
                                       std::chrono::seconds(180)))
      << node.log();
  const Counts first = results_in(pacs, study);
  ASSERT_EQ(first.sr_instances, 1U);
  const std::string first_sr_uid = pacs.get("/instances/" + first.sr_instance + "/simplified-tags")["SOPInstanceUID"];

  // one more slice of the same series, as a modality would send a reconstruction it forgot
  const fs::path late = tmp.path() / "late.dcm";
  fs::copy_file(files.front(), late);
  ASSERT_EQ(nephra::test::run({"dcmodify", "-nb", "-m", "SOPInstanceUID=1.2.826.0.1.3680043.10.1234.77.1", "-m",
                               "InstanceNumber=9999", late.string()},
                              tmp.path() / "dcmodify.txt"),
            0);
  const auto before = pacs.get("/instances");
  pacs.upload({late});
  std::string late_id;
  for (const auto& id : pacs.get("/instances")) {
    if (std::find(before.begin(), before.end(), id) == before.end()) late_id = id;
  }
  ASSERT_FALSE(late_id.empty());
  env.route(late_id);
  ASSERT_TRUE(nephra::test::wait_until([&] { return occurrences(node.log(), "RESULT_DELIVERED") == 2; },
                                       std::chrono::seconds(180)))
      << node.log();

  std::vector<std::string> srs;
  for (const auto& s : pacs.series_of(study)) {
    if (s.modality == "SR") srs.insert(srs.end(), s.instances.begin(), s.instances.end());
  }
  ASSERT_EQ(srs.size(), 2U);
  size_t current = 0;
  for (const auto& id : srs) {
    if (id == first.sr_instance) continue;
    const fs::path sr = pacs.download(id, "sr2.dcm");
    ASSERT_EQ(nephra::test::run({"dcmdump", sr.string()}, tmp.path() / "sr2.txt"), 0);
    const std::string dump = nephra::test::read_file(tmp.path() / "sr2.txt");
    const size_t pred = dump.find("PredecessorDocumentsSequence");
    ASSERT_NE(pred, std::string::npos) << dump;
    EXPECT_NE(dump.find(first_sr_uid, pred), std::string::npos) << "the new SR names the first as its predecessor";
    EXPECT_EQ(nephra::test::run({"dciodvfy", sr.string()}, tmp.path() / "dciodvfy2.txt"), 0)
        << nephra::test::read_file(tmp.path() / "dciodvfy2.txt");
    ASSERT_EQ(nephra::test::run({"dsrdump", "+Pl", sr.string()}, tmp.path() / "dsrdump2.txt"), 0);
    const std::string text = nephra::test::read_file(tmp.path() / "dsrdump2.txt");
    EXPECT_EQ(text.find("\nE:"), std::string::npos) << text;
    EXPECT_NE(text.find("Operating point"), std::string::npos) << "the SR says what present means";
    const auto result = node_result(node);
    EXPECT_EQ(result["assessed"].get<int>() + result["not_assessed"].get<int>(), static_cast<int>(files.size()) + 1)
        << "the second SR speaks for the whole study";
    ++current;
  }
  EXPECT_EQ(current, 1U);
  node.stop();
  pacs.stop();
}

TEST(RoundTrip, ResultsWaitForAnArchiveThatIsDownAndArriveOnceItIsBack) {
  nephra::test::TempDir tmp;
  TestOrthanc pacs(tmp.path(), 1);
  TestNode node(tmp.path(), node_options(pacs.dicom_port()));
  node.start();
  ASSERT_EQ(node.storescu("ORTHANC", as_strings(series_files())), 0);
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("RESULT_RETRY") != std::string::npos; },
                                       std::chrono::seconds(180)))
      << node.log();
  pacs.start();
  // the archive never held the CT here: results arrive as a study of their own
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("RESULT_DELIVERED") != std::string::npos; },
                                       std::chrono::seconds(60)))
      << node.log();
  const auto studies = pacs.get("/studies");
  ASSERT_EQ(studies.size(), 1U);
  expect_one_sr_and_sc(pacs, studies[0], node, tmp.path());
  node.stop();
  pacs.stop();
}

TEST(RoundTrip, ANodeKilledAfterReceivingStillDeliversExactlyOnce) {
  nephra::test::TempDir tmp;
  TestOrthanc pacs(tmp.path(), 1);
  pacs.start();
  auto opts = node_options(pacs.dicom_port());
  opts.stable_seconds = 3.0;
  TestNode node(tmp.path(), opts);
  node.start();
  const auto files = series_files();
  ASSERT_EQ(node.storescu("ORTHANC", as_strings(files)), 0);
  node.kill9();  // every instance acknowledged, the study not yet complete
  node.start();
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("RESULT_DELIVERED") != std::string::npos; },
                                       std::chrono::seconds(180)))
      << node.log();
  const auto studies = pacs.get("/studies");
  ASSERT_EQ(studies.size(), 1U);
  expect_one_sr_and_sc(pacs, studies[0], node, tmp.path());
  EXPECT_EQ(node_result(node)["assessed"].get<int>() + node_result(node)["not_assessed"].get<int>(),
            static_cast<int>(files.size()));
  node.stop();
  pacs.stop();
}

TEST(RoundTrip, AnArchiveThatRefusesForGoodSendsResultsToTheDeadLetterFolder) {
  nephra::test::TempDir tmp;
  const int refusing_port = nephra::test::free_port();
  nephra::test::Process refusing({"storescp", "--refuse", std::to_string(refusing_port)}, tmp.path() / "storescp.log");
  TestNode node(tmp.path(), node_options(refusing_port));
  node.start();
  ASSERT_EQ(node.storescu("ORTHANC", as_strings(series_files())), 0);
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("RESULT_DEAD_LETTER") != std::string::npos; },
                                       std::chrono::seconds(180)))
      << node.log();
  EXPECT_TRUE(fs::exists(node.spool() / "dead-letter"));
  size_t kept = 0;
  for (const auto& e : fs::recursive_directory_iterator(node.spool() / "dead-letter")) {
    kept += e.path().extension() == ".dcm" ? 1U : 0U;
  }
  EXPECT_GE(kept, 1U);                                            // at least the SR is kept for an operator to resend
  EXPECT_EQ(node.log().find("RESULT_RETRY"), std::string::npos);  // a permanent refusal is not retried
  node.stop();
  refusing.signal(SIGTERM);
  refusing.wait();
}

}  // namespace
