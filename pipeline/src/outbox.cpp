#include "nephra/pipeline/outbox.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "nephra/scp/store_scu.h"

namespace nephra::pipeline {
namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

namespace {

// Archives served at once: one that hangs until its timeouts holds up only its own results.
constexpr int kDeliveryThreads = 4;

struct Delivery {
  store::StudyRound round;
  int attempts = 0;
  double first_attempt = 0;  // seconds since epoch; 0 = never tried
  Clock::time_point next;
};

}  // namespace

struct Outbox::Impl {
  const config::Shared& live;
  store::RoundStore& store;
  DeliveryStats stats;
  std::mutex mutex;
  std::condition_variable wake;
  std::map<std::string, Delivery> queue;  // by "<key>/<round>"
  std::set<std::string> busy;             // archives (calling AE of the study) with a delivery in progress
  bool stopping = false;
  std::atomic<bool> interrupt{false};  // stopping, readable without the mutex while a send runs
  std::vector<std::thread> threads;

  SendFiles send_files;

  Impl(const config::Shared& c, store::RoundStore& s, SendFiles f) : live(c), store(s), send_files(std::move(f)) {}

  void load_state(Delivery& d) const {
    const auto r = store.record(d.round);
    d.attempts = r.attempts;
    d.first_attempt = r.first_attempt;
    if (r.next_attempt > 0) {
      d.next =
          Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(r.next_attempt)));
    }
  }

  [[nodiscard]] static double backoff(const config::Config& cfg, int attempts) {
    const double wait = cfg.results.retry_initial_seconds * std::pow(2.0, std::min(attempts - 1, 30));
    return std::min(wait, cfg.results.retry_max_seconds);
  }

  void dead_letter(Delivery& d, const std::string& reason) {
    store.dead_letter(d.round, reason);
    ++stats.dead_lettered;
    spdlog::error("RESULT_DEAD_LETTER study={} round={} peer={} reason=\"{}\"", d.round.study_key, d.round.round,
                  d.round.calling_ae, reason);
  }

  scp::SendResult send(const config::Config& cfg, const config::Peer& peer, Delivery& d) {
    const scp::StoreTarget target{cfg.node.ae_title,
                                  peer.ae_title,
                                  peer.host,
                                  peer.port,
                                  cfg.results.timeout_seconds,
                                  peer.tls ? &cfg.tls : nullptr,
                                  peer.certificate_name()};
    std::vector<fs::path> files;
    try {
      files = store.pending_results(d.round);
    } catch (const store::SpoolError& err) {  // results lost after they were committed: say so, never "delivered"
      return {scp::SendOutcome::kPermanent, err.what()};
    }
    const auto started = std::chrono::steady_clock::now();
    auto result = send_files(
        target, files,
        [&](const fs::path& f) {
          store.mark_sent(d.round, f);
          ++stats.instances_sent;
        },
        [&] { return !interrupt.load() && !store.overtaken(d.round); });
    stats.send_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    return result;
  }

  // The archive gets the later round's SR instead; returns true (this delivery is finished).
  bool supersede(const Delivery& d) {
    store.supersede(d.round);
    spdlog::info("ROUND_SUPERSEDED study={} round={} note=\"a later round of the study speaks for it\"",
                 d.round.study_key, d.round.round);
    return true;
  }

  // One attempt; returns true when the delivery is finished (delivered, dead-lettered or superseded).
  bool attempt(Delivery& d) {
    const auto cfg_snapshot = live.get();
    const config::Config& cfg = *cfg_snapshot;
    if (store.overtaken(d.round)) return supersede(d);
    if (cfg.results.shadow) {
      store.mark_done(d.round, kShadowReason);
      ++stats.rounds_shadowed;
      spdlog::info("RESULT_KEPT_SHADOW study={} round={} peer={} note=\"results.shadow: kept in the spool, not sent\"",
                   d.round.study_key, d.round.round, d.round.calling_ae);
      return true;
    }
    const auto tried = store.begin_attempt(d.round);
    d.attempts = tried.attempts;
    d.first_attempt = tried.first_attempt;
    // A peer missing from the configuration is an operator's edit in progress, not a refusal: keep retrying.
    const config::Peer* peer = cfg.find_peer(d.round.calling_ae);
    const scp::SendResult result =
        peer == nullptr ? scp::SendResult{scp::SendOutcome::kTransient,
                                          "no [[peers]] entry for " + d.round.calling_ae + " (add it and reload)"}
                        : send(cfg, *peer, d);
    if (result.outcome == scp::SendOutcome::kTransient && store.overtaken(d.round)) return supersede(d);
    if (interrupt.load() && result.outcome == scp::SendOutcome::kTransient) {
      spdlog::info("RESULT_PAUSED study={} round={} note=\"the node is stopping; the rest goes at the next start\"",
                   d.round.study_key, d.round.round);
      return false;
    }
    if (result.outcome == scp::SendOutcome::kDelivered) {
      store.mark_done(d.round);
      ++stats.rounds_delivered;
      spdlog::info("RESULT_DELIVERED study={} round={} peer={} attempts={}", d.round.study_key, d.round.round,
                   d.round.calling_ae, d.attempts);
      return true;
    }
    if (result.outcome == scp::SendOutcome::kPermanent) {
      dead_letter(d, result.reason);
      return true;
    }
    if (store::epoch_seconds() - d.first_attempt > cfg.results.give_up_hours * 3600.0) {
      dead_letter(d, "gave up after " + std::to_string(d.attempts) + " attempts: " + result.reason);
      return true;
    }
    const double wait = backoff(cfg, d.attempts);
    store.retry_later(d.round, wait, result.reason);
    d.next = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait));
    ++stats.retries;
    spdlog::warn("RESULT_RETRY study={} round={} peer={} attempt={} wait_s={:.1f} reason=\"{}\"", d.round.study_key,
                 d.round.round, d.round.calling_ae, d.attempts, wait, result.reason);
    return false;
  }

  // The earliest delivery to an archive nobody is sending to; queue.end() when there is none.
  std::map<std::string, Delivery>::iterator next_free() {
    auto due = queue.end();
    for (auto it = queue.begin(); it != queue.end(); ++it) {
      if (busy.count(it->second.round.calling_ae) != 0) continue;
      if (due == queue.end() || it->second.next < due->second.next) due = it;
    }
    return due;
  }

  void run() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      const auto due = next_free();
      if (due == queue.end()) {
        wake.wait(lock);
        continue;
      }
      if (due->second.next > Clock::now()) {
        wake.wait_until(lock, due->second.next);
        continue;
      }
      Delivery d = due->second;
      busy.insert(d.round.calling_ae);
      lock.unlock();
      bool finished = true;
      try {
        finished = attempt(d);
      } catch (const std::exception& err) {
        spdlog::error("RESULT_DELIVERY_ERROR study={} round={} reason=\"{}\"", d.round.study_key, d.round.round,
                      err.what());
        d.next = Clock::now() + std::chrono::seconds(static_cast<long>(live.get()->results.retry_max_seconds));
        finished = false;
      }
      lock.lock();
      busy.erase(d.round.calling_ae);
      wake.notify_all();  // another thread may have skipped this archive's next round
      const std::string id = d.round.study_key + "/" + std::to_string(d.round.round);
      const bool was_retrying = queue.count(id) != 0 && queue[id].attempts > 0;
      if (finished) {
        queue.erase(id);
        --stats.pending;
      } else {
        queue[id] = d;
      }
      stats.retrying += (!finished && d.attempts > 0 ? 1 : 0) - (was_retrying ? 1 : 0);
    }
  }
};

