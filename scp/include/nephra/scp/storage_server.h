#pragma once
// The DICOM Storage SCP: C-ECHO and C-STORE of CT images, spooled durably before the status goes out.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "nephra/config/config.h"
#include "nephra/metrics/metrics.h"
#include "nephra/store/round_store.h"

namespace nephra::scp {

using store::InstanceInfo;
using store::StoreResult;
using store::StudyFullError;

// The one seam between DICOM networking and the application.
class InstanceSink {
 public:
  virtual ~InstanceSink() = default;
  virtual void on_stored(const InstanceInfo& info, const StoreResult& result) = 0;
};

struct ScpStats {
  metrics::Counter instances_stored;
  metrics::Counter rejected_unreadable;     // the data set could not be parsed
  metrics::Counter rejected_uid_mismatch;   // data set UIDs differ from the C-STORE request
  metrics::Counter rejected_missing_uid;    // no Study, Series or SOP Instance UID
  metrics::Counter rejected_invalid_uid;    // a UID that is not digits and dots, or longer than 64
  metrics::Counter rejected_spool_low;      // free space below node.min_free_spool_mb
  metrics::Counter rejected_too_large;      // larger than node.max_instance_mb
  metrics::Counter rejected_study_full;     // the study round reached study.max_instances
  metrics::Counter rejected_spool_failure;  // the spool could not write it durably
  metrics::Counter associations_accepted;
  metrics::Counter associations_rejected_called_ae;
  metrics::Counter associations_rejected_calling_ae;
  metrics::Counter associations_rejected_address;      // calling AE known, but not from its peer's address
  metrics::Counter associations_rejected_certificate;  // tls.bind_calling_ae: the certificate names another archive
  metrics::Counter associations_rejected_spool_low;
  metrics::Counter associations_rejected_limit;
  metrics::Counter associations_failed;  // broken before negotiation finished
  metrics::Counter associations_aborted_at_shutdown;
  metrics::Counter associations_setup_timeout;    // no whole request (or TLS handshake) within the setup deadline
  metrics::Counter associations_refused_waiting;  // too many connections waiting for their request (per address)
  metrics::Counter connections_closed_early;      // closed by the caller before any request (port scanners)
  metrics::Counter accept_errors;                 // accept() failed for lack of descriptors or memory
  std::atomic<long> associations_active{0};
  std::atomic<long> connections_waiting{0};  // accepted, request not yet complete
  metrics::Histogram store_seconds;          // receive and spool one instance
};

class StorageServer {
 public:
  // Reads the port, bind address and AE title once; peers and limits from `cfg` at each association.
  StorageServer(const config::Shared& cfg, store::RoundStore& spool, InstanceSink& sink);
  StorageServer(const StorageServer&) = delete;
  StorageServer& operator=(const StorageServer&) = delete;
  ~StorageServer();

  // Binds the port (throws std::runtime_error naming the address if it cannot) and starts accepting.
  void start();
  // Stops accepting; associations in progress get node.shutdown_grace_seconds to end, then are aborted
  // (their acknowledged instances are already durable; the sender re-sends the rest).
  void stop();
  [[nodiscard]] const ScpStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nephra::scp
