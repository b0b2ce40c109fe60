#pragma once
// The round store: the one owner of a study's life on disk, from the first instance received to the results
// delivered and, after the retention period, removed. No other code knows a spool path or a marker name.
//
// Layout (all names are hashes; raw UIDs never reach the file system):
//   tmp/                               partial writes, removed at start
//   incoming/                          slots: empty files whose names are durable, each taken by one C-STORE
//                                      and kept (a second name of the instance) until its study folder is synced;
//                                      one a crash left holding data is checked and stored again at start
//   studies/<key>/study.json           calling AE and Study Instance UID of this study
//   studies/<key>/open/<sop>.dcm       instances received since the last round was sealed
//   studies/<key>/instances/<sop>.dcm  every instance of the study sealed so far
//   studies/<key>/rounds/<n>/          one processing of the whole study: state.json, inputs.txt (the instances
//                                      it covers), manifest.json, results.json, out/ (results to send), sent/
//   dead-letter/<key>-<n>/             results an archive refused for good, with reason.txt
//
// A round's life (state.json, written atomically):
//   Sealed ─classify─▶ Classified ─deliver─▶ Done
//     │  ▲ retry            │  ▲ retry       ├─▶ DeadLettered (refused for good, or too long undelivered)
//     │  └──────┘           │  └──────┘      └─▶ Superseded (a later round of the study already has results)
//     └─▶ Quarantined (failed for good, or max attempts)
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "nephra/store/durable.h"

namespace nephra::store {

// Identifies what arrived, before it is written.
struct InstanceInfo {
  std::string calling_ae;
  std::string study_uid;
  std::string series_uid;
  std::string sop_class_uid;
  std::string sop_instance_uid;
  std::string transfer_syntax_uid;
};

struct StoreResult {
  std::string study_key;
  bool duplicate = false;  // the study already holds this SOP Instance UID (open or sealed): nothing new
  bool late = false;       // the study already had a sealed round: this opens a new one
};

// A sealed round of one study: the value handed from the store through the pipeline stages.
struct StudyRound {
  std::string study_key;
  std::string calling_ae;
  std::string study_uid;
  int round = 0;
  std::filesystem::path dir;
};

// Whether a file handed to the store is durable already.
enum class Written {
  kNotSynced,
  kSynced,  // its data, through the writer's own descriptor
  // A slot from take_slot(), its data synced: its name in incoming/ is durable too, so the instance is safe
  // before the study folder it is linked into is synced (a crash leaves it in its slot, found again at start).
  kSyncedSlot,
  // A slot recover_filled_slots() handed back: synced here, and left where it is if it cannot be stored (it may
  // have been acknowledged).
  kRecoveredSlot,
};

enum class RoundState { kSealed, kClassified, kDone, kDeadLettered, kQuarantined, kSuperseded };
std::string_view to_string(RoundState state);
// Nothing more will happen to a round in this state (retention may remove it).
bool is_final(RoundState state);

// What state.json holds. `attempts` counts tries of the current state's step (classify while Sealed, deliver while
// Classified); it restarts at 0 on each transition.
struct RoundRecord {
  RoundState state = RoundState::kSealed;
  int attempts = 0;
  double first_attempt = 0;  // seconds since the epoch of this state's first try; 0 = none yet
  double next_attempt = 0;   // not before (seconds since the epoch); 0 = now
  double changed = 0;        // when the state was entered
  std::string reason;        // the last failure, or why the round is final
  int results = 0;           // result files committed (Classified and later)
  std::string sr_instance_uid;
  std::string sr_series_uid;
  // For the people who run the node (status page): when the round was sealed and classified, how many instances
  // it covers, and its findings in words (no patient data).
  double sealed_at = 0;
  double classified_at = 0;
  int instances = 0;
  std::string findings;
};

// A round as the status page lists it.
struct RoundView {
  std::string study_key;
  std::string calling_ae;
  int round = 0;
  RoundRecord record;
};

// The SR a round delivered, which a later round's SR names as its predecessor.
struct SrReference {
  std::string study_uid;
  std::string series_uid;
  std::string instance_uid;
};

struct OpenStudy {
  std::string study_key;
  size_t instances = 0;
};

struct PendingRound {
  StudyRound round;
  RoundRecord record;
};

struct ScanResult {
  std::vector<OpenStudy> open;
  std::vector<PendingRound> pending;  // Sealed or Classified
  size_t quarantined = 0;
};

struct RetentionPolicy {
  double instances_hours = 24;  // received CT, once every round of its study is final
  double results_hours = 168;   // a final study's rounds and results (the study folder goes)
  double max_spool_gb = 0;      // 0 = no cap; above it the oldest final studies go first
};

struct RetentionReport {
  size_t instance_folders = 0;  // studies whose CT was removed
  size_t studies = 0;           // studies removed whole
  std::uintmax_t bytes = 0;
};

class SpoolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The study already holds as many open instances as the configured limit allows.
class StudyFullError : public SpoolError {
 public:
  using SpoolError::SpoolError;
};

// Seconds since the epoch: the clock of every time a round's record holds.
double epoch_seconds();

// Lowercase hex SHA-256 of text, truncated to `hex_chars`.
std::string hash_hex(const std::string& text, size_t hex_chars = 32);
std::string study_key_of(const std::string& calling_ae, const std::string& study_uid);

// The newest round, of any sender's study with this Study Instance UID, whose folder holds the file `name` (e.g.
// "results.json"). Reads only, so it may look into the spool of a running node (nephra validate --spool).
std::optional<std::filesystem::path> newest_round_with(const std::filesystem::path& root, const std::string& study_uid,
                                                       const std::string& name);

class RoundStore {
 public:
  // Writes the instance's bytes to the given temporary path; returns an error text, empty on success.
  using Writer = std::function<std::string(const std::filesystem::path& tmp_path)>;

