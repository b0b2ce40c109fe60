#include "node.h"

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace nephra::test {

fs::path source_dir() { return NEPHRA_SOURCE_DIR; }

fs::path shared_dir() {
  const char* env = std::getenv("NEPHRA_SHARED");
  const fs::path dir = env != nullptr ? fs::path(env) : source_dir() / ".." / "shared";
  return fs::exists(dir / "data") ? fs::canonical(dir) : fs::path();
}

fs::path model_manifest() {
  if (const char* env = std::getenv("NEPHRA_MODEL"); env != nullptr && *env != '\0') return env;
  return source_dir() / "models" / "nephra-kidney.json";
}

fs::path ct_series_dir() {
  const fs::path shared = shared_dir();
  if (!shared.empty()) return shared / "data" / "dicom" / "tcia-pancreatic-ct-cbct-seg-001";
  return source_dir() / "tests" / "data" / "tcia-kidney-slices";
}

TestNode::TestNode(const fs::path& work_dir, NodeOptions options)
    : work_(work_dir),
      spool_(options.spool_dir.empty() ? work_dir / "spool" : options.spool_dir),
      config_(work_dir / "nephra.toml"),
      port_(free_port()),
      http_port_(free_port()),
      launcher_(options.launcher) {
  write_config(options);
}

void TestNode::write_config(const NodeOptions& options) {
  std::ostringstream cfg;
  cfg << "[node]\nae_title = \"NEPHRA\"\nbind = \"127.0.0.1\"\nport = " << port_ << "\nspool_dir = \""
      << spool_.string() << "\"\nmax_associations = " << options.max_associations
      << "\nmin_free_spool_mb = " << options.min_free_spool_mb << "\nmax_instance_mb = " << options.max_instance_mb
      << "\ncheck_peer_address = " << (options.check_peer_address ? "true" : "false") << "\n"
      << options.node_toml << "\n[study]\nstable_seconds = " << options.stable_seconds
      << "\nmax_instances = " << options.max_instances << "\n[engine]\nmodel = \"" << model_manifest().string()
      << "\"\nthreads = 2\n[results]\nretry_initial_seconds = " << options.retry_initial_seconds
      << "\nretry_max_seconds = " << options.retry_max_seconds
      << "\ntimeout_seconds = " << options.results_timeout_seconds
      << "\nshadow = " << (options.shadow ? "true" : "false") << "\n[http]\nport = " << http_port_
      << "\ntry_page = " << (options.try_page ? "true" : "false") << "\n[log]\nlevel = \"debug\"\ndcmtk_level = \""
      << options.dcmtk_level << "\"\n";
  for (const auto& ae : options.peers) {
    const auto port = options.peer_ports.find(ae);
    const auto host = options.peer_hosts.find(ae);
    cfg << "[[peers]]\nae_title = \"" << ae << "\"\nhost = \""
        << (host == options.peer_hosts.end() ? "127.0.0.1" : host->second)
        << "\"\nport = " << (port == options.peer_ports.end() ? 1 : port->second) << "\n";
    if (std::find(options.peer_tls.begin(), options.peer_tls.end(), ae) != options.peer_tls.end())
      cfg << "tls = true\n";
    if (const auto name = options.peer_tls_names.find(ae); name != options.peer_tls_names.end())
      cfg << "tls_name = \"" << name->second << "\"\n";
  }
  cfg << options.extra_toml;
  write_config_text(cfg.str());
}

void TestNode::write_config_text(const std::string& toml) {
  const fs::path tmp = config_.string() + ".tmp";
  std::ofstream(tmp) << toml;
  fs::rename(tmp, config_);  // the node never reads half a file
}

std::string TestNode::http_get(const std::string& path, int* status) const { return curl({}, path, status); }

std::string TestNode::http_post(const std::string& path, const fs::path& file, int* status) const {
  return curl({"--data-binary", "@" + file.string(), "-H", "Content-Type: application/octet-stream"}, path, status);
}

std::string TestNode::curl(const std::vector<std::string>& options, const std::string& path, int* status) const {
  const fs::path body = work_ / "http-body.txt";
  const fs::path meta = work_ / "http-status.txt";
  fs::remove(body);
  fs::remove(meta);  // run() appends
  std::vector<std::string> argv = {"curl", "-s", "-o", body.string(), "-w", "%{http_code}", "--max-time", "30"};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.push_back("http://127.0.0.1:" + std::to_string(http_port_) + path);
  const int rc = run(argv, meta);
  if (status != nullptr) *status = rc == 0 ? std::atoi(read_file(meta).c_str()) : 0;
  return rc == 0 && fs::exists(body) ? read_file(body) : std::string();
}

void TestNode::start() {
  const size_t offset = log().size();  // the log is appended across restarts: only this run's lines count
  std::vector<std::string> argv = launcher_;
  argv.insert(argv.end(), {NEPHRAD_PATH, "--config", config_.string()});
  process_ = Process(argv, work_ / "nephrad.log");
  const auto ready = [&] { return log().find("NODE_READY", offset) != std::string::npos; };
  const bool up = wait_until([&] { return ready() || !process_.running(); }, std::chrono::seconds(20));
  if (!up || !ready() || !process_.running()) throw std::runtime_error("nephrad did not start:\n" + log());
}

void TestNode::stop() {
  process_.signal(SIGTERM);
  if (const int rc = process_.wait(); rc != 0) throw std::runtime_error("nephrad exited " + std::to_string(rc));
}

void TestNode::kill9() {
  process_.signal(SIGKILL);
  process_.wait();
}

std::string TestNode::log() const { return read_file(work_ / "nephrad.log"); }

std::vector<nlohmann::json> TestNode::manifests() const {
  std::vector<nlohmann::json> out;
  if (!fs::exists(spool_ / "studies")) return out;
  for (const auto& study : fs::directory_iterator(spool_ / "studies")) {
    if (!fs::exists(study.path() / "rounds")) continue;
    for (const auto& round : fs::directory_iterator(study.path() / "rounds")) {
      const auto state = nlohmann::json::parse(read_file(round.path() / "state.json"), nullptr, false);
      const std::string name = state.is_object() ? state.value("state", "") : "";
      if ((name == "classified" || name == "done") && fs::exists(round.path() / "manifest.json"))
        out.push_back(nlohmann::json::parse(read_file(round.path() / "manifest.json")));
    }
  }
  return out;
}

bool TestNode::wait_for_manifests(size_t count, std::chrono::milliseconds timeout) const {
  return wait_until([&] { return manifests().size() >= count; }, timeout);
}

size_t TestNode::open_instances() const {
  size_t n = 0;
  std::error_code ec;
  for (const auto& study : fs::directory_iterator(spool_ / "studies", ec)) {
    for (const auto& f : fs::directory_iterator(study.path() / "open", ec))
      n += f.path().extension() == ".dcm" ? 1U : 0U;
  }
  return n;
}

int TestNode::storescu(const std::string& calling_ae, const std::vector<std::string>& files_or_dirs,
                       const std::string& log_name, const std::vector<std::string>& options) const {
  std::vector<std::string> argv = {"storescu", "-v", "-aet", calling_ae, "-aec", "NEPHRA", "+sd", "+r", "-nh"};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.insert(argv.end(), {"-R", "127.0.0.1", std::to_string(port_)});
  argv.insert(argv.end(), files_or_dirs.begin(), files_or_dirs.end());
  return run(argv, work_ / log_name);
}

int TestNode::echoscu(const std::string& calling_ae) const {
  return run({"echoscu", "-aet", calling_ae, "-aec", "NEPHRA", "127.0.0.1", std::to_string(port_)},
             work_ / "echoscu.log");
}

}  // namespace nephra::test
