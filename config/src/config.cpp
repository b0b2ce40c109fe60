#include "nephra/config/config.h"

#include <arpa/inet.h>

#include <toml++/toml.h>
#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

namespace nephra::config {
namespace {

int line_of(const toml::node& node) { return static_cast<int>(node.source().begin.line); }

// Where a value sits: `shown` names it in errors (peers[2].port), `row` in the schema (peers[].port).
struct Place {
  std::string shown;
  std::string row;
};

class Reader {
 public:
  explicit Reader(const toml::table& root) : root_(root) {}

  Config read() {
    Config cfg;
    check_keys(root_, {"", ""});
    if (const auto* t = table_at(root_, "node")) read_node(*t, cfg.node);
    if (const auto* t = table_at(root_, "study")) {
      check_keys(*t, {"study.", "study."});
      cfg.study.stable_seconds = number(*t, {"study.", "study."}, "stable_seconds", cfg.study.stable_seconds);
      cfg.study.max_instances = integer(*t, {"study.", "study."}, "max_instances", cfg.study.max_instances);
    }
    if (const auto* t = table_at(root_, "pipeline")) {
      const Place at{"pipeline.", "pipeline."};
      check_keys(*t, at);
      cfg.pipeline.workers = integer(*t, at, "workers", cfg.pipeline.workers);
      cfg.pipeline.stall_seconds = number(*t, at, "stall_seconds", cfg.pipeline.stall_seconds);
      cfg.pipeline.max_attempts = integer(*t, at, "max_attempts", cfg.pipeline.max_attempts);
      cfg.pipeline.retry_seconds = number(*t, at, "retry_seconds", cfg.pipeline.retry_seconds);
    }
    if (const auto* t = table_at(root_, "retention")) {
      const Place at{"retention.", "retention."};
      check_keys(*t, at);
      auto& r = cfg.retention;
      r.instances_hours = number(*t, at, "instances_hours", r.instances_hours);
      r.results_hours = number(*t, at, "results_hours", r.results_hours);
      r.max_spool_gb = number(*t, at, "max_spool_gb", r.max_spool_gb);
    }
    if (const auto* t = table_at(root_, "engine")) read_engine(*t, cfg.engine);
    if (const auto* t = table_at(root_, "results")) read_results(*t, cfg.results);
    if (const auto* t = table_at(root_, "tls")) read_tls(*t, cfg.tls);
    if (const auto* t = table_at(root_, "http")) read_http(*t, cfg.http);
    if (const auto* t = table_at(root_, "log")) read_log(*t, cfg.log);
    read_peers(cfg);
    check_tls_files(cfg);
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

  // The schema is the list of known keys: a key (or, at the top, a section) it does not name is a mistake.
  static void check_keys(const toml::table& table, const Place& at) {
    for (const auto& [key, value] : table) {
      const std::string name(key.str());
      const bool known = std::any_of(schema().begin(), schema().end(), [&](const KeyInfo& row) {
        if (at.row.empty()) return row.key.starts_with(name + ".") || row.key.starts_with(name + "[].");
        return row.key == at.row + name;
      });
      if (!known) throw ConfigError(at.shown + name, "unknown key", line_of(value));
    }
  }

  static std::string string(const toml::table& t, const Place& at, const char* key, std::string fallback) {
    const auto* node = t.get(key);
    if (node == nullptr) return fallback;
    if (!node->is_string()) throw ConfigError(at.shown + key, "must be a string", line_of(*node));
    return node->as_string()->get();
  }

  static bool boolean(const toml::table& t, const Place& at, const char* key, bool fallback) {
    const auto* node = t.get(key);
    if (node == nullptr) return fallback;
    if (!node->is_boolean()) throw ConfigError(at.shown + key, "must be true or false", line_of(*node));
    return node->as_boolean()->get();
  }

  static void check_range(const Place& at, const char* key, double v, const toml::node& node) {
    const KeyInfo& row = key_info(at.row + key);
    if (v < row.min || v > row.max) {
      std::ostringstream range;
      range << "must be between " << row.min << " and " << row.max;
      throw ConfigError(at.shown + key, range.str(), line_of(node));
    }
  }

  static int integer(const toml::table& t, const Place& at, const char* key, int fallback) {
    const auto* node = t.get(key);
    if (node == nullptr) return fallback;
    if (!node->is_integer()) throw ConfigError(at.shown + key, "must be an integer", line_of(*node));
    const int64_t v = node->as_integer()->get();
    check_range(at, key, static_cast<double>(v), *node);
    return static_cast<int>(v);
  }

  static double number(const toml::table& t, const Place& at, const char* key, double fallback) {
    const auto* node = t.get(key);
    if (node == nullptr) return fallback;
    if (!node->is_number()) throw ConfigError(at.shown + key, "must be a number", line_of(*node));
    const double v =
        node->is_integer() ? static_cast<double>(node->as_integer()->get()) : node->as_floating_point()->get();
    check_range(at, key, v, *node);
    return v;
  }

  static void check_ae_title(const std::string& key, const std::string& ae, int line) {
    if (ae.empty() || ae.size() > 16 || ae.find('\\') != std::string::npos ||
        std::all_of(ae.begin(), ae.end(), [](char c) { return c == ' '; })) {
      throw ConfigError(key, "must be 1-16 characters, not all spaces, without backslash", line);
    }
  }

  static void check_ipv4(const std::string& key, const std::string& address, int line) {
    in_addr addr{};
    if (inet_pton(AF_INET, address.c_str(), &addr) != 1) {
      throw ConfigError(key, "must be an IPv4 address such as 127.0.0.1", line);
    }
  }

  static std::string log_level(const toml::table& t, const Place& at, const char* key, std::string fallback) {
    std::string level = string(t, at, key, std::move(fallback));
    static constexpr std::array levels{"trace", "debug", "info", "warn", "error"};
    if (std::find(levels.begin(), levels.end(), level) == levels.end()) {
      throw ConfigError(at.shown + key, "must be one of trace, debug, info, warn, error", line_of(*t.get(key)));
    }
    return level;
  }

  static void read_node(const toml::table& t, Config::Node& node) {
    const Place at{"node.", "node."};
    check_keys(t, at);
    node.ae_title = string(t, at, "ae_title", node.ae_title);
    check_ae_title("node.ae_title", node.ae_title, line_of(t));
    node.bind = string(t, at, "bind", node.bind);
    check_ipv4("node.bind", node.bind, line_of(t));
    node.port = integer(t, at, "port", node.port);
    node.spool_dir = string(t, at, "spool_dir", node.spool_dir.string());
    if (node.spool_dir.empty()) throw ConfigError("node.spool_dir", "must not be empty", line_of(t));
    node.max_associations = integer(t, at, "max_associations", node.max_associations);
    node.shutdown_grace_seconds = number(t, at, "shutdown_grace_seconds", node.shutdown_grace_seconds);
    node.check_peer_address = boolean(t, at, "check_peer_address", node.check_peer_address);
    node.max_pdu_bytes = integer(t, at, "max_pdu_bytes", node.max_pdu_bytes);
    node.min_free_spool_mb = integer(t, at, "min_free_spool_mb", node.min_free_spool_mb);
    node.max_instance_mb = number(t, at, "max_instance_mb", node.max_instance_mb);
    node.association_setup_seconds = number(t, at, "association_setup_seconds", node.association_setup_seconds);
    node.max_waiting_per_address = integer(t, at, "max_waiting_per_address", node.max_waiting_per_address);
  }

  static void read_engine(const toml::table& t, Config::Engine& e) {
    const Place at{"engine.", "engine."};
    check_keys(t, at);
    e.model = string(t, at, "model", e.model.string());
    if (e.model.empty()) throw ConfigError("engine.model", "must not be empty", line_of(t));
    e.threads = integer(t, at, "threads", e.threads);
    e.batch = integer(t, at, "batch", e.batch);
    e.backend = string(t, at, "backend", e.backend);
    if (e.backend != "onednn" && e.backend != "opencv") {
      throw ConfigError("engine.backend", "must be one of onednn, opencv", line_of(*t.get("backend")));
    }
  }

  static void read_results(const toml::table& t, Config::Results& r) {
    const Place at{"results.", "results."};
    check_keys(t, at);
    r.uid_root = string(t, at, "uid_root", r.uid_root);
    if (!is_uid_prefix(r.uid_root)) {
      throw ConfigError("results.uid_root",
                        "must be a UID prefix: digits and dots, at most 40 characters, no empty component and no "
                        "component with a leading zero (PS3.5 9.1)",
                        line_of(t));
    }
    r.max_heatmaps = integer(t, at, "max_heatmaps", r.max_heatmaps);
    r.retry_initial_seconds = number(t, at, "retry_initial_seconds", r.retry_initial_seconds);
    r.retry_max_seconds = number(t, at, "retry_max_seconds", r.retry_max_seconds);
    r.give_up_hours = number(t, at, "give_up_hours", r.give_up_hours);
    r.timeout_seconds = integer(t, at, "timeout_seconds", r.timeout_seconds);
    r.shadow = boolean(t, at, "shadow", r.shadow);
  }

  static void read_tls(const toml::table& t, Config::Tls& tls) {
    const Place at{"tls.", "tls."};
    check_keys(t, at);
    tls.enabled = boolean(t, at, "enabled", tls.enabled);
    tls.certificate = string(t, at, "certificate", tls.certificate.string());
    tls.private_key = string(t, at, "private_key", tls.private_key.string());
    tls.ca_certificates = string(t, at, "ca_certificates", tls.ca_certificates.string());
    tls.require_client_certificate = boolean(t, at, "require_client_certificate", tls.require_client_certificate);
    tls.bind_calling_ae = boolean(t, at, "bind_calling_ae", tls.bind_calling_ae);
  }

  // TLS in either direction needs all three files; say which is missing rather than fail at the first handshake.
  void check_tls_files(const Config& cfg) const {
    const bool used =
        cfg.tls.enabled || std::any_of(cfg.peers.begin(), cfg.peers.end(), [](const Peer& p) { return p.tls; });
    if (!used) return;
    const auto* t = root_.get("tls");
    const int line = t != nullptr ? line_of(*t) : 0;
    const std::pair<const char*, const std::filesystem::path*> files[] = {
        {"tls.certificate", &cfg.tls.certificate},
        {"tls.private_key", &cfg.tls.private_key},
        {"tls.ca_certificates", &cfg.tls.ca_certificates}};
    for (const auto& [key, path] : files) {
      if (path->empty()) throw ConfigError(key, "is required when tls.enabled or a peer's tls is true", line);
    }
  }

  static void read_http(const toml::table& t, Config::Http& h) {
    const Place at{"http.", "http."};
    check_keys(t, at);
    h.enabled = boolean(t, at, "enabled", h.enabled);
    h.bind = string(t, at, "bind", h.bind);
    check_ipv4("http.bind", h.bind, line_of(t));
    h.port = integer(t, at, "port", h.port);
    h.try_page = boolean(t, at, "try_page", h.try_page);
  }

  static void read_log(const toml::table& t, Config::Log& log) {
    const Place at{"log.", "log."};
    check_keys(t, at);
    log.level = log_level(t, at, "level", log.level);
    log.dcmtk_level = log_level(t, at, "dcmtk_level", log.dcmtk_level);
    log.target = string(t, at, "target", log.target);
    if (log.target != "auto" && log.target != "console" && log.target != "journal") {
      throw ConfigError("log.target", "must be one of auto, console, journal", line_of(*t.get("target")));
    }
  }

  void read_peers(Config& cfg) const {
    const auto* node = root_.get("peers");
    if (node == nullptr) return;
    if (!node->is_array_of_tables())
      throw ConfigError("peers", "must be an array of tables ([[peers]])", line_of(*node));
    size_t index = 0;
    for (const auto& item : *node->as_array()) {
      const auto& t = *item.as_table();
      const Place at{"peers[" + std::to_string(index++) + "].", "peers[]."};
      check_keys(t, at);
      const bool tls = boolean(t, at, "tls", false);
      for (const char* required : {"ae_title", "host", "port"}) {
        if (t.get(required) == nullptr) throw ConfigError(at.shown + required, "is required", line_of(t));
      }
      Peer peer{string(t, at, "ae_title", ""), string(t, at, "host", ""), integer(t, at, "port", 0), tls,
                string(t, at, "tls_name", "")};
      check_ae_title(at.shown + "ae_title", peer.ae_title, line_of(t));
      if (peer.host.empty()) throw ConfigError(at.shown + "host", "must not be empty", line_of(t));
      if (cfg.find_peer(peer.ae_title) != nullptr) {
        throw ConfigError(at.shown + "ae_title", "duplicate peer " + peer.ae_title, line_of(t));
      }
      cfg.peers.push_back(std::move(peer));
    }
  }
};

}  // namespace

bool is_valid_uid(std::string_view uid, size_t max_length) {
  if (uid.empty() || uid.size() > max_length) return false;
  size_t start = 0;
  while (true) {
    const size_t dot = uid.find('.', start);
    const std::string_view part =
        uid.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (part.empty() || !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
    if (part.size() > 1 && part.front() == '0') return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

ConfigError::ConfigError(std::string key, const std::string& message, int line)
    : std::runtime_error(key + ": " + message + (line > 0 ? " (line " + std::to_string(line) + ")" : "")),
      key_(std::move(key)) {}

const Peer* Config::find_peer(const std::string& ae_title) const {
  const auto it = std::find_if(peers.begin(), peers.end(), [&](const Peer& p) { return p.ae_title == ae_title; });
  return it == peers.end() ? nullptr : &*it;
}

namespace {

// Compares one key's field of `next` with the running value and, when they differ, puts the running one back.
using KeepField = std::function<bool(Config& next, const Config& running)>;

template <class Section, class T>
KeepField field(Section Config::*section, T Section::*member) {
  return [section, member](Config& next, const Config& running) {
    auto& value = (next.*section).*member;
    const auto& kept = (running.*section).*member;
    if (value == kept) return false;
    value = kept;
    return true;
  };
}

// Every key's field, so that which keys wait for a restart is said once, by the schema's `live` flag.
const std::map<std::string, KeepField>& fields() {
  static const std::map<std::string, KeepField> kFields = {
      {"node.ae_title", field(&Config::node, &Config::Node::ae_title)},
      {"node.bind", field(&Config::node, &Config::Node::bind)},
      {"node.port", field(&Config::node, &Config::Node::port)},
      {"node.spool_dir", field(&Config::node, &Config::Node::spool_dir)},
      {"node.max_associations", field(&Config::node, &Config::Node::max_associations)},
      {"node.association_setup_seconds", field(&Config::node, &Config::Node::association_setup_seconds)},
      {"node.max_waiting_per_address", field(&Config::node, &Config::Node::max_waiting_per_address)},
      {"node.shutdown_grace_seconds", field(&Config::node, &Config::Node::shutdown_grace_seconds)},
      {"node.check_peer_address", field(&Config::node, &Config::Node::check_peer_address)},
      {"node.max_pdu_bytes", field(&Config::node, &Config::Node::max_pdu_bytes)},
      {"node.min_free_spool_mb", field(&Config::node, &Config::Node::min_free_spool_mb)},
      {"node.max_instance_mb", field(&Config::node, &Config::Node::max_instance_mb)},
      {"study.stable_seconds", field(&Config::study, &Config::Study::stable_seconds)},
      {"study.max_instances", field(&Config::study, &Config::Study::max_instances)},
      {"pipeline.workers", field(&Config::pipeline, &Config::Pipeline::workers)},
      {"pipeline.stall_seconds", field(&Config::pipeline, &Config::Pipeline::stall_seconds)},
      {"pipeline.max_attempts", field(&Config::pipeline, &Config::Pipeline::max_attempts)},
      {"pipeline.retry_seconds", field(&Config::pipeline, &Config::Pipeline::retry_seconds)},
      {"engine.model", field(&Config::engine, &Config::Engine::model)},
      {"engine.threads", field(&Config::engine, &Config::Engine::threads)},
      {"engine.batch", field(&Config::engine, &Config::Engine::batch)},
      {"engine.backend", field(&Config::engine, &Config::Engine::backend)},
      {"results.uid_root", field(&Config::results, &Config::Results::uid_root)},
      {"results.max_heatmaps", field(&Config::results, &Config::Results::max_heatmaps)},
      {"results.retry_initial_seconds", field(&Config::results, &Config::Results::retry_initial_seconds)},
      {"results.retry_max_seconds", field(&Config::results, &Config::Results::retry_max_seconds)},
      {"results.give_up_hours", field(&Config::results, &Config::Results::give_up_hours)},
      {"results.timeout_seconds", field(&Config::results, &Config::Results::timeout_seconds)},
      {"results.shadow", field(&Config::results, &Config::Results::shadow)},
      {"retention.instances_hours", field(&Config::retention, &Config::Retention::instances_hours)},
      {"retention.results_hours", field(&Config::retention, &Config::Retention::results_hours)},
      {"retention.max_spool_gb", field(&Config::retention, &Config::Retention::max_spool_gb)},
      {"tls.enabled", field(&Config::tls, &Config::Tls::enabled)},
      {"tls.certificate", field(&Config::tls, &Config::Tls::certificate)},
      {"tls.private_key", field(&Config::tls, &Config::Tls::private_key)},
      {"tls.ca_certificates", field(&Config::tls, &Config::Tls::ca_certificates)},
      {"tls.require_client_certificate", field(&Config::tls, &Config::Tls::require_client_certificate)},
      {"tls.bind_calling_ae", field(&Config::tls, &Config::Tls::bind_calling_ae)},
      {"http.enabled", field(&Config::http, &Config::Http::enabled)},
      {"http.bind", field(&Config::http, &Config::Http::bind)},
      {"http.port", field(&Config::http, &Config::Http::port)},
      {"http.try_page", field(&Config::http, &Config::Http::try_page)},
      {"log.level", field(&Config::log, &Config::Log::level)},
      {"log.dcmtk_level", field(&Config::log, &Config::Log::dcmtk_level)},
      {"log.target", field(&Config::log, &Config::Log::target)},
  };
  return kFields;
}

}  // namespace

bool has_field(const std::string& key) { return fields().count(key) != 0; }

Config apply_reload(const Config& running, Config next, std::vector<std::string>& needs_restart) {
  for (const auto& row : schema()) {
    if (row.live) continue;
    const auto it = fields().find(row.key);
    if (it == fields().end()) throw std::logic_error("restart-only key without a field: " + row.key);
    if (it->second(next, running)) needs_restart.push_back(row.key);
  }
  return next;
}

namespace {

// toml++ 3.3.0 reaches __builtin_unreachable() when it asks whether some non-ASCII code points are whitespace
// (upstream #190/#295; fuzz/README.md). It asks outside strings, inside multi-line basic strings after a backslash,
// and inside bare values that contain quotes (`1'x'`), so telling those places apart means re-implementing its
// parser. Non-ASCII text is therefore taken only in comments, which it reads without asking; strings carry it as
// \uXXXX escapes. Strings are tracked only so that a '#' inside one does not start a comment.
class AsciiOutsideComments {
 public:
  explicit AsciiOutsideComments(const std::string& text) : s_(text) {}

  void check() {
    int line = 1;
    while (i_ < s_.size()) {
      const char c = s_[i_];
      if (state_ != State::kComment && static_cast<unsigned char>(c) >= 0x80) {
        throw ConfigError("(syntax)",
                          state_ == State::kBare ? "a non-ASCII character outside a string or comment"
                                                 : "a non-ASCII character in a string (write it as a \\uXXXX "
                                                   "escape in a double-quoted string)",
                          line);
      }
      if (c == '\n') ++line;
      switch (state_) {
        case State::kBare:
          bare(c);
          break;
        case State::kComment:
          state_ = c == '\n' ? State::kBare : state_;
          break;
        case State::kBasic:
          quoted(c, '"', true);
          break;
        case State::kLiteral:
          quoted(c, '\'', false);
          break;
        case State::kMultiBasic:
          multi(c, '"', true);
          break;
        case State::kMultiLiteral:
          multi(c, '\'', false);
          break;
      }
      ++i_;
    }
  }

 private:
  enum class State { kBare, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral };
  const std::string& s_;
  size_t i_ = 0;
  State state_ = State::kBare;

  [[nodiscard]] bool triple(char q) const { return s_.compare(i_, 3, std::string(3, q)) == 0; }

  void bare(char c) {
    if (c == '#') {
      state_ = State::kComment;
    } else if (c == '"' || c == '\'') {
      const bool multi = triple(c);
      state_ =
          c == '"' ? (multi ? State::kMultiBasic : State::kBasic) : (multi ? State::kMultiLiteral : State::kLiteral);
      if (multi) i_ += 2;
    }
  }

  [[nodiscard]] bool next_is(char c) const { return i_ + 1 < s_.size() && s_[i_ + 1] == c; }

  // After a backslash the next character is escaped; a newline is left to be counted (TOML reports it if wrong), and
  // a non-ASCII byte is left to be refused.
  void skip_escaped() {
    if (i_ + 1 < s_.size() && !next_is('\n') && static_cast<unsigned char>(s_[i_ + 1]) < 0x80) ++i_;
  }

  void quoted(char c, char quote, bool escapes) {
    if (escapes && c == '\\') {
      skip_escaped();
    } else if (c == quote || c == '\n') {
      state_ = State::kBare;
    }
  }

  void multi(char c, char quote, bool escapes) {
    if (escapes && c == '\\') {
      skip_escaped();
    } else if (triple(quote)) {
      i_ += 2;
      // Up to two more quotes belong to the content: """a""""" holds a"".
      if (next_is(quote)) ++i_;
      if (next_is(quote)) ++i_;
      state_ = State::kBare;
    }
  }
};

}  // namespace

Config load_string(const std::string& toml_text, const std::string& source_name) {
  AsciiOutsideComments(toml_text).check();
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& err) {
    throw ConfigError("(syntax)", std::string(err.description()), static_cast<int>(err.source().begin.line));
  }
  return Reader(root).read();
}

Config load_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (!(in && text << in.rdbuf())) throw ConfigError("(file)", "cannot read " + path.string());
  return load_string(text.str(), path.string());
}

}  // namespace nephra::config
