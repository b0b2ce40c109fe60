// The outbox against a scripted fake archive: delivery, busy and aborting archives retried, permanent refusal
// dead-lettered, a round overtaken mid-delivery superseded, attempts carried over a restart.
#include "nephra/pipeline/outbox.h"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <mutex>

#include "process.h"

namespace fs = std::filesystem;
using nephra::scp::SendOutcome;
using nephra::scp::SendResult;
using nephra::store::RoundState;
using nephra::store::RoundStore;
using nephra::store::StudyRound;

namespace {

// What the archive does on one association.
enum class Behaviour { kAccept, kBusy, kRefuse, kAbortAfterOne, kWaitToBeStopped };

class FakeArchive {
 public:
  explicit FakeArchive(std::vector<Behaviour> script) : script_(std::move(script)) {}

  nephra::pipeline::SendFiles sender() {
    return [this](const nephra::scp::StoreTarget&, const std::vector<fs::path>& files,
                  const std::function<void(const fs::path&)>& on_ack, const std::function<bool()>& keep_going) {
      const Behaviour b = next();
      if (b == Behaviour::kBusy) return SendResult{SendOutcome::kTransient, "status 0xA700 (out of resources)"};
      if (b == Behaviour::kRefuse) return SendResult{SendOutcome::kPermanent, "status 0xA900 (refused)"};
      for (const auto& f : files) {
        if (keep_going && !keep_going()) return SendResult{SendOutcome::kTransient, "released before the next file"};
        if (b == Behaviour::kWaitToBeStopped && received() == 1) {
          nephra::test::wait_until([&] { return !keep_going(); }, std::chrono::seconds(20));
          return SendResult{SendOutcome::kTransient, "timed out"};
        }
        {
          const std::lock_guard guard(mutex_);
          received_.push_back(f.filename().string());
        }
        on_ack(f);
        if (b == Behaviour::kAbortAfterOne) return SendResult{SendOutcome::kTransient, "association aborted"};
      }
      return SendResult{};
    };
  }
  [[nodiscard]] size_t received() const {
    const std::lock_guard guard(mutex_);
    return received_.size();
  }
  [[nodiscard]] size_t associations() const {
    const std::lock_guard guard(mutex_);
    return calls_;
  }

 private:
  Behaviour next() {
    const std::lock_guard guard(mutex_);
    const size_t n = calls_++;
    return n < script_.size() ? script_[n] : Behaviour::kAccept;
  }
  mutable std::mutex mutex_;
  std::vector<Behaviour> script_;
  std::vector<std::string> received_;
  size_t calls_ = 0;
};

struct Fixture {
  nephra::test::TempDir dir;
  RoundStore store{dir.path()};
  nephra::config::Shared cfg{[] {
    nephra::config::Config c;
    c.results.retry_initial_seconds = 0.1;
    c.results.retry_max_seconds = 0.2;
    c.peers = {{"SENDER", "127.0.0.1", 104, false, ""}, {"OTHER", "127.0.0.2", 104, false, ""}};
    return c;
  }()};

  // A classified round of the study with an SR and `heatmaps` SC files to send.
  StudyRound classified(const std::string& sop, int heatmaps = 2, const std::string& sender = "SENDER") {
    store.store({sender, "1.2.3", "1.2.3.1", "1.2.840.10008.5.1.4.1.1.2", sop, "1.2.840.10008.1.2"},
                [](const fs::path& tmp) {
                  std::ofstream(tmp) << "ct";
                  return std::string();
                });
    const auto round = store.seal(nephra::store::study_key_of(sender, "1.2.3"));
    const fs::path staging = store.begin_results(*round);
    std::ofstream(staging / "sr.dcm") << "sr";
    for (int i = 0; i < heatmaps; ++i) std::ofstream(staging / ("sc-" + std::to_string(1001 + i) + ".dcm")) << "sc";
    store.commit_results(*round, "2.25.1", "2.25." + std::to_string(round->round + 1));
    return *round;
  }

  bool reaches(const StudyRound& round, RoundState state) {
    return nephra::test::wait_until([&] { return store.record(round).state == state; }, std::chrono::seconds(20));
  }
};

}  // namespace

