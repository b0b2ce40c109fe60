#include "nephra/config/config.h"

#include <arpa/inet.h>

#include <toml++/toml.h>
#include <algorithm>
#include <array>

namespace nephra::config {
namespace {

int line_of(const toml::node& node) { return static_cast<int>(node.source().begin.line); }

class Reader {
 public:
  explicit Reader(const toml::table& root) : root_(root) {}

  Config read() {
    Config cfg;
    check_keys(root_, "", {"node", "study", "pipeline", "engine", "results", "log", "peers"});
    if (const auto* node = table_at(root_, "node")) read_node(*node, cfg.node);
    if (const auto* study = table_at(root_, "study")) {
      check_keys(*study, "study.", {"stable_seconds"});
      cfg.study.stable_seconds = number(*study, "study.", "stable_seconds", cfg.study.stable_seconds, 0.1, 86400);
    }
    if (const auto* pipeline = table_at(root_, "pipeline")) {
      check_keys(*pipeline, "pipeline.", {"workers"});
      cfg.pipeline.workers = integer(*pipeline, "pipeline.", "workers", cfg.pipeline.workers, 1, 64);
    }
    if (const auto* engine = table_at(root_, "engine")) read_engine(*engine, cfg.engine);
    if (const auto* results = table_at(root_, "results")) read_results(*results, cfg.results);
    if (const auto* log = table_at(root_, "log")) {
      check_keys(*log, "log.", {"level"});
      cfg.log.level = string(*log, "log.", "level", cfg.log.level);
      static constexpr std::array levels{"trace", "debug", "info", "warn", "error"};
      if (std::find(levels.begin(), levels.end(), cfg.log.level) == levels.end()) {
        throw ConfigError("log.level", "must be one of trace, debug, info, warn, error", line_of(*log->get("level")));
      }
    }
    read_peers(cfg);
    return cfg;
  }

 private:
  const toml::table& root_;

  static const toml::table* table_at(const toml::table& parent, const std::string& key) {
    const auto* node = parent.get(key);
    if (node == nullptr) return nullptr;
    if (!node->is_table()) throw ConfigError(key, "must be a table", line_of(*node));
    return node->as_table();
  }

  static void check_keys(const toml::table& table, const std::string& prefix,
                         std::initializer_list<const char*> known) {
    for (const auto& [key, value] : table) {
      const std::string name(key.str());
      if (std::none_of(known.begin(), known.end(), [&](const char* k) { return name == k; })) {
        throw ConfigError(prefix + name, "unknown key", line_of(value));
      }
    }
  }

  static std::string string(const toml::table& t, const std::string& prefix, const char* key, std::string fallback) {
    const auto* node = t.get(key);
    if (node == nullptr) return fallback;
    if (!node->is_string()) throw ConfigError(prefix + key, "must be a string", line_of(*node));
    return node->as_string()->get();
  }

  static int integer(const toml::table& t, const std::string& prefix, const char* key, int fallback, int lo, int hi) {
    const auto* node = t.get(key);
    if (node == nullptr) return fallback;
    if (!node->is_integer()) throw ConfigError(prefix + key, "must be an integer", line_of(*node));
    const int64_t v = node->as_integer()->get();
    if (v < lo || v > hi) {
      throw ConfigError(prefix + key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi),
                        line_of(*node));
    }
    return static_cast<int>(v);
  }

  static double number(const toml::table& t, const std::string& prefix, const char* key, double fallback, double lo,
                       double hi) {
    const auto* node = t.get(key);
    if (node == nullptr) return fallback;
    if (!node->is_number()) throw ConfigError(prefix + key, "must be a number", line_of(*node));
    const double v =
        node->is_integer() ? static_cast<double>(node->as_integer()->get()) : node->as_floating_point()->get();
    if (v < lo || v > hi) {
      throw ConfigError(prefix + key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi),
                        line_of(*node));
    }
    return v;
  }

  static void check_ae_title(const std::string& key, const std::string& ae, int line) {
    if (ae.empty() || ae.size() > 16 || ae.find('\\') != std::string::npos ||
        std::all_of(ae.begin(), ae.end(), [](char c) { return c == ' '; })) {
      throw ConfigError(key, "must be 1-16 characters, not all spaces, without backslash", line);
    }
  }

