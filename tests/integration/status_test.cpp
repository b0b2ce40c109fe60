// The status page and the try-a-slice endpoint, against the real nephrad binary. (The page in a real browser:
// tests/browser/.)
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "nephra/store/round_store.h"
#include "node.h"

namespace fs = std::filesystem;
using nephra::test::NodeOptions;
using nephra::test::TempDir;
using nephra::test::TestNode;

namespace {

fs::path fixture_dir() { return nephra::test::source_dir() / "tests" / "data" / "tcia-kidney-slices"; }

// What identifies the fixture's patient and study; none of it may reach the page.
constexpr const char* kFixturePatient = "Pancreas-CT-CB_001";
constexpr const char* kFixtureStudyUid = "1.3.6.1.4.1.14519.5.2.1.21087345762211724523378497892240459677";

nlohmann::json status_of(const TestNode& node) {
  int status = 0;
  const std::string body = node.http_get("/status.json", &status);
  EXPECT_EQ(status, 200) << body;
  return nlohmann::json::parse(body, nullptr, false);
}

}  // namespace

TEST(StatusPage, ShowsAStudyThatWentThroughByItsHashedKeyAndNothingThatNamesThePatient) {
  TempDir tmp;
  NodeOptions options;
  options.stable_seconds = 0.5;
  TestNode node(tmp.path(), options);
  node.start();

  int status = 0;
  const std::string page = node.http_get("/", &status);
  EXPECT_EQ(status, 200);
  EXPECT_NE(page.find("<title>Nephra node status</title>"), std::string::npos) << page;
  for (const char* remote : {"src=\"http", "href=\"http", "fetch(\"http", "url(http"}) {
    EXPECT_EQ(page.find(remote), std::string::npos) << "the page loads nothing from elsewhere: " << remote;
  }
  EXPECT_EQ(page.find("Try a slice"), std::string::npos) << "the try form is off by default";
  const fs::path small = tmp.path() / "small.bin";
  std::ofstream(small) << "a small upload";
  (void)node.http_post("/try", small, &status);
  EXPECT_EQ(status, 405) << "uploads are refused while http.try_page is off";

  ASSERT_EQ(node.storescu("STORESCU", {fixture_dir().string()}), 0);
  nlohmann::json s;
  ASSERT_TRUE(nephra::test::wait_until(
      [&] {
        s = status_of(node);
        return s.is_object() && !s["rounds"].empty() && !s["rounds"][0]["findings"].get<std::string>().empty();
      },
      std::chrono::seconds(60)))
      << s.dump(1);
  const auto& round = s["rounds"][0];
  EXPECT_EQ(round["study"], nephra::store::study_key_of("STORESCU", kFixtureStudyUid).substr(0, 12));
  EXPECT_EQ(round["calling_ae"], "STORESCU");
  EXPECT_EQ(round["instances"], 5);
  EXPECT_NE(round["findings"].get<std::string>().find("5 slices assessed"), std::string::npos) << round;
  EXPECT_TRUE(round["classify_s"].is_number()) << round;
  EXPECT_TRUE(s["ready"].get<bool>());
  EXPECT_EQ(s["throughput"]["instances"], 5);
  EXPECT_EQ(s["throughput"]["per_minute"].size(), 60U);
  const std::string text = s.dump();
  EXPECT_EQ(text.find(kFixturePatient), std::string::npos) << text;
  EXPECT_EQ(text.find(kFixtureStudyUid), std::string::npos) << text;
  EXPECT_EQ(text.find("1.3.6.1.4.1.14519"), std::string::npos) << "no UID of the study's: " << text;
  node.stop();

  // After a restart the page lists the rounds the spool holds.
  node.start();
  const auto again = status_of(node);
  ASSERT_FALSE(again["rounds"].empty()) << again.dump(1);
  EXPECT_EQ(again["rounds"][0]["study"], round["study"]);
  EXPECT_EQ(again["rounds"][0]["findings"], round["findings"]);
  node.stop();
}

TEST(StatusPage, TryClassifiesADicomSliceAndAnExportAndExplainsABadUpload) {
  TempDir tmp;
  NodeOptions options;
  options.try_page = true;
  TestNode node(tmp.path(), options);
  node.start();

  int status = 0;
  EXPECT_NE(node.http_get("/", &status).find("Try a slice"), std::string::npos);
  const std::string body = node.http_post("/try", fixture_dir() / "1-072.dcm", &status);
  ASSERT_EQ(status, 200) << body;
  const auto j = nlohmann::json::parse(body);
  ASSERT_EQ(j["slices"].size(), 1U) << body;
  const auto& slice = j["slices"][0];
  EXPECT_EQ(slice["class"], "Normal") << "the kidney-level fixture slice of an unremarkable study: " << slice;
  EXPECT_EQ(slice["probabilities"].size(), 4U);
  EXPECT_GT(slice["heatmap_png"].get<std::string>().size(), 1000U);
  EXPECT_EQ(j["model"].get<std::string>().rfind("nephra-kidney", 0), 0U);

  const fs::path junk = tmp.path() / "junk.bin";
  std::ofstream(junk) << "this is not an image";
  const std::string refused = node.http_post("/try", junk, &status);
  EXPECT_EQ(status, 422) << refused;
  EXPECT_NE(refused.find("cannot classify this file: neither a DICOM file nor a readable PNG/JPEG"), std::string::npos)
      << refused;

  const fs::path big = tmp.path() / "big.bin";
  std::ofstream(big).close();
  fs::resize_file(big, std::uintmax_t{33} * 1024 * 1024);
  const std::string too_big = node.http_post("/try", big, &status);
  EXPECT_EQ(status, 413) << too_big;
  EXPECT_NE(too_big.find("larger than the limit"), std::string::npos) << too_big;

  const std::string health = node.http_get("/healthz", &status);
  EXPECT_EQ(status, 200) << health;
  EXPECT_NE(health.find("\"status\":\"ready\""), std::string::npos) << health;
  EXPECT_TRUE(fs::is_empty(node.spool() / "tmp")) << "nothing uploaded is kept";
  node.stop();
}

TEST(StatusPage, TheGrafanaDashboardQueriesOnlySeriesTheNodeExports) {
  const fs::path file = nephra::test::source_dir() / "packaging" / "grafana-dashboard.json";
  std::ifstream in(file);
  const auto dashboard = nlohmann::json::parse(in, nullptr, false);
  ASSERT_TRUE(dashboard.is_object()) << file << " is not JSON";
  TempDir tmp;
  TestNode node(tmp.path());
  node.start();
  const std::string metrics = node.http_get("/metrics");
  node.stop();
  ASSERT_FALSE(metrics.empty());
  size_t queries = 0;
  const std::regex series(R"(nephra_[a-z_]+)");
  for (const auto& panel : dashboard["panels"]) {
    for (const auto& target : panel["targets"]) {
      const std::string expr = target["expr"];
      ++queries;
      for (std::sregex_iterator it(expr.begin(), expr.end(), series), end; it != end; ++it) {
        EXPECT_NE(metrics.find("\n" + it->str()), std::string::npos)
            << panel["title"] << ": " << it->str() << " is not in /metrics";
      }
    }
  }
  EXPECT_GT(queries, 10U);
}