TEST(Outbox, AnArchiveThatAcceptsGetsEveryFileOnceAndTheRoundIsDone) {
  Fixture f;
  FakeArchive archive({Behaviour::kAccept});
  nephra::pipeline::Outbox outbox(f.cfg, f.store, archive.sender());
  outbox.start();
  const auto round = f.classified("1.1");
  outbox.submit(round);
  ASSERT_TRUE(f.reaches(round, RoundState::kDone));
  EXPECT_EQ(archive.received(), 3U);
  EXPECT_EQ(outbox.stats().instances_sent.load(), 3U);
  EXPECT_EQ(outbox.stats().rounds_delivered.load(), 1U);
  EXPECT_TRUE(f.store.pending_results(round).empty());
  outbox.stop();
}

TEST(Outbox, ABusyOrAbortingArchiveIsRetriedAndEachFileArrivesOnce) {
  Fixture f;
  FakeArchive archive({Behaviour::kBusy, Behaviour::kAbortAfterOne, Behaviour::kBusy, Behaviour::kAccept});
  nephra::pipeline::Outbox outbox(f.cfg, f.store, archive.sender());
  outbox.start();
  const auto round = f.classified("1.1");
  outbox.submit(round);
  ASSERT_TRUE(f.reaches(round, RoundState::kDone));
  EXPECT_EQ(archive.associations(), 4U);
  EXPECT_EQ(archive.received(), 3U);  // the file acknowledged before the abort is not sent again
  EXPECT_EQ(outbox.stats().retries.load(), 3U);
  EXPECT_EQ(outbox.stats().dead_lettered.load(), 0U);
  outbox.stop();
}

TEST(Outbox, APermanentRefusalDeadLettersTheRoundWithoutRetrying) {
  Fixture f;
  FakeArchive archive({Behaviour::kRefuse});
  nephra::pipeline::Outbox outbox(f.cfg, f.store, archive.sender());
  outbox.start();
  const auto round = f.classified("1.1");
  outbox.submit(round);
  ASSERT_TRUE(f.reaches(round, RoundState::kDeadLettered));
  EXPECT_EQ(f.store.record(round).reason, "status 0xA900 (refused)");
  EXPECT_EQ(archive.associations(), 1U);
  EXPECT_EQ(outbox.stats().retries.load(), 0U);
  EXPECT_TRUE(fs::exists(f.dir.path() / "dead-letter"));
  outbox.stop();
}

TEST(Outbox, ARoundOvertakenWhileItIsBeingSentIsSupersededAndTheLaterOneGoesOut) {
  Fixture f;
  FakeArchive archive({Behaviour::kWaitToBeStopped, Behaviour::kAccept});
  nephra::pipeline::Outbox outbox(f.cfg, f.store, archive.sender());
  outbox.start();
  const auto first = f.classified("1.1");
  outbox.submit(first);
  ASSERT_TRUE(nephra::test::wait_until([&] { return archive.received() == 1; }, std::chrono::seconds(20)));
  const auto second = f.classified("1.2");  // a late instance: the whole study again
  outbox.submit(second);
  ASSERT_TRUE(f.reaches(first, RoundState::kSuperseded));
  ASSERT_TRUE(f.reaches(second, RoundState::kDone));
  EXPECT_EQ(archive.received(), 1U + 3U);  // one file of the first round, all of the second
  outbox.stop();
}

TEST(Outbox, AttemptsCarryOverARestart) {
  Fixture f;
  const auto round = f.classified("1.1");
  {
    FakeArchive busy({Behaviour::kBusy, Behaviour::kBusy, Behaviour::kBusy, Behaviour::kBusy});
    nephra::pipeline::Outbox outbox(f.cfg, f.store, busy.sender());
    outbox.start();
    outbox.submit(round);
    ASSERT_TRUE(
        nephra::test::wait_until([&] { return f.store.record(round).attempts >= 2; }, std::chrono::seconds(20)));
    outbox.stop();
  }
  const int before = f.store.record(round).attempts;
  FakeArchive archive({Behaviour::kAccept});
  nephra::pipeline::Outbox outbox(f.cfg, f.store, archive.sender());
  outbox.submit(round);
  EXPECT_EQ(outbox.stats().retrying.load(), 1);  // a delivery resumed after a restart that had failed before
  outbox.start();
  ASSERT_TRUE(f.reaches(round, RoundState::kDone));
  EXPECT_GE(before, 2);
  outbox.stop();
}

