#pragma once
// Durable delivery of a classified round's results to the archive that sent the study.
//
// Each file the archive acknowledges is marked sent in the round store; the round is done when none is left.
// Transient failures retry with exponential backoff (the attempt count is in the round's record, so it survives
// restarts); permanent refusals and give-up dead-letter the round. A round overtaken by a later round of the same
// study is superseded instead of sent, so the archive only receives the latest SR. Several archives are served at
// once, each by one association at a time, so an unreachable or hanging one delays only its own results.
#include <atomic>
#include <functional>
#include <memory>

#include "nephra/config/config.h"
#include "nephra/metrics/metrics.h"
#include "nephra/scp/store_scu.h"
#include "nephra/store/round_store.h"

namespace nephra::pipeline {

struct DeliveryStats {
  std::atomic<unsigned long> instances_sent{0};
  std::atomic<unsigned long> rounds_delivered{0};
  std::atomic<unsigned long> retries{0};
  std::atomic<unsigned long> dead_lettered{0};
  std::atomic<unsigned long> rounds_shadowed{0};  // results.shadow: kept, never sent
  std::atomic<long> pending{0};
  std::atomic<long> retrying{0};    // pending deliveries that failed at least once
  metrics::Histogram send_seconds;  // one delivery attempt, successful or not
};

// Why a round that was never sent is done (state.json's reason): results.shadow was on when it was classified.
inline constexpr const char* kShadowReason = "shadow mode: results kept, not sent";

// How results reach an archive: scp::send_files (DICOM C-STORE) in the node, a scripted fake archive in unit tests.
using SendFiles = std::function<scp::SendResult(const scp::StoreTarget&, const std::vector<std::filesystem::path>&,
                                                const std::function<void(const std::filesystem::path&)>&,
                                                const std::function<bool()>&)>;

class Outbox {
 public:
  // Peers, retry timing and timeouts are read live from `cfg` at each attempt.
  Outbox(const config::Shared& cfg, store::RoundStore& store, SendFiles send = scp::send_files);
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;
  ~Outbox();

  void start();
  // An association in progress finishes the file it is sending; pending deliveries stay on disk for the next start.
  void stop();
  void submit(const store::StudyRound& round);
  [[nodiscard]] const DeliveryStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nephra::pipeline
