#pragma once
// One log for the node: spdlog to the console or natively to journald, with DCMTK's own messages routed into it.
#include <string>

#include "nephra/config/config.h"

namespace nephra::app {

// Chooses the sink (log.target) once per process; later calls only change levels, as a reload does.
void configure_logging(const config::Config::Log& log);

}  // namespace nephra::app
