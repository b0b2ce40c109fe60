// The node as systemd runs it: sd_notify readiness and watchdog, SIGHUP reload, SIGTERM while a send hangs,
// and the HTTP health and metrics endpoint, all against the real nephrad binary.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <thread>

#include "node.h"

namespace fs = std::filesystem;
using nephra::test::NodeOptions;
using nephra::test::TempDir;
using nephra::test::TestNode;

namespace {

// Plays systemd's side of sd_notify(3): a datagram socket the node is pointed at by NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(const fs::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.string().copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) throw std::runtime_error("bind notify");
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;
  ~NotifySocket() { ::close(fd_); }

  // Every message received until one contains `needle` (true) or the timeout passes (false).
  bool wait_for(const std::string& needle, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) continue;
      messages_.emplace_back(buf, static_cast<size_t>(n));
      if (messages_.back().find(needle) != std::string::npos) return true;
    }
    return false;
  }
  [[nodiscard]] size_t count(const std::string& needle) const {
    return static_cast<size_t>(std::count_if(
        messages_.begin(), messages_.end(), [&](const std::string& m) { return m.find(needle) != std::string::npos; }));
  }

 private:
  fs::path path_;
  int fd_ = -1;
  std::vector<std::string> messages_;
};

// An archive that accepts TCP connections and then never answers: a send to it hangs until its timeout.
class SilentArchive {
 public:
  SilentArchive() : port_(nephra::test::free_port()) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd_, 8) != 0) {
      throw std::runtime_error("silent archive: cannot listen");
    }
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd pfd{fd_, POLLIN, 0};
        if (::poll(&pfd, 1, 100) <= 0) continue;
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c >= 0) {
          accepted_fds_.push_back(c);
          ++accepted_;
        }
      }
    });
  }
  SilentArchive(const SilentArchive&) = delete;
  SilentArchive& operator=(const SilentArchive&) = delete;
  ~SilentArchive() {
    stop_ = true;
    thread_.join();
    for (const int c : accepted_fds_) ::close(c);
    ::close(fd_);
  }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] int accepted() const { return accepted_.load(); }

 private:
  int port_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> accepted_fds_;
  std::thread thread_;
};

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file()) out.push_back(e.path());
  }
  return out;
}

fs::path only_round(const TestNode& node) {
  for (const auto& study : fs::directory_iterator(node.spool() / "studies")) {
    for (const auto& round : fs::directory_iterator(study.path() / "rounds")) return round.path();
  }
  return {};
}

// The round's state as its state.json records it.
std::string state_of(const fs::path& round) {
  const auto j = nlohmann::json::parse(nephra::test::read_file(round / "state.json"), nullptr, false);
  return j.is_object() ? j.value("state", "") : "";
}

double metric(const std::string& text, const std::string& series) {
  const std::regex line("(^|\n)" + std::regex_replace(series, std::regex(R"([{}()\[\].+*?^$|\\])"), R"(\$&)") +
                        " ([0-9.e+-]+)");
  std::smatch m;
  return std::regex_search(text, m, line) ? std::stod(m[2].str()) : -1.0;
}

std::string fixture() { return (nephra::test::source_dir() / "tests" / "data" / "tcia-kidney-slices").string(); }

}  // namespace

TEST(Service, TellsSystemdItIsReadyOnlyOnceItAcceptsAndFeedsTheWatchdogThenSaysStopping) {
  TempDir tmp;
  TestNode node(tmp.path());
  NotifySocket notify(tmp.path() / "notify.sock");
  ::setenv("NOTIFY_SOCKET", (tmp.path() / "notify.sock").c_str(), 1);
  ::setenv("WATCHDOG_USEC", "400000", 1);
  node.start();
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");

  ASSERT_TRUE(notify.wait_for("READY=1", std::chrono::seconds(10)));
  EXPECT_EQ(node.echoscu("STORESCU"), 0) << "READY=1 was sent before the DICOM port accepted";
  ASSERT_TRUE(notify.wait_for("WATCHDOG=1", std::chrono::seconds(5)));
  ASSERT_TRUE(notify.wait_for("WATCHDOG=1", std::chrono::seconds(5)));
  EXPECT_GE(notify.count("WATCHDOG=1"), 2U);

  node.signal(SIGTERM);
  EXPECT_TRUE(notify.wait_for("STOPPING=1", std::chrono::seconds(10)));
  EXPECT_EQ(node.wait(), 0);
}

