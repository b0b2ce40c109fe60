#pragma once
// C-STORE SCU: sends result instances back to an archive, and says whether a failure is worth retrying.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "nephra/config/config.h"

namespace nephra::scp {

struct StoreTarget {
  std::string calling_ae;  // ours
  std::string called_ae;   // the archive's
  std::string host;
  int port = 0;
  int timeout_seconds = 30;
  const config::Config::Tls* tls = nullptr;  // DICOM TLS with these files; plain TCP when null
  std::string tls_name;                      // the archive's certificate must name this (DNS or IP); "" = host
};

enum class SendOutcome {
  kDelivered,  // every file acknowledged (success or warning status)
  kTransient,  // unreachable, timed out, out of resources: try again later
  kPermanent,  // refused for good (AE not recognised, SOP class not supported, data set refused)
};

struct SendResult {
  SendOutcome outcome = SendOutcome::kDelivered;
  std::string reason;  // empty when delivered
};

// What a C-STORE response status means for the delivery (PS3.7 C.4.2 and Annex C): success and warnings deliver;
// out of resources (0xA7xx), processing failure (0x0110), resource limitation (0x0213) and cancel (0xFE00) are
// worth retrying; every other failure is a refusal.
SendOutcome outcome_of_status(unsigned status);

// One association for all files; `on_ack` runs after each acknowledged file, before the next one is sent.
// When `keep_going` returns false before a file, the association is released and the result is transient.
SendResult send_files(const StoreTarget& target, const std::vector<std::filesystem::path>& files,
                      const std::function<void(const std::filesystem::path&)>& on_ack,
                      const std::function<bool()>& keep_going = {});

}  // namespace nephra::scp
