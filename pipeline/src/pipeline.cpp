#include "nephra/pipeline/pipeline.h"

#include <spdlog/spdlog.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <thread>

namespace nephra::pipeline {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

struct Pipeline::Impl {
  const config::Shared& cfg;
  store::RoundStore& store;
  std::vector<std::unique_ptr<StudyStep>> steps;
  Outbox* outbox;
  PipelineStats stats;

  std::mutex mutex;
  std::map<std::string, Clock::time_point> last_seen;  // open studies, by study key
  std::map<unsigned long, Clock::time_point> running;  // jobs in progress, by job number
  unsigned long next_job = 0;
  Clock::time_point next_sweep = Clock::now();

  asio::io_context timer_io;
  asio::steady_timer timer{timer_io};
  std::thread timer_thread;
  std::unique_ptr<asio::thread_pool> workers;
  std::atomic<bool> stopping{false};

  Impl(const config::Shared& c, store::RoundStore& s, std::vector<std::unique_ptr<StudyStep>> st, Outbox* o)
      : cfg(c), store(s), steps(std::move(st)), outbox(o) {
    for (const auto& step : steps) stats.step_seconds.emplace(step->name(), std::make_unique<metrics::Histogram>());
  }

  // Committed results go to the outbox, which marks the round done once they are acknowledged.
  void finish(const store::StudyRound& round) {
    const auto state = store.record(round).state;
    if (state == store::RoundState::kSuperseded) {
      ++stats.rounds_superseded;
      spdlog::info("ROUND_SUPERSEDED study={} round={} note=\"a later round of the study speaks for it\"",
                   round.study_key, round.round);
    } else if (state == store::RoundState::kClassified && outbox != nullptr) {
      outbox->submit(round);
    } else {
      store.mark_done(round);
    }
  }

  [[nodiscard]] Clock::duration quiet_period() const {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg.get()->study.stable_seconds));
  }

  void enqueue(store::StudyRound round) {
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

  // Queues the round once `delay_seconds` have passed (a retry; the time is also in the round's record).
  void enqueue_after(store::StudyRound round, double delay_seconds) {
    auto timer_ptr = std::make_shared<asio::steady_timer>(timer_io);
    timer_ptr->expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(delay_seconds)));
    timer_ptr->async_wait([this, timer_ptr, round = std::move(round)](const boost::system::error_code& ec) mutable {
      if (!ec && !stopping.load()) enqueue(std::move(round));
    });
  }

  StepResult run_step(StudyStep& step, const store::StudyRound& round) {
    const auto started = Clock::now();
    StepResult result;
    try {
      result = step.run(round, store);
    } catch (const std::exception& err) {
      result = StepResult::retry(step.name() + ": " + err.what());
    }
    stats.step_seconds.at(step.name())->observe(std::chrono::duration<double>(Clock::now() - started).count());
    return result;
  }

  void quarantine(const store::StudyRound& round, const std::string& reason) {
    store.quarantine(round, reason);
    ++stats.jobs_quarantined;
    ++stats.quarantined;
    spdlog::error("ROUND_QUARANTINED study={} round={} reason=\"{}\"", round.study_key, round.round, reason);
  }

  void run_job(const store::StudyRound& round) {
    const auto started = Clock::now();
    try {
      if (store.overtaken(round)) {  // a later round covers every instance of this one
        store.supersede(round);
        finish(round);
        return;
      }
      const auto c = cfg.get();
      const int attempt = store.begin_attempt(round).attempts;
      if (attempt > c->pipeline.max_attempts) {
        const std::string last = store.record(round).reason;
        quarantine(round, "gave up after " + std::to_string(attempt - 1) +
                              " tries: " + (last.empty() ? "the node stopped during each (killed or crashed)" : last));
        return;
      }
      StepResult result;
      for (const auto& step : steps) {
        result = run_step(*step, round);
        if (result.kind != StepResult::Kind::kDone) break;
      }
      if (result.kind == StepResult::Kind::kFail) {
        quarantine(round, result.reason);
      } else if (result.kind == StepResult::Kind::kRetry && attempt >= c->pipeline.max_attempts) {
        quarantine(round, "gave up after " + std::to_string(attempt) + " tries: " + result.reason);
      } else if (result.kind == StepResult::Kind::kRetry) {
        const double wait =
            std::min(c->pipeline.retry_seconds * std::pow(2.0, attempt - 1), c->results.retry_max_seconds);
        store.retry_later(round, wait, result.reason);
        ++stats.jobs_retried;
        spdlog::warn("JOB_RETRY study={} round={} attempt={} wait_s={:.1f} reason=\"{}\"", round.study_key, round.round,
                     attempt, wait, result.reason);
        enqueue_after(round, wait);
      } else {
        finish(round);
        ++stats.jobs_done;
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
        spdlog::info("JOB_DONE study={} round={} ms={}", round.study_key, round.round, ms);
      }
    } catch (const std::exception& err) {  // the store itself failed (disk full while recording): try again later
      ++stats.jobs_retried;
      const double wait = cfg.get()->results.retry_max_seconds;
      spdlog::error("JOB_RETRY study={} round={} wait_s={:.1f} reason=\"{}\"", round.study_key, round.round, wait,
                    err.what());
      enqueue_after(round, wait);
    }
  }

  void sweep_retention() {
    const auto c = cfg.get();
    const store::RetentionPolicy policy{c->retention.instances_hours, c->retention.results_hours,
                                        c->retention.max_spool_gb};
    const double now = store::epoch_seconds();
    try {
      const auto report = store.sweep(policy, now);
      stats.retention_instance_folders += report.instance_folders;
      stats.retention_studies += report.studies;
      stats.retention_bytes += report.bytes;
      if (report.instance_folders + report.studies > 0) {
        spdlog::info("RETENTION_SWEEP studies_removed={} ct_removed={} bytes={}", report.studies,
                     report.instance_folders, report.bytes);
      }
    } catch (const std::exception& err) {
      spdlog::error("RETENTION_SWEEP_FAILED reason=\"{}\"", err.what());
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
        if (auto round = store.seal(key)) {
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
      if (Clock::now() >= next_sweep) {
        next_sweep = Clock::now() + std::chrono::seconds(60);
        sweep_retention();
      }
      arm_timer();
    });
  }
};