  // Opens (or creates) the store; rounds written by an earlier layout are converted in place.
  explicit RoundStore(std::filesystem::path root);
  // Syncs the folders slots were linked into and removes those slots, so a clean stop leaves none to recheck.
  ~RoundStore();
  RoundStore(const RoundStore&) = delete;
  RoundStore& operator=(const RoundStore&) = delete;
  RoundStore(RoundStore&&) = delete;
  RoundStore& operator=(RoundStore&&) = delete;

  // Durable on return: data and directory entry are fsync'd. Throws SpoolError and leaves no file on failure;
  // StudyFullError when the study's open round already holds `max_open` instances (0 = no limit).
  StoreResult store(const InstanceInfo& info, const Writer& write, size_t max_open = 0);
  // The same for bytes already written to `written` (a path from new_tmp_path()), which it takes over; kSynced:
  // the writer has fsynced it already (through its own descriptor).
  StoreResult store_file(const InstanceInfo& info, const std::filesystem::path& written, size_t max_open = 0,
                         Written state = Written::kNotSynced);
  // A fresh temporary path on the store's file system, for a writer that streams into it.
  std::filesystem::path new_tmp_path();
  // An empty file in incoming/ whose name is already durable, for a writer that streams an instance into it and
  // syncs its data (Written::kSyncedSlot): one sync per instance instead of two. Throws IoError.
  std::filesystem::path take_slot();
  // Hands each slot a crash left holding data to `recover` (once, in order): an instance to check and store again
  // (store_file with Written::kRecoveredSlot) or to remove. Retention sweeps nothing until this has run, so a
  // study a leftover slot belongs to is never removed first and then made again from it.
  void recover_filled_slots(const std::function<void(const std::filesystem::path&)>& recover);

  // Space available to us on the store's file system (0 when it cannot be read).
  [[nodiscard]] std::uintmax_t free_bytes() const;
  [[nodiscard]] std::uintmax_t free_mb() const { return free_bytes() / (std::uintmax_t{1024} * 1024); }

  // Moves the open instances to the study's instances/ and opens round <n> over every instance of the study;
  // nullopt when nothing is open.
  std::optional<StudyRound> seal(const std::string& study_key);
  // Open studies (their quiet period restarts) and rounds still to classify or deliver.
  [[nodiscard]] ScanResult scan() const;

  [[nodiscard]] RoundRecord record(const StudyRound& round) const;
  // The instance files the round covers (the whole study as it was when sealed), sorted.
  [[nodiscard]] std::vector<std::filesystem::path> inputs(const StudyRound& round) const;
  // Atomically writes a file inside the round folder.
  void write_round_file(const StudyRound& round, const std::string& name, const std::string& content);

