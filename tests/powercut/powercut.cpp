// A power cut, simulated: LD_PRELOADed into nephrad, this records what each fsync() made durable under one folder,
// so that after a kill -9 the test can rebuild the folder as a machine that lost power would find it.
//
// kill -9 keeps the page cache: every write the process made survives it, fsync or not. A power cut keeps only what
// was made durable, and the model here is the strict POSIX one: a file's contents as they were at its last fsync,
// a folder's entries as they were at its last fsync (creating, renaming or removing a name is durable only once the
// folder holding it is synced), nothing else. Everything else is lost, whatever the file system would have kept.
//
// Environment:
//   NEPHRA_POWERCUT_ROOT    the folder watched (the spool); fsyncs elsewhere pass through
//   NEPHRA_POWERCUT_RECORDS where the records go (outside the root): base.index, written when the process starts,
//                           lists what the root held then; one numbered record per fsync after that
//   NEPHRA_POWERCUT_FORGET  optional: an fsync of a path containing this text makes nothing durable (the model of a
//                           forgotten fsync, to show the test catches one)
//   NEPHRA_POWERCUT_SYNC_PARENT  optional, 1: ext4 without a journal. There the first fsync of a file or folder made
//                           since the start also syncs the folder it is in, and that folder's own folder while it
//                           is new too (the kernel's ext4_sync_parent): more becomes durable, and earlier, than the
//                           strict model says, e.g. a name's removal before its new name elsewhere is synced.
// Objects are named by inode number and birth time, so a reused inode number is another object.
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

struct Config {
  std::string root = env("NEPHRA_POWERCUT_ROOT");
  std::string records = env("NEPHRA_POWERCUT_RECORDS");
  std::string forget = env("NEPHRA_POWERCUT_FORGET");
  bool sync_parent = env("NEPHRA_POWERCUT_SYNC_PARENT") == "1";
};

const Config& config() {
  static const Config c;
  return c;
}

std::mutex& record_mutex() {
  static std::mutex m;
  return m;
}

// Identities present at the start, and those made since whose first sync has synced their folder (sync_parent).
std::set<std::string>& old_objects() {
  static std::set<std::string> ids;
  return ids;
}

unsigned long long next_sequence() {
  static std::atomic<unsigned long long> seq{0};
  return ++seq;
}

// "<inode>.<birth ns>": an object's name in the records
std::string identity_at(int dirfd, const char* path, int flags, char* type) {
  struct statx sx {};
  if (::statx(dirfd, path, flags | AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_TYPE | STATX_BTIME, &sx) != 0) return "";
  *type = S_ISDIR(sx.stx_mode) ? 'd' : S_ISREG(sx.stx_mode) ? 'f' : 'o';
  return std::to_string(sx.stx_ino) + "." + std::to_string(sx.stx_btime.tv_sec) + "." +
         std::to_string(sx.stx_btime.tv_nsec);
}

std::string entry_line(char type, const std::string& id, const std::string& name) {
  std::string line(1, type);
  line.append("\t").append(id).append("\t").append(name).append("\n");
  return line;
}

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// A record appears whole or not at all: written under a temporary name, then renamed.
class Record {
 public:
  explicit Record(const std::string& final_name)
      : final_(config().records + "/" + final_name),
        tmp_(final_ + ".tmp"),
        fd_(::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) {}
  Record(const Record&) = delete;
  Record& operator=(const Record&) = delete;
  ~Record() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool add(const std::string& text) { return ok_ = ok_ && fd_ >= 0 && write_all(fd_, text.data(), text.size()); }
  bool add_file(int src) {
    std::array<char, 65536> buf{};
    for (;;) {
      const ssize_t n = ::read(src, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ok_ = false;
      if (n == 0) return ok_;
      if (!add(std::string(buf.data(), static_cast<size_t>(n)))) return false;
    }
  }
  void commit() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (ok_) ::rename(tmp_.c_str(), final_.c_str());
  }

 private:
  std::string final_;
  std::string tmp_;
  int fd_;
  bool ok_ = true;
};

