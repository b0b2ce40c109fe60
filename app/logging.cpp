#include "logging.h"

#include <dcmtk/oflog/appender.h>
#include <dcmtk/oflog/logger.h>
#include <dcmtk/oflog/spi/logevent.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>

namespace nephra::app {
namespace {

namespace l4c = dcmtk::log4cplus;

// DCMTK logs through its own log4cplus copy; this appender hands each event to spdlog, so that one sink, one
// format and one level policy cover both.
class SpdlogAppender : public l4c::Appender {
 public:
  SpdlogAppender() = default;
  SpdlogAppender(const SpdlogAppender&) = delete;
  SpdlogAppender& operator=(const SpdlogAppender&) = delete;
  ~SpdlogAppender() override { destructorImpl(); }
  void close() override {}

 protected:
  void append(const l4c::spi::InternalLoggingEvent& event) override {
    const l4c::LogLevel level = event.getLogLevel();
    spdlog::level::level_enum out = spdlog::level::trace;
    if (level >= l4c::ERROR_LOG_LEVEL) {
      out = spdlog::level::err;
    } else if (level >= l4c::WARN_LOG_LEVEL) {
      out = spdlog::level::warn;
    } else if (level >= l4c::INFO_LOG_LEVEL) {
      out = spdlog::level::info;
    } else if (level >= l4c::DEBUG_LOG_LEVEL) {
      out = spdlog::level::debug;
    }
    spdlog::log(out, "DCMTK logger={} message=\"{}\"", event.getLoggerName().c_str(), event.getMessage().c_str());
  }
};

l4c::LogLevel dcmtk_level(const std::string& name) {
  if (name == "trace") return l4c::TRACE_LOG_LEVEL;
  if (name == "debug") return l4c::DEBUG_LOG_LEVEL;
  if (name == "info") return l4c::INFO_LOG_LEVEL;
  if (name == "error") return l4c::ERROR_LOG_LEVEL;
  return l4c::WARN_LOG_LEVEL;
}

bool use_journal(const std::string& target) {
  if (target == "journal") return true;
  if (target == "console") return false;
  // systemd sets JOURNAL_STREAM when it connects stdout/stderr to the journal.
  const char* stream = std::getenv("JOURNAL_STREAM");
  return stream != nullptr && *stream != '\0';
}

}  // namespace

void configure_logging(const config::Config::Log& log) {
  static bool sinks_chosen = false;
  if (!sinks_chosen) {
    sinks_chosen = true;
    std::shared_ptr<spdlog::logger> logger;
    if (use_journal(log.target)) {
      // The journal stamps time, host and priority itself; the message stays the event line.
      logger = std::make_shared<spdlog::logger>("nephrad", std::make_shared<spdlog::sinks::systemd_sink_mt>("nephrad"));
    } else {
      logger = std::make_shared<spdlog::logger>("nephrad", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
      logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%t] %v");
    }
    spdlog::set_default_logger(logger);
    l4c::Logger root = l4c::Logger::getRoot();
    root.removeAllAppenders();
    root.addAppender(l4c::SharedAppenderPtr(new SpdlogAppender()));
  }
  spdlog::set_level(spdlog::level::from_str(log.level));
  l4c::Logger::getRoot().setLogLevel(dcmtk_level(log.dcmtk_level));
}

}  // namespace nephra::app