  // Counts a new try of the round's current step, durably, before it runs (a try that kills the node counts too);
  // returns the record as written.
  RoundRecord begin_attempt(const StudyRound& round);
  // The step failed but may pass later: same state, next try not before `after_seconds` from now.
  void retry_later(const StudyRound& round, double after_seconds, const std::string& reason);
  void quarantine(const StudyRound& round, const std::string& reason);

  // An empty staging folder for the round's results (anything a crash left there is removed).
  std::filesystem::path begin_results(const StudyRound& round);
  // fsyncs every staged file, moves them to out/ and records the round Classified with its SR; a round that a
  // later round of the study has overtaken becomes Superseded instead. Returns the state entered.
  RoundState commit_results(const StudyRound& round, const std::string& sr_series_uid,
                            const std::string& sr_instance_uid, const std::string& findings = "");
  // A round with nothing to send (no outbox) is done at once.
  void mark_done(const StudyRound& round, const std::string& reason = "");
  // Result files still to send, sorted. Throws SpoolError when results recorded as written are missing.
  [[nodiscard]] std::vector<std::filesystem::path> pending_results(const StudyRound& round) const;
  // Durably moves an acknowledged result file from out/ to sent/.
  void mark_sent(const StudyRound& round, const std::filesystem::path& out_file);
  // Durably moves what is left in out/ to dead-letter/<key>-<n>/ with reason.txt; the round is DeadLettered.
  std::filesystem::path dead_letter(const StudyRound& round, const std::string& reason);
  // A later round of the same study has results (classified or delivered): this one need not be sent.
  [[nodiscard]] bool overtaken(const StudyRound& round) const;
  void supersede(const StudyRound& round);
  // The SR of the latest round before `round` that reached the archive, if any.
  [[nodiscard]] std::optional<SrReference> previous_sr(const StudyRound& round) const;

  // The rounds written or scanned most recently (at most `limit`, newest first), from memory.
  [[nodiscard]] std::vector<RoundView> recent(size_t limit) const;

  // Removes what the policy says has been kept long enough; never a round that is not final.
  RetentionReport sweep(const RetentionPolicy& policy, double now_seconds);

  [[nodiscard]] const std::filesystem::path& root() const { return root_; }
  [[nodiscard]] std::filesystem::path study_dir(const std::string& study_key) const;

 private:
  std::filesystem::path root_;
  std::mutex locks_mutex_;
  std::map<std::string, std::shared_ptr<std::mutex>> study_locks_;
  std::map<std::string, size_t> open_counts_;  // guarded by the study's lock; counted on first use
  std::mutex slots_mutex_;
  std::condition_variable slots_made_;
  std::vector<std::filesystem::path> free_slots_;  // guarded by slots_mutex_
  bool making_slots_ = false;                      // guarded by slots_mutex_
  // Shared while a slot is linked into its study, exclusive while incoming/ is synced (see sync_incoming).
  std::shared_mutex sync_gate_;
  std::mutex unsynced_mutex_;
  std::set<std::filesystem::path> unsynced_folders_;  // open/ folders slots were linked into since the last sync
  std::vector<std::filesystem::path> linked_slots_;   // those slots: removed once their folders are synced
  std::vector<std::filesystem::path> filled_slots_;   // found at start, until recovered; guarded by slots_mutex_
  mutable std::mutex recent_mutex_;
  mutable std::map<std::pair<std::string, int>, RoundView> recent_;  // by (study key, round)

  std::shared_ptr<std::mutex> lock_for(const std::string& study_key);
  size_t& open_count_of(const std::string& study_key, const std::filesystem::path& open_dir);
  // Whether the study already received this instance (open, sealed, or listed by a round after its CT was removed).
  [[nodiscard]] bool holds(const std::string& study_key, const std::string& sop_hash) const;
  [[nodiscard]] std::vector<std::filesystem::path> make_slots();
  void sync_incoming();
  void sync_study_folders(const std::string& study_key);
  [[nodiscard]] bool recovery_pending();
  void ensure_study_dir(const InstanceInfo& info, const std::string& key);
  void write_atomic(const std::filesystem::path& dest, const std::string& content);
  void write_record(const StudyRound& round, const RoundRecord& record);
  void remember(const std::string& study_key, const std::string& calling_ae, int round,
                const RoundRecord& record) const;
  void enter(const StudyRound& round, RoundState state, const std::string& reason = "");
  void migrate_legacy_rounds();
  [[nodiscard]] std::optional<StudyRound> read_round(const std::string& key, int round) const;
};

}  // namespace nephra::store