  static void read_node(const toml::table& t, Config::Node& node) {
    check_keys(t, "node.", {"ae_title", "bind", "port", "spool_dir", "max_associations"});
    node.ae_title = string(t, "node.", "ae_title", node.ae_title);
    check_ae_title("node.ae_title", node.ae_title, line_of(t));
    node.bind = string(t, "node.", "bind", node.bind);
    in_addr addr{};
    if (inet_pton(AF_INET, node.bind.c_str(), &addr) != 1) {
      throw ConfigError("node.bind", "must be an IPv4 address such as 127.0.0.1", line_of(t));
    }
    node.port = integer(t, "node.", "port", node.port, 1, 65535);
    node.spool_dir = string(t, "node.", "spool_dir", node.spool_dir.string());
    if (node.spool_dir.empty()) throw ConfigError("node.spool_dir", "must not be empty", line_of(t));
    node.max_associations = integer(t, "node.", "max_associations", node.max_associations, 1, 1024);
  }

  static void read_engine(const toml::table& t, Config::Engine& e) {
    check_keys(t, "engine.", {"model", "threads", "batch"});
    e.model = string(t, "engine.", "model", e.model.string());
    if (e.model.empty()) throw ConfigError("engine.model", "must not be empty", line_of(t));
    e.threads = integer(t, "engine.", "threads", e.threads, 0, 256);
    e.batch = integer(t, "engine.", "batch", e.batch, 1, 256);
  }

  static void read_results(const toml::table& t, Config::Results& r) {
    check_keys(
        t, "results.",
        {"uid_root", "max_heatmaps", "retry_initial_seconds", "retry_max_seconds", "give_up_hours", "timeout_seconds"});
    r.uid_root = string(t, "results.", "uid_root", r.uid_root);
    const bool digits_and_dots =
        std::all_of(r.uid_root.begin(), r.uid_root.end(), [](char c) { return c == '.' || (c >= '0' && c <= '9'); });
    if (r.uid_root.empty() || r.uid_root.size() > 40 || !digits_and_dots || r.uid_root.front() == '.' ||
        r.uid_root.back() == '.') {
      throw ConfigError("results.uid_root", "must be a UID prefix of digits and dots, at most 40 characters",
                        line_of(t));
    }
    r.max_heatmaps = integer(t, "results.", "max_heatmaps", r.max_heatmaps, 0, 1000);
    r.retry_initial_seconds = number(t, "results.", "retry_initial_seconds", r.retry_initial_seconds, 0.1, 86400);
    r.retry_max_seconds = number(t, "results.", "retry_max_seconds", r.retry_max_seconds, 0.1, 86400);
    r.give_up_hours = number(t, "results.", "give_up_hours", r.give_up_hours, 0.001, 8760);
    r.timeout_seconds = integer(t, "results.", "timeout_seconds", r.timeout_seconds, 1, 3600);
  }

  void read_peers(Config& cfg) const {
    const auto* node = root_.get("peers");
    if (node == nullptr) return;
    if (!node->is_array_of_tables())
      throw ConfigError("peers", "must be an array of tables ([[peers]])", line_of(*node));
    size_t index = 0;
    for (const auto& item : *node->as_array()) {
      const auto& t = *item.as_table();
      const std::string prefix = "peers[" + std::to_string(index++) + "].";
      check_keys(t, prefix, {"ae_title", "host", "port"});
      for (const char* required : {"ae_title", "host", "port"}) {
        if (t.get(required) == nullptr) throw ConfigError(prefix + required, "is required", line_of(t));
      }
      Peer peer{string(t, prefix, "ae_title", ""), string(t, prefix, "host", ""),
                integer(t, prefix, "port", 0, 1, 65535)};
      check_ae_title(prefix + "ae_title", peer.ae_title, line_of(t));
      if (peer.host.empty()) throw ConfigError(prefix + "host", "must not be empty", line_of(t));
      if (cfg.find_peer(peer.ae_title) != nullptr) {
        throw ConfigError(prefix + "ae_title", "duplicate peer " + peer.ae_title, line_of(t));
      }
      cfg.peers.push_back(std::move(peer));
    }
  }
};

}  // namespace

ConfigError::ConfigError(std::string key, const std::string& message, int line)
    : std::runtime_error(key + ": " + message + (line > 0 ? " (line " + std::to_string(line) + ")" : "")),
      key_(std::move(key)) {}

const Peer* Config::find_peer(const std::string& ae_title) const {
  const auto it = std::find_if(peers.begin(), peers.end(), [&](const Peer& p) { return p.ae_title == ae_title; });
  return it == peers.end() ? nullptr : &*it;
}

Config load_string(const std::string& toml_text, const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& err) {
    throw ConfigError("(syntax)", std::string(err.description()), static_cast<int>(err.source().begin.line));
  }
  return Reader(root).read();
}

Config load_file(const std::filesystem::path& path) {
  toml::table root;
  try {
    root = toml::parse_file(path.string());
  } catch (const toml::parse_error& err) {
    throw ConfigError("(syntax)", std::string(err.description()), static_cast<int>(err.source().begin.line));
  }
  return Reader(root).read();
}

}  // namespace nephra::config
