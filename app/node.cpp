#include "node.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>

#include "http_endpoint.h"
#include "logging.h"
#include "nephra/engine/classifier.h"
#include "nephra/metrics/metrics.h"
#include "nephra/pipeline/pipeline.h"
#include "nephra/scp/storage_server.h"
#include "nephra/store/round_store.h"
#include "node_metrics.h"
#include "status_page.h"
#include "systemd_notify.h"
#include "try_slice.h"

namespace nephra::app {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

constexpr auto kStatusPeriod = std::chrono::seconds(5);
constexpr size_t kRoundsShown = 25;

enum class Phase { kStarting, kReady, kStopping };

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

// Everything the node runs, in construction order; destruction runs the other way.
struct Parts {
  config::Shared live;
  store::RoundStore spool;
  std::unique_ptr<engine::Classifier> classifier;
  pipeline::ClassifyStats classify_stats;
  pipeline::Outbox outbox;
  std::unique_ptr<pipeline::Pipeline> pipeline;
  std::unique_ptr<scp::StorageServer> server;

  Parts(const config::Config& cfg, std::unique_ptr<engine::Classifier> clf, const char* version)
      : live(cfg), spool(cfg.node.spool_dir), classifier(std::move(clf)), outbox(live, spool) {
    std::vector<std::unique_ptr<pipeline::StudyStep>> steps;
    steps.push_back(pipeline::make_inventory_step());
    steps.push_back(pipeline::make_classify_step(cfg, *classifier, version, classify_stats));
    pipeline = std::make_unique<pipeline::Pipeline>(live, spool, std::move(steps), &outbox);
    server = std::make_unique<scp::StorageServer>(live, spool, *pipeline);
  }
};

class Runtime {
 public:
  Runtime(Parts& parts, std::filesystem::path config_path, const char* version)
      : parts_(parts), config_path_(std::move(config_path)), version_(version) {
    register_node_metrics(registry_,
                          {*parts_.server, *parts_.pipeline, parts_.classify_stats, parts_.outbox, parts_.spool});
    registry_.add("nephra_config_reloads_total", "SIGHUP reloads, by result.", reloads_applied_,
                  {{"result", "applied"}});
    registry_.add("nephra_config_reloads_total", "SIGHUP reloads, by result.", reloads_rejected_,
                  {{"result", "rejected"}});
    registry_.add_gauge("nephra_ready", "1 when the node accepts and processes studies (see /healthz).",
                        [this] { return unhealthy_reason().empty() ? 1.0 : 0.0; });
    registry_.add_gauge("nephra_build_info", "Version of the node and of the model it runs.", [] { return 1.0; },
                        {{"version", version_}, {"model", parts_.classifier->model().id()}});
  }

  int run() {
    const auto cfg = parts_.live.get();
    try {
      if (cfg->http.enabled) {
        http_.start(cfg->http.bind, cfg->http.port, {cfg->http.try_page ? kMaxTryUploadBytes : 0});
      }
      parts_.outbox.start();
      parts_.pipeline->start();
      parts_.server->start();
    } catch (const std::exception& err) {
      spdlog::critical("NODE_START_FAILED reason=\"{}\"", err.what());
      return kStartError;
    }
    phase_ = Phase::kReady;
    notify_ready(status_line());
    spdlog::info("NODE_READY");

    asio::signal_set stop_signals(io_, SIGINT, SIGTERM);
    stop_signals.async_wait([this](const boost::system::error_code& ec, int signo) {
      if (ec) return;
      spdlog::info("NODE_STOPPING signal={}", signo);
      phase_ = Phase::kStopping;
      notify_stopping();
      io_.stop();
    });
    asio::signal_set hup(io_, SIGHUP);
    wait_for_hup(hup);
    sample_throughput();
    arm_status_timer();
    if (const auto interval = watchdog_ping_interval()) arm_watchdog(*interval);
    io_.run();

    phase_ = Phase::kStopping;
    parts_.server->stop();
    parts_.pipeline->stop();
    parts_.outbox.stop();
    http_.stop();
    spdlog::info("NODE_STOPPED");
    return kOk;
  }

 private:
  Parts& parts_;
  std::filesystem::path config_path_;
  std::string version_;
  std::atomic<Phase> phase_{Phase::kStarting};
  metrics::Registry registry_;
  metrics::Counter reloads_applied_;
  metrics::Counter reloads_rejected_;
  Throughput throughput_;
  double started_at_ = store::epoch_seconds();
  HttpEndpoint http_{[this](const HttpRequest& request) { return serve(request); }};
  asio::io_context io_;
  asio::steady_timer status_timer_{io_};
  asio::steady_timer watchdog_timer_{io_};
  bool stall_reported_ = false;

