#include "systemd_notify.h"

#include <systemd/sd-daemon.h>

namespace nephra::app {
namespace {

void send(const std::string& message) {
  // 0 = not under systemd; negative = socket error. Neither may take the node down.
  (void)sd_notify(0, message.c_str());
}

}  // namespace

void notify_ready(const std::string& status) { send("READY=1\nSTATUS=" + status); }
void notify_reloading() { send("RELOADING=1\nSTATUS=reloading the configuration"); }
void notify_status(const std::string& status) { send("STATUS=" + status); }
void notify_stopping() { send("STOPPING=1\nSTATUS=stopping: finishing associations, jobs and sends in progress"); }
void notify_watchdog() { send("WATCHDOG=1"); }

std::optional<std::chrono::microseconds> watchdog_ping_interval() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(usec / 2));
}

}  // namespace nephra::app
