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

}  // namespace nephra::test
