#include "association_gate.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace nephra::scp {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kTick = std::chrono::milliseconds(200);
constexpr auto kAcceptPause = std::chrono::milliseconds(100);
constexpr auto kLogEvery = std::chrono::seconds(10);
constexpr unsigned char kAssociateRq = 0x01;
constexpr unsigned char kTlsHandshake = 0x16;

struct Waiting {
  int fd = -1;
  std::string peer;
  Clock::time_point deadline;
  SSL* ssl = nullptr;  // under TLS, from the moment its ClientHello has arrived
  bool handshaken = false;
  bool wants_write = false;
};

enum class Verdict { wait, ready, closed, refused };

struct Check {
  Verdict verdict = Verdict::wait;
  std::string reason;
};

uint32_t big_endian(const unsigned char* p, int bytes) {
  uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8U) | p[i];
  return v;
}

std::string tls_error(const char* what) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return std::string(what) + ": connection closed or reset";
  std::array<char, 256> text{};
  ERR_error_string_n(e, text.data(), text.size());
  return std::string(what) + ": " + text.data();
}

void set_blocking(int fd, bool blocking) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK));
}

std::string peer_of(const sockaddr_in& addr) {
  std::array<char, INET_ADDRSTRLEN> text{};
  ::inet_ntop(AF_INET, &addr.sin_addr, text.data(), text.size());
  return text.data();
}

}  // namespace

struct AssociationGate::Impl {
  const int listen_fd;
  const GateLimits limits;
  ScpStats& stats;
  std::vector<unsigned char> peek_buffer;
  std::vector<Waiting> waiting;  // only the gate thread touches it
  std::map<std::string, size_t> per_address;

  std::mutex mutex;
  std::condition_variable cv;
  std::deque<ReadyConnection> ready;
  std::optional<ReadyConnection> watched;  // fd is the caller's dup
  bool stopping = false;
  Clock::time_point accept_paused_until;
  Clock::time_point last_accept_error_log;
  std::thread thread;

  Impl(int fd, GateLimits l, ScpStats& s)
      : listen_fd(fd), limits(l), stats(s), peek_buffer(std::max<size_t>(l.max_request_bytes, 6)) {}

  [[nodiscard]] bool tls() const { return limits.tls_context != nullptr; }

  // Whether the PDU whose first bytes are `p` claims a size over the limit or is no A-ASSOCIATE-RQ.
  [[nodiscard]] Check request_check(const unsigned char* p, size_t& whole) const {
    if (p[0] != kAssociateRq)
      return {Verdict::refused, "not an A-ASSOCIATE-RQ (PDU type " + std::to_string(p[0]) + ")"};
    whole = 6 + static_cast<size_t>(big_endian(&p[2], 4));
    if (whole > peek_buffer.size()) {
      return {Verdict::refused,
              "request of " + std::to_string(whole) + " bytes, limit " + std::to_string(peek_buffer.size())};
    }
    return {};
  }

  Check check(Waiting& w) { return w.ssl != nullptr ? drive_tls(w) : peek_first(w); }

  // Under TLS, once the ClientHello has arrived: the handshake, a step per readiness, then the decrypted request.
  Check drive_tls(Waiting& w) {
    ERR_clear_error();
    w.wants_write = false;
    if (!w.handshaken) {
      const int r = SSL_do_handshake(w.ssl);
      if (r != 1) return tls_wait_or_fail(w, r, "TLS handshake failed");
      w.handshaken = true;
    }
    // Peeked, so DCMTK still reads it; SSL_peek sees one record, which holds the request as DCMTK and Orthanc send
    // it. A request spread over several records is passed on at its first: the watchdog bounds the rest, and only a
    // caller that completed the handshake (under mutual TLS, one holding a trusted certificate) can get that far.
    const int n = SSL_peek(w.ssl, peek_buffer.data(), static_cast<int>(peek_buffer.size()));
    if (n <= 0) return tls_wait_or_fail(w, n, "TLS read failed");
    if (n < 6) return {Verdict::ready, ""};
    size_t whole = 0;
    if (Check c = request_check(peek_buffer.data(), whole); c.verdict == Verdict::refused) return c;
    return {Verdict::ready, ""};
  }

