// The pipeline's study lifecycle with fake steps: quiet period, retry after a transient failure, quarantine.
#include "nephra/pipeline/pipeline.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>

#include "process.h"

namespace fs = std::filesystem;
using nephra::pipeline::StepResult;
using nephra::store::RoundState;
using nephra::store::RoundStore;
using nephra::store::StudyRound;

namespace {

// Fails with what the scripted results say, one per try; then writes an SR and succeeds.
class ScriptedStep : public nephra::pipeline::StudyStep {
 public:
  explicit ScriptedStep(std::vector<StepResult> script, bool throw_disk_full = false)
      : script_(std::move(script)), throw_disk_full_(throw_disk_full) {}
  [[nodiscard]] std::string name() const override { return "classify"; }
  StepResult run(const StudyRound& round, RoundStore& store) override {
    const size_t n = tries_++;
    if (throw_disk_full_ && n == 0) throw nephra::store::IoError("write sr.dcm: No space left on device", ENOSPC);
    if (n < script_.size() && script_[n].kind != StepResult::Kind::kDone) return script_[n];
    std::ofstream(store.begin_results(round) / "sr.dcm") << "sr";
    store.commit_results(round, "2.25.1", "2.25.2");
    return StepResult::done();
  }
  [[nodiscard]] size_t tries() const { return tries_.load(); }

 private:
  std::vector<StepResult> script_;
  bool throw_disk_full_;
  std::atomic<size_t> tries_{0};
};

struct Fixture {
  nephra::test::TempDir dir;
  RoundStore store{dir.path()};
  nephra::config::Shared cfg{[] {
    nephra::config::Config c;
    c.study.stable_seconds = 0.1;
    c.pipeline.workers = 1;
    c.pipeline.retry_seconds = 1;
    c.pipeline.max_attempts = 2;
    return c;
  }()};

  // One instance received and handed to the pipeline, as the Storage SCP does.
  void receive(nephra::pipeline::Pipeline& pipeline, const std::string& sop = "1.1") {
    const nephra::store::InstanceInfo info{"SENDER",           "1.2.3", "1.2.3.1", "1.2.840.10008.5.1.4.1.1.2", sop,
                                           "1.2.840.10008.1.2"};
    const auto result = store.store(info, [](const fs::path& tmp) {
      std::ofstream(tmp) << "ct";
      return std::string();
    });
    pipeline.on_stored(info, result);
  }

  [[nodiscard]] StudyRound round1() const {
    return {nephra::store::study_key_of("SENDER", "1.2.3"), "SENDER", "1.2.3", 1,
            store.study_dir(nephra::store::study_key_of("SENDER", "1.2.3")) / "rounds" / "1"};
  }

  bool reaches(RoundState state) {
    return nephra::test::wait_until([&] { return fs::exists(round1().dir) && store.record(round1()).state == state; },
                                    std::chrono::seconds(30));
  }
};

std::vector<std::unique_ptr<nephra::pipeline::StudyStep>> steps_of(std::unique_ptr<ScriptedStep> step) {
  std::vector<std::unique_ptr<nephra::pipeline::StudyStep>> steps;
  steps.push_back(std::move(step));
  return steps;
}

}  // namespace

TEST(Pipeline, ADiskFullWhileResultsAreWrittenIsRetriedAndTheRoundCompletesOnce) {
  Fixture f;
  auto step = std::make_unique<ScriptedStep>(std::vector<StepResult>{}, true);
  const auto* probe = step.get();
  nephra::pipeline::Pipeline pipeline(f.cfg, f.store, steps_of(std::move(step)));
  pipeline.start();
  f.receive(pipeline);
  ASSERT_TRUE(f.reaches(RoundState::kDone));
  // the counters move just after the state is on disk
  ASSERT_TRUE(
      nephra::test::wait_until([&] { return pipeline.stats().jobs_done.load() == 1; }, std::chrono::seconds(5)));
  EXPECT_EQ(probe->tries(), 2U);
  EXPECT_EQ(pipeline.stats().jobs_retried.load(), 1U);
  EXPECT_EQ(pipeline.stats().jobs_done.load(), 1U);
  EXPECT_EQ(pipeline.stats().quarantined.load(), 0);
}

TEST(Pipeline, AStepThatFailsForGoodQuarantinesTheRoundWithItsReason) {
  Fixture f;
  auto step = std::make_unique<ScriptedStep>(std::vector<StepResult>{StepResult::fail("no slice could be read")});
  const auto* probe = step.get();
  nephra::pipeline::Pipeline pipeline(f.cfg, f.store, steps_of(std::move(step)));
  pipeline.start();
  f.receive(pipeline);
  ASSERT_TRUE(f.reaches(RoundState::kQuarantined));
  EXPECT_EQ(f.store.record(f.round1()).reason, "no slice could be read");
  EXPECT_EQ(probe->tries(), 1U);
  EXPECT_TRUE(
      nephra::test::wait_until([&] { return pipeline.stats().quarantined.load() == 1; }, std::chrono::seconds(5)));
}

TEST(Pipeline, ARoundThatKeepsFailingIsQuarantinedAfterMaxAttempts) {
  Fixture f;
  auto step = std::make_unique<ScriptedStep>(
      std::vector<StepResult>{StepResult::retry("archive busy"), StepResult::retry("archive busy")});
  const auto* probe = step.get();
  nephra::pipeline::Pipeline pipeline(f.cfg, f.store, steps_of(std::move(step)));
  pipeline.start();
  f.receive(pipeline);
  ASSERT_TRUE(f.reaches(RoundState::kQuarantined));
  EXPECT_EQ(probe->tries(), 2U);
  EXPECT_NE(f.store.record(f.round1()).reason.find("gave up after 2 tries"), std::string::npos);
}

TEST(Pipeline, ARoundThatKilledTheNodeOnEveryTryIsQuarantinedAtStartWithoutRunningIt) {
  Fixture f;
  for (const std::string sop : {"1.1", "1.2"}) {
    f.store.store({"SENDER", "1.2.3", "1.2.3.1", "1.2.840.10008.5.1.4.1.1.2", sop, "1.2.840.10008.1.2"},
                  [](const fs::path& tmp) {
                    std::ofstream(tmp) << "ct";
                    return std::string();
                  });
  }
  const auto round = f.store.seal(nephra::store::study_key_of("SENDER", "1.2.3"));
  ASSERT_TRUE(round.has_value());
  f.store.begin_attempt(*round);  // two tries that never returned
  f.store.begin_attempt(*round);
  auto step = std::make_unique<ScriptedStep>(std::vector<StepResult>{});
  const auto* probe = step.get();
  nephra::pipeline::Pipeline pipeline(f.cfg, f.store, steps_of(std::move(step)));
  pipeline.start();
  ASSERT_TRUE(f.reaches(RoundState::kQuarantined));
  EXPECT_EQ(probe->tries(), 0U);
}