TEST(Service, SighupAppliesAGoodConfigurationAndKeepsTheRunningOneWhenTheNewOneIsBad) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU"};
  TestNode node(tmp.path(), options);
  node.start();
  EXPECT_NE(node.echoscu("NEWCOMER"), 0) << "an unknown AE title must be refused";

  options.peers.push_back("NEWCOMER");
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("CONFIG_RELOADED") != std::string::npos; },
                                       std::chrono::seconds(10)));
  EXPECT_EQ(node.echoscu("NEWCOMER"), 0) << "the reloaded peer list is not in force";

  node.write_config_text("[node]\nport = \"not a number\"\n");
  node.signal(SIGHUP);
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("CONFIG_RELOAD_REJECTED") != std::string::npos; },
                                       std::chrono::seconds(10)));
  EXPECT_NE(node.log().find("key=node.port"), std::string::npos) << node.log();
  EXPECT_TRUE(node.running());
  EXPECT_EQ(node.echoscu("NEWCOMER"), 0) << "a rejected reload must leave the running configuration in force";
  EXPECT_EQ(metric(node.http_get("/metrics"), R"(nephra_config_reloads_total{result="rejected"})"), 1.0);
  node.stop();
}

TEST(Service, MetricsParseAsPrometheusTextAndCountWhatArrives) {
  TempDir tmp;
  NodeOptions options;
  options.stable_seconds = 0.5;
  TestNode node(tmp.path(), options);
  node.start();

  int status = 0;
  const std::string health = node.http_get("/healthz", &status);
  EXPECT_EQ(status, 200) << health;
  EXPECT_NE(health.find("\"status\":\"ready\""), std::string::npos) << health;
  (void)node.http_get("/nothing-here", &status);
  EXPECT_EQ(status, 404);

  const std::string before = node.http_get("/metrics");
  EXPECT_EQ(metric(before, "nephra_instances_received_total"), 0.0) << before;
  ASSERT_EQ(node.storescu("STORESCU", {fixture()}), 0);
  EXPECT_NE(node.echoscu("INTRUDER"), 0);
  // The slice counter moves before the SR and heatmaps are written; the stage histogram only once the step is over.
  ASSERT_TRUE(nephra::test::wait_until(
      [&] {
        return metric(node.http_get("/metrics"), R"(nephra_stage_duration_seconds_count{stage="classify"})") >= 1;
      },
      std::chrono::seconds(60)));
  const std::string after = node.http_get("/metrics");
  EXPECT_EQ(metric(after, "nephra_instances_received_total"), 5.0) << after;
  EXPECT_EQ(metric(after, "nephra_slices_classified_total"), 5.0);
  EXPECT_EQ(metric(after, R"(nephra_associations_total{result="rejected_calling_ae"})"), 1.0);
  EXPECT_EQ(metric(after, "nephra_studies_completed_total"), 1.0);
  EXPECT_EQ(metric(after, R"(nephra_stage_duration_seconds_count{stage="classify"})"), 1.0);
  EXPECT_GT(metric(after, "nephra_spool_free_bytes"), 0.0);

  std::ofstream(tmp.path() / "metrics.txt") << after;
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool (Debian package prometheus) is not installed: scripts/install-deps.sh installs it";
  }
  const int rc = nephra::test::run({"sh", "-c", "promtool check metrics < " + (tmp.path() / "metrics.txt").string()},
                                   tmp.path() / "promtool.log");
  EXPECT_EQ(rc, 0) << nephra::test::read_file(tmp.path() / "promtool.log");
  node.stop();
}

// A hung archive beside a healthy one, against the real node: HUNG's results wait on its silence (up to the 15 s
// timeout, again and again), while the same CT sent by GOOD (another study, answered to another archive) gets its
// results well within one timeout.
TEST(Service, AHungArchiveDelaysOnlyItsOwnResults) {
  TempDir tmp;
  SilentArchive silent;
  const fs::path received = tmp.path() / "received";
  auto good = nephra::test::start_storescp(received, tmp.path() / "storescp.log");
  NodeOptions options;
  options.stable_seconds = 0.5;
  options.peers = {"HUNG", "GOOD"};
  options.peer_ports = {{"HUNG", silent.port()}, {"GOOD", good.port}};
  options.results_timeout_seconds = 15;
  TestNode node(tmp.path(), options);
  node.start();
  ASSERT_EQ(node.storescu("HUNG", {fixture()}), 0);
  ASSERT_TRUE(nephra::test::wait_until([&] { return silent.accepted() > 0; }, std::chrono::seconds(60))) << node.log();
  ASSERT_EQ(node.storescu("GOOD", {fixture()}), 0);
  EXPECT_TRUE(nephra::test::wait_until(
      [&] { return std::regex_search(node.log(), std::regex("RESULT_DELIVERED[^\n]*peer=GOOD")); },
      std::chrono::seconds(10)))
      << "GOOD's results waited for HUNG's archive\n"
      << node.log();
  EXPECT_FALSE(files_in(received).empty());
  EXPECT_FALSE(std::regex_search(node.log(), std::regex("RESULT_DELIVERED[^\n]*peer=HUNG")));
  node.stop();
}

