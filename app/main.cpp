// nephrad: the Nephra node. One linear launch: args -> config -> logging -> spool -> pipeline -> SCP -> wait.
#include <dcmtk/oflog/oflog.h>
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <string_view>

#include "nephra/config/config.h"
#include "nephra/engine/classifier.h"
#include "nephra/pipeline/pipeline.h"
#include "nephra/scp/spool.h"
#include "nephra/scp/storage_server.h"

namespace {

enum ExitCode : int { kOk = 0, kUsage = 1, kBadConfig = 2, kSpoolError = 3, kStartError = 4 };

constexpr std::string_view kUsageText = R"(usage: nephrad --config FILE          run the node in the foreground
       nephrad --check-config FILE    validate FILE and exit (non-zero names the offending key)
       nephrad --print-defaults       print the default configuration
       nephrad --print-reference      print the configuration reference (Markdown)
       nephrad --version
)";

struct Args {
  std::string mode;
  std::string config_path;
};

std::optional<Args> parse_args(int argc, char** argv) {
  if (argc == 2) {
    const std::string_view a = argv[1];
    if (a == "--print-defaults" || a == "--print-reference" || a == "--version") return Args{std::string(a), ""};
  }
  if (argc == 3) {
    const std::string_view a = argv[1];
    if (a == "--config" || a == "--check-config") return Args{std::string(a), argv[2]};
  }
  return std::nullopt;
}

std::optional<nephra::config::Config> load_config(const std::string& path) {
  try {
    return nephra::config::load_file(path);
  } catch (const nephra::config::ConfigError& err) {
    std::cerr << "nephrad: invalid configuration " << path << ": " << err.what() << "\n";
    return std::nullopt;
  }
}

int run_node(const nephra::config::Config& cfg) {
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%t] %v");
  spdlog::set_level(spdlog::level::from_str(cfg.log.level));
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);
  spdlog::info("NODE_STARTING version={} ae_title={}", NEPHRA_VERSION, cfg.node.ae_title);

  std::optional<nephra::scp::Spool> spool;
  try {
    spool.emplace(cfg.node.spool_dir);
  } catch (const std::exception& err) {
    spdlog::critical("SPOOL_UNUSABLE dir={} reason=\"{}\"", cfg.node.spool_dir.string(), err.what());
    return kSpoolError;
  }

  std::unique_ptr<nephra::engine::Classifier> classifier;
  try {
    classifier = std::make_unique<nephra::engine::Classifier>(
        nephra::engine::load_model(cfg.engine.model),
        nephra::engine::ClassifierOptions{cfg.engine.threads, cfg.engine.batch});
  } catch (const std::exception& err) {
    spdlog::critical("MODEL_UNUSABLE path={} reason=\"{}\"", cfg.engine.model.string(), err.what());
    return kStartError;
  }
  spdlog::info("MODEL_LOADED model=\"{}\" sha256={}", classifier->model().id(), classifier->model().onnx_sha256);

  std::vector<std::unique_ptr<nephra::pipeline::StudyStep>> steps;
  steps.push_back(nephra::pipeline::make_inventory_step());
  steps.push_back(nephra::pipeline::make_classify_step(cfg, *classifier, NEPHRA_VERSION));
  nephra::pipeline::Outbox outbox(cfg, *spool);
  nephra::pipeline::Pipeline pipeline(cfg, *spool, std::move(steps), &outbox);
  nephra::scp::StorageServer server(cfg, *spool, pipeline);
  try {
    outbox.start();
    pipeline.start();
    server.start();
  } catch (const std::exception& err) {
    spdlog::critical("NODE_START_FAILED reason=\"{}\"", err.what());
    return kStartError;
  }

  boost::asio::io_context io;
  boost::asio::signal_set stop_signals(io, SIGINT, SIGTERM);
  stop_signals.async_wait([&io](const boost::system::error_code&, int signo) {
    spdlog::info("NODE_STOPPING signal={}", signo);
    io.stop();
  });
  // SIGHUP must not kill a node holding acknowledged studies; reloading the configuration comes later.
  boost::asio::signal_set hup(io, SIGHUP);
  std::function<void()> wait_hup = [&] {
    hup.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      spdlog::warn("CONFIG_RELOAD_UNSUPPORTED note=\"restart the node to apply a new configuration\"");
      wait_hup();
    });
  };
  wait_hup();
  spdlog::info("NODE_READY");
  io.run();

  server.stop();
  pipeline.stop();
  outbox.stop();
  spdlog::info("NODE_STOPPED");
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  // Outgoing DCMTK connections read this when they open a socket; incoming ones are set by the listener.
  ::setenv("TCP_NODELAY", "1", 1);
  const auto args = parse_args(argc, argv);
  if (!args) {
    std::cerr << kUsageText;
    return kUsage;
  }
  if (args->mode == "--version") {
    std::cout << "nephrad " << NEPHRA_VERSION << "\n";
    return kOk;
  }
  if (args->mode == "--print-defaults") {
    std::cout << nephra::config::default_toml();
    return kOk;
  }
  if (args->mode == "--print-reference") {
    std::cout << nephra::config::reference_markdown();
    return kOk;
  }
  const auto cfg = load_config(args->config_path);
  if (!cfg) return kBadConfig;
  if (args->mode == "--check-config") {
    std::cout << "nephrad: " << args->config_path << " is valid\n";
    return kOk;
  }
  return run_node(*cfg);
}