  Check tls_wait_or_fail(Waiting& w, int result, const char* what) {
    switch (SSL_get_error(w.ssl, result)) {
      case SSL_ERROR_WANT_READ:
        return {};
      case SSL_ERROR_WANT_WRITE:
        w.wants_write = true;
        return {};
      case SSL_ERROR_ZERO_RETURN:
        return {Verdict::closed, "closed during the TLS handshake"};
      default:
        return {Verdict::refused, tls_error(what)};
    }
  }

  // How much of the first PDU (or TLS record) is buffered, without taking any of it.
  Check peek_first(Waiting& w) {
    const size_t header = tls() ? 5 : 6;
    const ssize_t got = ::recv(w.fd, peek_buffer.data(), header, MSG_PEEK | MSG_DONTWAIT);
    if (got == 0) return {Verdict::closed, "closed before an association request"};
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return {};
      return {Verdict::closed, std::string("connection error: ") + std::strerror(errno)};
    }
    if (static_cast<size_t>(got) < header) return {};
    size_t whole = 0;
    if (tls()) {
      if (peek_buffer[0] != kTlsHandshake) return {Verdict::refused, "not a TLS handshake"};
      whole = header + big_endian(&peek_buffer[3], 2);
      if (whole > peek_buffer.size()) return {Verdict::refused, "TLS record of " + std::to_string(whole) + " bytes"};
    } else if (Check c = request_check(peek_buffer.data(), whole); c.verdict == Verdict::refused) {
      return c;
    }
    const ssize_t buffered = ::recv(w.fd, peek_buffer.data(), whole, MSG_PEEK | MSG_DONTWAIT);
    if (buffered != static_cast<ssize_t>(whole)) return {};
    if (!tls()) return {Verdict::ready, ""};
    w.ssl = SSL_new(limits.tls_context);
    if (w.ssl == nullptr) return {Verdict::refused, tls_error("cannot start a TLS session")};
    set_blocking(w.fd, false);
    SSL_set_fd(w.ssl, w.fd);
    SSL_set_accept_state(w.ssl);
    return drive_tls(w);
  }

  void forget(size_t i, bool close_fd) {
    Waiting& w = waiting[i];
    if (close_fd) {
      if (w.ssl != nullptr) SSL_free(w.ssl);
      ::close(w.fd);
    }
    if (auto it = per_address.find(w.peer); it != per_address.end() && --it->second == 0) per_address.erase(it);
    waiting[i] = std::move(waiting.back());
    waiting.pop_back();
  }

  void accept_one() {
    sockaddr_in addr{};
    socklen_t len = sizeof(addr);
    const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The connection stays in the backlog; polling again at once would spin at full CPU.
        stats.accept_errors.inc();
        const auto now = Clock::now();
        accept_paused_until = now + kAcceptPause;
        if (now - last_accept_error_log > kLogEvery) {
          last_accept_error_log = now;
          spdlog::error("SCP_ACCEPT_FAILED reason=\"{}\" waiting={}", std::strerror(errno), waiting.size());
        }
      }
      return;
    }
    Waiting w{fd, peer_of(addr), Clock::now() + limits.setup_deadline};
    const char* refused = nullptr;
    if (waiting.size() >= limits.max_waiting) {
      refused = "too_many_waiting";
    } else if (per_address[w.peer] >= limits.max_waiting_per_address) {
      refused = "too_many_waiting_from_address";
    }
    if (refused != nullptr) {
      if (per_address[w.peer] == 0) per_address.erase(w.peer);
      stats.associations_refused_waiting.inc();
      spdlog::warn("SCP_CONNECTION_REFUSED reason={} peer={} waiting={}", refused, w.peer, waiting.size());
      ::close(fd);
      return;
    }
    ++per_address[w.peer];
    waiting.push_back(std::move(w));
  }

  void settle(size_t i, const Check& c) {
    const Waiting& w = waiting[i];
    switch (c.verdict) {
      case Verdict::wait:
        return;
      case Verdict::ready: {
        {
          const std::lock_guard guard(mutex);
          if (w.ssl != nullptr) set_blocking(w.fd, true);  // DCMTK waits with poll, then reads blocking
          ready.push_back({w.fd, w.peer, w.deadline, w.ssl});
        }
        cv.notify_one();
        forget(i, false);
        return;
      }
      case Verdict::closed:
        stats.connections_closed_early.inc();
        spdlog::debug("SCP_CONNECTION_CLOSED peer={} reason=\"{}\"", w.peer, c.reason);
        break;
      case Verdict::refused:
        stats.associations_failed.inc();
        spdlog::warn("SCP_ASSOC_FAILED peer={} reason=\"{}\"", w.peer, c.reason);
        break;
    }
    forget(i, true);
  }

  void expire(Clock::time_point now) {
    for (size_t i = waiting.size(); i-- > 0;) {
      if (waiting[i].deadline > now) continue;
      stats.associations_setup_timeout.inc();
      const bool handshaking = waiting[i].ssl != nullptr && !waiting[i].handshaken;
      spdlog::warn("SCP_ASSOC_SETUP_TIMEOUT peer={} seconds={} stage={}", waiting[i].peer,
                   std::chrono::duration<double>(limits.setup_deadline).count(), handshaking ? "tls" : "request");
      forget(i, true);
    }
    const std::lock_guard guard(mutex);
    if (watched && watched->deadline <= now) {
      stats.associations_setup_timeout.inc();
      spdlog::warn("SCP_ASSOC_SETUP_TIMEOUT peer={} seconds={} stage={}", watched->peer,
                   std::chrono::duration<double>(limits.setup_deadline).count(), "negotiation");
      ::shutdown(watched->fd, SHUT_RDWR);
      watched->deadline = Clock::time_point::max();
    }
  }

  void run() {
    std::vector<pollfd> fds;
    while (true) {
      {
        const std::lock_guard guard(mutex);
        if (stopping) break;
      }
      const auto now = Clock::now();
      const bool accepting = now >= accept_paused_until;
      fds.clear();
      fds.push_back({accepting ? listen_fd : -1, POLLIN, 0});
      for (const auto& w : waiting) fds.push_back({w.fd, static_cast<short>(w.wants_write ? POLLOUT : POLLIN), 0});
      ::poll(fds.data(), fds.size(), static_cast<int>(kTick.count()));
      stats.connections_waiting.store(static_cast<long>(waiting.size()));
      // Waiting connections first (their indexes shift as they leave), then new ones.
      for (size_t i = fds.size() - 1; i >= 1; --i) {
        if (fds[i].revents != 0) settle(i - 1, check(waiting[i - 1]));
      }
      if ((fds[0].revents & POLLIN) != 0) accept_one();
      expire(Clock::now());
    }
    while (!waiting.empty()) forget(waiting.size() - 1, true);
    const std::lock_guard guard(mutex);
    for (const auto& r : ready) {
      if (r.ssl != nullptr) SSL_free(r.ssl);
      ::close(r.fd);
    }
    ready.clear();
  }
};

