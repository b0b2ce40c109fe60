#include <sstream>
#include <stdexcept>

#include "nephra/config/config.h"

namespace nephra::config {

namespace {

constexpr bool kLive = true;
constexpr bool kRestart = false;

// A table, not logic: one row per key, in the order the reference prints them.
const std::vector<KeyInfo> kRows = {
    {"node.ae_title", "string", "\"NEPHRA\"", "Our AE title (1-16 characters, no backslash); callers must address it.",
     0, 0, kRestart},
    {"node.bind", "string", "\"127.0.0.1\"", "IPv4 address the DICOM port listens on; \"0.0.0.0\" for every interface.",
     0, 0, kRestart},
    {"node.port", "integer", "11112", "DICOM port; below 1024 needs CAP_NET_BIND_SERVICE.", 1, 65535, kRestart},
    {"node.spool_dir", "string", "\"spool\"",
     "Durable spool folder (relative paths are taken from the working directory).", 0, 0, kRestart},
    {"node.max_associations", "integer", "16", "Concurrent associations; more are rejected (local limit exceeded).", 1,
     1024, kLive},
    {"node.association_setup_seconds", "number", "10",
     "From connect to a complete association request (and TLS handshake); a slower caller is cut, and waiting "
     "callers never hold up others.",
     1, 600, kRestart},
    {"node.max_waiting_per_address", "integer", "8",
     "Connections from one address that may wait for their association request at once; more are closed.", 1, 1024,
     kRestart},
    {"node.shutdown_grace_seconds", "number", "30",
     "On SIGTERM, how long associations in progress may take to finish before they are aborted.", 0, 3600, kRestart},
    {"node.check_peer_address", "boolean", "true",
     "The caller's IP address must be one that its [[peers]] host resolves to; false trusts the AE title alone.", 0, 0,
     kLive},
    {"node.max_pdu_bytes", "integer", "65536", "Largest PDU we accept (DICOM maximum length negotiation).", 4096,
     131072, kRestart},
    {"node.min_free_spool_mb", "integer", "512",
     "Spool high-water mark: below this much free space new associations are rejected (transient) and C-STOREs "
     "answered 0xA700, until space is freed.",
     0, 1048576, kLive},
    {"node.max_instance_mb", "number", "1024",
     "Largest data set one C-STORE may carry, as sent, inflated or decoded; a larger one is refused with 0xA700 and "
     "never reaches the spool (1024 fits an Enhanced CT of about 2,000 frames of 512 x 512).",
     0.01, 65536, kLive},
    {"study.stable_seconds", "number", "10", "Quiet period after a study's last instance before it counts as complete.",
     0.1, 86400, kLive},
    {"study.max_instances", "integer", "5000",
     "Most instances one study round may hold; more are refused with 0xA700 until the round is sealed.", 1, 1000000,
     kLive},
    {"pipeline.workers", "integer", "2", "Worker threads that process completed studies.", 1, 64, kRestart},
    {"pipeline.stall_seconds", "number", "900",
     "A study job running longer than this counts as stalled: /healthz reports it and the systemd watchdog is "
     "no longer fed, so systemd restarts the node.",
     10, 86400, kLive},
    {"pipeline.max_attempts", "integer", "5",
     "Tries of a study job (a try that crashes the node counts) before the round is quarantined with its reason.", 1,
     100, kLive},
    {"pipeline.retry_seconds", "number", "30",
     "Wait before a failed study job (disk full, too many open files) is tried again; doubles each time, at most "
     "results.retry_max_seconds.",
     1, 86400, kLive},
    {"engine.model", "string", "\"models/nephra-kidney.json\"",
     "Model manifest (JSON beside its ONNX file); its sha256 is checked at start.", 0, 0, kRestart},
    {"engine.threads", "integer", "0", "CPU threads for inference (0 = all cores).", 0, 256, kRestart},
    {"engine.batch", "integer", "8", "Slices per network batch.", 1, 256, kRestart},
    {"engine.backend", "string", "\"onednn\"",
     "onednn runs the network with oneDNN (fused convolutions, several times OpenCV DNN's speed); opencv runs it "
     "with OpenCV DNN, the reference the parity tests compare against. A graph the oneDNN path cannot run falls back "
     "to "
     "opencv with a log line.",
     0, 0, kRestart},
    {"results.uid_root", "string", "\"2.25\"",
     "UID root for result instances; UIDs are derived from it, the study and the model, so re-sends never "
     "duplicate. Put your organisation's root here.",
     0, 0, kRestart},
    {"results.max_heatmaps", "integer", "20", "Most heatmap Secondary Capture images per study.", 0, 1000, kRestart},
    {"results.retry_initial_seconds", "number", "5",
     "First wait before re-sending results to an unreachable archive; doubles each time.", 0.1, 86400, kLive},
    {"results.retry_max_seconds", "number", "600", "Longest wait between two delivery attempts.", 0.1, 86400, kLive},
    {"results.give_up_hours", "number", "72", "After this long without delivery, results go to the dead-letter folder.",
     0.001, 8760, kLive},
    {"results.timeout_seconds", "integer", "30", "Network timeout for sending results.", 1, 3600, kLive},
    {"results.shadow", "boolean", "false",
     "Shadow mode: studies are received and classified and their results kept in the spool (status page, "
     "results.json, metrics; `nephra validate --spool` reads them), but nothing is sent to any archive. Rounds "
     "classified while it is on, and those still waiting for delivery when it is turned on, are kept and never "
     "sent later.",
     0, 0, kLive},
    {"retention.instances_hours", "number", "24",
     "How long received CT stays once every round of its study is done (delivered, dead-lettered or superseded); "
     "a late instance after that re-runs the study on what is left.",
     0, 87600, kLive},
    {"retention.results_hours", "number", "168",
     "How long a done study's results and records stay; then its folder goes (a re-send after that is a new study).", 0,
     87600, kLive},
    {"retention.max_spool_gb", "number", "0",
     "Size cap of the spool's studies (0 = none): above it the oldest done studies go first, never one still to "
     "classify, deliver or quarantined.",
     0, 1000000, kLive},
    {"tls.enabled", "boolean", "false",
     "The DICOM port accepts DICOM TLS (BCP 195 non-downgrading profile) only; plain associations fail the handshake.",
     0, 0, kRestart},
    {"tls.certificate", "string", "\"\"", "The node's certificate (PEM), for the port and for sending over TLS.", 0, 0,
     kRestart},
    {"tls.private_key", "string", "\"\"", "Its private key (PEM, unencrypted; keep it readable by the node only).", 0,
     0, kRestart},
    {"tls.ca_certificates", "string", "\"\"",
     "Certificates (PEM) of the authorities whose certificates archives present; checked both ways.", 0, 0, kRestart},
    {"tls.require_client_certificate", "boolean", "true",
     "Callers must present a certificate signed by one of those authorities (mutual TLS).", 0, 0, kRestart},
    {"tls.bind_calling_ae", "boolean", "false",
     "A caller's certificate must also name the archive its calling AE title belongs to (the peer's tls_name, else "
     "its host), the name checked when results go back to it; otherwise any trusted certificate may use any "
     "declared AE title.",
     0, 0, kLive},
    {"http.enabled", "boolean", "true", "Serve the status page (/), /status.json, /healthz and /metrics over HTTP.", 0,
     0, kRestart},
    {"http.bind", "string", "\"127.0.0.1\"",
     "IPv4 address of the health and metrics endpoint; keep it on loopback unless a firewall guards it.", 0, 0,
     kRestart},
    {"http.port", "integer", "8080", "Port of the health and metrics endpoint.", 1, 65535, kRestart},
    {"http.try_page", "boolean", "false",
     "Also serve the try-a-slice form on the status page and POST /try: anyone who reaches the endpoint can have a "
     "DICOM file or PNG/JPEG export (up to 32 MB) classified. Nothing uploaded is kept.",
     0, 0, kRestart},
    {"log.level", "string", "\"info\"", "One of trace, debug, info, warn, error.", 0, 0, kLive},
    {"log.dcmtk_level", "string", "\"warn\"",
     "Level of DCMTK's own messages (same names). debug and trace dump DICOM headers, patient data included: "
     "only for troubleshooting.",
     0, 0, kLive},
    {"log.target", "string", "\"auto\"",
     "console (stderr), journal (native journald fields), or auto: journal when systemd connected the output "
     "to it.",
     0, 0, kRestart},
    {"peers[].ae_title", "string", "(required)", "AE title of an archive allowed to send to us.", 0, 0, kLive},
    {"peers[].host", "string", "(required)", "Host where results for that archive are sent back.", 0, 0, kLive},
    {"peers[].port", "integer", "(required)", "DICOM port of that archive.", 1, 65535, kLive},
    {"peers[].tls", "boolean", "false", "Send results to that archive over DICOM TLS (needs the [tls] files).", 0, 0,
     kLive},
    {"peers[].tls_name", "string", "host",
     "Name (DNS or IP address) the archive's TLS certificate must carry; results go to no other certificate.", 0, 0,
     kLive},
};

}  // namespace

const std::vector<KeyInfo>& schema() { return kRows; }

const KeyInfo& key_info(const std::string& key) {
  for (const auto& row : schema()) {
    if (row.key == key) return row;
  }
  throw std::out_of_range("configuration key not in the schema: " + key);
}

std::string reference_markdown() {
  std::ostringstream out;
  out << "| key | type | default | range | on SIGHUP | meaning |\n|---|---|---|---|---|---|\n";
  for (const auto& row : schema()) {
    std::string range = "";
    if (row.type == "integer" || row.type == "number") {
      std::ostringstream r;
      r << row.min << " – " << row.max;
      range = r.str();
    }
    out << "| `" << row.key << "` | " << row.type << " | `" << row.default_value << "` | " << range << " | "
        << (row.live ? "applied" : "restart") << " | " << row.help << " |\n";
  }
  return out.str();
}

std::string default_toml() {
  // Generated from the table, so a key and its default live in one place; the peer is an example to edit.
  std::ostringstream out;
  std::string section;
  for (const auto& row : schema()) {
    const auto dot = row.key.find('.');
    const std::string table = row.key.substr(0, dot);
    if (table == "peers[]") continue;
    if (table != section) {
      out << (section.empty() ? "" : "\n") << "[" << table << "]\n";
      section = table;
    }
    out << row.key.substr(dot + 1) << " = " << row.default_value << "\n";
  }
  out << "\n[[peers]]\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = 4242\n";
  return out.str();
}

}  // namespace nephra::config