Outbox::Outbox(const config::Shared& cfg, store::RoundStore& store, SendFiles send)
    : impl_(std::make_unique<Impl>(cfg, store, std::move(send))) {}
Outbox::~Outbox() { stop(); }

void Outbox::start() {
  for (int i = 0; i < kDeliveryThreads; ++i) impl_->threads.emplace_back([this] { impl_->run(); });
}

void Outbox::stop() {
  {
    const std::lock_guard guard(impl_->mutex);
    impl_->stopping = true;
    impl_->interrupt = true;
  }
  impl_->wake.notify_all();
  for (auto& thread : impl_->threads) thread.join();
  impl_->threads.clear();
}

void Outbox::submit(const store::StudyRound& round) {
  Delivery d{round, 0, 0, Clock::now()};
  impl_->load_state(d);
  {
    const std::lock_guard guard(impl_->mutex);
    const std::string id = round.study_key + "/" + std::to_string(round.round);
    if (impl_->queue.emplace(id, d).second) {
      ++impl_->stats.pending;
      if (d.attempts > 0) ++impl_->stats.retrying;  // a delivery resumed after a restart
    }
  }
  impl_->wake.notify_all();
}

const DeliveryStats& Outbox::stats() const { return impl_->stats; }

}  // namespace nephra::pipeline
