#include "nephra/store/round_store.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <thread>

#include "process.h"

namespace fs = std::filesystem;
using nephra::store::InstanceInfo;
using nephra::store::RoundState;
using nephra::store::RoundStore;
using nephra::store::SpoolError;
using nephra::store::StudyRound;

namespace {

constexpr double kHour = 3600.0;

InstanceInfo instance(const std::string& sop, const std::string& study = "1.2.3.4") {
  return {"SENDER", study, study + ".1", "1.2.840.10008.5.1.4.1.1.2", sop, "1.2.840.10008.1.2"};
}

RoundStore::Writer writes(const std::string& content) {
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

std::string key_of(const std::string& study = "1.2.3.4") { return nephra::store::study_key_of("SENDER", study); }

// A sealed round over the given instances of one study.
StudyRound sealed(RoundStore& store, const std::vector<std::string>& sops, const std::string& study = "1.2.3.4") {
  for (const auto& sop : sops) store.store(instance(sop, study), writes(sop));
  auto round = store.seal(key_of(study));
  EXPECT_TRUE(round.has_value());
  return *round;
}

// What the classify step does: stage an SR (and `heatmaps` SCs), commit them.
RoundState classify(RoundStore& store, const StudyRound& round, int heatmaps = 1, const std::string& sr = "2.25.1") {
  const fs::path staging = store.begin_results(round);
  std::ofstream(staging / "sr.dcm") << "sr";
  for (int i = 0; i < heatmaps; ++i) std::ofstream(staging / ("sc-" + std::to_string(1001 + i) + ".dcm")) << "sc";
  return store.commit_results(round, "2.25.9", sr);
}

void deliver(RoundStore& store, const StudyRound& round) {
  for (const auto& f : store.pending_results(round)) store.mark_sent(round, f);
  store.mark_done(round);
}

double now() { return nephra::store::epoch_seconds(); }

}  // namespace

TEST(RoundStore, StoresUnderHashedNamesOnly) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  const auto result = store.store(instance("1.2.3.4.5"), writes("x"));
  EXPECT_FALSE(result.duplicate);
  EXPECT_FALSE(result.late);
  EXPECT_EQ(result.study_key, key_of());
  EXPECT_EQ(result.study_key.size(), 32U);
  sealed(store, {"1.2.3.4.6"});
  for (const auto& entry : fs::recursive_directory_iterator(dir.path())) {
    EXPECT_EQ(entry.path().filename().string().find("1.2.3"), std::string::npos) << entry.path();
  }
}

TEST(RoundStore, SameInstanceTwiceIsIdempotent) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  store.store(instance("1.2.3.4.5"), writes("first"));
  const auto again = store.store(instance("1.2.3.4.5"), writes("second"));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(files_in(store.study_dir(again.study_key) / "open"), 1U);
  EXPECT_EQ(files_in(dir.path() / "tmp"), 0U);
}

TEST(RoundStore, FailedWriteLeavesNoFile) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  const auto failing = [](const fs::path& tmp) {
    std::ofstream(tmp) << "partial";
    return std::string("No space left on device");
  };
  EXPECT_THROW(store.store(instance("1.2.3.4.5"), failing), SpoolError);
  EXPECT_EQ(files_in(dir.path() / "tmp"), 0U);
  EXPECT_TRUE(store.scan().open.empty());
}

TEST(RoundStore, ARoundCoversTheWholeStudyAndLateInstancesOpenTheNext) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  const auto first = sealed(store, {"1.1", "1.2"});
  EXPECT_EQ(first.round, 1);
  EXPECT_EQ(first.calling_ae, "SENDER");
  EXPECT_EQ(first.study_uid, "1.2.3.4");
  EXPECT_EQ(store.inputs(first).size(), 2U);
  EXPECT_EQ(store.record(first).state, RoundState::kSealed);
  EXPECT_FALSE(store.seal(key_of()).has_value());

  const auto late = store.store(instance("1.3"), writes("c"));
  EXPECT_TRUE(late.late);
  EXPECT_FALSE(late.duplicate);
  const auto second = store.seal(key_of());
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->round, 2);
  EXPECT_EQ(store.inputs(*second).size(), 3U);  // every instance received so far, not the late one alone
  EXPECT_TRUE(store.overtaken(first));
  EXPECT_FALSE(store.overtaken(*second));
}