  // Empty when ready; otherwise why not, in words an operator can act on.
  [[nodiscard]] std::string unhealthy_reason() const {
    if (phase_ == Phase::kStarting) return "starting";
    if (phase_ == Phase::kStopping) return "stopping";
    const auto cfg = parts_.live.get();
    const std::uintmax_t free_mb = parts_.spool.free_mb();
    if (free_mb < static_cast<std::uintmax_t>(cfg->node.min_free_spool_mb)) {
      return "spool low on space: " + std::to_string(free_mb) +
             " MB free (node.min_free_spool_mb = " + std::to_string(cfg->node.min_free_spool_mb) +
             "); new studies are refused until space is freed";
    }
    const double busy = std::chrono::duration<double>(parts_.pipeline->longest_running_job()).count();
    const double limit = cfg->pipeline.stall_seconds;
    if (busy > limit) {
      return "pipeline stalled: a study job has run for " + std::to_string(static_cast<long>(busy)) +
             " s (pipeline.stall_seconds = " + std::to_string(static_cast<long>(limit)) + ")";
    }
    return "";
  }

  [[nodiscard]] std::string status_line() const {
    const auto& p = parts_.pipeline->stats();
    const auto& d = parts_.outbox.stats();
    return "queue " + std::to_string(p.queue_depth.load()) + ", running " + std::to_string(p.jobs_running.load()) +
           ", results pending " + std::to_string(d.pending.load()) + " (retrying " + std::to_string(d.retrying.load()) +
           "), studies done " + std::to_string(p.jobs_done.load()) + ", quarantined " +
           std::to_string(p.quarantined.load());
  }

  HttpResponse serve(const HttpRequest& request) const {
    const std::string& path = request.path;
    if (request.post) {
      if (path != "/try") return {404, "text/plain; charset=utf-8", "POST only to /try\n"};
      return try_slice(*parts_.classifier, request.body, parts_.spool.new_tmp_path());
    }
    if (path == "/" || path == "/index.html") {
      return {200, "text/html; charset=utf-8", status_page_html(parts_.live.get()->http.try_page)};
    }
    if (path == "/status.json")
      return {200, "application/json",
              status_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"};
    if (path == "/metrics") return {200, "text/plain; version=0.0.4; charset=utf-8", registry_.render()};
    if (path == "/healthz") {
      const std::string reason = unhealthy_reason();
      const nlohmann::json body = {{"status", reason.empty() ? "ready" : "not_ready"},
                                   {"reason", reason},
                                   {"version", version_},
                                   {"model", parts_.classifier->model().id()},
                                   {"queue_depth", parts_.pipeline->stats().queue_depth.load()},
                                   {"results_pending", parts_.outbox.stats().pending.load()},
                                   {"results_dead_lettered", parts_.outbox.stats().dead_lettered.load()},
                                   // still ready (others' studies go on), but a person must look at these rounds
                                   {"rounds_quarantined", parts_.pipeline->stats().quarantined.load()}};
      return {reason.empty() ? 200 : 503, "application/json", body.dump() + "\n"};
    }
    return {404, "text/plain; charset=utf-8", "not found; try /, /status.json, /healthz or /metrics\n"};
  }

  [[nodiscard]] nlohmann::json status_json() const {
    const auto& p = parts_.pipeline->stats();
    const auto& d = parts_.outbox.stats();
    const auto cfg = parts_.live.get();
    const double now = store::epoch_seconds();
    const std::string reason = unhealthy_reason();
    return {{"ready", reason.empty()},
            {"reason", reason},
            {"version", version_},
            {"model", parts_.classifier->model().id()},
            {"ae_title", cfg->node.ae_title},
            {"uptime_s", static_cast<long>(now - started_at_)},
            {"try_page", cfg->http.try_page},
            {"shadow", cfg->results.shadow},
            {"queue",
             {{"depth", p.queue_depth.load()},
              {"running", p.jobs_running.load()},
              {"done", p.jobs_done.load()},
              {"retried", p.jobs_retried.load()},
              {"quarantined", p.quarantined.load()}}},
            {"deliveries",
             {{"pending", d.pending.load()},
              {"retrying", d.retrying.load()},
              {"dead_lettered", d.dead_lettered.load()},
              {"shadowed", d.rounds_shadowed.load()},
              {"sent", d.instances_sent.load()}}},
            {"throughput", throughput_.last_hour(counters(now))},
            {"rounds", rounds_json(parts_.spool.recent(kRoundsShown), now)}};
  }

  [[nodiscard]] Throughput::Sample counters(double now) const {
    return {now, parts_.pipeline->stats().instances_stored.load(), parts_.pipeline->stats().jobs_done.load(),
            parts_.outbox.stats().instances_sent.load()};
  }

  void sample_throughput() { throughput_.record(counters(store::epoch_seconds())); }

  void wait_for_hup(asio::signal_set& hup) {
    hup.async_wait([this, &hup](const boost::system::error_code& ec, int) {
      if (ec) return;
      reload();
      wait_for_hup(hup);
    });
  }

  // A bad file changes nothing: the running configuration stays in force.
  void reload() {
    notify_reloading();
    try {
      std::vector<std::string> needs_restart;
      config::Config next = config::apply_reload(*parts_.live.get(), config::load_file(config_path_), needs_restart);
      configure_logging(next.log);
      const size_t peers = next.peers.size();
      parts_.live.set(std::move(next));
      reloads_applied_.inc();
      spdlog::info("CONFIG_RELOADED path={} peers={}", config_path_.string(), peers);
      if (!needs_restart.empty()) {
        spdlog::warn(R"(CONFIG_RELOAD_NEEDS_RESTART keys={} note="running values kept until the next start")",
                     join(needs_restart));
      }
    } catch (const config::ConfigError& err) {
      reloads_rejected_.inc();
      spdlog::error(R"(CONFIG_RELOAD_REJECTED path={} key={} reason="{}" note="the running configuration stays")",
                    config_path_.string(), err.key(), err.what());
    } catch (const std::exception& err) {
      reloads_rejected_.inc();
      spdlog::error(R"(CONFIG_RELOAD_REJECTED path={} reason="{}" note="the running configuration stays")",
                    config_path_.string(), err.what());
    }
    notify_ready(status_line());
  }

  void arm_status_timer() {
    status_timer_.expires_after(kStatusPeriod);
    status_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      notify_status(status_line());
      sample_throughput();
      arm_status_timer();
    });
  }