AssociationGate::AssociationGate(int listen_fd, GateLimits limits, ScpStats& stats)
    : impl_(std::make_unique<Impl>(listen_fd, limits, stats)) {
  impl_->thread = std::thread([this] { impl_->run(); });
}

AssociationGate::~AssociationGate() { stop(); }

std::optional<ReadyConnection> AssociationGate::next(std::chrono::milliseconds wait) {
  std::unique_lock lock(impl_->mutex);
  impl_->cv.wait_for(lock, wait, [this] { return impl_->stopping || !impl_->ready.empty(); });
  if (impl_->stopping || impl_->ready.empty()) return std::nullopt;
  ReadyConnection r = impl_->ready.front();
  impl_->ready.pop_front();
  return r;
}

void AssociationGate::watch(const ReadyConnection& ready, int guard) {
  const std::lock_guard lock(impl_->mutex);
  if (guard < 0) return;
  impl_->watched = ready;
  impl_->watched->fd = guard;
}

void AssociationGate::unwatch() {
  const std::lock_guard lock(impl_->mutex);
  impl_->watched.reset();
}

void AssociationGate::stop() {
  {
    const std::lock_guard guard(impl_->mutex);
    if (impl_->stopping) return;
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
  unwatch();
}

void close_if_still_open(int fd, int guard) {
  struct stat mine {};
  struct stat now {};
  if (guard < 0 || ::fstat(guard, &mine) != 0) return;
  if (::fstat(fd, &now) == 0 && now.st_dev == mine.st_dev && now.st_ino == mine.st_ino) ::close(fd);
}

}  // namespace nephra::scp
