#pragma once
// The systemd service protocol (sd_notify): readiness, status lines, stopping and the watchdog. Every call is a
// no-op when the node does not run under systemd (no NOTIFY_SOCKET), so tests and foreground runs need nothing.
#include <chrono>
#include <optional>
#include <string>

namespace nephra::app {

void notify_ready(const std::string& status);
void notify_reloading();
void notify_status(const std::string& status);
void notify_stopping();
void notify_watchdog();

// Half the interval systemd expects pings at (WatchdogSec=), as sd_watchdog_enabled(3) recommends; nullopt
// when the watchdog is off.
std::optional<std::chrono::microseconds> watchdog_ping_interval();

}  // namespace nephra::app