TEST(RoundStore, AnInstanceResentAfterItsRoundWasSealedOrDeliveredIsADuplicate) {
  nephra::test::TempDir dir;
  {
    RoundStore store(dir.path());
    const auto round = sealed(store, {"1.1", "1.2"});
    EXPECT_TRUE(store.store(instance("1.1"), writes("again")).duplicate);
    classify(store, round);
    deliver(store, round);
  }
  RoundStore reopened(dir.path());  // as after a restart: the study's instances are known from disk
  const auto again = reopened.store(instance("1.2"), writes("again"));
  EXPECT_TRUE(again.duplicate);
  EXPECT_FALSE(again.late);
  EXPECT_FALSE(reopened.seal(key_of()).has_value());  // no new round, so no new SR
}

TEST(RoundStore, EveryTransitionIsRecordedDurablyAndSurvivesARestart) {
  nephra::test::TempDir dir;
  StudyRound round;
  {
    RoundStore store(dir.path());
    round = sealed(store, {"1.1"});
    EXPECT_EQ(store.begin_attempt(round).attempts, 1);
    store.retry_later(round, 60, "disk full");
    EXPECT_EQ(classify(store, round, 2), RoundState::kClassified);
  }
  RoundStore store(dir.path());
  auto rec = store.record(round);
  EXPECT_EQ(rec.state, RoundState::kClassified);
  EXPECT_EQ(rec.attempts, 0);  // the classify tries are over; delivery tries count from here
  EXPECT_EQ(rec.results, 3);
  EXPECT_EQ(rec.sr_instance_uid, "2.25.1");
  const auto scan = store.scan();
  ASSERT_EQ(scan.pending.size(), 1U);
  EXPECT_EQ(scan.pending[0].record.state, RoundState::kClassified);
  const auto files = store.pending_results(round);
  ASSERT_EQ(files.size(), 3U);
  store.mark_sent(round, files[0]);
  EXPECT_EQ(store.pending_results(round).size(), 2U);
  deliver(store, round);
  EXPECT_EQ(store.record(round).state, RoundState::kDone);
  EXPECT_TRUE(store.scan().pending.empty());
}

TEST(RoundStore, AttemptsSurviveRestartsAndQuarantineKeepsTheReason) {
  nephra::test::TempDir dir;
  StudyRound round;
  {
    RoundStore store(dir.path());
    round = sealed(store, {"1.1"});
    store.begin_attempt(round);
    store.retry_later(round, 30, "too many open files");
    store.begin_attempt(round);  // then the node was killed during the try
  }
  RoundStore store(dir.path());
  const auto scan = store.scan();
  ASSERT_EQ(scan.pending.size(), 1U);
  EXPECT_EQ(scan.pending[0].record.attempts, 2);
  EXPECT_GT(scan.pending[0].record.next_attempt, now());
  EXPECT_EQ(scan.pending[0].record.reason, "too many open files");
  store.quarantine(round, "gave up after 2 tries");
  EXPECT_EQ(store.record(round).state, RoundState::kQuarantined);
  EXPECT_EQ(store.record(round).reason, "gave up after 2 tries");
  EXPECT_EQ(store.scan().quarantined, 1U);
  EXPECT_TRUE(store.scan().pending.empty());
}

