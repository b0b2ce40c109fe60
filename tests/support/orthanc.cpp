#include "orthanc.h"

#include <signal.h>

#include <fstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace nephra::test {

TestOrthanc::TestOrthanc(const fs::path& work_dir, int node_port, int dicom_port, const nlohmann::json& extra)
    : work_(work_dir / "orthanc"), http_port_(free_port()), dicom_port_(dicom_port != 0 ? dicom_port : free_port()) {
  fs::create_directories(work_);
  nlohmann::json cfg = {
      {"Name", "test-pacs"},
      {"StorageDirectory", (work_ / "db").string()},
      {"IndexDirectory", (work_ / "db").string()},
      {"StorageCompression", false},
      {"Plugins", nlohmann::json::array()},
      {"HttpServerEnabled", true},
      {"HttpPort", http_port_},
      {"RemoteAccessAllowed", false},
      {"AuthenticationEnabled", false},
      {"DicomServerEnabled", true},
      {"DicomAet", "ORTHANC"},
      {"DicomPort", dicom_port_},
      {"DicomCheckCalledAet", false},
      {"DicomAlwaysAllowEcho", true},
      {"DicomAlwaysAllowStore", true},
      {"DicomModalities", {{"nephra", {"NEPHRA", "127.0.0.1", node_port}}}},
      {"StableAge", 1},
      {"ConcurrentJobs", 2},
  };
  cfg.merge_patch(extra);
  std::ofstream(work_ / "orthanc.json") << cfg.dump(2);
}

std::string TestOrthanc::url(const std::string& uri) const {
  // appended, not `"..." + std::to_string() + uri`: GCC 12 at -O3 warns -Wrestrict on that (GCC bug 105329)
  std::string out = "http://127.0.0.1:";
  out += std::to_string(http_port_);
  out += uri;
  return out;
}

void TestOrthanc::start() {
  process_ = Process({"Orthanc", (work_ / "orthanc.json").string()}, work_ / "orthanc.log");
  const bool up = wait_until(
      [&] {
        return run({"curl", "-sf", "-o", "/dev/null", url("/system")}, work_ / "curl.log") == 0 || !process_.running();
      },
      std::chrono::seconds(20));
  if (!up || !process_.running())
    throw std::runtime_error("Orthanc did not start:\n" + read_file(work_ / "orthanc.log"));
}

void TestOrthanc::stop() {
  if (!process_.running()) return;
  process_.signal(SIGTERM);
  process_.wait();
}

nlohmann::json TestOrthanc::get(const std::string& uri) const {
  const fs::path out = work_ / "get.json";
  if (run({"curl", "-sf", "-o", out.string(), url(uri)}, work_ / "curl.log") != 0) {
    throw std::runtime_error("GET " + uri + " failed");
  }
  return nlohmann::json::parse(read_file(out));
}

nlohmann::json TestOrthanc::post(const std::string& uri, const std::string& body) const {
  const fs::path out = work_ / "post.json";
  if (run({"curl", "-sf", "-X", "POST", "-o", out.string(), "--data-binary", body, url(uri)}, work_ / "curl.log") !=
      0) {
    throw std::runtime_error("POST " + uri + " failed: " + read_file(work_ / "curl.log"));
  }
  return nlohmann::json::parse(read_file(out));
}

void TestOrthanc::upload(const std::vector<fs::path>& files) const {
  for (const auto& f : files) {
    if (run({"curl", "-sf", "-X", "POST", "-o", "/dev/null", "--data-binary", "@" + f.string(), url("/instances")},
            work_ / "curl.log") != 0) {
      throw std::runtime_error("upload of " + f.string() + " failed");
    }
  }
}

fs::path TestOrthanc::download(const std::string& instance_id, const std::string& name) const {
  const fs::path out = work_ / name;
  if (run({"curl", "-sf", "-o", out.string(), url("/instances/" + instance_id + "/file")}, work_ / "curl.log") != 0) {
    throw std::runtime_error("download of " + instance_id + " failed");
  }
  return out;
}

std::vector<TestOrthanc::Series> TestOrthanc::series_of(const std::string& study_id) const {
  std::vector<Series> out;
  for (const auto& s : get("/studies/" + study_id + "/series?expand")) {
    out.push_back({s["ID"].get<std::string>(), s["MainDicomTags"].value("Modality", ""),
                   s["Instances"].get<std::vector<std::string>>()});
  }
  return out;
}

}  // namespace nephra::test
