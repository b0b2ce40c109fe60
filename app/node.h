#pragma once
// The running node: wiring of spool, engine, pipeline, outbox, SCP and the operations endpoint, and its life
// under systemd (readiness, watchdog, SIGHUP reload, SIGTERM drain).
#include <filesystem>

#include "nephra/config/config.h"

namespace nephra::app {

enum ExitCode : int { kOk = 0, kUsage = 1, kBadConfig = 2, kSpoolError = 3, kStartError = 4 };

// Runs until SIGTERM or SIGINT; `config_path` is read again on SIGHUP.
int run_node(const config::Config& cfg, const std::filesystem::path& config_path, const char* version);

}  // namespace nephra::app
