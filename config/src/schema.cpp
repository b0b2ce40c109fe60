#include <sstream>

#include "nephra/config/config.h"

namespace nephra::config {

const std::vector<KeyInfo>& schema() {
  static const std::vector<KeyInfo> rows = {
      {"node.ae_title", "string", "\"NEPHRA\"",
       "Our AE title (1-16 characters, no backslash); callers must address it."},
      {"node.bind", "string", "\"127.0.0.1\"",
       "IPv4 address the DICOM port listens on; \"0.0.0.0\" for every interface."},
      {"node.port", "integer", "11112", "DICOM port (1-65535)."},
      {"node.spool_dir", "string", "\"spool\"",
       "Durable spool folder (relative paths are taken from the working directory)."},
      {"node.max_associations", "integer", "16", "Concurrent associations; more are rejected (local limit exceeded)."},
      {"study.stable_seconds", "number", "10",
       "Quiet period after a study's last instance before it counts as complete (0.1-86400)."},
      {"pipeline.workers", "integer", "2", "Worker threads that process completed studies (1-64)."},
      {"engine.model", "string", "\"models/nephra-kidney-v1.json\"",
       "Model manifest (JSON beside its ONNX file); its sha256 is checked at start."},
      {"engine.threads", "integer", "0", "CPU threads for inference (0 = all cores)."},
      {"engine.batch", "integer", "8", "Slices per network batch (1-256)."},
      {"results.uid_root", "string", "\"2.25\"",
       "UID root for result instances; UIDs are derived from it, the study and the model, so re-sends never "
       "duplicate. Put your organisation's root here."},
      {"results.max_heatmaps", "integer", "20", "Most heatmap Secondary Capture images per study (0-1000)."},
      {"results.retry_initial_seconds", "number", "5",
       "First wait before re-sending results to an unreachable archive; doubles each time."},
      {"results.retry_max_seconds", "number", "600", "Longest wait between two delivery attempts."},
      {"results.give_up_hours", "number", "72",
       "After this long without delivery, results go to the dead-letter folder."},
      {"results.timeout_seconds", "integer", "30", "Network timeout for sending results (1-3600)."},
      {"log.level", "string", "\"info\"", "One of trace, debug, info, warn, error."},
      {"peers[].ae_title", "string", "(required)", "AE title of an archive allowed to send to us."},
      {"peers[].host", "string", "(required)", "Host where results for that archive are sent back."},
      {"peers[].port", "integer", "(required)", "DICOM port of that archive (1-65535)."},
  };
  return rows;
}

std::string reference_markdown() {
  std::ostringstream out;
  out << "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& row : schema()) {
    out << "| `" << row.key << "` | " << row.type << " | `" << row.default_value << "` | " << row.help << " |\n";
  }
  return out.str();
}

std::string default_toml() {
  return R"([node]
ae_title = "NEPHRA"
bind = "127.0.0.1"
port = 11112
spool_dir = "spool"
max_associations = 16

[study]
stable_seconds = 10

[pipeline]
workers = 2

[engine]
model = "models/nephra-kidney-v1.json"
threads = 0
batch = 8

[results]
uid_root = "2.25"
max_heatmaps = 20
retry_initial_seconds = 5
retry_max_seconds = 600
give_up_hours = 72
timeout_seconds = 30

[log]
level = "info"

[[peers]]
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
)";
}

}  // namespace nephra::config
