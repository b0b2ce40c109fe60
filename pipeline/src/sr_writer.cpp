// The study's findings as a Comprehensive 3D SR rooted in TID 1500 (Measurement Report), as IHE AI Results asks.
//
// DCMTK's TID1500_MeasurementReport class is not used: in 3.6.7 its measurement groups (TID 1501) only take numeric
// measurements from CID 7469, and neither it nor TID 1501 can hang image references below a measurement, which is
// how each finding points at the slices that support it. The tree is therefore built item by item in TID 1500's
// order, with two additions the template allows as extensions: the plain-language summary as the first content item
// (what a radiologist reads first in any SR viewer) and the slice counts under Qualitative Evaluations.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/codes/sct.h>
#include <dcmtk/dcmsr/codes/umls.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>

#include "nephra/pipeline/results.h"
#include "result_dataset.h"
#include "sr_tree.h"

namespace nephra::pipeline {
namespace {

using detail::SrTree;
using DT = DSRTypes;

// SNOMED CT display names as in the International Edition (preferred terms).
DSRCodedEntryValue finding_code(const std::string& label) {
  if (label == "Cyst") return {"722223000", "SCT", "Cyst of kidney"};
  if (label == "Stone") return {"95570007", "SCT", "Kidney stone"};
  if (label == "Tumor") return {"126880001", "SCT", "Neoplasm of kidney"};
  return {label.substr(0, 16), "99NEPHRA", label};  // a class without a mapping stays readable
}

DSRCodedEntryValue kidney() { return {"64033007", "SCT", "Kidney"}; }
DSRCodedEntryValue ct_abdomen() { return {"169070004", "SCT", "Computed tomography of abdomen"}; }
DSRCodedEntryValue present() { return {"52101004", "SCT", "Present"}; }
DSRCodedEntryValue absent() { return {"2667000", "SCT", "Absent"}; }
DSRCodedEntryValue ratio() { return {"{ratio}", "UCUM", "ratio"}; }
DSRCodedEntryValue slices_unit() { return {"{slices}", "UCUM", "slices"}; }

struct Report {
  const engine::StudyResult& study;
  const ResultContext& ctx;
  const std::vector<FindingRegion>& regions;
  std::string study_uid;
  std::string charset;
  [[nodiscard]] std::string text(std::string_view utf8) const { return detail::encode_text(utf8, charset); }
};

std::string format_probability(double p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", p);
  return buf;
}

bool in_runs(const engine::Finding& f, int number) {
  return std::any_of(f.runs.begin(), f.runs.end(),
                     [&](const auto& r) { return number >= r.first && number <= r.last; });
}

bool referable(const engine::SliceRecord& s) {
  return !s.source.sop_class_uid.empty() && !s.source.sop_instance_uid.empty();
}

// The slices a present finding rests on: those in its qualifying runs.
std::vector<const engine::SliceRecord*> supporting(const engine::StudyResult& study, const engine::Finding& f) {
  std::vector<const engine::SliceRecord*> out;
  for (const auto& s : study.slices) {
    if (f.present && in_runs(f, s.number) && referable(s)) out.push_back(&s);
  }
  return out;
}

// TID 1001 through TID 1004: the observer is a device, the algorithm.
void add_observer(SrTree& t, size_t root, const Report& r) {
  t.code(root, DT::RT_hasObsContext, CODE_DCM_ObserverType, CODE_DCM_Device);
  t.uidref(root, DT::RT_hasObsContext, CODE_DCM_DeviceObserverUID, detail::device_uid(r.ctx));
  t.text(root, DT::RT_hasObsContext, CODE_DCM_DeviceObserverName, r.text(r.ctx.model_name));
  t.text(root, DT::RT_hasObsContext, CODE_DCM_DeviceObserverManufacturer, r.text(r.ctx.manufacturer));
  t.text(root, DT::RT_hasObsContext, CODE_DCM_DeviceObserverModelName, r.text(r.ctx.model_name));
}

// TID 1600: one Image Library Group per CT series, with every slice that a finding refers to.
void add_image_library(SrTree& t, size_t root, const Report& r) {
  const size_t library = t.container(root, DT::RT_contains, CODE_DCM_ImageLibrary);
  std::map<std::string, std::vector<const engine::SliceRecord*>> by_series;
  for (const auto& s : r.study.slices) {
    const bool used = std::any_of(r.study.findings.begin(), r.study.findings.end(),
                                  [&](const auto& f) { return f.present && in_runs(f, s.number); });
    if (used && referable(s)) by_series[s.source.series_instance_uid].push_back(&s);
  }
  for (const auto& [series, slices] : by_series) {
    const size_t group = t.container(library, DT::RT_contains, CODE_DCM_ImageLibraryGroup);
    for (const auto* s : slices) t.image(group, DT::RT_contains, nullptr, s->source);
  }
}

void add_algorithm(SrTree& t, size_t parent, const Report& r) {
  t.text(parent, DT::RT_hasConceptMod, CODE_DCM_AlgorithmName, r.text(r.ctx.model_name));
  t.text(parent, DT::RT_hasConceptMod, CODE_DCM_AlgorithmVersion, r.text(r.ctx.model_version));
}

// TID 1501, one group per present finding: what, where, how likely, and on which slices.
void add_finding_group(SrTree& t, size_t measurements, const Report& r, const engine::Finding& f) {
  const size_t group = t.container(measurements, DT::RT_contains, CODE_DCM_MeasurementGroup);
  t.text(group, DT::RT_hasObsContext, CODE_DCM_TrackingIdentifier, r.text("Nephra " + f.label));
  t.uidref(group, DT::RT_hasObsContext, CODE_DCM_TrackingUniqueIdentifier,
           derive_uid(r.ctx.uid_root, {r.study_uid, r.ctx.model_sha256, "finding", f.label}));
  t.code(group, DT::RT_contains, CODE_DCM_Finding, finding_code(f.label));
  add_algorithm(t, group, r);
  t.code(group, DT::RT_hasConceptMod, CODE_SCT_FindingSite, kidney());
  const size_t prob =
      t.num(group, DT::RT_contains, CODE_DCM_Probability, format_probability(f.max_probability), ratio());
  const DSRCodedEntryValue source_of_measurement(CODE_DCM_SourceOfMeasurement);
  for (const auto* s : supporting(r.study, f)) {
    t.image(prob, DT::RT_inferredFrom, &source_of_measurement, s->source);
  }
  // TID 1410's Image Region: where on the slice the heatmap points, for viewers that draw SR regions.
  for (const auto& region : r.regions) {
    if (region.label != f.label || region.outline.size() < 4 || region.slice.sop_instance_uid.empty()) continue;
    const size_t roi = t.polyline(group, DT::RT_contains, CODE_DCM_ImageRegion, region.outline);
    t.image(roi, DT::RT_selectedFrom, nullptr, region.slice);
  }
}

// TID 1500 rows 12-14: each class stated present or absent, so "no finding" is explicit, plus the slice counts.
void add_evaluations(SrTree& t, size_t root, const Report& r) {
  const size_t qe = t.container(root, DT::RT_contains, CODE_UMLS_QualitativeEvaluations);
  add_algorithm(t, qe, r);
  for (const auto& f : r.study.findings) {
    t.code(qe, DT::RT_contains, finding_code(f.label), f.present ? present() : absent());
  }
  // What "present" means, so a reader can weigh it (the model card gives its measured sensitivity and false-finding
  // rate at this operating point).
  std::string rule;
  for (const auto& f : r.study.findings) rule += (rule.empty() ? "" : "; ") + f.operating_point();
  if (!rule.empty())
    t.text(qe, DT::RT_contains, DSRCodedEntryValue("OPERATING-POINT", "99NEPHRA", "Operating point"), r.text(rule));
  const auto count = [&](const char* code, const char* meaning, int n) {
    t.num(qe, DT::RT_contains, DSRCodedEntryValue(code, "99NEPHRA", meaning), std::to_string(n), slices_unit());
  };
  count("ASSESSED", "Slices assessed", r.study.assessed);
  count("NOT-ASSESSED", "Slices not assessed", r.study.not_assessed);
  count("UNREADABLE", "Slices unreadable", r.study.failed);
}

void build_content(DSRDocumentTree& tree, const Report& r) {
  SrTree t(tree);
  const size_t root = t.root(CODE_DCM_ImagingMeasurementReport, "1500");
  t.code(root, DT::RT_hasConceptMod, CODE_DCM_LanguageOfContentItemAndDescendants, {"en", "RFC5646", "English"});
  add_observer(t, root, r);
  t.code(root, DT::RT_hasConceptMod, CODE_DCM_ProcedureReported, ct_abdomen());
  t.text(root, DT::RT_contains, CODE_DCM_Impression, r.text(r.study.summary()));
  add_image_library(t, root, r);
  if (r.study.any_present()) {
    const size_t measurements = t.container(root, DT::RT_contains, CODE_DCM_ImagingMeasurements);
    for (const auto& f : r.study.findings) {
      if (f.present) add_finding_group(t, measurements, r, f);
    }
  }
  add_evaluations(t, root, r);
}

// Every slice the algorithm read is evidence for the report, not only those the findings cite.
void add_evidence(DSRDocument& doc, const Report& r) {
  for (const auto& s : r.study.slices) {
    if (!referable(s)) continue;
    const OFCondition cond = doc.getCurrentRequestedProcedureEvidence().addItem(
        r.study_uid, s.source.series_instance_uid, s.source.sop_class_uid, s.source.sop_instance_uid);
    if (cond.bad()) throw ResultError("SR evidence for slice " + std::to_string(s.number) + ": " + cond.text());
  }
}

void set_document(DSRDocument& doc, const Report& r) {
  auto& schemes = doc.getCodingSchemeIdentification();
  schemes.addItem("99NEPHRA", "", "Nephra local codes", r.text(r.ctx.manufacturer));
  schemes.addItem("99IHE", "", "IHE local codes", "IHE");
  if (!r.charset.empty()) doc.setSpecificCharacterSet(r.charset, OFFalse);
  // VerificationFlag stays UNVERIFIED (DCMTK's default): no person has signed this off. The content is COMPLETE
  // only when every slice was assessed; slices not assessed or unreadable leave it PARTIAL.
  if (r.study.failed == 0 && r.study.not_assessed == 0) {
    doc.completeDocument(r.text("All slices assessed by " + r.ctx.model_name + " " + r.ctx.model_version));
  }
  doc.setSeriesNumber(std::to_string(kSrSeriesNumber));
  doc.setInstanceNumber("1");
  doc.setSeriesDescription(kSrSeriesDescription);
}

}  // namespace

void write_sr(const engine::StudyResult& study, DcmItem& source, const ResultContext& ctx,
              const std::filesystem::path& out, const store::SrReference* predecessor,
              const std::vector<FindingRegion>& regions) {
  detail::check_context(ctx);
  const Report r{study, ctx, regions, detail::get_string(source, DCM_StudyInstanceUID),
                 detail::get_string(source, DCM_SpecificCharacterSet)};
  if (r.study_uid.empty()) throw ResultError("source slice has no StudyInstanceUID");
  DSRDocument doc(DT::DT_Comprehensive3DSR);
  build_content(doc.getTree(), r);
  add_evidence(doc, r);
  set_document(doc, r);
  if (predecessor != nullptr) {
    const OFCondition added =
        doc.getPredecessorDocuments().addItem(predecessor->study_uid.c_str(), predecessor->series_uid.c_str(),
                                              UID_Comprehensive3DSRStorage, predecessor->instance_uid.c_str());
    if (added.bad()) throw ResultError(std::string("cannot name the predecessor SR: ") + added.text());
  }

  DcmFileFormat file;
  DcmDataset& ds = *file.getDataset();
  const OFCondition cond = doc.write(ds);
  if (cond.bad()) throw ResultError(std::string("cannot encode the SR: ") + cond.text());
  detail::copy_patient_study(source, ds);
  detail::put(ds, DCM_SeriesInstanceUID, sr_series_uid(r.study_uid, ctx));
  detail::put(ds, DCM_SOPInstanceUID, sr_instance_uid(r.study_uid, study, ctx));
  detail::put_equipment(ds, ctx);
  detail::save(file, out);
}

}  // namespace nephra::pipeline