TEST(Outbox, AnArchiveThatHangsDelaysOnlyItsOwnResults) {
  Fixture f;
  std::atomic<bool> release{false};
  std::atomic<int> delivered_to_other{0};
  nephra::pipeline::Outbox outbox(
      f.cfg, f.store,
      [&](const nephra::scp::StoreTarget& target, const std::vector<fs::path>& files,
          const std::function<void(const fs::path&)>& on_ack, const std::function<bool()>& keep_going) {
        if (target.called_ae == "SENDER") {  // firewalled: nothing comes back until its timeout
          nephra::test::wait_until([&] { return release.load() || !keep_going(); }, std::chrono::seconds(30));
          return SendResult{SendOutcome::kTransient, "timed out"};
        }
        for (const auto& file : files) on_ack(file);
        ++delivered_to_other;
        return SendResult{};
      });
  outbox.start();
  const auto stuck = f.classified("1.1", 1, "SENDER");
  outbox.submit(stuck);
  const auto other = f.classified("2.1", 1, "OTHER");
  outbox.submit(other);
  EXPECT_TRUE(f.reaches(other, RoundState::kDone)) << "while SENDER's archive still hangs";
  EXPECT_EQ(delivered_to_other.load(), 1);
  EXPECT_EQ(f.store.record(stuck).state, RoundState::kClassified);
  release = true;
  outbox.stop();
}

TEST(StoreStatus, EachClassOfPs37StatusHasItsOutcome) {
  using nephra::scp::outcome_of_status;
  EXPECT_EQ(outcome_of_status(0x0000), SendOutcome::kDelivered);
  for (unsigned warning : {0xB000U, 0xB007U, 0xB006U}) EXPECT_EQ(outcome_of_status(warning), SendOutcome::kDelivered);
  for (unsigned again : {0xA700U, 0xA7FFU, 0x0110U, 0x0213U, 0xFE00U}) {
    EXPECT_EQ(outcome_of_status(again), SendOutcome::kTransient) << std::hex << again;
  }
  for (unsigned refused : {0xA900U, 0xC000U, 0xCFFFU, 0x0122U, 0x0124U, 0x0211U, 0x0212U, 0x0117U}) {
    EXPECT_EQ(outcome_of_status(refused), SendOutcome::kPermanent) << std::hex << refused;
  }
}

TEST(Outbox, ShadowModeKeepsTheResultsAndSendsNothingEvenAfterItIsTurnedOff) {
  Fixture f;
  auto shadow = *f.cfg.get();
  shadow.results.shadow = true;
  f.cfg.set(shadow);
  FakeArchive archive({Behaviour::kAccept});
  nephra::pipeline::Outbox outbox(f.cfg, f.store, archive.sender());
  outbox.start();
  const auto kept = f.classified("1.1");
  outbox.submit(kept);
  ASSERT_TRUE(f.reaches(kept, RoundState::kDone));
  EXPECT_EQ(archive.associations(), 0U);
  EXPECT_EQ(f.store.record(kept).reason, nephra::pipeline::kShadowReason);
  EXPECT_EQ(f.store.pending_results(kept).size(), 3U) << "the results stay in the spool for nephra validate";
  EXPECT_EQ(outbox.stats().rounds_shadowed.load(), 1U);

  shadow.results.shadow = false;
  f.cfg.set(shadow);
  const auto live = f.classified("1.2", 0, "OTHER");
  outbox.submit(live);
  ASSERT_TRUE(f.reaches(live, RoundState::kDone));
  EXPECT_EQ(archive.received(), 1U) << "only the round classified after shadow mode ended is sent";
  outbox.stop();
}
