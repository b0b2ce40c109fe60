// Who may send, how much, and what: peer address checks, the spool high-water mark, the per-study instance limit
// and hostile UIDs, against the real nephrad binary and DCMTK's tools.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "node.h"

namespace fs = std::filesystem;
using nephra::test::NodeOptions;
using nephra::test::TempDir;
using nephra::test::TestNode;

namespace {

fs::path fixture_dir() { return nephra::test::source_dir() / "tests" / "data" / "tcia-kidney-slices"; }

fs::path first_fixture_slice() {
  for (const auto& e : fs::directory_iterator(fixture_dir())) {
    if (e.path().extension() == ".dcm") return e.path();
  }
  return {};
}

bool log_has(const TestNode& node, const std::string& text) {
  return nephra::test::wait_until([&] { return node.log().find(text) != std::string::npos; }, std::chrono::seconds(10));
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

// A copy of a fixture slice with one attribute overwritten (dcmodify also updates the meta header's UIDs).
fs::path modified_slice(const fs::path& dir, const std::string& name, const std::string& assignment) {
  fs::path out = dir / name;
  fs::copy_file(first_fixture_slice(), out);
  const int rc = nephra::test::run({"dcmodify", "-nb", "-m", assignment, out.string()}, dir / (name + ".log"));
  if (rc != 0) throw std::runtime_error("dcmodify failed: " + nephra::test::read_file(dir / (name + ".log")));
  return out;
}

std::string raw_store(const TestNode& node, const fs::path& file, const fs::path& dir) {
  const fs::path out = dir / "raw_scu.txt";
  fs::remove(out);
  nephra::test::run({"/usr/bin/python3", (nephra::test::source_dir() / "tests/tools/raw_scu.py").string(), "127.0.0.1",
                     std::to_string(node.port()), "STORESCU", "NEPHRA", "as-is", file.string()},
                    out);
  return nephra::test::read_file(out);
}

// A raw TCP client that sends what it is told, for callers no DICOM tool would imitate.
class RawClient {
 public:
  explicit RawClient(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) throw std::runtime_error("connect");
    const timeval wait{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  ~RawClient() { ::close(fd_); }
  [[nodiscard]] bool send(const std::string& bytes) const {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) > 0;
  }
  // True when the node closed the connection within 10 s without answering anything.
  [[nodiscard]] bool closed_by_node() const {
    char byte = 0;
    const ssize_t n = ::recv(fd_, &byte, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }
  // The same, without waiting: true only when the close has already arrived.
  [[nodiscard]] bool already_closed() const {
    char byte = 0;
    const ssize_t n = ::recv(fd_, &byte, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  int fd_;
};

// An A-ASSOCIATE-RQ header (PDU type 1) that promises `length` more bytes.
std::string associate_header(uint32_t length) {
  return std::string{1,
                     0,
                     static_cast<char>(length >> 24U),
                     static_cast<char>((length >> 16U) & 0xFFU),
                     static_cast<char>((length >> 8U) & 0xFFU),
                     static_cast<char>(length & 0xFFU)};
}

// Peak resident memory of a process since the last reset_peak_memory(), in MB (Linux's VmHWM).
double peak_memory_mb(pid_t pid) {
  const std::string status = nephra::test::read_file("/proc/" + std::to_string(pid) + "/status");
  const auto at = status.find("VmHWM:");
  return at == std::string::npos ? -1.0 : std::stod(status.substr(at + 6)) / 1024.0;
}

void reset_peak_memory(pid_t pid) { std::ofstream("/proc/" + std::to_string(pid) + "/clear_refs") << "5"; }

fs::path big_ct(const fs::path& dir, const std::string& name, const std::vector<std::string>& args) {
  const fs::path out = dir / name;
  std::vector<std::string> argv = {"/usr/bin/python3",
                                   (nephra::test::source_dir() / "tests/tools/make_big_ct.py").string(), out.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  if (nephra::test::run(argv, dir / (name + ".log")) != 0) {
    throw std::runtime_error("make_big_ct.py: " + nephra::test::read_file(dir / (name + ".log")));
  }
  return out;
}

}  // namespace

TEST(Guard, ADribblingCallerIsCutAtTheSetupDeadlineAndHoldsUpNobody) {
  TempDir tmp;
  NodeOptions options;
  options.node_toml = "association_setup_seconds = 3\n";
  TestNode node(tmp.path(), options);
  node.start();
  RawClient dribbler(node.port());
  ASSERT_TRUE(dribbler.send(associate_header(1000)));
  std::atomic<bool> done{false};
  std::thread drip([&] {
    while (!done && dribbler.send("x")) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  });
  for (int i = 0; i < 3; ++i) EXPECT_EQ(node.echoscu("STORESCU"), 0) << "echo " << i << " while a caller dribbles";
  EXPECT_TRUE(log_has(node, "SCP_ASSOC_SETUP_TIMEOUT peer=127.0.0.1"));
  EXPECT_TRUE(dribbler.closed_by_node());
  done = true;
  drip.join();
  EXPECT_EQ(node.echoscu("STORESCU"), 0);
  EXPECT_NE(node.http_get("/metrics").find("nephra_associations_total{result=\"setup_timeout\"} 1"), std::string::npos);
  node.stop();
}

TEST(Guard, ForeignOrOversizedRequestsAndTooManyWaitingCallersAreClosedAtOnce) {
  TempDir tmp;
  NodeOptions options;
  options.node_toml = "association_setup_seconds = 120\nmax_waiting_per_address = 3\n";
  TestNode node(tmp.path(), options);
  node.start();
  {
    RawClient web(node.port());
    ASSERT_TRUE(web.send("GET / HTTP/1.0\r\n\r\n"));
    EXPECT_TRUE(web.closed_by_node());
    EXPECT_TRUE(log_has(node, "not an A-ASSOCIATE-RQ (PDU type 71)"));
    RawClient huge(node.port());
    ASSERT_TRUE(huge.send(associate_header(0x7FFFFFFF)));
    EXPECT_TRUE(huge.closed_by_node());
    EXPECT_TRUE(log_has(node, "request of 2147483653 bytes, limit 65536"));
  }
  {
    std::vector<std::unique_ptr<RawClient>> silent;
    silent.reserve(3);
    for (int i = 0; i < 3; ++i) silent.push_back(std::make_unique<RawClient>(node.port()));
    ASSERT_TRUE(nephra::test::wait_until(
        [&] { return node.http_get("/metrics").find("nephra_connections_waiting 3") != std::string::npos; },
        std::chrono::seconds(10)));
    RawClient fourth(node.port());
    EXPECT_TRUE(fourth.closed_by_node()) << "long before the 120 s deadline";
    EXPECT_TRUE(log_has(node, "SCP_CONNECTION_REFUSED reason=too_many_waiting_from_address peer=127.0.0.1"));
  }
  EXPECT_EQ(node.echoscu("STORESCU"), 0) << "the silent callers are gone";
  node.stop();
}

TEST(Guard, ACallerFromAnotherAddressThanItsPeerIsRefusedUnlessTheCheckIsOff) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU", "BYNAME"};
  options.peer_hosts = {{"STORESCU", "127.0.0.2"}, {"BYNAME", "localhost"}};
  TestNode node(tmp.path(), options);
  node.start();
  EXPECT_NE(node.echoscu("STORESCU"), 0) << "127.0.0.1 is not 127.0.0.2";
  EXPECT_TRUE(log_has(node, "reason=calling_address_not_allowed calling_ae=STORESCU peer=127.0.0.1"));
  EXPECT_EQ(node.echoscu("BYNAME"), 0) << "a host name that resolves to the caller's address is accepted";

  options.check_peer_address = false;
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(log_has(node, "CONFIG_RELOADED"));
  EXPECT_EQ(node.echoscu("STORESCU"), 0);
  node.stop();
}

TEST(Guard, BelowTheSpoolHighWaterMarkNewStudiesAreRefusedAndAcceptedAgainOnceSpaceIsBack) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU"};
  TestNode node(tmp.path(), options);
  node.start();

  options.min_free_spool_mb = 1048576;  // a terabyte: "the disk is nearly full"
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(log_has(node, "CONFIG_RELOADED"));
  EXPECT_NE(node.storescu("STORESCU", {fixture_dir().string()}), 0);
  EXPECT_TRUE(log_has(node, "SCP_ASSOC_REJECTED reason=spool_low_on_space"));
  int status = 0;
  const std::string health = node.http_get("/healthz", &status);
  EXPECT_EQ(status, 503);
  EXPECT_NE(health.find("spool low on space"), std::string::npos) << health;
  EXPECT_EQ(node.open_instances(), 0U);

  options.min_free_spool_mb = 0;  // space freed
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(
      nephra::test::wait_until([&] { return count_of(node.log(), "CONFIG_RELOADED") == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(node.storescu("STORESCU", {fixture_dir().string()}), 0);
  EXPECT_EQ(node.open_instances(), 5U);
  (void)node.http_get("/healthz", &status);
  EXPECT_EQ(status, 200);
  node.stop();
}

TEST(Guard, AStudyBeyondItsInstanceLimitGetsOutOfResourcesForTheRest) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU"};
  options.max_instances = 3;
  options.stable_seconds = 30;  // the round stays open while we count
  TestNode node(tmp.path(), options);
  node.start();
  node.storescu("STORESCU", {fixture_dir().string()}, "limited.log");
  const std::string sent = nephra::test::read_file(tmp.path() / "limited.log");
  EXPECT_EQ(count_of(sent, "Received Store Response (Success)"), 3U) << sent;
  EXPECT_EQ(node.open_instances(), 3U);
  EXPECT_EQ(count_of(node.log(), "reason=study_instance_limit"), 2U);
  EXPECT_NE(node.http_get("/metrics").find("nephra_instances_rejected_total{reason=\"study_instance_limit\"} 2"),
            std::string::npos);
  node.stop();
}

TEST(Guard, AnInstanceLargerThanTheLimitIsRefusedAndTheNextSmallerOneStored) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU"};
  options.max_instance_mb = 0.1;  // the fixture's slices are about half a megabyte
  TestNode node(tmp.path(), options);
  node.start();
  node.storescu("STORESCU", {first_fixture_slice().string()}, "large.log");
  EXPECT_EQ(count_of(nephra::test::read_file(tmp.path() / "large.log"), "Received Store Response (Success)"), 0U);
  EXPECT_TRUE(log_has(node, "reason=instance_too_large"));
  EXPECT_EQ(node.open_instances(), 0U);

  options.max_instance_mb = 16;
  node.write_config(options);
  node.signal(SIGHUP);
  ASSERT_TRUE(log_has(node, "CONFIG_RELOADED"));
  EXPECT_EQ(node.storescu("STORESCU", {first_fixture_slice().string()}), 0);
  EXPECT_EQ(node.open_instances(), 1U);
  node.stop();
}

// 64 MB of pixels plain, deflated to 64 KB and RLE-compressed to 1 MB, against an 8 MB limit: each is refused with
// 0xA700 for its own reason, the node's memory does not grow by the data set, and the next normal slice is stored.
TEST(Guard, OversizedDataSetsAreRefusedWithoutEverSittingInMemory) {
  TempDir tmp;
  NodeOptions options;
  options.peers = {"STORESCU"};
  options.max_instance_mb = 8;
  TestNode node(tmp.path(), options);
  node.start();
  const fs::path plain = big_ct(tmp.path(), "plain.dcm", {"4096", "4096", "2"});
  const fs::path bomb = big_ct(tmp.path(), "bomb.dcm", {"4096", "4096", "2", "deflated"});
  const fs::path rle = tmp.path() / "rle.dcm";
  ASSERT_EQ(nephra::test::run({"dcmcrle", plain.string(), rle.string()}, tmp.path() / "dcmcrle.log"), 0);
  reset_peak_memory(node.pid());
  const double before = peak_memory_mb(node.pid());
  ASSERT_GT(before, 0.0);

  node.storescu("STORESCU", {plain.string()}, "plain.log");
  EXPECT_TRUE(log_has(node, "reason=instance_too_large calling_ae=STORESCU status=0xA700 size_mb="));
  node.storescu("STORESCU", {bomb.string()}, "bomb.log", {"-xd"});
  EXPECT_TRUE(log_has(node, "status=0xA700 inflated_mb="));
  node.storescu("STORESCU", {rle.string()}, "rle.log", {"-xr"});
  EXPECT_TRUE(log_has(node, "status=0xA700 decoded_mb=64.0"));
  for (const char* name : {"plain.log", "bomb.log", "rle.log"}) {
    EXPECT_EQ(count_of(nephra::test::read_file(tmp.path() / name), "Received Store Response (Success)"), 0U) << name;
  }
#ifndef __SANITIZE_ADDRESS__  // ASan keeps freed memory in quarantine: resident size says nothing there
  EXPECT_LT(peak_memory_mb(node.pid()) - before, 24.0) << "a 64 MB data set was held in memory";
#endif
  EXPECT_EQ(node.open_instances(), 0U);
  EXPECT_EQ(node.storescu("STORESCU", {first_fixture_slice().string()}), 0);
  const fs::path deflated = tmp.path() / "deflated.dcm";
  ASSERT_EQ(nephra::test::run({"dcmconv", "+td", first_fixture_slice().string(), deflated.string()},
                              tmp.path() / "dcmconv.log"),
            0);
  ASSERT_EQ(nephra::test::run({"dcmodify", "-nb", "-gin", deflated.string()}, tmp.path() / "dcmodify.log"), 0);
  EXPECT_EQ(node.storescu("STORESCU", {deflated.string()}, "deflated.log", {"-xd"}), 0);
  EXPECT_EQ(node.open_instances(), 2U) << "a normal slice, plain and deflated";
  node.stop();
}

TEST(Guard, HostileUidsAreRefusedAndNothingLandsOutsideTheSpool) {
  TempDir tmp;
  TestNode node(tmp.path());
  node.start();
  const fs::path traversal = modified_slice(tmp.path(), "traversal.dcm", "(0020,000D)=1.2.3/../../../../tmp/nephra");
  EXPECT_NE(raw_store(node, traversal, tmp.path()).find("status=0xC000"), std::string::npos);
  const fs::path long_uid = modified_slice(tmp.path(), "long.dcm", "(0020,000E)=1." + std::string(70, '9'));
  EXPECT_NE(raw_store(node, long_uid, tmp.path()).find("status=0xC000"), std::string::npos);
  const fs::path letters = modified_slice(tmp.path(), "letters.dcm", "(0020,000D)=1.2.abc");
  EXPECT_NE(raw_store(node, letters, tmp.path()).find("status=0xC000"), std::string::npos);
  EXPECT_EQ(count_of(node.log(), "reason=invalid_uid"), 3U) << node.log();
  EXPECT_EQ(node.open_instances(), 0U);
  EXPECT_FALSE(fs::exists("/tmp/nephra"));
  EXPECT_EQ(node.echoscu("STORESCU"), 0) << "the node goes on";
  node.stop();
}

// CPU seconds (user + system) a process has used so far.
double cpu_seconds(pid_t pid) {
  std::istringstream stat(nephra::test::read_file("/proc/" + std::to_string(pid) + "/stat"));
  std::string field;
  double ticks = 0;
  for (int i = 1; i <= 15 && stat >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime (the name has no spaces here)
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

TEST(Guard, OutOfDescriptorsTheNodeLogsAndWaitsInsteadOfSpinningAndRecovers) {
  if (std::system("command -v prlimit >/dev/null 2>&1") != 0) GTEST_SKIP() << "prlimit (util-linux) is not installed";
#ifdef __SANITIZE_ADDRESS__
  // UBSan's vptr check opens a pipe to probe memory: out of descriptors, it takes any exception the node catches
  // meanwhile (a retention sweep that cannot list the spool, as designed) for a bad object and stops the node.
  GTEST_SKIP() << "out of descriptors, the sanitizers themselves misreport (UBSan vptr check needs a pipe)";
#endif
  TempDir tmp;
  NodeOptions options;
  options.node_toml = "max_waiting_per_address = 1000\nassociation_setup_seconds = 600\n";
  options.launcher = {"prlimit", "--nofile=96", "--"};
  TestNode node(tmp.path(), options);
  node.start();
  // As many connections as the node has descriptors left, and 16 more (they wait in the listen backlog).
  const auto open_fds =
      std::distance(fs::directory_iterator("/proc/" + std::to_string(node.pid()) + "/fd"), fs::directory_iterator());
  const auto clients = static_cast<size_t>(96 - open_fds + 16);
  std::vector<std::unique_ptr<RawClient>> storm;
  storm.reserve(clients);
  for (size_t i = 0; i < clients; ++i) storm.push_back(std::make_unique<RawClient>(node.port()));
  ASSERT_TRUE(log_has(node, "SCP_ACCEPT_FAILED reason=\"Too many open files\""));
  const double before = cpu_seconds(node.pid());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_LT(cpu_seconds(node.pid()) - before, 0.5) << "the accept loop spins";
  storm.clear();
  EXPECT_TRUE(nephra::test::wait_until([&] { return node.echoscu("STORESCU") == 0; }, std::chrono::seconds(20)));
  const std::string metrics = node.http_get("/metrics");  // no descriptor was left for it during the storm
  EXPECT_TRUE(std::regex_search(metrics, std::regex("\nnephra_accept_errors_total [1-9]"))) << metrics;
  node.stop();
}

TEST(Guard, IdleHttpConnectionsBeyondTheCapAreClosedAndHealthComesBack) {
  TempDir tmp;
  TestNode node(tmp.path());
  node.start();
  std::vector<std::unique_ptr<RawClient>> idle;
  idle.reserve(70);
  for (int i = 0; i < 70; ++i) idle.push_back(std::make_unique<RawClient>(node.http_port()));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto closed = std::count_if(idle.begin(), idle.end(), [](const auto& c) { return c->already_closed(); });
  EXPECT_EQ(closed, 6) << "64 sessions at most; the rest closed at once";
  int status = 0;
  EXPECT_TRUE(nephra::test::wait_until(
      [&] {
        (void)node.http_get("/healthz", &status);
        return status == 200;
      },
      std::chrono::seconds(20)))
      << "idle sessions time out and monitoring gets through again";
  node.stop();
}
