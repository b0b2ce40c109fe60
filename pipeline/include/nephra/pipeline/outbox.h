#pragma once
// Durable delivery of a round's results (rounds/<n>/out/*.dcm) to the archive that sent the study.
//
// A file moves to rounds/<n>/sent/ once the archive acknowledged it; the round is done when out/ is empty.
// Transient failures retry with exponential backoff (the attempt count lives in rounds/<n>/delivery.json, so it
// survives restarts); permanent refusals and give-up move what is left to dead-letter/<key>-<n>/ with reason.txt.
#include <atomic>
#include <memory>

#include "nephra/config/config.h"
#include "nephra/metrics/metrics.h"
#include "nephra/scp/spool.h"

namespace nephra::pipeline {

struct DeliveryStats {
  std::atomic<unsigned long> instances_sent{0};
  std::atomic<unsigned long> rounds_delivered{0};
  std::atomic<unsigned long> retries{0};
  std::atomic<unsigned long> dead_lettered{0};
  std::atomic<long> pending{0};
  std::atomic<long> retrying{0};    // pending deliveries that failed at least once
  metrics::Histogram send_seconds;  // one delivery attempt, successful or not
};

class Outbox {
 public:
  // Peers, retry timing and timeouts are read live from `cfg` at each attempt.
  Outbox(const config::Shared& cfg, scp::Spool& spool);
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;
  ~Outbox();

  void start();
  // An association in progress finishes the file it is sending; pending deliveries stay on disk for the next start.
  void stop();
  void submit(const scp::StudyRound& round);
  [[nodiscard]] const DeliveryStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A round whose results are written and waiting for delivery holds this marker.
inline constexpr const char* kProcessedMarker = "processed";

}  // namespace nephra::pipeline
