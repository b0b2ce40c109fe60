#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "nephra/pipeline/pipeline.h"

namespace nephra::pipeline {
namespace {

// Elements longer than this (pixel data) stay on disk while we read the header.
constexpr Uint32 kMaxHeaderElement = 4096;

struct SeriesInventory {
  std::string modality;
  std::string description;
  size_t instances = 0;
  std::set<std::string> sop_classes;
  std::set<std::string> transfer_syntaxes;
};

std::string get(DcmItem* item, const DcmTagKey& tag) {
  OFString value;
  if (item != nullptr) item->findAndGetOFString(tag, value);
  return value.c_str();
}

class InventoryStep : public StudyStep {
 public:
  [[nodiscard]] std::string name() const override { return "inventory"; }

  StepResult run(const store::StudyRound& round, store::RoundStore& store) override {
    std::map<std::string, SeriesInventory> series;
    size_t instances = 0;
    size_t unreadable = 0;
    for (const auto& path : store.inputs(round)) {
      DcmFileFormat file;
      if (file.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, kMaxHeaderElement).bad()) {
        ++unreadable;
        continue;
      }
      DcmDataset* ds = file.getDataset();
      auto& s = series[get(ds, DCM_SeriesInstanceUID)];
      s.modality = get(ds, DCM_Modality);
      s.description = get(ds, DCM_SeriesDescription);
      s.sop_classes.insert(get(ds, DCM_SOPClassUID));
      s.transfer_syntaxes.insert(get(file.getMetaInfo(), DCM_TransferSyntaxUID));
      ++s.instances;
      ++instances;
    }
    nlohmann::json manifest = {
        {"study_key", round.study_key},          {"round", round.round},   {"calling_ae", round.calling_ae},
        {"study_instance_uid", round.study_uid}, {"instances", instances}, {"unreadable", unreadable},
        {"series", nlohmann::json::array()},
    };
    for (const auto& [uid, s] : series) {
      manifest["series"].push_back({{"series_instance_uid", uid},
                                    {"modality", s.modality},
                                    {"description", s.description},
                                    {"instances", s.instances},
                                    {"sop_classes", s.sop_classes},
                                    {"transfer_syntaxes", s.transfer_syntaxes}});
    }
    store.write_round_file(round, "manifest.json", manifest.dump(2) + "\n");
    spdlog::info("STUDY_INVENTORY study={} round={} series={} instances={} unreadable={}", round.study_key, round.round,
                 series.size(), instances, unreadable);
    return StepResult::done();
  }
};

}  // namespace

std::unique_ptr<StudyStep> make_inventory_step() { return std::make_unique<InventoryStep>(); }

}  // namespace nephra::pipeline
