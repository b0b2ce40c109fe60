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
#include "nephra/scp/spool.h"
#include "nephra/scp/storage_server.h"

namespace nephra::pipeline {

// One stage of processing a sealed study round. Throwing fails the job (logged, marked failed).
class StudyStep {
 public:
  virtual ~StudyStep() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  virtual void run(const scp::StudyRound& round, scp::Spool& spool) = 0;
};

struct PipelineStats {
  std::atomic<unsigned long> instances_stored{0};
  std::atomic<unsigned long> late_instances{0};
  std::atomic<unsigned long> studies_completed{0};
  std::atomic<unsigned long> jobs_done{0};
  std::atomic<unsigned long> jobs_failed{0};
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
  // With an outbox, a round whose steps left results in out/ is handed to it instead of being marked done.
  // Takes pipeline.workers once; the quiet period and the stall limit are read live from `cfg`.
  Pipeline(const config::Shared& cfg, scp::Spool& spool, std::vector<std::unique_ptr<StudyStep>> steps,
           Outbox* outbox = nullptr);
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
  ~Pipeline() override;

  // Rescans the spool: open studies restart their quiet period, unfinished rounds are queued again.
  void start();
  // Stops sealing, lets running jobs finish; queued jobs stay on disk for the next start.
  void stop();

  void on_stored(const scp::InstanceInfo& info, const scp::StoreResult& result) override;
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
