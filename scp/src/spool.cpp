#include "nephra/scp/spool.h"

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "durable_io.h"

namespace fs = std::filesystem;

namespace nephra::scp {
namespace {

constexpr const char* kDoneMarker = "done";

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
    if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit)) numbers.push_back(std::stoi(name));
  }
  std::sort(numbers.begin(), numbers.end());
  return numbers;
}

size_t count_instances(const fs::path& dir) {
  std::error_code ec;
  size_t n = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".dcm") ++n;
  }
  return n;
}

}  // namespace

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

std::string study_key_of(const std::string& calling_ae, const std::string& study_uid) {
  // The AE is part of the key: the same study from two archives is two jobs answered to two senders.
  return hash_hex(calling_ae + '\\' + study_uid);
}

Spool::Spool(fs::path root) : root_(std::move(root)) {
  fs::create_directories(root_ / "studies");
  fs::create_directories(root_ / "tmp");
  for (const auto& entry : fs::directory_iterator(root_ / "tmp")) fs::remove_all(entry.path());
  io::fsync_path(root_);
}

fs::path Spool::study_dir(const std::string& study_key) const { return root_ / "studies" / study_key; }

std::shared_ptr<std::mutex> Spool::lock_for(const std::string& study_key) {
  const std::lock_guard guard(locks_mutex_);
  auto& slot = study_locks_[study_key];
  if (!slot) slot = std::make_shared<std::mutex>();
  return slot;
}

fs::path Spool::new_tmp_path() {
  static std::atomic<unsigned long> counter{0};
  std::ostringstream name;
  name << ::getpid() << '-' << counter.fetch_add(1) << ".part";
  return root_ / "tmp" / name.str();
}

void Spool::write_atomic(const fs::path& dest, const std::string& content) {
  const fs::path tmp = new_tmp_path();
  try {
    io::write_file(tmp, content);
    io::rename_into(tmp, dest);
    io::fsync_path(dest.parent_path());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

void Spool::ensure_study_dir(const InstanceInfo& info, const std::string& key) {
  const fs::path dir = study_dir(key);
  if (fs::exists(dir / "study.json")) return;
  io::make_dir_durable(dir);
  const nlohmann::json meta = {{"calling_ae", info.calling_ae}, {"study_uid", info.study_uid}};
  write_atomic(dir / "study.json", meta.dump(2) + "\n");
}

std::uintmax_t Spool::free_bytes() const {
  std::error_code ec;
  const auto space = fs::space(root_, ec);
  return ec ? 0 : space.available;
}

StoreResult Spool::store(const InstanceInfo& info, const Writer& write, size_t max_open) {
  StoreResult result;
  result.study_key = study_key_of(info.calling_ae, info.study_uid);
  const fs::path tmp = new_tmp_path();
  try {
    if (const std::string err = write(tmp); !err.empty())
      throw SpoolError("write " + tmp.filename().string() + ": " + err);
    io::fsync_path(tmp);

    const auto lock = lock_for(result.study_key);
    const std::lock_guard guard(*lock);
    ensure_study_dir(info, result.study_key);
    const fs::path open_dir = study_dir(result.study_key) / "open";
    if (io::make_dir_durable(open_dir)) result.late = !round_numbers(study_dir(result.study_key) / "rounds").empty();
    const fs::path dest = open_dir / (hash_hex(info.sop_instance_uid) + ".dcm");
    result.duplicate = fs::exists(dest);
    size_t& open_count = open_count_of(result.study_key, open_dir);
    if (!result.duplicate && max_open > 0 && open_count >= max_open) {
      throw StudyFullError("the study already holds " + std::to_string(open_count) + " instances (limit " +
                           std::to_string(max_open) + ")");
    }
    io::rename_into(tmp, dest);
    io::fsync_path(open_dir);
    if (!result.duplicate) ++open_count;
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  return result;
}

size_t& Spool::open_count_of(const std::string& study_key, const fs::path& open_dir) {
  const std::lock_guard guard(locks_mutex_);
  const auto [it, fresh] = open_counts_.try_emplace(study_key, 0);
  if (fresh) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(open_dir, ec)) it->second += e.path().extension() == ".dcm" ? 1U : 0U;
  }
  return it->second;
}

std::optional<StudyRound> Spool::seal(const std::string& study_key) {
  const auto lock = lock_for(study_key);
  const std::lock_guard guard(*lock);
  {
    const std::lock_guard counts_guard(locks_mutex_);
    open_counts_.erase(study_key);
  }
  const fs::path dir = study_dir(study_key);
  const fs::path open_dir = dir / "open";
  if (!fs::exists(open_dir)) return std::nullopt;
  if (count_instances(open_dir) == 0) {
    fs::remove_all(open_dir);
    return std::nullopt;
  }
  io::make_dir_durable(dir / "rounds");
  const auto numbers = round_numbers(dir / "rounds");
  const int next = numbers.empty() ? 1 : numbers.back() + 1;
  io::rename_into(open_dir, dir / "rounds" / std::to_string(next));
  io::fsync_path(dir / "rounds");
  io::fsync_path(dir);
  return read_round(study_key, next);
}

std::optional<StudyRound> Spool::read_round(const std::string& key, int round) const {
  const fs::path dir = study_dir(key);
  const auto meta = nlohmann::json::parse(read_text(dir / "study.json"), nullptr, false);
  if (meta.is_discarded()) return std::nullopt;
  return StudyRound{key, meta.value("calling_ae", ""), meta.value("study_uid", ""), round,
                    dir / "rounds" / std::to_string(round)};
}

ScanResult Spool::scan() const {
  ScanResult result;
  for (const auto& entry : fs::directory_iterator(root_ / "studies")) {
    const std::string key = entry.path().filename().string();
    if (!fs::exists(entry.path() / "study.json")) continue;  // crashed before the first instance landed
    if (const size_t n = count_instances(entry.path() / "open"); n > 0) result.open.push_back({key, n});
    for (const int number : round_numbers(entry.path() / "rounds")) {
      const fs::path round_dir = entry.path() / "rounds" / std::to_string(number);
      if (fs::exists(round_dir / kDoneMarker) || fs::exists(round_dir / "failed")) continue;
      if (auto round = read_round(key, number)) result.pending.push_back(std::move(*round));
    }
  }
  return result;
}

void Spool::write_round_file(const StudyRound& round, const std::string& name, const std::string& content) {
  write_atomic(round.dir / name, content);
}

void Spool::mark_done(const StudyRound& round) { write_round_file(round, kDoneMarker, "done\n"); }

void Spool::mark_sent(const StudyRound& round, const fs::path& out_file) {
  const fs::path sent = round.dir / "sent";
  io::make_dir_durable(sent);
  io::rename_into(out_file, sent / out_file.filename());
  io::fsync_path(sent);
  io::fsync_path(out_file.parent_path());
}

fs::path Spool::dead_letter(const StudyRound& round, const std::string& reason) {
  const fs::path parent = root_ / "dead-letter";
  fs::path dest = parent / (round.study_key + "-" + std::to_string(round.round));
  io::make_dir_durable(parent);
  if (fs::exists(round.dir / "out")) {
    io::rename_into(round.dir / "out", dest);
    io::fsync_path(round.dir);
  } else {
    io::make_dir_durable(dest);
  }
  io::fsync_path(parent);
  write_atomic(dest / "reason.txt", reason + "\ncalling_ae=" + round.calling_ae + "\n");
  write_round_file(round, "dead-letter", reason + "\n");
  mark_done(round);
  return dest;
}

}  // namespace nephra::scp
