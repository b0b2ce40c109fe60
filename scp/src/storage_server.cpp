#include "nephra/scp/storage_server.h"

#include <arpa/inet.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dul.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <mutex>
#include <stdexcept>

#include "association_gate.h"
#include "store_scp.h"
#include "tls.h"

namespace nephra::scp {
namespace {

// Real requests propose at most 128 presentation contexts: a few to some 40 KB.
constexpr size_t kMaxAssociateRequestBytes = size_t{64} * 1024;
constexpr auto kAcceptPoll = std::chrono::milliseconds(200);
// Large enough that a whole A-ASSOCIATE-RQ up to the gate's limit fits in the kernel buffer while the gate waits.
constexpr int kReceiveBufferBytes = 256 * 1024;

int open_listen_socket(const std::string& bind, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kReceiveBufferBytes,
               sizeof(kReceiveBufferBytes));  // accepted sockets inherit it
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, bind.c_str(), &addr.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 64) != 0) {
    const std::string reason = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("cannot listen on " + bind + ":" + std::to_string(port) + ": " + reason);
  }
  return fd;
}

}  // namespace

struct StorageServer::Impl {
  const config::Shared& live;
  const config::Config start_cfg;  // what takes effect only at start: port, bind, AE title, grace
  store::RoundStore& spool;
  InstanceSink& sink;
  ScpStats stats;
  DcmSCPConfig scp_config;
  T_ASC_Network* network = nullptr;
  std::unique_ptr<AcceptorTlsLayer> tls;  // set when tls.enabled; must outlive the network
  int listen_fd = -1;
  int network_fd = -1;
  std::atomic<bool> stopping{false};
  std::unique_ptr<AssociationGate> gate;
  std::thread listener;

  struct Worker {
    std::thread thread;
    int socket_fd = -1;  // shut down to abort the association when the shutdown grace runs out
    std::shared_ptr<std::atomic<bool>> finished = std::make_shared<std::atomic<bool>>(false);
  };
  std::mutex workers_mutex;
  std::list<Worker> workers;

  Impl(const config::Shared& c, store::RoundStore& s, InstanceSink& k)
      : live(c), start_cfg(*c.get()), spool(s), sink(k) {}

  void configure() {
    scp_config.setAETitle(start_cfg.node.ae_title.c_str());
    scp_config.setMaxReceivePDULength(static_cast<Uint32>(start_cfg.node.max_pdu_bytes));
    scp_config.setHostLookupEnabled(OFFalse);
    scp_config.setACSETimeout(30);
    scp_config.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    scp_config.setDIMSETimeout(60);
    if (const OFCondition cond = add_storage_contexts(scp_config); cond.bad()) {
      throw std::runtime_error(std::string("presentation contexts: ") + cond.text());
    }
  }

  size_t reap_workers() {
    const std::lock_guard guard(workers_mutex);
    for (auto it = workers.begin(); it != workers.end();) {
      if (it->finished->load()) {
        it->thread.join();
        it = workers.erase(it);
      } else {
        ++it;
      }
    }
    return workers.size();
  }

  void reject(T_ASC_Association* assoc, T_ASC_RejectParametersReason reason) {
    T_ASC_RejectParameters rej{ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED, reason};
    ASC_rejectAssociation(assoc, &rej);
    ASC_dropAssociation(assoc);
    ASC_destroyAssociation(&assoc);
  }

  void run_association(T_ASC_Association* assoc, int fd, std::shared_ptr<const config::Config> cfg) {
    const std::lock_guard guard(workers_mutex);
    Worker& worker = workers.emplace_back();
    worker.socket_fd = fd;
    ++stats.associations_active;
    worker.thread = std::thread([this, assoc, cfg = std::move(cfg), done = worker.finished] {
      StoreScp scp(cfg, spool, sink, stats);
      scp.setSharedConfig(DcmSharedSCPConfig(scp_config));
      scp.serve(assoc);
      --stats.associations_active;
      done->store(true);
    });
  }

