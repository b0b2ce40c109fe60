#pragma once
// Typed configuration of the node, parsed once from TOML and validated against one schema table.
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace nephra::config {

struct Peer {
  std::string ae_title;
  std::string host;
  int port = 0;
};

struct Config {
  struct Node {
    std::string ae_title = "NEPHRA";
    std::string bind = "127.0.0.1";
    int port = 11112;
    std::filesystem::path spool_dir = "spool";
    int max_associations = 16;
  } node;
  struct Study {
    double stable_seconds = 10.0;
  } study;
  struct Pipeline {
    int workers = 2;
  } pipeline;
  struct Engine {
    std::filesystem::path model = "models/nephra-kidney-v1.json";
    int threads = 0;
    int batch = 8;
  } engine;
  struct Results {
    std::string uid_root = "2.25";
    int max_heatmaps = 20;
    double retry_initial_seconds = 5.0;
    double retry_max_seconds = 600.0;
    double give_up_hours = 72.0;
    int timeout_seconds = 30;
  } results;
  struct Log {
    std::string level = "info";
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

Config load_file(const std::filesystem::path& path);
Config load_string(const std::string& toml_text, const std::string& source_name = "<string>");

// One row per key: the validator and the README reference are both generated from it.
struct KeyInfo {
  std::string key;
  std::string type;
  std::string default_value;
  std::string help;
};
const std::vector<KeyInfo>& schema();
std::string reference_markdown();
std::string default_toml();

}  // namespace nephra::config
