#include "try_slice.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "nephra/engine/slice.h"
#include "nephra/engine/study.h"

namespace nephra::app {
namespace {

constexpr size_t kMaxHeatmaps = 4;  // a multi-frame upload: the first frames get one, all get their class
constexpr long kMaxFrames = 16;     // one slice to try, not a series: 32 MB of small RLE frames would be thousands

// Frames the upload says it holds, from its header alone (pixel data is not read); 1 when it is not DICOM.
long frames_in(const std::filesystem::path& file) {
  DcmFileFormat header;
  if (header.loadFile(file.c_str(), EXS_Unknown, EGL_noChange, 4096).bad()) return 1;
  Sint32 frames = 1;
  if (header.getDataset()->findAndGetSint32(DCM_NumberOfFrames, frames).bad()) return 1;
  return frames;
}

std::string base64(const std::vector<unsigned char>& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string not_assessed_reason(const engine::SliceResult& r, const engine::Model& model) {
  if (r.outside_abdomen) {
    return "outside the abdomen: an axial slice through the chest, whose body holds more air than the model's "
           "limit; it never reached the network";
  }
  char text[160];
  std::snprintf(text, sizeof text,
                "unlike the slices the model learned from (out-of-distribution score %.1f, limit %.1f)", r.ood_score,
                model.ood.threshold);
  return text;
}

HttpResponse json_error(int status, const std::string& message) {
  return {status, "application/json", nlohmann::json{{"error", message}}.dump() + "\n"};
}

struct RemoveOnExit {
  const std::filesystem::path& path;
  explicit RemoveOnExit(const std::filesystem::path& p) : path(p) {}
  RemoveOnExit(const RemoveOnExit&) = delete;
  RemoveOnExit& operator=(const RemoveOnExit&) = delete;
  ~RemoveOnExit() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

}  // namespace

HttpResponse try_slice(engine::Classifier& classifier, const std::string& upload,
                       const std::filesystem::path& scratch) {
  if (upload.empty()) return json_error(400, "the upload is empty: choose a DICOM file or a PNG/JPEG export");
  const RemoveOnExit cleanup(scratch);
  {
    std::ofstream out(scratch, std::ios::binary);
    out.write(upload.data(), static_cast<std::streamsize>(upload.size()));
    if (!out.flush()) return json_error(500, "cannot keep the upload for reading (is the spool full?)");
  }
  const auto& model = classifier.model();
  if (const long frames = frames_in(scratch); frames > kMaxFrames) {
    return json_error(422, "this file holds " + std::to_string(frames) + " frames; try at most " +
                               std::to_string(kMaxFrames) + " (one slice, or a few)");
  }
  try {
    const auto slices = engine::load_slices(scratch, model);
    const auto results = classifier.classify(slices);
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < slices.size(); ++i) {
      auto j = nlohmann::json::parse(engine::slice_json(slices[i].source, results[i], model));
      j.erase("file");
      if (results[i].not_assessed) j["reason"] = not_assessed_reason(results[i], model);
      if (i < kMaxHeatmaps && !results[i].not_assessed && !results[i].cams.empty()) {
        const int cls = results[i].predicted;
        std::vector<unsigned char> png;
        cv::imencode(".png", engine::overlay(slices[i], engine::heatmap(slices[i], results[i], cls)), png);
        j["heatmap_class"] = model.classes[static_cast<size_t>(cls)];
        j["heatmap_png"] = base64(png);
      }
      out.push_back(std::move(j));
    }
    spdlog::info("TRY_SLICE bytes={} slices={} first_class=\"{}\"", upload.size(), slices.size(),
                 out.empty() ? "" : out.front().value("class", ""));
    return {200, "application/json", nlohmann::json{{"model", model.id()}, {"slices", out}}.dump() + "\n"};
  } catch (const engine::InputError& err) {
    spdlog::info("TRY_SLICE_REFUSED bytes={} reason=\"{}\"", upload.size(), err.what());
    return json_error(422, std::string("cannot classify this file: ") + err.what());
  } catch (const std::exception& err) {
    spdlog::error("TRY_SLICE_FAILED bytes={} reason=\"{}\"", upload.size(), err.what());
    return json_error(500, std::string("the engine failed on this file: ") + err.what());
  }
}

}  // namespace nephra::app