// A crash between any two steps of writing results: the round is classified again from scratch or is complete.
TEST(RoundStore, ACrashWhileResultsAreWrittenLeavesTheRoundToClassifyAgain) {
  nephra::test::TempDir dir;
  StudyRound round;
  {
    RoundStore store(dir.path());
    round = sealed(store, {"1.1"});
    const fs::path staging = store.begin_results(round);
    std::ofstream(staging / "sr.dcm") << "half";  // killed before the commit
  }
  {
    RoundStore store(dir.path());
    ASSERT_EQ(store.scan().pending.size(), 1U);
    EXPECT_EQ(store.scan().pending[0].record.state, RoundState::kSealed);
    // killed after out/ was renamed into place but before the state was written
    const fs::path staging = store.begin_results(round);
    EXPECT_EQ(files_in(staging), 0U);
    std::ofstream(staging / "sr.dcm") << "full";
    fs::rename(staging, round.dir / "out");
  }
  RoundStore store(dir.path());
  EXPECT_EQ(store.record(round).state, RoundState::kSealed);  // never sent: the next try replaces out/
  EXPECT_EQ(classify(store, round, 0), RoundState::kClassified);
  EXPECT_EQ(store.pending_results(round).size(), 1U);
}

TEST(RoundStore, ResultsRecordedButMissingAreAnErrorNotADelivery) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  const auto round = sealed(store, {"1.1"});
  classify(store, round, 1);
  fs::remove_all(round.dir / "out");  // what a power cut did to unsynced files before
  EXPECT_THROW((void)store.pending_results(round), SpoolError);
}

TEST(RoundStore, ACrashDuringSealIsFinishedAtTheNextStart) {
  nephra::test::TempDir dir;
  StudyRound round;
  {
    RoundStore store(dir.path());
    round = sealed(store, {"1.1"});
    store.store(instance("1.2"), writes("b"));
    store.store(instance("1.3"), writes("c"));
    const auto second = store.seal(key_of());
    ASSERT_TRUE(second.has_value());
    // as if killed after the round was written but before the instances moved: put one back into open/
    fs::create_directories(store.study_dir(key_of()) / "open");
    const auto inputs = store.inputs(*second);
    fs::rename(inputs.back(), store.study_dir(key_of()) / "open" / inputs.back().filename());
  }
  RoundStore store(dir.path());
  EXPECT_TRUE(store.scan().open.empty());
  const auto scan = store.scan();
  ASSERT_EQ(scan.pending.size(), 2U);
  EXPECT_EQ(store.inputs(scan.pending.back().round).size(), 3U);
}

TEST(RoundStore, AnOvertakenRoundIsSupersededAndALaterSrNamesTheLastDeliveredOne) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  const auto first = sealed(store, {"1.1"});
  classify(store, first, 0, "2.25.100");
  EXPECT_FALSE(store.previous_sr(first).has_value());
  deliver(store, first);
  const auto second = sealed(store, {"1.2"});
  const auto third = sealed(store, {"1.3"});
  // the second round finishes after the third was sealed: nothing of it goes out
  EXPECT_EQ(classify(store, second, 0, "2.25.200"), RoundState::kSuperseded);
  EXPECT_EQ(classify(store, third, 0, "2.25.300"), RoundState::kClassified);
  const auto prev = store.previous_sr(third);
  ASSERT_TRUE(prev.has_value());
  EXPECT_EQ(prev->instance_uid, "2.25.100");  // the one the archive holds
  EXPECT_EQ(prev->series_uid, "2.25.9");
  EXPECT_EQ(prev->study_uid, "1.2.3.4");
}

TEST(RoundStore, DeadLetterMovesWhatIsLeftAndRecordsTheReason) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  const auto round = sealed(store, {"1.1"});
  classify(store, round, 1);
  const auto dest = store.dead_letter(round, "refused: 0xA900");
  EXPECT_EQ(files_in(dest), 3U);  // SR, SC and reason.txt
  EXPECT_EQ(store.record(round).state, RoundState::kDeadLettered);
  EXPECT_EQ(store.record(round).reason, "refused: 0xA900");
}

