#pragma once
// Child processes for tests: real peers and the real daemon, started and stopped by PID.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace nephra::test {

class Process {
 public:
  Process() = default;
  Process(const std::vector<std::string>& argv, const std::filesystem::path& output);
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] bool running();
  void signal(int signo) const;
  int wait();  // exit code, or 128 + signal

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

// Runs to completion; output goes to `output`.
int run(const std::vector<std::string>& argv, const std::filesystem::path& output);
std::string read_file(const std::filesystem::path& path);

int free_port();
bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// A fresh folder under the system temp dir, removed when the test ends.
class TempDir {
 public:
  TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A tmpfs of `size` (mount's syntax, e.g. "8m") on `dir` for the test's life: a spool whose disk fills up.
// Needs root; where it cannot mount, mounted() is false and error() says why (the test then skips).
class SmallTmpfs {
 public:
  SmallTmpfs(const std::filesystem::path& dir, const std::string& size);
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;
  ~SmallTmpfs();
  [[nodiscard]] bool mounted() const { return mounted_; }
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  std::filesystem::path dir_;
  bool mounted_ = false;
  std::string error_;
};

// DCMTK's storescp as an archive on a free loopback port, storing whatever it receives into `dir`.
struct StorescpArchive {
  int port = 0;
  Process process;
};
StorescpArchive start_storescp(const std::filesystem::path& dir, const std::filesystem::path& log,
                               const std::string& ae_title = "STORESCU");

}  // namespace nephra::test
