#pragma once
// Durable file-system primitives (std::filesystem has no fsync). Every artefact of a round goes through these:
// write + fsync, rename, fsync of the folder that holds the new name.
#include <filesystem>
#include <stdexcept>
#include <string>

namespace nephra::store {

// A failed file-system call: what was attempted, on which name, and errno (for telling transient from permanent).
class IoError : public std::runtime_error {
 public:
  IoError(const std::string& message, int error_number) : std::runtime_error(message), errno_(error_number) {}
  [[nodiscard]] int error_number() const { return errno_; }
  // Out of space, descriptors or memory, or an I/O error: likely to pass if tried again later.
  [[nodiscard]] bool transient() const;

 private:
  int errno_;
};

namespace io {

void fsync_path(const std::filesystem::path& path);
// Creates or truncates `path`, writes `content`, fsyncs it.
void write_file(const std::filesystem::path& path, const std::string& content);
void rename_into(const std::filesystem::path& from, const std::filesystem::path& to);
// A second name for `from` (link(2)): `from` keeps its own until it is removed.
void link_into(const std::filesystem::path& from, const std::filesystem::path& to);
// mkdir that also fsyncs the parent, so the new directory survives a crash; false when it already existed.
bool make_dir_durable(const std::filesystem::path& dir);
// Writes `content` to `tmp`, renames it to `dest` and fsyncs dest's folder; removes `tmp` on failure.
void write_atomic(const std::filesystem::path& tmp, const std::filesystem::path& dest, const std::string& content);
// fsyncs every regular file in `dir`, then `dir` itself (files written by other libraries, e.g. DCMTK).
void fsync_folder_and_files(const std::filesystem::path& dir);

}  // namespace io
}  // namespace nephra::store
