#include "nephra/store/durable.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace nephra::store {

bool IoError::transient() const {
  switch (errno_) {
    case ENOSPC:
    case EDQUOT:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EIO:
    case EAGAIN:
    case EINTR:
    case EBUSY:
      return true;
    default:
      return false;
  }
}

namespace io {
namespace {

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& path) {
  const int err = errno;
  throw IoError(what + " " + path.filename().string() + ": " + std::strerror(err), err);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

void fsync_path(const std::filesystem::path& path) {
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail("open", path);
  if (::fsync(fd.get()) != 0) fail("fsync", path);
}

void write_file(const std::filesystem::path& path, const std::string& content) {
  const Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (fd.get() < 0) fail("open", path);
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write", path);
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) fail("fsync", path);
}

void rename_into(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) fail("rename", to);
}

void link_into(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (::link(from.c_str(), to.c_str()) != 0) fail("link", to);
}

bool make_dir_durable(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0750) != 0) {
    if (errno == EEXIST) return false;
    fail("mkdir", dir);
  }
  fsync_path(dir.parent_path());
  return true;
}

void write_atomic(const std::filesystem::path& tmp, const std::filesystem::path& dest, const std::string& content) {
  try {
    write_file(tmp, content);
    rename_into(tmp, dest);
    fsync_path(dest.parent_path());
  } catch (const IoError& err) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    // named after what was being written, not after the temporary file
    throw IoError("write " + dest.filename().string() + ": " + std::strerror(err.error_number()), err.error_number());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

void fsync_folder_and_files(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file()) fsync_path(entry.path());
  }
  fsync_path(dir);
}

}  // namespace io
}  // namespace nephra::store