// One line per entry: type, identity, name (tab-separated; spool names hold no tabs or newlines).
std::string listing(int dirfd) {
  std::string out;
  const int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return out;
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    ::close(fd);
    return out;
  }
  while (const dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    char type = 'o';
    const std::string id = identity_at(fd, e->d_name, 0, &type);
    if (!id.empty()) out += entry_line(type, id, e->d_name);
  }
  ::closedir(dir);
  return out;
}

std::string path_of(int fd) {
  std::array<char, 4096> buf{};
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), buf.data(), buf.size() - 1);
  return n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : "";
}

bool under_root(const std::string& path) {
  const std::string& root = config().root;
  return !root.empty() && (path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
                                            path[root.size()] == '/'));
}

// One record: the folder's entries or the file's contents as they are now. Called with record_mutex() held.
void record_object(int fd, const std::string& path, const std::string& id, char type) {
  char seq[32];
  std::snprintf(seq, sizeof seq, "%012llu", next_sequence());
  Record rec(std::string(seq) + (type == 'd' ? ".d" : ".f"));
  rec.add(id + "\t" + path + "\n");
  if (type == 'd') {
    rec.add(listing(fd));
  } else {
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    const int src = ::open(self.c_str(), O_RDONLY | O_CLOEXEC);
    if (src < 0) return;
    rec.add_file(src);
    ::close(src);
  }
  rec.commit();
}

// ext4 without a journal: a new object's first sync also syncs its folder, and on up while that folder is new.
void record_parents(std::string path, const std::string& id) {
  if (!old_objects().insert(id).second) return;
  for (;;) {
    path = path.substr(0, path.rfind('/'));
    if (!under_root(path)) return;
    const int dirfd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) return;
    char type = 'o';
    const std::string dir_id = identity_at(dirfd, "", AT_EMPTY_PATH, &type);
    if (!dir_id.empty()) record_object(dirfd, path, dir_id, 'd');
    ::close(dirfd);
    if (dir_id.empty() || !old_objects().insert(dir_id).second) return;
  }
}

// What an fsync of fd makes durable, recorded before the real fsync returns (and so before anything that waits on it).
void record_sync(int fd) {
  const Config& c = config();
  if (c.records.empty()) return;
  const std::string path = path_of(fd);
  if (!under_root(path)) return;
  if (!c.forget.empty() && path.find(c.forget) != std::string::npos) return;
  char type = 'o';
  const std::string id = identity_at(fd, "", AT_EMPTY_PATH, &type);
  if (id.empty() || type == 'o') return;
  const std::lock_guard guard(record_mutex());
  record_object(fd, path, id, type);
  if (c.sync_parent) record_parents(path, id);
}

void index_tree(Record& rec, int dirfd, const std::string& rel) {
  const int fd = ::openat(dirfd, rel.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    ::close(fd);
    return;
  }
  while (const dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    const std::string child = rel == "." ? e->d_name : rel + "/" + e->d_name;
    char type = 'o';
    const std::string id = identity_at(dirfd, child.c_str(), 0, &type);
    if (id.empty()) continue;
    old_objects().insert(id);
    rec.add(entry_line(type, id, child));
    if (type == 'd') index_tree(rec, dirfd, child);
  }
  ::closedir(dir);
}

// What the root held when the process started: durable by construction (the test rebuilt it after the last cut).
__attribute__((constructor)) void write_base_index() {
  const Config& c = config();
  if (c.records.empty() || c.root.empty()) return;
  const int rootfd = ::open(c.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return;
  Record rec("base.index");
  char type = 'o';
  const std::string root_id = identity_at(rootfd, "", AT_EMPTY_PATH, &type);
  old_objects().insert(root_id);
  rec.add(entry_line('d', root_id, "."));
  index_tree(rec, rootfd, ".");
  ::close(rootfd);
  rec.commit();
}

template <typename Fn>
Fn real(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int fsync(int fd) {
  static const auto next = real<int (*)(int)>("fsync");
  record_sync(fd);
  return next(fd);
}

int fdatasync(int fd) {
  static const auto next = real<int (*)(int)>("fdatasync");
  record_sync(fd);
  return next(fd);
}

}  // extern "C"