  // Waits for associations in progress to end on their own, at most `grace`; aborts the rest.
  void drain(std::chrono::duration<double> grace) {
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (reap_workers() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const std::lock_guard guard(workers_mutex);
    for (auto& worker : workers) {
      if (worker.finished->load()) continue;
      stats.associations_aborted_at_shutdown.inc();
      ::shutdown(worker.socket_fd, SHUT_RDWR);
    }
    if (!workers.empty()) spdlog::warn("SCP_ASSOC_ABORTED_AT_SHUTDOWN count={}", workers.size());
    for (auto& worker : workers) worker.thread.join();
    workers.clear();
  }

  void accept_one(const ReadyConnection& conn) {
    const int fd = conn.fd;
    const int one = 1;
    // DCMTK leaves Nagle on by default, which makes C-STORE about 20x slower on loopback.
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const int guard = ::dup(fd);  // the watchdog's handle, and proof of which socket fd was
    gate->watch(conn, guard);
    // Hand the accepted socket to DCMTK; only this thread ever sets the (process-wide) handle. The request is
    // already buffered (the gate waited for it), so this returns at once unless a TLS handshake is slow, and the
    // gate's watchdog bounds that.
    dcmExternalSocketHandle.set(fd);
    if (tls) tls->hand_over(fd, conn.ssl);  // the gate ran the handshake
    T_ASC_Association* assoc = nullptr;
    const OFCondition cond = ASC_receiveAssociation(network, &assoc, static_cast<int>(start_cfg.node.max_pdu_bytes),
                                                    nullptr, nullptr, tls ? OFTrue : OFFalse, DUL_NOBLOCK, 30);
    dcmExternalSocketHandle.set(-1);
    if (tls) tls->take_back();
    gate->unwatch();
    if (cond.bad()) {
      stats.associations_failed.inc();
      spdlog::warn("SCP_ASSOC_FAILED peer={} reason=\"{}\"", conn.peer, cond.text());
      if (assoc != nullptr) {
        ASC_dropAssociation(assoc);
        ASC_destroyAssociation(&assoc);
      }
      close_if_still_open(fd, guard);
      if (guard >= 0) ::close(guard);
      return;
    }
    if (guard >= 0) ::close(guard);
    auto cfg = live.get();
    if (reap_workers() >= static_cast<size_t>(cfg->node.max_associations)) {
      stats.associations_rejected_limit.inc();
      spdlog::warn("SCP_ASSOC_REJECTED reason=too_many_associations max={}", cfg->node.max_associations);
      reject(assoc, ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
      return;
    }
    const std::uintmax_t free_mb = spool.free_mb();
    if (free_mb < static_cast<std::uintmax_t>(cfg->node.min_free_spool_mb)) {
      stats.associations_rejected_spool_low.inc();
      spdlog::warn("SCP_ASSOC_REJECTED reason=spool_low_on_space free_mb={} min_free_mb={}", free_mb,
                   cfg->node.min_free_spool_mb);
      reject(assoc, ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
      return;
    }
    run_association(assoc, fd, std::move(cfg));
  }

  void listen_loop() {
    while (!stopping.load()) {
      const auto conn = gate->next(kAcceptPoll);
      reap_workers();
      if (conn) accept_one(*conn);
    }
  }
};

StorageServer::StorageServer(const config::Shared& cfg, store::RoundStore& spool, InstanceSink& sink)
    : impl_(std::make_unique<Impl>(cfg, spool, sink)) {}

StorageServer::~StorageServer() { stop(); }

void StorageServer::start() {
  impl_->configure();
  // Before anything new arrives: instances a crash left in their slots join their studies first.
  impl_->spool.recover_filled_slots([this](const std::filesystem::path& slot) {
    StoreScp scp(impl_->live.get(), impl_->spool, impl_->sink, impl_->stats);
    scp.recover(slot);
  });
  const auto& node = impl_->start_cfg.node;
  impl_->listen_fd = open_listen_socket(node.bind, node.port);
  // DCMTK 3.6.7 cannot bind a chosen address, so we listen ourselves and hand each accepted socket over.
  // With an external socket set, DCMTK opens no listening socket of its own.
  // DCMTK may keep that socket and close it when the network is dropped: give it a duplicate.
  impl_->network_fd = ::dup(impl_->listen_fd);
  dcmExternalSocketHandle.set(impl_->network_fd);
  const OFCondition cond = ASC_initializeNetwork(NET_ACCEPTOR, node.port, 30, &impl_->network);
  dcmExternalSocketHandle.set(-1);
  if (cond.bad()) throw std::runtime_error(std::string("DICOM network: ") + cond.text());
  if (impl_->start_cfg.tls.enabled) {
    impl_->tls = std::make_unique<AcceptorTlsLayer>(impl_->start_cfg.tls);
    if (const OFCondition set = ASC_setTransportLayer(impl_->network, impl_->tls.get(), 0); set.bad()) {
      throw std::runtime_error(std::string("DICOM TLS: ") + set.text());
    }
  }
  GateLimits limits;
  limits.setup_deadline = std::chrono::milliseconds(static_cast<long>(node.association_setup_seconds * 1000));
  limits.max_waiting_per_address = static_cast<size_t>(node.max_waiting_per_address);
  limits.max_request_bytes = kMaxAssociateRequestBytes;
  if (impl_->tls) limits.tls_context = impl_->tls->context();
  impl_->gate = std::make_unique<AssociationGate>(impl_->listen_fd, limits, impl_->stats);
  impl_->listener = std::thread([this] { impl_->listen_loop(); });
  spdlog::info("SCP_LISTENING ae_title={} bind={} port={} tls={} max_associations={}", node.ae_title, node.bind,
               node.port, impl_->start_cfg.tls.enabled, impl_->live.get()->node.max_associations);
}

void StorageServer::stop() {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  if (impl_->listener.joinable()) impl_->listener.join();
  if (impl_->gate) impl_->gate->stop();
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
  impl_->drain(std::chrono::duration<double>(impl_->start_cfg.node.shutdown_grace_seconds));
  if (impl_->network != nullptr) ASC_dropNetwork(&impl_->network);
  if (impl_->network_fd >= 0 && ::fcntl(impl_->network_fd, F_GETFD) != -1) ::close(impl_->network_fd);
  spdlog::info("SCP_STOPPED");
}

const ScpStats& StorageServer::stats() const { return impl_->stats; }

}  // namespace nephra::scp
