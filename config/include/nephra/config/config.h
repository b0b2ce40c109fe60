#pragma once
// Typed configuration of the node, parsed once from TOML and validated against one schema table.
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace nephra::config {

struct Peer {
  std::string ae_title;
  std::string host;
  int port = 0;
  bool tls = false;      // results go to this archive over DICOM TLS
  std::string tls_name;  // what its certificate must name (DNS name or IP address); empty = host
  // The name its certificate must carry, both ways: tls_name, else host.
  [[nodiscard]] const std::string& certificate_name() const { return tls_name.empty() ? host : tls_name; }
};

struct Config {
  struct Node {
    std::string ae_title = "NEPHRA";
    std::string bind = "127.0.0.1";
    int port = 11112;
    std::filesystem::path spool_dir = "spool";
    int max_associations = 16;
    double shutdown_grace_seconds = 30.0;
    bool check_peer_address = true;
    int max_pdu_bytes = 65536;
    int min_free_spool_mb = 512;
    double max_instance_mb = 1024.0;
    double association_setup_seconds = 10.0;
    int max_waiting_per_address = 8;
  } node;
  struct Study {
    double stable_seconds = 10.0;
    int max_instances = 5000;
  } study;
  struct Pipeline {
    int workers = 2;
    double stall_seconds = 900.0;
    int max_attempts = 5;
    double retry_seconds = 30.0;
  } pipeline;
  struct Engine {
    std::filesystem::path model = "models/nephra-kidney.json";
    int threads = 0;
    int batch = 8;
    std::string backend = "onednn";  // or "opencv", the reference
  } engine;
  struct Results {
    std::string uid_root = "2.25";
    int max_heatmaps = 20;
    double retry_initial_seconds = 5.0;
    double retry_max_seconds = 600.0;
    double give_up_hours = 72.0;
    int timeout_seconds = 30;
    bool shadow = false;  // classify and keep the results, send nothing
  } results;
  struct Retention {
    double instances_hours = 24.0;
    double results_hours = 168.0;
    double max_spool_gb = 0.0;
  } retention;
  struct Tls {
    bool enabled = false;  // the DICOM port speaks TLS only
    std::filesystem::path certificate;
    std::filesystem::path private_key;
    std::filesystem::path ca_certificates;
    bool require_client_certificate = true;
    bool bind_calling_ae = false;  // a caller's certificate must name its peer (tls_name, else host)
  } tls;
  struct Http {
    bool enabled = true;
    std::string bind = "127.0.0.1";
    int port = 8080;
    bool try_page = false;
  } http;
  struct Log {
    std::string level = "info";
    std::string dcmtk_level = "warn";
    std::string target = "auto";
  } log;
  std::vector<Peer> peers;

  [[nodiscard]] const Peer* find_peer(const std::string& ae_title) const;
};

// Names the offending key (dotted path, e.g. "peers[1].port") and, where known, its line.
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string key, const std::string& message, int line = 0);
  [[nodiscard]] const std::string& key() const { return key_; }

 private:
  std::string key_;
};

// A UID as PS3.5 9.1 has it: digits and dots, at most `max_length` characters, no empty component and no component
// with a leading zero. The one check for the UIDs the node makes (results.uid_root and every derived UID).
bool is_valid_uid(std::string_view uid, size_t max_length = 64);
// results.uid_root: a valid UID of at most 40 characters, leaving room for the derived part.
inline bool is_uid_prefix(std::string_view uid) { return is_valid_uid(uid, 40); }

Config load_file(const std::filesystem::path& path);
Config load_string(const std::string& toml_text, const std::string& source_name = "<string>");

// One row per key: the validator takes key names and ranges from it, and the README reference is generated from it.
struct KeyInfo {
  std::string key;
  std::string type;  // string, integer, number, boolean
  std::string default_value;
  std::string help;
  double min = 0;  // integer and number keys
  double max = 0;
  bool live = false;  // a SIGHUP applies it; otherwise it takes effect at the next start
};
const std::vector<KeyInfo>& schema();
const KeyInfo& key_info(const std::string& key);  // throws std::out_of_range for a key not in the schema

// Whether the reload policy can read and restore this key's field (every non-peer key of the schema can).
bool has_field(const std::string& key);

// What a reload puts in force: `next`, except that keys which only take effect at start keep their running
// values; those that differ are listed in `needs_restart`.
Config apply_reload(const Config& running, Config next, std::vector<std::string>& needs_restart);

// The running configuration, replaced as a whole on reload; readers keep the snapshot they took.
class Shared {
 public:
  explicit Shared(Config initial) : current_(std::make_shared<const Config>(std::move(initial))) {}
  [[nodiscard]] std::shared_ptr<const Config> get() const {
    const std::lock_guard guard(mutex_);
    return current_;
  }
  void set(Config next) {
    auto fresh = std::make_shared<const Config>(std::move(next));
    const std::lock_guard guard(mutex_);
    current_ = std::move(fresh);
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const Config> current_;
};
std::string reference_markdown();
std::string default_toml();

}  // namespace nephra::config