TEST(RoundStore, RetentionRemovesCtThenWholeStudiesAndNeverAnUndeliveredRound) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  const auto done = sealed(store, {"1.1", "1.2"}, "7.1");
  classify(store, done);
  deliver(store, done);
  const auto waiting = sealed(store, {"2.1"}, "7.2");  // classified, not yet delivered
  classify(store, waiting);
  const auto to_classify = sealed(store, {"3.1"}, "7.3");
  const auto quarantined = sealed(store, {"4.1"}, "7.4");
  store.quarantine(quarantined, "unreadable");
  store.store(instance("5.1", "7.5"), writes("open"));

  const nephra::store::RetentionPolicy policy{24, 168, 0};
  auto report = store.sweep(policy, now() + 1 * kHour);
  EXPECT_EQ(report.instance_folders + report.studies, 0U);  // too early for anything

  report = store.sweep(policy, now() + 25 * kHour);
  EXPECT_EQ(report.instance_folders, 1U);
  EXPECT_EQ(report.studies, 0U);
  EXPECT_GT(report.bytes, 0U);
  EXPECT_FALSE(fs::exists(store.study_dir(key_of("7.1")) / "instances"));
  EXPECT_TRUE(fs::exists(done.dir / "state.json"));  // results and records stay for results_hours
  EXPECT_TRUE(store.store(instance("1.1", "7.1"), writes("again")).duplicate);  // still known as received

  report = store.sweep(policy, now() + 200 * kHour);
  EXPECT_EQ(report.studies, 1U);
  EXPECT_FALSE(fs::exists(store.study_dir(key_of("7.1"))));
  for (const auto& r : {waiting, to_classify, quarantined}) EXPECT_EQ(store.inputs(r).size(), 1U) << r.study_uid;
  EXPECT_TRUE(fs::exists(store.study_dir(key_of("7.5")) / "open"));
}

TEST(RoundStore, TheSizeCapRemovesTheOldestDoneStudiesFirst) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  const std::string big(size_t{600} * 1024, 'x');
  for (const std::string study : {"8.1", "8.2", "8.3"}) {
    store.store(instance(study + ".1", study), writes(big));
    const auto round = store.seal(key_of(study));
    ASSERT_TRUE(round.has_value());
    classify(store, *round, 0);
    deliver(store, *round);
  }
  const auto pending = sealed(store, {"9.1"}, "8.4");  // larger than the cap alone: still kept
  store.store(instance("9.2", "8.4"), writes(big));
  store.store(instance("9.3", "8.4"), writes(big));
  const nephra::store::RetentionPolicy policy{24, 168, 1.0 / 1024};  // 1 MiB
  const auto report = store.sweep(policy, now());
  EXPECT_EQ(report.studies, 3U);
  EXPECT_TRUE(fs::exists(store.study_dir(key_of("8.4"))));
  EXPECT_EQ(store.inputs(pending).size(), 1U);
}

TEST(RoundStore, RoundsOfTheEarlierLayoutAreConvertedInPlace) {
  nephra::test::TempDir dir;
  const fs::path study = dir.path() / "studies" / key_of();
  fs::create_directories(study / "rounds" / "1" / "out");
  fs::create_directories(study / "rounds" / "2");
  std::ofstream(study / "study.json") << R"({"calling_ae": "SENDER", "study_uid": "1.2.3.4"})";
  std::ofstream(study / "rounds" / "1" / "aaaa.dcm") << "ct";
  std::ofstream(study / "rounds" / "1" / "processed") << "processed";
  std::ofstream(study / "rounds" / "1" / "out" / "sr.dcm") << "sr";
  std::ofstream(study / "rounds" / "2" / "bbbb.dcm") << "ct";
  std::ofstream(study / "rounds" / "2" / "failed") << "disk full";
  RoundStore store(dir.path());
  const auto scan = store.scan();
  ASSERT_EQ(scan.pending.size(), 2U);
  EXPECT_EQ(scan.pending[0].record.state, RoundState::kClassified);
  EXPECT_EQ(scan.pending[0].record.results, 1);
  EXPECT_EQ(scan.pending[1].record.state, RoundState::kSealed);  // failed before: tried again, not left failed
  EXPECT_EQ(store.inputs(scan.pending[1].round).size(), 1U);
  EXPECT_TRUE(store.store(instance("x"), writes("y")).late);
}