TEST(Service, SigtermWhileTheArchiveHangsExitsCleanlyAndTheNextStartDeliversEverything) {
  TempDir tmp;
  SilentArchive silent;
  NodeOptions options;
  options.stable_seconds = 0.5;
  options.peers = {"STORESCU"};
  options.peer_ports = {{"STORESCU", silent.port()}};
  options.results_timeout_seconds = 5;
  TestNode node(tmp.path(), options);
  node.start();
  ASSERT_EQ(node.storescu("STORESCU", {fixture()}), 0);
  ASSERT_TRUE(nephra::test::wait_until([&] { return silent.accepted() > 0; }, std::chrono::seconds(60))) << node.log();

  node.signal(SIGTERM);  // while the node waits for the archive's answer
  EXPECT_EQ(node.wait(), 0) << node.log();
  const fs::path round = only_round(node);
  const auto waiting = files_in(round / "out");
  ASSERT_FALSE(waiting.empty()) << "the results must still be waiting on disk";
  EXPECT_EQ(state_of(round), "classified");

  const fs::path received = tmp.path() / "received";
  auto archive = nephra::test::start_storescp(received, tmp.path() / "storescp.log");
  options.peer_ports = {{"STORESCU", archive.port}};
  node.write_config(options);
  node.start();
  ASSERT_TRUE(nephra::test::wait_until([&] { return state_of(round) == "done"; }, std::chrono::seconds(60)))
      << node.log();
  EXPECT_EQ(files_in(received).size(), waiting.size());
  EXPECT_TRUE(files_in(round / "out").empty());
  node.stop();
  archive.process.signal(SIGTERM);
  archive.process.wait();
}

TEST(Service, DcmtkMessagesGoThroughTheNodesLogWhichNamesNoPatient) {
  TempDir tmp;
  NodeOptions options;
  options.stable_seconds = 0.5;
  options.dcmtk_level = "info";
  TestNode node(tmp.path(), options);
  node.start();
  ASSERT_EQ(node.storescu("STORESCU", {fixture()}), 0);
  ASSERT_TRUE(node.wait_for_manifests(1));
  node.stop();
  const std::string log = node.log();
  EXPECT_NE(log.find("DCMTK logger=dcmtk.dcmnet message=\"Association Received"), std::string::npos) << log;
  // The fixture's patient name and ID, and its Study Instance UID: the log (debug level) holds none of them.
  for (const char* identifying :
       {"Pancreas-CT-CB_001", "1.3.6.1.4.1.14519.5.2.1.21087345762211724523378497892240459677"}) {
    EXPECT_EQ(log.find(identifying), std::string::npos) << identifying;
  }
}

// The spool's disk fills up after the study was acknowledged (another process took the space): sealing, the
// study job or the result files fail with "no space", are tried again, and once space is back the archive gets the
// results exactly once.
TEST(Service, ADiskThatFillsAfterIntakeEndsWithTheResultsDeliveredOnce) {
  TempDir tmp;
  const fs::path tiny = tmp.path() / "tiny";
  const nephra::test::SmallTmpfs tmpfs(tiny, "8m");
  if (!tmpfs.mounted()) GTEST_SKIP() << tmpfs.error();
  const fs::path received = tmp.path() / "received";
  auto archive = nephra::test::start_storescp(received, tmp.path() / "storescp.log");
  NodeOptions options;
  options.stable_seconds = 2.0;
  options.peers = {"STORESCU"};
  options.peer_ports = {{"STORESCU", archive.port}};
  options.spool_dir = tiny / "spool";
  options.extra_toml = "[pipeline]\nretry_seconds = 1\n";
  TestNode node(tmp.path(), options);
  node.start();
  ASSERT_EQ(node.storescu("STORESCU", {fixture()}), 0);

  const fs::path filler = tiny / "filler";
  {
    std::ofstream out(filler, std::ios::binary);
    const std::string block(64 * 1024, 'x');
    while (out.write(block.data(), static_cast<std::streamsize>(block.size())) && out.flush()) {
    }
  }
  fs::resize_file(filler, fs::file_size(filler) - 16 * 1024);  // a few pages left: not enough for the results
  ASSERT_TRUE(nephra::test::wait_until(
      [&] {
        const std::string log = node.log();
        return log.find("JOB_RETRY") != std::string::npos || log.find("STUDY_SEAL_FAILED") != std::string::npos;
      },
      std::chrono::seconds(60)))
      << node.log();
  EXPECT_EQ(node.log().find("RESULT_DELIVERED"), std::string::npos);
  fs::remove(filler);
  ASSERT_TRUE(nephra::test::wait_until([&] { return node.log().find("RESULT_DELIVERED") != std::string::npos; },
                                       std::chrono::seconds(120)))
      << node.log();
  size_t srs = 0;
  for (const auto& f : files_in(received)) srs += f.filename().string().rfind("SR", 0) == 0 ? 1U : 0U;
  EXPECT_EQ(srs, 1U);
  EXPECT_EQ(node.log().find("ROUND_QUARANTINED"), std::string::npos);
  node.stop();
  archive.process.signal(SIGTERM);
  archive.process.wait();
}
