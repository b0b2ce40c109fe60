#pragma once
// The durable spool: every acknowledged instance lives here until its study round is processed.
//
// Layout (all names are hashes; raw UIDs never reach the file system):
//   tmp/                          partial writes, removed at start
//   studies/<key>/study.json      calling AE and Study Instance UID of this study
//   studies/<key>/open/<sop>.dcm  instances of the round still receiving
//   studies/<key>/rounds/<n>/     a sealed round: a queued job until it holds the file "done";
//                                 results wait in out/ and move to sent/ once the archive acknowledged them
//   dead-letter/<key>-<n>/        results an archive refused for good, with reason.txt
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nephra::scp {

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
  bool duplicate = false;  // the same SOP Instance UID was already in the open round
  bool late = false;       // the study already had a sealed round: this opens a new one
};

// A sealed round of one study: the value handed from the spool through the pipeline stages.
struct StudyRound {
  std::string study_key;
  std::string calling_ae;
  std::string study_uid;
  int round = 0;
  std::filesystem::path dir;
};

struct OpenStudy {
  std::string study_key;
  size_t instances = 0;
};

struct ScanResult {
  std::vector<OpenStudy> open;
  std::vector<StudyRound> pending;
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

// Lowercase hex SHA-256 of text, truncated to `hex_chars`.
std::string hash_hex(const std::string& text, size_t hex_chars = 32);
std::string study_key_of(const std::string& calling_ae, const std::string& study_uid);

class Spool {
 public:
  // Writes the instance's bytes to the given temporary path; returns an error text, empty on success.
  using Writer = std::function<std::string(const std::filesystem::path& tmp_path)>;

  explicit Spool(std::filesystem::path root);

  // Durable on return: data and directory entry are fsync'd. Throws SpoolError and leaves no file on failure;
  // StudyFullError when the study's open round already holds `max_open` instances (0 = no limit).
  StoreResult store(const InstanceInfo& info, const Writer& write, size_t max_open = 0);

  // Space available to us on the spool's file system (0 when it cannot be read).
  [[nodiscard]] std::uintmax_t free_bytes() const;
  [[nodiscard]] std::uintmax_t free_mb() const { return free_bytes() / (std::uintmax_t{1024} * 1024); }

  // Moves the open round to rounds/<n>; nullopt when nothing is open.
  std::optional<StudyRound> seal(const std::string& study_key);

  // Open studies (their quiet period restarts) and sealed rounds not yet done.
  [[nodiscard]] ScanResult scan() const;

  // Atomically writes a file inside a round folder (fsync'd, then renamed into place).
  void write_round_file(const StudyRound& round, const std::string& name, const std::string& content);
  void mark_done(const StudyRound& round);

  // Durably moves an acknowledged result file from the round's out/ to its sent/.
  void mark_sent(const StudyRound& round, const std::filesystem::path& out_file);
  // Durably moves what is left in out/ to dead-letter/<key>-<n>/ with reason.txt, then marks the round done.
  std::filesystem::path dead_letter(const StudyRound& round, const std::string& reason);

  [[nodiscard]] const std::filesystem::path& root() const { return root_; }
  [[nodiscard]] std::filesystem::path study_dir(const std::string& study_key) const;

 private:
  std::filesystem::path root_;
  std::mutex locks_mutex_;
  std::map<std::string, std::shared_ptr<std::mutex>> study_locks_;
  std::map<std::string, size_t> open_counts_;  // guarded by the study's lock; counted from disk on first use

  std::shared_ptr<std::mutex> lock_for(const std::string& study_key);
  size_t& open_count_of(const std::string& study_key, const std::filesystem::path& open_dir);
  void ensure_study_dir(const InstanceInfo& info, const std::string& key);
  std::filesystem::path new_tmp_path();
  void write_atomic(const std::filesystem::path& dest, const std::string& content);
  [[nodiscard]] std::optional<StudyRound> read_round(const std::string& key, int round) const;
};

}  // namespace nephra::scp