TEST(RoundStore, DistinctSendersOfOneStudyAreDistinctStudies) {
  EXPECT_NE(nephra::store::study_key_of("A", "1.2"), nephra::store::study_key_of("B", "1.2"));
}

TEST(RoundStore, RecentListsRoundsNewestFirstWithTheirFindingsAndKeepsThemOverARestart) {
  nephra::test::TempDir dir;
  {
    RoundStore store(dir.path());
    const auto first = sealed(store, {"1.1"}, "1.2.3.4");
    const auto second = sealed(store, {"2.1", "2.2"}, "1.2.3.5");
    const fs::path staging = store.begin_results(second);
    std::ofstream(staging / "sr.dcm") << "sr";
    ASSERT_EQ(store.commit_results(second, "2.25.9", "2.25.1", "AI: suspected kidney cyst"), RoundState::kClassified);
    const auto recent = store.recent(10);
    ASSERT_EQ(recent.size(), 2U);
    EXPECT_EQ(recent[0].study_key, key_of("1.2.3.5"));
    EXPECT_EQ(recent[0].calling_ae, "SENDER");
    EXPECT_EQ(recent[0].record.instances, 2);
    EXPECT_EQ(recent[0].record.findings, "AI: suspected kidney cyst");
    EXPECT_GE(recent[0].record.classified_at, recent[0].record.sealed_at);
    EXPECT_GT(recent[0].record.sealed_at, 0);
    EXPECT_EQ(recent[1].study_key, first.study_key);
    EXPECT_EQ(store.recent(1).size(), 1U);
  }
  RoundStore reopened(dir.path());
  EXPECT_TRUE(reopened.recent(10).empty()) << "filled by scan(), which the pipeline runs at start";
  (void)reopened.scan();
  const auto recent = reopened.recent(10);
  ASSERT_EQ(recent.size(), 2U);
  EXPECT_EQ(recent[0].record.findings, "AI: suspected kidney cyst");
  EXPECT_EQ(recent[0].calling_ae, "SENDER");
}

TEST(RoundStore, SlotsAreEmptyDurableFilesAndOnlyFilledOnesAreHandedBackAtTheNextStart) {
  nephra::test::TempDir dir;
  fs::path kept;
  fs::path left_empty;
  const fs::path linked = dir.path() / "incoming" / "z-linked.slot";
  {
    RoundStore store(dir.path());
    store.recover_filled_slots([](const fs::path& slot) { ADD_FAILURE() << slot; });
    const fs::path slot = store.take_slot();
    EXPECT_EQ(slot.parent_path(), dir.path() / "incoming");
    EXPECT_TRUE(fs::exists(slot));
    EXPECT_EQ(fs::file_size(slot), 0U);
    std::ofstream(slot) << "an instance";
    const auto stored = store.store_file(instance("1.2.3.4.5"), slot, 0, nephra::store::Written::kSyncedSlot);
    const fs::path open_dir = store.study_dir(stored.study_key) / "open";
    ASSERT_EQ(files_in(open_dir), 1U);
    // linked, not moved: the slot stays a durable name of the instance until its study folder is synced
    EXPECT_TRUE(fs::equivalent(slot, fs::directory_iterator(open_dir)->path()));
    fs::create_hard_link(slot, linked);  // as a crash would leave it: linked into its study, not yet removed
    kept = store.take_slot();            // a crash after its data were synced, before it was linked into its study
    std::ofstream(kept) << "another";
    left_empty = store.take_slot();  // a crash before any byte arrived
    std::set<fs::path> distinct{slot, kept, left_empty};
    for (int i = 0; i < 40; ++i) distinct.insert(store.take_slot());  // past one batch of slots
    EXPECT_EQ(distinct.size(), 43U);
    const auto done = sealed(store, {"9.1"}, "7.9");  // a study retention may remove, once the slots are recovered
    classify(store, done);
    deliver(store, done);
  }
  RoundStore again(dir.path());  // the clean stop removed the slots linked into synced folders
  EXPECT_FALSE(fs::exists(left_empty));
  EXPECT_EQ(files_in(dir.path() / "incoming"), 2U);
  // retention waits for the recovery: a leftover slot's study must not be removed before it is seen to hold it
  const nephra::store::RetentionPolicy policy{24, 168, 0};
  EXPECT_EQ(again.sweep(policy, now() + 200 * kHour).studies, 0U);
  std::vector<fs::path> handed;
  nephra::store::StoreResult again_stored;
  again.recover_filled_slots([&](const fs::path& slot) {
    handed.push_back(slot);
    if (slot == linked) {  // the crash's linked slot is seen to be held already: removed, the study keeps one
      again_stored = again.store_file(instance("1.2.3.4.5"), slot, 0, nephra::store::Written::kRecoveredSlot);
    }
  });
  EXPECT_EQ(handed, (std::vector<fs::path>{kept, linked}));
  again.recover_filled_slots([](const fs::path& slot) { ADD_FAILURE() << slot; });  // handed out once
  EXPECT_TRUE(again_stored.duplicate);
  EXPECT_FALSE(fs::exists(linked));
  EXPECT_EQ(files_in(again.study_dir(again_stored.study_key) / "open"), 1U);
  EXPECT_EQ(again.sweep(policy, now() + 200 * kHour).studies, 1U);  // the done study, now that slots are recovered
}

