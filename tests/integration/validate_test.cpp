// Shadow mode and `nephra validate`, against the real binaries: the node in shadow mode keeps its results and sends
// nothing; `nephra validate --spool` judges what it kept, and agrees with `nephra validate` run on the same study's
// files, since both apply the node's own study rule.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "node.h"

namespace fs = std::filesystem;
using nephra::test::NodeOptions;
using nephra::test::TempDir;
using nephra::test::TestNode;

namespace {

constexpr const char* kFixtureStudyUid = "1.3.6.1.4.1.14519.5.2.1.21087345762211724523378497892240459677";

fs::path fixture_dir() { return nephra::test::source_dir() / "tests" / "data" / "tcia-kidney-slices"; }

// nephra validate; returns its exit status, its report.json in `report`.
int validate(const fs::path& work, const std::vector<std::string>& extra, nlohmann::json& report,
             const std::string& name) {
  const fs::path out = work / name;
  std::vector<std::string> argv = {NEPHRA_CLI_PATH, "validate", "--model", nephra::test::model_manifest().string(),
                                   "--bootstrap",   "200",      "--out",   out.string()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const int rc = nephra::test::run(argv, work / (name + ".log"));
  std::ifstream in(out / "report.json");
  report = nlohmann::json::parse(in, nullptr, false);
  return rc;
}

}  // namespace

TEST(ShadowMode, KeepsTheResultsSendsNothingAndValidateJudgesWhatItKept) {
  TempDir tmp;
  NodeOptions options;
  options.stable_seconds = 0.5;
  options.shadow = true;  // STORESCU's archive (port 1) would refuse any send: none is made
  TestNode node(tmp.path(), options);
  node.start();
  ASSERT_EQ(node.storescu("STORESCU", {fixture_dir().string()}), 0);
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("RESULT_KEPT_SHADOW") != std::string::npos; },
                                       std::chrono::seconds(60)))
      << node.log();
  const auto status = nlohmann::json::parse(node.http_get("/status.json"));
  EXPECT_TRUE(status["shadow"].get<bool>());
  EXPECT_EQ(status["rounds"][0]["state"], "done");
  EXPECT_EQ(status["rounds"][0]["reason"], "shadow mode: results kept, not sent");
  EXPECT_EQ(status["deliveries"]["sent"], 0);
  EXPECT_EQ(node.log().find("RESULT_RETRY"), std::string::npos) << "no send to the archive was attempted";
  node.stop();

  std::ofstream(tmp.path() / "by-uid.csv") << "study,Cyst,Stone,Tumor\n" << kFixtureStudyUid << ",0,0,0\n";
  nlohmann::json kept;
  ASSERT_EQ(validate(tmp.path(), {"--labels", (tmp.path() / "by-uid.csv").string(), "--spool", node.spool().string()},
                     kept, "from-spool"),
            0)
      << nephra::test::read_file(tmp.path() / "from-spool.log");
  EXPECT_EQ(kept["source"], "spool");
  EXPECT_EQ(kept["studies"], 1);
  EXPECT_EQ(kept["any_false_finding_on_normal"]["n"], 1);
  EXPECT_EQ(kept["per_study"][0]["slices"], 5);
  EXPECT_NE(kept["per_study"][0]["strata"]["scanner"].get<std::string>().find("Philips"), std::string::npos)
      << kept["per_study"][0]["strata"].dump() << ": strata come from the CT's DICOM header";

  // The same study from its files: the same calls and scores as the node's.
  fs::create_directories(tmp.path() / "studies");
  fs::create_directory_symlink(fixture_dir(), tmp.path() / "studies" / "case-1");
  std::ofstream(tmp.path() / "studies" / "labels.csv") << "study,Cyst,Stone,Tumor\ncase-1,0,0,0\n";
  nlohmann::json judged;
  ASSERT_EQ(validate(tmp.path(), {"--labels", (tmp.path() / "studies" / "labels.csv").string()}, judged, "from-files"),
            0)
      << nephra::test::read_file(tmp.path() / "from-files.log");
  EXPECT_EQ(judged["per_study"][0]["called"], kept["per_study"][0]["called"]);
  for (const auto& [finding, score] : kept["per_study"][0]["score"].items()) {
    EXPECT_NEAR(judged["per_study"][0]["score"][finding].get<double>(), score.get<double>(), 1e-6) << finding;
  }
  EXPECT_TRUE(fs::exists(tmp.path() / "from-files" / "report.html"));
  EXPECT_TRUE(fs::exists(tmp.path() / "from-files" / "reliability.png"));
}

TEST(ShadowMode, ValidateRefusesABadLabelsFileNamingTheLine) {
  TempDir tmp;
  std::ofstream(tmp.path() / "labels.csv") << "study,Cyst,Stone,Tumor\ncase-1,0,maybe,0\n";
  nlohmann::json report;
  EXPECT_EQ(validate(tmp.path(), {"--labels", (tmp.path() / "labels.csv").string()}, report, "bad"), 4);
  EXPECT_NE(
      nephra::test::read_file(tmp.path() / "bad.log").find("labels.csv:2: column Stone: expected 0 or 1, got 'maybe'"),
      std::string::npos)
      << nephra::test::read_file(tmp.path() / "bad.log");
}
