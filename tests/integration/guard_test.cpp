// Who may send, how much, and what: peer address checks, the spool high-water mark, the per-study instance limit
// and hostile UIDs, against the real nephrad binary and DCMTK's tools.
#include <gtest/gtest.h>

#include <regex>

#include "node.h"

namespace fs = std::filesystem;
using nephra::test::NodeOptions;
using nephra::test::TempDir;
using nephra::test::TestNode;

namespace {

fs::path fixture_dir() { return nephra::test::source_dir() / "tests" / "data" / "tcia-kidney-slices"; }

fs::path first_fixture_slice() {
  for (const auto& e : fs::directory_iterator(fixture_dir())) {
    if (e.path().extension() == ".dcm") return e.path();
  }
  return {};
}

bool log_has(const TestNode& node, const std::string& text) {
  return nephra::test::wait_until([&] { return node.log().find(text) != std::string::npos; }, std::chrono::seconds(10));
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

// A copy of a fixture slice with one attribute overwritten (dcmodify also updates the meta header's UIDs).
fs::path modified_slice(const fs::path& dir, const std::string& name, const std::string& assignment) {
  const fs::path out = dir / name;
  fs::copy_file(first_fixture_slice(), out);
  const int rc = nephra::test::run({"dcmodify", "-nb", "-m", assignment, out.string()}, dir / (name + ".log"));
  if (rc != 0) throw std::runtime_error("dcmodify failed: " + nephra::test::read_file(dir / (name + ".log")));
  return out;
}

std::string raw_store(const TestNode& node, const fs::path& file, const fs::path& dir) {
  const fs::path out = dir / "raw_scu.txt";
  fs::remove(out);
  nephra::test::run({"/usr/bin/python3", NEPHRA_SOURCE_DIR "/tests/tools/raw_scu.py", "127.0.0.1",
                     std::to_string(node.port()), "STORESCU", "NEPHRA", "as-is", file.string()},
                    out);
  return nephra::test::read_file(out);
}

}  // namespace

TEST(Guard, ACallerFromAnotherAddressThanItsPeerIsRefusedUnlessTheCheckIsOff) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU", "BYNAME"};
  options.peer_hosts = {{"STORESCU", "127.0.0.2"}, {"BYNAME", "localhost"}};
  TestNode node(tmp.path(), options);
  node.start();
  EXPECT_NE(node.echoscu("STORESCU"), 0) << "127.0.0.1 is not 127.0.0.2";
  EXPECT_TRUE(log_has(node, "reason=calling_address_not_allowed calling_ae=STORESCU peer=127.0.0.1"));
  EXPECT_EQ(node.echoscu("BYNAME"), 0) << "a host name that resolves to the caller's address is accepted";

  options.check_peer_address = false;
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(log_has(node, "CONFIG_RELOADED"));
  EXPECT_EQ(node.echoscu("STORESCU"), 0);
  node.stop();
}

TEST(Guard, BelowTheSpoolHighWaterMarkNewStudiesAreRefusedAndAcceptedAgainOnceSpaceIsBack) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU"};
  TestNode node(tmp.path(), options);
  node.start();

  options.min_free_spool_mb = 1048576;  // a terabyte: "the disk is nearly full"
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(log_has(node, "CONFIG_RELOADED"));
  EXPECT_NE(node.storescu("STORESCU", {fixture_dir().string()}), 0);
  EXPECT_TRUE(log_has(node, "SCP_ASSOC_REJECTED reason=spool_low_on_space"));
  int status = 0;
  const std::string health = node.http_get("/healthz", &status);
  EXPECT_EQ(status, 503);
  EXPECT_NE(health.find("spool low on space"), std::string::npos) << health;
  EXPECT_EQ(node.open_instances(), 0U);

  options.min_free_spool_mb = 0;  // space freed
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(
      nephra::test::wait_until([&] { return count_of(node.log(), "CONFIG_RELOADED") == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(node.storescu("STORESCU", {fixture_dir().string()}), 0);
  EXPECT_EQ(node.open_instances(), 5U);
  (void)node.http_get("/healthz", &status);
  EXPECT_EQ(status, 200);
  node.stop();
}

TEST(Guard, AStudyBeyondItsInstanceLimitGetsOutOfResourcesForTheRest) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU"};
  options.max_instances = 3;
  options.stable_seconds = 30;  // the round stays open while we count
  TestNode node(tmp.path(), options);
  node.start();
  node.storescu("STORESCU", {fixture_dir().string()}, "limited.log");
  const std::string sent = nephra::test::read_file(tmp.path() / "limited.log");
  EXPECT_EQ(count_of(sent, "Received Store Response (Success)"), 3U) << sent;
  EXPECT_EQ(node.open_instances(), 3U);
  EXPECT_EQ(count_of(node.log(), "reason=study_instance_limit"), 2U);
  EXPECT_NE(node.http_get("/metrics").find("nephra_instances_rejected_total{reason=\"study_instance_limit\"} 2"),
            std::string::npos);
  node.stop();
}

TEST(Guard, AnInstanceLargerThanTheLimitIsRefusedAndTheNextSmallerOneStored) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU"};
  options.max_instance_mb = 0.1;  // the fixture's slices are about half a megabyte
  TestNode node(tmp.path(), options);
  node.start();
  node.storescu("STORESCU", {first_fixture_slice().string()}, "large.log");
  EXPECT_EQ(count_of(nephra::test::read_file(tmp.path() / "large.log"), "Received Store Response (Success)"), 0U);
  EXPECT_TRUE(log_has(node, "reason=instance_too_large"));
  EXPECT_EQ(node.open_instances(), 0U);

  options.max_instance_mb = 16;
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(log_has(node, "CONFIG_RELOADED"));
  EXPECT_EQ(node.storescu("STORESCU", {first_fixture_slice().string()}), 0);
  EXPECT_EQ(node.open_instances(), 1U);
  node.stop();
}

TEST(Guard, HostileUidsAreRefusedAndNothingLandsOutsideTheSpool) {
  TempDir tmp;
  TestNode node(tmp.path());
  node.start();
  const fs::path traversal = modified_slice(tmp.path(), "traversal.dcm", "(0020,000D)=1.2.3/../../../../tmp/nephra");
  EXPECT_NE(raw_store(node, traversal, tmp.path()).find("status=0xC000"), std::string::npos);
  const fs::path long_uid = modified_slice(tmp.path(), "long.dcm", "(0020,000E)=1." + std::string(70, '9'));
  EXPECT_NE(raw_store(node, long_uid, tmp.path()).find("status=0xC000"), std::string::npos);
  const fs::path letters = modified_slice(tmp.path(), "letters.dcm", "(0020,000D)=1.2.abc");
  EXPECT_NE(raw_store(node, letters, tmp.path()).find("status=0xC000"), std::string::npos);
  EXPECT_EQ(count_of(node.log(), "reason=invalid_uid"), 3U) << node.log();
  EXPECT_EQ(node.open_instances(), 0U);
  EXPECT_FALSE(fs::exists("/tmp/nephra"));
  EXPECT_EQ(node.echoscu("STORESCU"), 0) << "the node goes on";
  node.stop();
}
