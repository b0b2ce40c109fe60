#pragma once
// A real Orthanc as the hospital PACS: private config, loopback, free ports, stopped by PID.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "process.h"

namespace nephra::test {

class TestOrthanc {
 public:
  // `node_port`: where Orthanc's modality "nephra" (AE NEPHRA) listens. dicom_port 0 = pick a free one.
  // `extra` is merged over the generated configuration (e.g. DICOM TLS settings, a modality entry in object form).
  TestOrthanc(const std::filesystem::path& work_dir, int node_port, int dicom_port = 0,
              const nlohmann::json& extra = nlohmann::json::object());
  void start();
  void stop();
  [[nodiscard]] int dicom_port() const { return dicom_port_; }

  nlohmann::json get(const std::string& uri) const;
  nlohmann::json post(const std::string& uri, const std::string& body) const;
  void upload(const std::vector<std::filesystem::path>& files) const;  // POST /instances, one per file
  std::filesystem::path download(const std::string& instance_id, const std::string& name) const;
  // Series of a study with their modality and instance ids.
  struct Series {
    std::string id;
    std::string modality;
    std::vector<std::string> instances;
  };
  [[nodiscard]] std::vector<Series> series_of(const std::string& study_id) const;

 private:
  std::filesystem::path work_;
  int http_port_;
  int dicom_port_;
  Process process_;
  [[nodiscard]] std::string url(const std::string& uri) const;
};

}  // namespace nephra::test