TEST(RoundStore, ASealInterruptedAfterLinkingFinishesAtTheNextStartWithEachInstanceOnce) {
  nephra::test::TempDir dir;
  std::string key;
  {
    RoundStore store(dir.path());
    key = store.store(instance("1.2.3.4.5"), writes("x")).study_key;
    store.store(instance("1.2.3.4.6"), writes("y"));
    ASSERT_TRUE(store.seal(key).has_value());
    EXPECT_FALSE(fs::exists(store.study_dir(key) / "open"));
    EXPECT_EQ(files_in(store.study_dir(key) / "instances"), 2U);
    // as a crash between the links into instances/ and the removal from open/ would leave the next seal
    store.store(instance("1.2.3.4.7"), writes("z"));
    ASSERT_TRUE(store.seal(key).has_value());
    fs::create_directories(store.study_dir(key) / "open");
    const fs::path sealed = fs::directory_iterator(store.study_dir(key) / "instances")->path();
    fs::create_hard_link(sealed, store.study_dir(key) / "open" / sealed.filename());
  }
  RoundStore again(dir.path());
  EXPECT_FALSE(fs::exists(again.study_dir(key) / "open"));
  EXPECT_EQ(files_in(again.study_dir(key) / "instances"), 3U);
  EXPECT_FALSE(again.seal(key).has_value());  // nothing open: no new round
}

TEST(RoundStore, ConcurrentReceiversEachGetTheirOwnSlotsAndEveryInstanceIsStored) {
  nephra::test::TempDir dir;
  RoundStore store(dir.path());
  constexpr int kReceivers = 4;
  constexpr int kEach = 50;
  std::vector<std::thread> receivers;
  for (int r = 0; r < kReceivers; ++r) {
    receivers.emplace_back([&store, r] {
      for (int i = 0; i < kEach; ++i) {
        const fs::path slot = store.take_slot();
        const std::string sop = "1.2." + std::to_string(r) + "." + std::to_string(i);
        std::ofstream(slot) << sop;
        store.store_file(instance(sop, "1.2.3." + std::to_string(r % 2)), slot, 0, nephra::store::Written::kSyncedSlot);
      }
    });
  }
  for (auto& t : receivers) t.join();
  EXPECT_EQ(
      files_in(store.study_dir(key_of("1.2.3.0")) / "open") + files_in(store.study_dir(key_of("1.2.3.1")) / "open"),
      static_cast<size_t>(kReceivers * kEach));
  store.sweep({}, now());  // syncs incoming/ after the study folders
  for (const auto& entry : fs::directory_iterator(dir.path() / "incoming")) {
    EXPECT_EQ(fs::file_size(entry.path()), 0U) << "only unused slots are left";
  }
}
