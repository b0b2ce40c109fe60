#include "nephra/pipeline/pipeline.h"

#include <spdlog/spdlog.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

namespace nephra::pipeline {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

struct Pipeline::Impl {
  const config::Shared& cfg;
  scp::Spool& spool;
  std::vector<std::unique_ptr<StudyStep>> steps;
  Outbox* outbox;
  PipelineStats stats;

  std::mutex mutex;
  std::map<std::string, Clock::time_point> last_seen;  // open studies, by study key
  std::map<unsigned long, Clock::time_point> running;  // jobs in progress, by job number
  unsigned long next_job = 0;

  asio::io_context timer_io;
  asio::steady_timer timer{timer_io};
  std::thread timer_thread;
  std::unique_ptr<asio::thread_pool> workers;
  std::atomic<bool> stopping{false};

  Impl(const config::Shared& c, scp::Spool& s, std::vector<std::unique_ptr<StudyStep>> st, Outbox* o)
      : cfg(c), spool(s), steps(std::move(st)), outbox(o) {
    for (const auto& step : steps) stats.step_seconds.emplace(step->name(), std::make_unique<metrics::Histogram>());
  }

  // Results waiting in out/ go to the outbox, which marks the round done once they are acknowledged.
  void finish(const scp::StudyRound& round) {
    if (outbox != nullptr && std::filesystem::exists(round.dir / "out")) {
      spool.write_round_file(round, kProcessedMarker, "processed\n");
      outbox->submit(round);
    } else {
      spool.mark_done(round);
    }
  }

  [[nodiscard]] Clock::duration quiet_period() const {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg.get()->study.stable_seconds));
  }

  void enqueue(scp::StudyRound round) {
    ++stats.queue_depth;
    asio::post(*workers, [this, round = std::move(round), queued = Clock::now()] {
      --stats.queue_depth;
      if (stopping.load()) return;  // still on disk: the next start picks it up
      stats.queue_wait_seconds.observe(std::chrono::duration<double>(Clock::now() - queued).count());
      unsigned long job = 0;
      {
        const std::lock_guard guard(mutex);
        job = next_job++;
        running.emplace(job, Clock::now());
      }
      ++stats.jobs_running;
      run_job(round);
      --stats.jobs_running;
      const std::lock_guard guard(mutex);
      running.erase(job);
    });
  }

  void run_step(StudyStep& step, const scp::StudyRound& round) {
    const auto started = Clock::now();
    step.run(round, spool);
    stats.step_seconds.at(step.name())->observe(std::chrono::duration<double>(Clock::now() - started).count());
  }

  void run_job(const scp::StudyRound& round) {
    const auto started = Clock::now();
    try {
      for (const auto& step : steps) run_step(*step, round);
      finish(round);
      ++stats.jobs_done;
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
      spdlog::info("JOB_DONE study={} round={} ms={}", round.study_key, round.round, ms);
    } catch (const std::exception& err) {
      ++stats.jobs_failed;
      spdlog::error("JOB_FAILED study={} round={} reason=\"{}\"", round.study_key, round.round, err.what());
      try {
        spool.write_round_file(round, "failed", std::string(err.what()) + "\n");
      } catch (const std::exception& again) {
        spdlog::error("JOB_FAILED_UNRECORDED study={} reason=\"{}\"", round.study_key, again.what());
      }
    }
  }

  void seal_stable() {
    std::vector<std::string> due;
    {
      const std::lock_guard guard(mutex);
      const auto now = Clock::now();
      for (auto it = last_seen.begin(); it != last_seen.end();) {
        if (now - it->second >= quiet_period()) {
          due.push_back(it->first);
          it = last_seen.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (const auto& key : due) {
      try {
        if (auto round = spool.seal(key)) {
          ++stats.studies_completed;
          spdlog::info("STUDY_STABLE study={} round={}", key, round->round);
          enqueue(std::move(*round));
        }
      } catch (const std::exception& err) {
        spdlog::error("STUDY_SEAL_FAILED study={} reason=\"{}\"", key, err.what());
        const std::lock_guard guard(mutex);
        last_seen.emplace(key, Clock::now());  // try again after another quiet period
      }
    }
  }

  void arm_timer() {
    timer.expires_after(std::chrono::milliseconds(100));
    timer.async_wait([this](const boost::system::error_code& ec) {
      if (ec || stopping.load()) return;
      seal_stable();
      arm_timer();
    });
  }
};

Pipeline::Pipeline(const config::Shared& cfg, scp::Spool& spool, std::vector<std::unique_ptr<StudyStep>> steps,
                   Outbox* outbox)
    : impl_(std::make_unique<Impl>(cfg, spool, std::move(steps), outbox)) {}

Pipeline::~Pipeline() { stop(); }

void Pipeline::start() {
  impl_->workers = std::make_unique<asio::thread_pool>(static_cast<size_t>(impl_->cfg.get()->pipeline.workers));
  const scp::ScanResult scan = impl_->spool.scan();
  {
    const std::lock_guard guard(impl_->mutex);
    for (const auto& open : scan.open) {
      impl_->last_seen[open.study_key] = Clock::now();
      spdlog::info("STUDY_RESUMED study={} instances={}", open.study_key, open.instances);
    }
  }
  for (const auto& round : scan.pending) {
    if (impl_->outbox != nullptr && std::filesystem::exists(round.dir / kProcessedMarker)) {
      spdlog::info("RESULT_REQUEUED study={} round={}", round.study_key, round.round);
      impl_->outbox->submit(round);
      continue;
    }
    spdlog::info("JOB_REQUEUED study={} round={}", round.study_key, round.round);
    impl_->enqueue(round);
  }
  impl_->arm_timer();
  impl_->timer_thread = std::thread([this] { impl_->timer_io.run(); });
}

void Pipeline::stop() {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  asio::post(impl_->timer_io, [this] { impl_->timer.cancel(); });
  if (impl_->timer_thread.joinable()) impl_->timer_thread.join();
  if (impl_->workers) impl_->workers->join();
}

void Pipeline::on_stored(const scp::InstanceInfo& /*info*/, const scp::StoreResult& result) {
  ++impl_->stats.instances_stored;
  if (result.late) {
    ++impl_->stats.late_instances;
    spdlog::warn("STUDY_LATE_INSTANCE study={} note=\"study already completed; a new round opens\"", result.study_key);
  }
  const std::lock_guard guard(impl_->mutex);
  impl_->last_seen[result.study_key] = Clock::now();
}

const PipelineStats& Pipeline::stats() const { return impl_->stats; }

std::chrono::steady_clock::duration Pipeline::longest_running_job() const {
  const std::lock_guard guard(impl_->mutex);
  if (impl_->running.empty()) return Clock::duration::zero();
  return Clock::now() - impl_->running.begin()->second;  // job numbers grow: the first entry is the oldest
}

}  // namespace nephra::pipeline
