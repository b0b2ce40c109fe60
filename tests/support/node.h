#pragma once
// The real nephrad binary on a free loopback port with a private config and spool.
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "process.h"

namespace nephra::test {

// Where the read-only shared data lives; empty when the folder is genuinely absent.
std::filesystem::path shared_dir();
// The 134-slice TCIA series from ../shared, or the committed 5-slice fixture when ../shared is absent.
std::filesystem::path ct_series_dir();
std::filesystem::path source_dir();
// The shipped model manifest, or $NEPHRA_MODEL.
std::filesystem::path model_manifest();

struct NodeOptions {
  double stable_seconds = 1.0;
  std::vector<std::string> peers = {"STORESCU", "SENDER_A", "SENDER_B"};
  std::filesystem::path spool_dir;  // default: <work>/spool
  int max_associations = 16;
  std::map<std::string, int> peer_ports;  // results port per peer AE (default 1: nobody listens)
  double retry_initial_seconds = 0.5;
  double retry_max_seconds = 2.0;
  int results_timeout_seconds = 30;
  int min_free_spool_mb = 0;  // tests run on whatever disk there is
  int max_instances = 5000;
  double max_instance_mb = 1024;
  bool check_peer_address = true;
  std::map<std::string, std::string> peer_hosts;      // host per peer AE (default 127.0.0.1)
  std::vector<std::string> peer_tls;                  // peers whose results go over TLS
  std::map<std::string, std::string> peer_tls_names;  // the name each one's certificate carries (default: host)
  std::string dcmtk_level = "warn";
  bool try_page = false;
  bool shadow = false;                // results.shadow
  std::string node_toml;              // appended verbatim to the [node] table
  std::string extra_toml;             // appended verbatim (e.g. a [pipeline] table)
  std::vector<std::string> launcher;  // runs nephrad through this (e.g. prlimit), which must exec it in place
};

class TestNode {
 public:
  explicit TestNode(const std::filesystem::path& work_dir, NodeOptions options = {});
  void start();
  void stop();  // SIGTERM, expects exit 0
  void kill9();
  void signal(int signo) const { process_.signal(signo); }
  int wait() { return process_.wait(); }

  // Rewrites the node's configuration file (it takes effect on SIGHUP or at the next start).
  void write_config(const NodeOptions& options);
  void write_config_text(const std::string& toml);

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] int http_port() const { return http_port_; }
  [[nodiscard]] pid_t pid() const { return process_.pid(); }
  // Body of GET http://127.0.0.1:<http_port><path>, via curl; empty if the request failed.
  [[nodiscard]] std::string http_get(const std::string& path, int* status = nullptr) const;
  // Body of a POST of the file's bytes to the same endpoint.
  [[nodiscard]] std::string http_post(const std::string& path, const std::filesystem::path& file,
                                      int* status = nullptr) const;
  [[nodiscard]] const std::filesystem::path& spool() const { return spool_; }
  [[nodiscard]] std::string log() const;
  [[nodiscard]] bool running() { return process_.running(); }

  // manifests of finished rounds, across studies
  [[nodiscard]] std::vector<nlohmann::json> manifests() const;
  bool wait_for_manifests(size_t count, std::chrono::milliseconds timeout = std::chrono::seconds(60)) const;
  [[nodiscard]] size_t open_instances() const;

  // storescu from DCMTK, as a hospital archive would send
  int storescu(const std::string& calling_ae, const std::vector<std::string>& files_or_dirs,
               const std::string& log_name = "storescu.log", const std::vector<std::string>& options = {}) const;
  int echoscu(const std::string& calling_ae) const;

 private:
  std::filesystem::path work_;
  std::filesystem::path spool_;
  std::filesystem::path config_;
  int port_;
  int http_port_;
  std::vector<std::string> launcher_;
  Process process_;

  std::string curl(const std::vector<std::string>& options, const std::string& path, int* status) const;
};

}  // namespace nephra::test
