#pragma once
// The DICOM Storage SCP: C-ECHO and C-STORE of CT images, spooled durably before the status goes out.
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "nephra/config/config.h"
#include "nephra/scp/spool.h"

namespace nephra::scp {

// The one seam between DICOM networking and the application.
class InstanceSink {
 public:
  virtual ~InstanceSink() = default;
  virtual void on_stored(const InstanceInfo& info, const StoreResult& result) = 0;
};

class StorageServer {
 public:
  StorageServer(const config::Config& cfg, Spool& spool, InstanceSink& sink);
  StorageServer(const StorageServer&) = delete;
  StorageServer& operator=(const StorageServer&) = delete;
  ~StorageServer();

  // Binds the port (throws std::runtime_error naming the address if it cannot) and starts accepting.
  void start();
  // Stops accepting and waits for in-flight associations to end.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nephra::scp