Pipeline::Pipeline(const config::Shared& cfg, store::RoundStore& store, std::vector<std::unique_ptr<StudyStep>> steps,
                   Outbox* outbox)
    : impl_(std::make_unique<Impl>(cfg, store, std::move(steps), outbox)) {}

Pipeline::~Pipeline() { stop(); }

void Pipeline::start() {
  impl_->workers = std::make_unique<asio::thread_pool>(static_cast<size_t>(impl_->cfg.get()->pipeline.workers));
  const store::ScanResult scan = impl_->store.scan();
  impl_->stats.quarantined = static_cast<long>(scan.quarantined);
  {
    const std::lock_guard guard(impl_->mutex);
    for (const auto& open : scan.open) {
      impl_->last_seen[open.study_key] = Clock::now();
      spdlog::info("STUDY_RESUMED study={} instances={}", open.study_key, open.instances);
    }
  }
  const double now = store::epoch_seconds();
  for (const auto& [round, record] : scan.pending) {
    if (record.state == store::RoundState::kClassified && impl_->outbox != nullptr) {
      spdlog::info("RESULT_REQUEUED study={} round={}", round.study_key, round.round);
      impl_->outbox->submit(round);
      continue;
    }
    spdlog::info("JOB_REQUEUED study={} round={} attempts={}", round.study_key, round.round, record.attempts);
    if (record.next_attempt > now) {
      impl_->enqueue_after(round, record.next_attempt - now);
    } else {
      impl_->enqueue(round);
    }
  }
  impl_->arm_timer();
  impl_->timer_thread = std::thread([this] { impl_->timer_io.run(); });
}

void Pipeline::sweep_retention() { impl_->sweep_retention(); }

void Pipeline::stop() {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  asio::post(impl_->timer_io, [this] { impl_->timer.cancel(); });
  if (impl_->timer_thread.joinable()) impl_->timer_thread.join();
  if (impl_->workers) impl_->workers->join();
}

void Pipeline::on_stored(const store::InstanceInfo& /*info*/, const store::StoreResult& result) {
  ++impl_->stats.instances_stored;
  if (result.duplicate) {  // a re-send of what the study holds: no new round, no new result
    ++impl_->stats.duplicates_ignored;
    spdlog::info("STUDY_DUPLICATE_INSTANCE study={} note=\"already received; nothing to redo\"", result.study_key);
    return;
  }
  if (result.late) {
    ++impl_->stats.late_instances;
    spdlog::warn("STUDY_LATE_INSTANCE study={} note=\"a new round re-runs the whole study; its SR replaces the last\"",
                 result.study_key);
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
