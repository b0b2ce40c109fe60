#pragma once
// POSIX durability primitives: std::filesystem has no fsync.
#include <filesystem>
#include <string>

namespace nephra::scp::io {

// Throw SpoolError carrying strerror(errno) and the operation that failed.
void fsync_path(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& content);
void rename_into(const std::filesystem::path& from, const std::filesystem::path& to);
// mkdir that also fsyncs the parent, so the new directory survives a crash.
bool make_dir_durable(const std::filesystem::path& dir);

}  // namespace nephra::scp::io
