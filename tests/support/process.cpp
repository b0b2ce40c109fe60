#include "process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace nephra::test {

Process::Process(const std::vector<std::string>& argv, const std::filesystem::path& output) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  const int rc = posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
}

Process::Process(Process&& other) noexcept : pid_(other.pid_), status_(other.status_) { other.pid_ = -1; }

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && running()) {
      signal(SIGKILL);
      wait();
    }
    pid_ = other.pid_;
    status_ = other.status_;
    other.pid_ = -1;
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0 && running()) {
    signal(SIGKILL);
    wait();
  }
}

bool Process::running() {
  if (pid_ <= 0 || status_ != -1) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    status_ = status;
    return false;
  }
  return true;
}

void Process::signal(int signo) const {
  // Once reaped, the PID may already belong to another process: never signal it again.
  if (pid_ > 0 && status_ == -1) ::kill(pid_, signo);
}

int Process::wait() {
  if (pid_ > 0 && status_ == -1) {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    status_ = status;
  }
  if (status_ == -1) return -1;
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
}

int run(const std::vector<std::string>& argv, const std::filesystem::path& output) {
  Process p(argv, output);
  return p.wait();
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "nephra-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  if (std::getenv("NEPHRA_KEEP_TEST_DIRS") != nullptr) return;  // to read a failed test's node log afterwards
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

SmallTmpfs::SmallTmpfs(const std::filesystem::path& dir, const std::string& size) : dir_(dir) {
  std::filesystem::create_directories(dir_);
  const std::string options = "size=" + size;
  mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, options.c_str()) == 0;
  if (!mounted_) error_ = std::string("cannot mount a small tmpfs here (needs root): ") + std::strerror(errno);
}

SmallTmpfs::~SmallTmpfs() {
  if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
}

StorescpArchive start_storescp(const std::filesystem::path& dir, const std::filesystem::path& log,
                               const std::string& ae_title) {
  std::filesystem::create_directories(dir);
  StorescpArchive archive;
  archive.port = free_port();
  archive.process =
      Process({"storescp", "-od", dir.string(), "-aet", ae_title, "--promiscuous", std::to_string(archive.port)}, log);
  return archive;
}

}  // namespace nephra::test
