#include "nephra/scp/spool.h"

#include <gtest/gtest.h>

#include <fstream>

#include "process.h"

namespace fs = std::filesystem;
using nephra::scp::InstanceInfo;
using nephra::scp::Spool;
using nephra::scp::SpoolError;

namespace {

InstanceInfo instance(const std::string& sop, const std::string& study = "1.2.3.4") {
  return {"SENDER", study, study + ".1", "1.2.840.10008.5.1.4.1.1.2", sop, "1.2.840.10008.1.2"};
}

Spool::Writer writes(const std::string& content) {
  return [content](const fs::path& tmp) {
    std::ofstream(tmp) << content;
    return std::string();
  };
}

size_t files_in(const fs::path& dir) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) n += entry.is_regular_file() ? 1U : 0U;
  return n;
}

}  // namespace

TEST(Spool, StoresUnderHashedNamesOnly) {
  nephra::test::TempDir dir;
  Spool spool(dir.path());
  const auto result = spool.store(instance("1.2.3.4.5"), writes("x"));
  EXPECT_FALSE(result.duplicate);
  EXPECT_FALSE(result.late);
  EXPECT_EQ(result.study_key, nephra::scp::study_key_of("SENDER", "1.2.3.4"));
  EXPECT_EQ(result.study_key.size(), 32U);
  for (const auto& entry : fs::recursive_directory_iterator(dir.path())) {
    EXPECT_EQ(entry.path().filename().string().find("1.2.3"), std::string::npos) << entry.path();
  }
  EXPECT_TRUE(fs::exists(spool.study_dir(result.study_key) / "open" / (nephra::scp::hash_hex("1.2.3.4.5") + ".dcm")));
}

TEST(Spool, SameInstanceTwiceIsIdempotent) {
  nephra::test::TempDir dir;
  Spool spool(dir.path());
  spool.store(instance("1.2.3.4.5"), writes("first"));
  const auto again = spool.store(instance("1.2.3.4.5"), writes("second"));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(files_in(spool.study_dir(again.study_key) / "open"), 1U);
}

TEST(Spool, FailedWriteLeavesNoFile) {
  nephra::test::TempDir dir;
  Spool spool(dir.path());
  const auto failing = [](const fs::path& tmp) {
    std::ofstream(tmp) << "partial";
    return std::string("No space left on device");
  };
  EXPECT_THROW(spool.store(instance("1.2.3.4.5"), failing), SpoolError);
  EXPECT_EQ(files_in(dir.path() / "tmp"), 0U);
  EXPECT_TRUE(spool.scan().open.empty());
}

TEST(Spool, SealMakesARoundAndLateInstancesOpenTheNext) {
  nephra::test::TempDir dir;
  Spool spool(dir.path());
  const auto first = spool.store(instance("1.1"), writes("a"));
  spool.store(instance("1.2"), writes("b"));
  const auto round = spool.seal(first.study_key);
  ASSERT_TRUE(round.has_value());
  EXPECT_EQ(round->round, 1);
  EXPECT_EQ(round->calling_ae, "SENDER");
  EXPECT_EQ(round->study_uid, "1.2.3.4");
  EXPECT_EQ(files_in(round->dir), 2U);
  EXPECT_FALSE(spool.seal(first.study_key).has_value());

  const auto late = spool.store(instance("1.3"), writes("c"));
  EXPECT_TRUE(late.late);
  const auto second = spool.seal(first.study_key);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->round, 2);
}

TEST(Spool, ScanFindsOpenStudiesAndUnfinishedRounds) {
  nephra::test::TempDir dir;
  {
    Spool spool(dir.path());
    const auto a = spool.store(instance("1.1", "9.1"), writes("a"));
    spool.store(instance("2.1", "9.2"), writes("b"));
    const auto round = spool.seal(a.study_key);
    ASSERT_TRUE(round.has_value());
    spool.store(instance("3.1", "9.3"), writes("c"));
    const auto done = spool.seal(nephra::scp::study_key_of("SENDER", "9.3"));
    spool.mark_done(*done);
  }
  Spool reopened(dir.path());  // as after a restart
  const auto scan = reopened.scan();
  ASSERT_EQ(scan.open.size(), 1U);
  EXPECT_EQ(scan.open[0].study_key, nephra::scp::study_key_of("SENDER", "9.2"));
  ASSERT_EQ(scan.pending.size(), 1U);
  EXPECT_EQ(scan.pending[0].study_key, nephra::scp::study_key_of("SENDER", "9.1"));
}

TEST(Spool, DistinctSendersOfOneStudyAreDistinctStudies) {
  EXPECT_NE(nephra::scp::study_key_of("A", "1.2"), nephra::scp::study_key_of("B", "1.2"));
}
