#include "nephra/store/round_store.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <tuple>
#include <utility>

namespace fs = std::filesystem;

namespace nephra::store {
namespace {

constexpr const char* kState = "state.json";
constexpr const char* kInputs = "inputs.txt";
constexpr const char* kOpen = "open";
constexpr const char* kInstances = "instances";
constexpr const char* kRounds = "rounds";
constexpr const char* kOut = "out";
constexpr const char* kStaging = "out.partial";
constexpr const char* kSent = "sent";
constexpr const char* kIncoming = "incoming";
// Slots made per sync of incoming/: the sync is shared by this many instances.
constexpr int kSlotBatch = 32;
// Slots left when the next batch is started, so that other associations rarely wait for it.
constexpr size_t kSlotsLow = 8;

constexpr RoundState kAllStates[] = {RoundState::kSealed,       RoundState::kClassified,  RoundState::kDone,
                                     RoundState::kDeadLettered, RoundState::kQuarantined, RoundState::kSuperseded};

constexpr const char* kSupersededReason = "a later round of the study was sealed";

// A state entered: the tries of the new state's step start from nothing.
void enter_state(RoundRecord& r, RoundState state, std::string reason) {
  r.state = state;
  r.attempts = 0;
  r.first_attempt = 0;
  r.next_attempt = 0;
  r.changed = epoch_seconds();
  r.reason = std::move(reason);
}

// Files into another folder so that each always has a durable name, whatever order the file system writes
// folders in: linked there, that folder synced, and only then removed here (a link already there is from an
// earlier move a crash cut short).
void move_durably(const std::vector<fs::path>& files, const fs::path& to) {
  for (const auto& f : files) {
    try {
      io::link_into(f, to / f.filename());
    } catch (const IoError& err) {
      if (err.error_number() != EEXIST) throw;
    }
  }
  io::fsync_path(to);
  for (const auto& f : files) fs::remove(f);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::vector<int> round_numbers(const fs::path& rounds_dir) {
  std::vector<int> numbers;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(rounds_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && name.size() < 9 && std::all_of(name.begin(), name.end(), ::isdigit)) {
      numbers.push_back(std::stoi(name));
    }
  }
  std::sort(numbers.begin(), numbers.end());
  return numbers;
}

std::vector<fs::path> dicom_files(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".dcm") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> read_lines(const fs::path& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

std::uintmax_t size_of(const fs::path& dir) {
  std::uintmax_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

RoundRecord read_record_at(const fs::path& round_dir) {
  RoundRecord r;
  const auto j = nlohmann::json::parse(read_text(round_dir / kState), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return r;  // absent: sealed, nothing tried yet
  const std::string state = j.value("state", "sealed");
  for (const auto s : kAllStates) {
    if (to_string(s) == state) r.state = s;
  }
  r.attempts = j.value("attempts", 0);
  r.first_attempt = j.value("first_attempt", 0.0);
  r.next_attempt = j.value("next_attempt", 0.0);
  r.changed = j.value("changed", 0.0);
  r.reason = j.value("reason", "");
  r.results = j.value("results", 0);
  r.sr_instance_uid = j.value("sr_instance_uid", "");
  r.sr_series_uid = j.value("sr_series_uid", "");
  r.sealed_at = j.value("sealed_at", 0.0);
  r.classified_at = j.value("classified_at", 0.0);
  r.instances = j.value("instances", 0);
  r.findings = j.value("findings", "");
  return r;
}

std::string record_json(const RoundRecord& r) {
  const nlohmann::json j = {{"state", to_string(r.state)},
                            {"attempts", r.attempts},
                            {"first_attempt", r.first_attempt},
                            {"next_attempt", r.next_attempt},
                            {"changed", r.changed},
                            {"reason", r.reason},
                            {"results", r.results},
                            {"sr_instance_uid", r.sr_instance_uid},
                            {"sr_series_uid", r.sr_series_uid},
                            {"sealed_at", r.sealed_at},
                            {"classified_at", r.classified_at},
                            {"instances", r.instances},
                            {"findings", r.findings}};
  return j.dump(1) + "\n";
}

}  // namespace

double epoch_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string_view to_string(RoundState state) {
  switch (state) {
    case RoundState::kSealed:
      return "sealed";
    case RoundState::kClassified:
      return "classified";
    case RoundState::kDone:
      return "done";
    case RoundState::kDeadLettered:
      return "dead-lettered";
    case RoundState::kQuarantined:
      return "quarantined";
    case RoundState::kSuperseded:
      return "superseded";
  }
  return "sealed";
}

bool is_final(RoundState state) {
  return state == RoundState::kDone || state == RoundState::kDeadLettered || state == RoundState::kSuperseded;
}

std::string hash_hex(const std::string& text, size_t hex_chars) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len && out.size() < hex_chars; ++i) {
    out += kHex[digest[i] >> 4U];
    out += kHex[digest[i] & 0xFU];
  }
  return out.substr(0, hex_chars);
}

std::optional<fs::path> newest_round_with(const fs::path& root, const std::string& study_uid, const std::string& name) {
  std::optional<fs::path> newest;
  int newest_number = 0;
  std::error_code ec;
  for (const auto& study : fs::directory_iterator(root / "studies", ec)) {
    const auto meta = nlohmann::json::parse(read_text(study.path() / "study.json"), nullptr, false);
    if (!meta.is_object() || meta.value("study_uid", "") != study_uid) continue;
    for (const int n : round_numbers(study.path() / kRounds)) {
      const fs::path round = study.path() / kRounds / std::to_string(n);
      if (n > newest_number && fs::exists(round / name)) {
        newest_number = n;
        newest = round;
      }
    }
  }
  return newest;
}

std::string study_key_of(const std::string& calling_ae, const std::string& study_uid) {
  // The AE is part of the key: the same study from two archives is two jobs answered to two senders.
  return hash_hex(calling_ae + '\\' + study_uid);
}

RoundStore::RoundStore(fs::path root) : root_(std::move(root)) {
  fs::create_directories(root_ / "studies");
  fs::create_directories(root_ / "tmp");
  for (const auto& entry : fs::directory_iterator(root_ / "tmp")) fs::remove_all(entry.path());
  fs::create_directories(root_ / kIncoming);
  for (const auto& entry : fs::directory_iterator(root_ / kIncoming)) {
    std::error_code ec;
    if (entry.is_regular_file(ec) && entry.file_size(ec) > 0) {
      filled_slots_.push_back(entry.path());
    } else {
      fs::remove_all(entry.path(), ec);
    }
  }
  std::sort(filled_slots_.begin(), filled_slots_.end());
  io::fsync_path(root_);
  migrate_legacy_rounds();
}

RoundStore::~RoundStore() {
  try {
    sync_incoming();
  } catch (const std::exception&) {  // nothing is lost: the slots left are checked and found held at the next start
  }
}

fs::path RoundStore::study_dir(const std::string& study_key) const { return root_ / "studies" / study_key; }

std::shared_ptr<std::mutex> RoundStore::lock_for(const std::string& study_key) {
  const std::lock_guard guard(locks_mutex_);
  auto& slot = study_locks_[study_key];
  if (!slot) slot = std::make_shared<std::mutex>();
  return slot;
}

fs::path RoundStore::new_tmp_path() {
  static std::atomic<unsigned long> counter{0};
  std::ostringstream name;
  name << ::getpid() << '-' << counter.fetch_add(1) << ".part";
  return root_ / "tmp" / name.str();
}

fs::path RoundStore::take_slot() {
  std::unique_lock lock(slots_mutex_);
  for (;;) {
    if (free_slots_.size() > kSlotsLow || making_slots_) {
      if (free_slots_.empty()) {
        slots_made_.wait(lock);
        continue;
      }
      fs::path slot = std::move(free_slots_.back());
      free_slots_.pop_back();
      return slot;
    }
    // Running low: this caller makes the next batch while the others use what is left.
    making_slots_ = true;
    lock.unlock();
    std::vector<fs::path> made;
    std::exception_ptr failure;
    try {
      made = make_slots();
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    making_slots_ = false;
    free_slots_.insert(free_slots_.end(), made.begin(), made.end());
    slots_made_.notify_all();
    if (failure) {
      if (free_slots_.empty()) std::rethrow_exception(failure);
      fs::path slot = std::move(free_slots_.back());  // the next caller tries making slots again
      free_slots_.pop_back();
      return slot;
    }
  }
}

bool RoundStore::recovery_pending() {
  const std::lock_guard guard(slots_mutex_);
  return !filled_slots_.empty();
}

void RoundStore::sync_study_folders(const std::string& study_key) {
  const fs::path dir = study_dir(study_key);
  for (const char* folder : {kOpen, kInstances}) {
    if (fs::exists(dir / folder)) io::fsync_path(dir / folder);
  }
}

std::vector<fs::path> RoundStore::make_slots() {
  static std::atomic<unsigned long> counter{0};
  std::vector<fs::path> made;
  for (int i = 0; i < kSlotBatch; ++i) {
    made.push_back(root_ / kIncoming / (std::to_string(::getpid()) + '-' + std::to_string(counter++) + ".slot"));
    const int fd = ::open(made.back().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
      const int err = errno;
      throw IoError("create slot " + made.back().filename().string() + ": " + std::strerror(err), err);
    }
    ::close(fd);
  }
  sync_incoming();
  return made;
}

// A slot linked into a study is durable under its new name only once that folder is synced: those are synced
// first, and only then are the slots removed, so no instance is ever left without a durable name.
void RoundStore::sync_incoming() {
  const std::unique_lock gate(sync_gate_);
  std::set<fs::path> folders;
  std::vector<fs::path> slots;
  {
    const std::lock_guard guard(unsynced_mutex_);
    folders.swap(unsynced_folders_);
    slots.swap(linked_slots_);
  }
  // On a failed sync the slots are left where they are, for good: a second fsync may report success for entries
  // the first one failed to write, so only the next start (which stores them again or finds them held) removes them.
  for (const auto& folder : folders) {
    try {
      io::fsync_path(folder);
    } catch (const IoError& err) {
      if (err.error_number() != ENOENT) throw;  // sealed meanwhile: the seal synced where its files went
    }
  }
  for (const auto& slot : slots) ::unlink(slot.c_str());  // a leftover is found at start and seen to be held
  io::fsync_path(root_ / kIncoming);
}

void RoundStore::recover_filled_slots(const std::function<void(const fs::path&)>& recover) {
  std::vector<fs::path> slots;
  {
    const std::lock_guard guard(slots_mutex_);
    slots = filled_slots_;
  }
  for (const auto& slot : slots) recover(slot);
  const std::lock_guard guard(slots_mutex_);
  filled_slots_.clear();
}

void RoundStore::write_atomic(const fs::path& dest, const std::string& content) {
  io::write_atomic(new_tmp_path(), dest, content);
}

void RoundStore::ensure_study_dir(const InstanceInfo& info, const std::string& key) {
  const fs::path dir = study_dir(key);
  if (fs::exists(dir / "study.json")) return;
  io::make_dir_durable(dir);
  const nlohmann::json meta = {{"calling_ae", info.calling_ae}, {"study_uid", info.study_uid}};
  write_atomic(dir / "study.json", meta.dump(2) + "\n");
}

std::uintmax_t RoundStore::free_bytes() const {
  std::error_code ec;
  const auto space = fs::space(root_, ec);
  return ec ? 0 : space.available;
}

bool RoundStore::holds(const std::string& study_key, const std::string& sop_hash) const {
  const fs::path dir = study_dir(study_key);
  const std::string name = sop_hash + ".dcm";
  if (fs::exists(dir / kOpen / name) || fs::exists(dir / kInstances / name)) return true;
  if (fs::exists(dir / kInstances)) return false;
  // the CT went with retention (or nothing was sealed yet): the rounds' input lists remember what was received
  for (const int n : round_numbers(dir / kRounds)) {
    const auto inputs = read_lines(dir / kRounds / std::to_string(n) / kInputs);
    if (std::find(inputs.begin(), inputs.end(), sop_hash) != inputs.end()) return true;
  }
  return false;
}

StoreResult RoundStore::store(const InstanceInfo& info, const Writer& write, size_t max_open) {
  const fs::path tmp = new_tmp_path();
  try {
    if (const std::string err = write(tmp); !err.empty())
      throw SpoolError("write " + tmp.filename().string() + ": " + err);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  return store_file(info, tmp, max_open);
}

StoreResult RoundStore::store_file(const InstanceInfo& info, const fs::path& tmp, size_t max_open, Written state) {
  StoreResult result;
  result.study_key = study_key_of(info.calling_ae, info.study_uid);
  try {
    if (state == Written::kNotSynced || state == Written::kRecoveredSlot) io::fsync_path(tmp);

    const auto lock = lock_for(result.study_key);
    const std::lock_guard guard(*lock);
    ensure_study_dir(info, result.study_key);
    const std::string sop = hash_hex(info.sop_instance_uid);
    if (holds(result.study_key, sop)) {  // a re-send (e.g. after a lost acknowledgement): already part of the study
      // after a crash that was no power cut, a recovered slot may be the only durable name until these are synced
      if (state == Written::kRecoveredSlot) sync_study_folders(result.study_key);
      fs::remove(tmp);
      result.duplicate = true;
      return result;
    }
    const fs::path open_dir = study_dir(result.study_key) / kOpen;
    if (io::make_dir_durable(open_dir)) {
      result.late = !round_numbers(study_dir(result.study_key) / kRounds).empty();
    }
    size_t& open_count = open_count_of(result.study_key, open_dir);
    if (max_open > 0 && open_count >= max_open) {
      throw StudyFullError("the study already holds " + std::to_string(open_count) + " instances (limit " +
                           std::to_string(max_open) + ")");
    }
    if (state == Written::kSyncedSlot) {
      // A link, not a rename: the slot's durable name stays until the folder is synced (sync_incoming), whatever
      // order the file system writes its folders in (without a journal, ext4 syncs incoming/ at the next slot's
      // first fdatasync, which would make a rename's removal durable before its new name).
      const std::shared_lock gate(sync_gate_);
      io::link_into(tmp, open_dir / (sop + ".dcm"));
      const std::lock_guard unsynced(unsynced_mutex_);
      unsynced_folders_.insert(open_dir);
      linked_slots_.push_back(tmp);
    } else if (state == Written::kRecoveredSlot) {
      io::link_into(tmp, open_dir / (sop + ".dcm"));
      io::fsync_path(open_dir);
      fs::remove(tmp);
    } else {
      io::rename_into(tmp, open_dir / (sop + ".dcm"));
      io::fsync_path(open_dir);
    }
    ++open_count;
  } catch (...) {
    std::error_code ec;
    if (state != Written::kRecoveredSlot) fs::remove(tmp, ec);  // a recovered one may have been acknowledged
    throw;
  }
  return result;
}

size_t& RoundStore::open_count_of(const std::string& study_key, const fs::path& open_dir) {
  const std::lock_guard guard(locks_mutex_);
  const auto [it, fresh] = open_counts_.try_emplace(study_key, 0);
  if (fresh) it->second = dicom_files(open_dir).size();
  return it->second;
}

std::optional<StudyRound> RoundStore::seal(const std::string& study_key) {
  const auto lock = lock_for(study_key);
  const std::lock_guard guard(*lock);
  {
    const std::lock_guard counts_guard(locks_mutex_);
    open_counts_.erase(study_key);
  }
  const fs::path dir = study_dir(study_key);
  const fs::path open_dir = dir / kOpen;
  if (!fs::exists(open_dir)) return std::nullopt;
  const auto fresh = dicom_files(open_dir);
  if (fresh.empty()) {
    fs::remove_all(open_dir);
    return std::nullopt;
  }
  // 1. the round, whole, under a name scan() ignores, then renamed into place: it covers every instance so far
  std::string inputs;
  for (const auto& f : dicom_files(dir / kInstances)) inputs += f.stem().string() + "\n";
  for (const auto& f : fresh) inputs += f.stem().string() + "\n";
  io::make_dir_durable(dir / kRounds);
  const auto numbers = round_numbers(dir / kRounds);
  const int next = numbers.empty() ? 1 : numbers.back() + 1;
  const fs::path staging = dir / kRounds / ("sealing-" + std::to_string(next));
  fs::remove_all(staging);
  io::make_dir_durable(staging);
  io::write_file(staging / kInputs, inputs);
  RoundRecord record;
  record.changed = epoch_seconds();
  record.sealed_at = record.changed;
  record.instances = static_cast<int>(std::count(inputs.begin(), inputs.end(), '\n'));
  io::write_file(staging / kState, record_json(record));
  io::fsync_path(staging);
  io::rename_into(staging, dir / kRounds / std::to_string(next));
  io::fsync_path(dir / kRounds);
  // 2. the instances join the study's; a crash here is finished by the next start (migrate_legacy_rounds)
  io::make_dir_durable(dir / kInstances);
  move_durably(fresh, dir / kInstances);
  fs::remove(open_dir);
  io::fsync_path(dir);
  auto sealed = read_round(study_key, next);
  if (sealed) remember(study_key, sealed->calling_ae, next, record);
  return sealed;
}

std::optional<StudyRound> RoundStore::read_round(const std::string& key, int round) const {
  const fs::path dir = study_dir(key);
  const auto meta = nlohmann::json::parse(read_text(dir / "study.json"), nullptr, false);
  if (meta.is_discarded()) return std::nullopt;
  return StudyRound{key, meta.value("calling_ae", ""), meta.value("study_uid", ""), round,
                    dir / kRounds / std::to_string(round)};
}

void RoundStore::migrate_legacy_rounds() {
  for (const auto& study : fs::directory_iterator(root_ / "studies")) {
    const fs::path& dir = study.path();
    const auto numbers = round_numbers(dir / kRounds);
    // An earlier layout kept each round's instances in the round folder, with marker files for its state.
    for (const int n : numbers) {
      const fs::path rd = dir / kRounds / std::to_string(n);
      if (fs::exists(rd / kState)) continue;
      std::string inputs;
      io::make_dir_durable(dir / kInstances);
      for (const auto& f : dicom_files(rd)) {
        inputs += f.stem().string() + "\n";
        io::rename_into(f, dir / kInstances / f.filename());
      }
      io::fsync_path(dir / kInstances);
      write_atomic(rd / kInputs, inputs);
      RoundRecord r;
      r.changed = epoch_seconds();
      if (fs::exists(rd / "dead-letter")) {
        r.state = RoundState::kDeadLettered;
      } else if (fs::exists(rd / "done")) {
        r.state = RoundState::kDone;
      } else if (fs::exists(rd / "processed")) {
        r.state = RoundState::kClassified;
        r.results = static_cast<int>(dicom_files(rd / kOut).size() + dicom_files(rd / kSent).size());
      } else if (fs::exists(rd / "failed")) {
        r.reason = "failed before the upgrade: " + read_text(rd / "failed");  // tried again, not left failed
      }
      write_atomic(rd / kState, record_json(r));
    }
    // A seal interrupted after its round was written: the open instances it covers join the study's.
    if (numbers.empty() || !fs::exists(dir / kOpen)) continue;
    const auto covered = read_lines(dir / kRounds / std::to_string(numbers.back()) / kInputs);
    const std::set<std::string> cover(covered.begin(), covered.end());
    std::vector<fs::path> covered_files;
    for (const auto& f : dicom_files(dir / kOpen)) {
      if (cover.count(f.stem().string()) != 0) covered_files.push_back(f);
    }
    if (!covered_files.empty()) {
      io::make_dir_durable(dir / kInstances);
      move_durably(covered_files, dir / kInstances);
      std::error_code ec;
      fs::remove(dir / kOpen, ec);  // only when nothing else is open, so the next instance counts as late
      io::fsync_path(dir);
    }
  }
}

ScanResult RoundStore::scan() const {
  ScanResult result;
  for (const auto& entry : fs::directory_iterator(root_ / "studies")) {
    const std::string key = entry.path().filename().string();
    if (!fs::exists(entry.path() / "study.json")) continue;  // crashed before the first instance landed
    if (const size_t n = dicom_files(entry.path() / kOpen).size(); n > 0) result.open.push_back({key, n});
    const auto meta = nlohmann::json::parse(read_text(entry.path() / "study.json"), nullptr, false);
    const std::string calling_ae = meta.is_object() ? meta.value("calling_ae", "") : "";
    for (const int number : round_numbers(entry.path() / kRounds)) {
      const RoundRecord rec = read_record_at(entry.path() / kRounds / std::to_string(number));
      if (rec.state == RoundState::kQuarantined) ++result.quarantined;
      remember(key, calling_ae, number, rec);
      if (rec.state != RoundState::kSealed && rec.state != RoundState::kClassified) continue;
      if (auto round = read_round(key, number)) result.pending.push_back({std::move(*round), rec});
    }
  }
  return result;
}

RoundRecord RoundStore::record(const StudyRound& round) const { return read_record_at(round.dir); }

void RoundStore::write_record(const StudyRound& round, const RoundRecord& record) {
  write_atomic(round.dir / kState, record_json(record));
  remember(round.study_key, round.calling_ae, round.round, record);
}

void RoundStore::remember(const std::string& study_key, const std::string& calling_ae, int round,
                          const RoundRecord& record) const {
  constexpr size_t kKeep = 200;
  const std::lock_guard guard(recent_mutex_);
  RoundView& view = recent_[{study_key, round}];
  view.study_key = study_key;
  if (!calling_ae.empty()) view.calling_ae = calling_ae;
  view.round = round;
  view.record = record;
  if (recent_.size() <= kKeep + kKeep / 4) return;  // trimmed in bulk: one sort per kKeep / 4 new rounds
  std::vector<std::pair<double, std::pair<std::string, int>>> by_age;
  for (const auto& [id, v] : recent_) by_age.emplace_back(v.record.changed, id);
  std::sort(by_age.begin(), by_age.end());
  for (size_t i = 0; i + kKeep < by_age.size(); ++i) recent_.erase(by_age[i].second);
}

std::vector<RoundView> RoundStore::recent(size_t limit) const {
  std::vector<RoundView> views;
  {
    const std::lock_guard guard(recent_mutex_);
    for (const auto& [id, v] : recent_) views.push_back(v);
  }
  std::sort(views.begin(), views.end(), [](const RoundView& a, const RoundView& b) {
    return std::tie(a.record.changed, a.study_key, a.round) > std::tie(b.record.changed, b.study_key, b.round);
  });
  if (views.size() > limit) views.resize(limit);
  return views;
}

void RoundStore::enter(const StudyRound& round, RoundState state, const std::string& reason) {
  RoundRecord r = record(round);
  enter_state(r, state, reason);
  write_record(round, r);
}

std::vector<fs::path> RoundStore::inputs(const StudyRound& round) const {
  std::vector<fs::path> files;
  const fs::path study = round.dir.parent_path().parent_path();
  for (const auto& h : read_lines(round.dir / kInputs)) {
    const fs::path f = study / kInstances / (h + ".dcm");
    if (fs::exists(f)) files.push_back(f);
  }
  std::sort(files.begin(), files.end());
  return files;
}

void RoundStore::write_round_file(const StudyRound& round, const std::string& name, const std::string& content) {
  write_atomic(round.dir / name, content);
}

RoundRecord RoundStore::begin_attempt(const StudyRound& round) {
  RoundRecord r = record(round);
  ++r.attempts;
  if (r.first_attempt == 0) r.first_attempt = epoch_seconds();
  write_record(round, r);
  return r;
}

void RoundStore::retry_later(const StudyRound& round, double after_seconds, const std::string& reason) {
  RoundRecord r = record(round);
  r.next_attempt = epoch_seconds() + after_seconds;
  r.reason = reason;
  write_record(round, r);
}

void RoundStore::quarantine(const StudyRound& round, const std::string& reason) {
  RoundRecord r = record(round);
  const int attempts = r.attempts;
  enter_state(r, RoundState::kQuarantined, reason);
  r.attempts = attempts;  // kept: how many tries it took to give up
  write_record(round, r);
}

fs::path RoundStore::begin_results(const StudyRound& round) {
  fs::path staging = round.dir / kStaging;
  fs::remove_all(staging);
  io::make_dir_durable(staging);
  return staging;
}

RoundState RoundStore::commit_results(const StudyRound& round, const std::string& sr_series_uid,
                                      const std::string& sr_instance_uid, const std::string& findings) {
  const fs::path staging = round.dir / kStaging;
  io::fsync_folder_and_files(staging);
  const int files = static_cast<int>(dicom_files(staging).size());
  fs::remove_all(round.dir / kOut);  // left by a crash before the state below was written: never sent
  io::rename_into(staging, round.dir / kOut);
  io::fsync_path(round.dir);
  const auto lock = lock_for(round.study_key);
  const std::lock_guard guard(*lock);
  const RoundState state = overtaken(round) ? RoundState::kSuperseded : RoundState::kClassified;
  RoundRecord r = record(round);
  enter_state(r, state, state == RoundState::kSuperseded ? kSupersededReason : "");
  r.results = files;
  r.sr_series_uid = sr_series_uid;
  r.sr_instance_uid = sr_instance_uid;
  r.classified_at = r.changed;
  r.findings = findings;
  write_record(round, r);
  return state;
}

void RoundStore::mark_done(const StudyRound& round, const std::string& reason) {
  enter(round, RoundState::kDone, reason);
}

std::vector<fs::path> RoundStore::pending_results(const StudyRound& round) const {
  auto files = dicom_files(round.dir / kOut);
  if (files.empty()) {
    const RoundRecord r = record(round);
    const auto sent = dicom_files(round.dir / kSent).size();
    if (sent < static_cast<size_t>(r.results)) {
      throw SpoolError("results recorded as written are missing (" + std::to_string(sent) + " of " +
                       std::to_string(r.results) + " sent)");
    }
  }
  return files;
}

void RoundStore::mark_sent(const StudyRound& round, const fs::path& out_file) {
  const fs::path sent = round.dir / kSent;
  io::make_dir_durable(sent);
  io::rename_into(out_file, sent / out_file.filename());
  io::fsync_path(sent);
  io::fsync_path(out_file.parent_path());
}

fs::path RoundStore::dead_letter(const StudyRound& round, const std::string& reason) {
  const fs::path parent = root_ / "dead-letter";
  fs::path dest = parent / (round.study_key + "-" + std::to_string(round.round));
  io::make_dir_durable(parent);
  if (fs::exists(round.dir / kOut)) {
    fs::remove_all(dest);  // a crash after the move below but before the state was written
    io::rename_into(round.dir / kOut, dest);
    io::fsync_path(round.dir);
  } else {
    io::make_dir_durable(dest);
  }
  io::fsync_path(parent);
  write_atomic(dest / "reason.txt", reason + "\ncalling_ae=" + round.calling_ae + "\n");
  enter(round, RoundState::kDeadLettered, reason);
  return dest;
}

bool RoundStore::overtaken(const StudyRound& round) const {
  const fs::path rounds = round.dir.parent_path();
  for (const int n : round_numbers(rounds)) {
    if (n > round.round && read_record_at(rounds / std::to_string(n)).state != RoundState::kQuarantined) return true;
  }
  return false;
}

void RoundStore::supersede(const StudyRound& round) { enter(round, RoundState::kSuperseded, kSupersededReason); }

std::optional<SrReference> RoundStore::previous_sr(const StudyRound& round) const {
  const fs::path rounds = round.dir.parent_path();
  auto numbers = round_numbers(rounds);
  std::reverse(numbers.begin(), numbers.end());
  for (const int n : numbers) {
    if (n >= round.round) continue;
    const RoundRecord r = read_record_at(rounds / std::to_string(n));
    if (r.state == RoundState::kDone && !r.sr_instance_uid.empty()) {
      return SrReference{round.study_uid, r.sr_series_uid, r.sr_instance_uid};
    }
  }
  return std::nullopt;
}

namespace {

// When the study's last round became final; nullopt while anything is open, to do, or quarantined.
std::optional<double> final_since(const fs::path& study) {
  const auto numbers = round_numbers(study / kRounds);
  if (numbers.empty() || !dicom_files(study / kOpen).empty()) return std::nullopt;
  double since = 0;
  for (const int n : numbers) {
    const RoundRecord r = read_record_at(study / kRounds / std::to_string(n));
    if (!is_final(r.state)) return std::nullopt;
    since = std::max(since, r.changed);
  }
  return since;
}

}  // namespace

RetentionReport RoundStore::sweep(const RetentionPolicy& policy, double now) {
  struct Final {
    std::string key;
    double since = 0;
    std::uintmax_t bytes = 0;
  };
  if (recovery_pending()) return {};  // recover_filled_slots first: the slots' studies must not go before
  sync_incoming();  // a power cut must not bring back, from its slot, an instance of a study removed here
  RetentionReport report;
  std::vector<Final> finals;
  std::uintmax_t total = 0;
  const auto remove_study = [&](const std::string& key, std::uintmax_t bytes) {
    fs::remove_all(study_dir(key));
    io::fsync_path(root_ / "studies");
    const std::lock_guard guard(locks_mutex_);
    open_counts_.erase(key);
    ++report.studies;
    report.bytes += bytes;
  };
  // Walking every file costs: sizes are summed only when a cap needs them, otherwise only for what goes.
  const auto cap = static_cast<std::uintmax_t>(policy.max_spool_gb * 1024.0 * 1024.0 * 1024.0);
  std::vector<fs::path> studies;
  for (const auto& entry : fs::directory_iterator(root_ / "studies")) studies.push_back(entry.path());
  for (const auto& dir : studies) {
    const std::string key = dir.filename().string();
    const auto lock = lock_for(key);
    const std::lock_guard guard(*lock);
    const std::uintmax_t bytes = cap > 0 ? size_of(dir) : 0;
    total += bytes;
    const auto since_final = final_since(dir);
    if (!since_final) continue;
    const double since = *since_final;
    const double hours = (now - since) / 3600.0;
    if (hours >= policy.results_hours) {
      remove_study(key, cap > 0 ? bytes : size_of(dir));
      total -= bytes;
      continue;
    }
    std::uintmax_t ct = 0;
    if (hours >= policy.instances_hours && fs::exists(dir / kInstances)) {
      ct = size_of(dir / kInstances);
      fs::remove_all(dir / kInstances);
      io::fsync_path(dir);
      ++report.instance_folders;
      report.bytes += ct;
      total -= std::min(total, ct);
    }
    finals.push_back({key, since, bytes - std::min(bytes, ct)});
  }
  if (cap == 0 || total <= cap) return report;
  std::sort(finals.begin(), finals.end(), [](const Final& a, const Final& b) { return a.since < b.since; });
  for (const auto& f : finals) {
    if (total <= cap) break;
    const auto lock = lock_for(f.key);
    const std::lock_guard guard(*lock);
    if (!final_since(study_dir(f.key))) continue;  // a late instance arrived meanwhile
    remove_study(f.key, f.bytes);
    total -= std::min(total, f.bytes);
  }
  return report;
}

}  // namespace nephra::store
