#include <nlohmann/json.hpp>

#include "nephra/engine/study.h"

namespace nephra::engine {
namespace {
using nlohmann::json;

json slice_object(const SliceSource& source, const SliceResult& result, const Model& model) {
  json j = {{"file", source.path},
            {"class", result.not_assessed ? "not assessed" : model.classes[static_cast<size_t>(result.predicted)]},
            {"not_assessed", result.not_assessed},
            {"outside_abdomen", result.outside_abdomen}};
  if (!result.probabilities.empty()) {  // empty: the slice never reached the network (outside the abdomen)
    json probs = json::object();
    for (size_t c = 0; c < model.classes.size(); ++c) probs[model.classes[c]] = result.probabilities[c];
    j["predicted"] = model.classes[static_cast<size_t>(result.predicted)];
    j["probabilities"] = probs;
    j["ood_score"] = result.ood_score;
  }
  if (source.frame > 0) j["frame"] = source.frame;
  if (!source.sop_instance_uid.empty()) j["sop_instance_uid"] = source.sop_instance_uid;
  if (source.instance_number != 0) j["instance_number"] = source.instance_number;
  if (!std::isnan(source.position)) j["position"] = source.position;
  return j;
}

}  // namespace

std::string slice_json(const SliceSource& source, const SliceResult& result, const Model& model) {
  return slice_object(source, result, model).dump();
}

std::string study_json(const StudyResult& study, const Model& model) {
  json findings = json::array();
  for (const auto& f : study.findings) {
    json runs = json::array();
    for (const auto& r : f.runs) runs.push_back({r.first, r.last});
    findings.push_back({{"class", f.label},
                        {"present", f.present},
                        {"max_probability", f.max_probability},
                        {"peak_slice", f.peak_slice},
                        {"threshold", model.decision_thresholds.at(f.label)},
                        {"min_run_slices", model.min_run_for(f.label)},
                        {"flagged_slices", f.flagged},
                        {"runs", runs}});
  }
  json slices = json::array();
  for (const auto& s : study.slices) {
    json j = slice_object(s.source, s.result, model);
    j["slice"] = s.number;
    slices.push_back(j);
  }
  return json{{"model", {{"name", model.name}, {"version", model.version}, {"onnx_sha256", model.onnx_sha256}}},
              {"summary", study.summary()},
              {"assessed", study.assessed},
              {"not_assessed", study.not_assessed},
              {"unreadable", study.failed},
              {"min_run_slices", model.min_run_slices},
              {"findings", findings},
              {"slices", slices}}
      .dump(1);
}

}  // namespace nephra::engine
