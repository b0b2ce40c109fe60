#pragma once
// From spooled instances to processed studies: quiet-period assembly, durable jobs, a worker pool.
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nephra/config/config.h"
#include "nephra/engine/classifier.h"
#include "nephra/metrics/metrics.h"
#include "nephra/pipeline/outbox.h"
#include "nephra/scp/storage_server.h"

namespace nephra::pipeline {

// What a step tells the pipeline. Retry: it may pass later (the round is tried again after a backoff, up to
// pipeline.max_attempts tries, then quarantined). Fail: it never will (quarantined at once, with the reason).
// An exception thrown by a step counts as Retry.
struct StepResult {
  enum class Kind { kDone, kRetry, kFail };
  Kind kind = Kind::kDone;
  std::string reason;
  static StepResult done() { return {}; }
  static StepResult retry(std::string why) { return {Kind::kRetry, std::move(why)}; }
  static StepResult fail(std::string why) { return {Kind::kFail, std::move(why)}; }
};

// One stage of processing a sealed study round.
class StudyStep {
 public:
  virtual ~StudyStep() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  virtual StepResult run(const store::StudyRound& round, store::RoundStore& store) = 0;
};

struct PipelineStats {
  std::atomic<unsigned long> instances_stored{0};
  std::atomic<unsigned long> late_instances{0};
  std::atomic<unsigned long> studies_completed{0};
  std::atomic<unsigned long> jobs_done{0};
  std::atomic<unsigned long> jobs_retried{0};        // tries that failed and will be tried again
  std::atomic<unsigned long> jobs_quarantined{0};    // rounds given up on, with a reason, kept for an operator
  std::atomic<unsigned long> rounds_superseded{0};   // a later round of the study made this one unnecessary
  std::atomic<unsigned long> duplicates_ignored{0};  // re-sent instances the study already held
  std::atomic<long> quarantined{0};                  // quarantined rounds in the store now
  std::atomic<unsigned long> retention_instance_folders{0};
  std::atomic<unsigned long> retention_studies{0};
  std::atomic<unsigned long> retention_bytes{0};
  std::atomic<long> queue_depth{0};
  std::atomic<long> jobs_running{0};
  metrics::Histogram queue_wait_seconds;                                    // sealed until a worker takes it
  std::map<std::string, std::unique_ptr<metrics::Histogram>> step_seconds;  // by step name, fixed at construction
};

// What the classify step counts, for /metrics.
struct ClassifyStats {
  metrics::Counter slices_classified;
  metrics::Counter slices_not_assessed;
  metrics::Counter slices_unreadable;
};

class Pipeline : public scp::InstanceSink {
 public:
  // With an outbox, a round whose steps committed results is handed to it instead of being marked done.
  // Takes pipeline.workers once; the quiet period, retries, retention and the stall limit are read live from `cfg`.
  Pipeline(const config::Shared& cfg, store::RoundStore& store, std::vector<std::unique_ptr<StudyStep>> steps,
           Outbox* outbox = nullptr);
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
  ~Pipeline() override;

  // Rescans the store: open studies restart their quiet period, unfinished rounds are queued again.
  void start();
  // Stops sealing, lets running jobs finish; queued jobs stay on disk for the next start.
  void stop();

  void on_stored(const store::InstanceInfo& info, const store::StoreResult& result) override;
  // Applies the retention policy now (also done every minute while running).
  void sweep_retention();
  [[nodiscard]] const PipelineStats& stats() const;
  // How long the oldest job now running has been at it (zero when idle): the watchdog's progress signal.
  [[nodiscard]] std::chrono::steady_clock::duration longest_running_job() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The classify step: runs the engine on every CT slice, writes results.json and the SR and heatmap SC instances
// into the round's out/ folder (delivered by the Outbox). `classifier` is shared by all workers.
std::unique_ptr<StudyStep> make_classify_step(const config::Config& cfg, engine::Classifier& classifier,
                                              std::string software_version, ClassifyStats& stats);

// The inventory step: writes the round's manifest.json (series, instances, SOP classes, transfer syntaxes).
std::unique_ptr<StudyStep> make_inventory_step();

}  // namespace nephra::pipeline
