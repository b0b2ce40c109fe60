#pragma once
// Accepts connections and holds each one until its whole A-ASSOCIATE-RQ sits in the kernel's receive buffer, so
// DCMTK's one setup thread never waits on a slow, silent or dribbling client. Under TLS the gate also runs the
// handshake itself, on all waiting callers at once (non-blocking, driven by the same poll), and passes a connection
// on once the decrypted request has begun to arrive. Connections that take longer than the setup deadline, claim an
// oversized request, fail the handshake, or exceed the per-address or total cap of waiting connections are closed
// with a log line. While DCMTK reads the request of a connection that passed the gate, a watchdog shuts it down at
// the same deadline.
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "nephra/scp/storage_server.h"

struct ssl_ctx_st;
struct ssl_st;

namespace nephra::scp {

struct GateLimits {
  std::chrono::milliseconds setup_deadline{10000};  // from accept to a finished association request
  size_t max_waiting = 256;                         // connections waiting for their request, all callers
  size_t max_waiting_per_address = 8;
  size_t max_request_bytes = 65536;   // A-ASSOCIATE-RQ PDU, header included
  ssl_ctx_st* tls_context = nullptr;  // set under TLS: the acceptor layer's, so the handshake has its settings
};

struct ReadyConnection {
  int fd = -1;
  std::string peer;  // dotted IPv4
  std::chrono::steady_clock::time_point deadline;
  ssl_st* ssl = nullptr;  // under TLS, the finished handshake; whoever takes the connection owns it
};

class AssociationGate {
 public:
  // Takes over accepting on `listen_fd` (not owned) and starts its thread.
  AssociationGate(int listen_fd, GateLimits limits, ScpStats& stats);
  AssociationGate(const AssociationGate&) = delete;
  AssociationGate& operator=(const AssociationGate&) = delete;
  ~AssociationGate();

  // The next connection whose request is fully buffered; nullopt when `wait` passed first or the gate stopped.
  std::optional<ReadyConnection> next(std::chrono::milliseconds wait);
  // Shuts `ready` down through `guard` (the caller's dup of it, open until unwatch()) if DCMTK still holds it at its
  // deadline: a dup, so the watchdog never shuts down a number DCMTK has closed and reused. Call unwatch() when
  // DCMTK returns.
  void watch(const ReadyConnection& ready, int guard);
  void unwatch();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Closes `fd` if it still is the socket `guard` (a dup of it) refers to: DCMTK closes the socket on some failure
// paths and not on others, and by then the number may belong to another file.
void close_if_still_open(int fd, int guard);

}  // namespace nephra::scp