  // Fed only while the pipeline makes progress: a hung job stops the pings and systemd restarts the node.
  void arm_watchdog(std::chrono::microseconds interval) {
    watchdog_timer_.expires_after(interval);
    watchdog_timer_.async_wait([this, interval](const boost::system::error_code& ec) {
      if (ec) return;
      const std::string reason = unhealthy_reason();
      if (reason.rfind("pipeline stalled", 0) == 0) {
        if (!stall_reported_) spdlog::critical(R"(PIPELINE_STALLED reason="{}" note="watchdog not fed")", reason);
        stall_reported_ = true;
      } else {
        stall_reported_ = false;
        notify_watchdog();
      }
      arm_watchdog(interval);
    });
  }
};

}  // namespace

int run_node(const config::Config& cfg, const std::filesystem::path& config_path, const char* version) {
  configure_logging(cfg.log);
  spdlog::info("NODE_STARTING version={} ae_title={}", version, cfg.node.ae_title);
  if (cfg.log.dcmtk_level == "debug" || cfg.log.dcmtk_level == "trace") {
    spdlog::warn("LOG_MAY_CONTAIN_PHI note=\"log.dcmtk_level {} prints DICOM headers, patient data included\"",
                 cfg.log.dcmtk_level);
  }

  std::unique_ptr<engine::Classifier> classifier;
  try {
    const auto backend = cfg.engine.backend == "opencv" ? engine::Backend::opencv : engine::Backend::onednn;
    classifier = std::make_unique<engine::Classifier>(
        engine::load_model(cfg.engine.model), engine::ClassifierOptions{cfg.engine.threads, cfg.engine.batch, backend});
  } catch (const std::exception& err) {
    spdlog::critical("MODEL_UNUSABLE path={} reason=\"{}\"", cfg.engine.model.string(), err.what());
    return kStartError;
  }
  spdlog::info("MODEL_LOADED model=\"{}\" sha256={} backend={}", classifier->model().id(),
               classifier->model().onnx_sha256, classifier->backend() == engine::Backend::onednn ? "onednn" : "opencv");
  if (const std::string why = classifier->fallback_reason(); !why.empty()) {
    spdlog::warn("ENGINE_FALLBACK backend=opencv reason=\"{}\"", why);
  }

  std::optional<Parts> parts;
  try {
    parts.emplace(cfg, std::move(classifier), version);
  } catch (const std::exception& err) {
    spdlog::critical("SPOOL_UNUSABLE dir={} reason=\"{}\"", cfg.node.spool_dir.string(), err.what());
    return kSpoolError;
  }
  Runtime runtime(*parts, config_path, version);
  return runtime.run();
}

}  // namespace nephra::app
