#pragma once
// The DICOM results sent back to the archive: one Comprehensive 3D SR per study (TID 1500 Measurement Report) and
// one Secondary Capture heatmap per flagged slice. Both carry deterministic UIDs, so a study processed twice with the
// same model and the same input gives the same instances instead of duplicates in the archive.
#include <filesystem>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <opencv2/core.hpp>

#include "nephra/engine/classifier.h"
#include "nephra/engine/model.h"
#include "nephra/engine/slice.h"
#include "nephra/engine/study.h"
#include "nephra/store/round_store.h"

class DcmItem;

namespace nephra::pipeline {

class ResultError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ResultContext {
  std::string uid_root;  // organisation UID prefix from the configuration, e.g. "1.2.826.0.1.3680043.10.1234"
  std::string manufacturer = "Nephra project";
  std::string software_version;  // nephrad version
  std::string model_name;
  std::string model_version;
  std::string model_sha256;  // identifies the trained weights; a retrained model gets new UIDs everywhere
  std::string decision_key;  // the manifest's decision parameters: re-tuned thresholds give new instance UIDs
  std::string station_ae = "NEPHRA";
};

ResultContext make_result_context(const engine::Model& model, std::string uid_root, std::string software_version);

inline constexpr int kSrSeriesNumber = 9901;
inline constexpr int kScSeriesNumber = 9902;
inline constexpr const char* kSrSeriesDescription = "Nephra AI kidney findings";
inline constexpr const char* kScSeriesDescription = "Nephra AI heatmaps";

// Digits and dots, at most 64 characters, no empty component and no component with a leading zero.
bool is_valid_uid(std::string_view uid);

// root + "." + decimal digits of the SHA-256 of the parts (at most 39 digits, and never past 64 characters).
// Throws ResultError when the root is not a valid UID or leaves fewer than 20 digits.
std::string derive_uid(const std::string& root, std::initializer_list<std::string_view> parts);

// The UIDs the writers give their instances (the caller can use them to name files or to find them again).
std::string sr_series_uid(const std::string& study_uid, const ResultContext& ctx);
// Depends on the input slices too: a later round of the same study with more slices is a new instance.
std::string sr_instance_uid(const std::string& study_uid, const engine::StudyResult& study, const ResultContext& ctx);
std::string sc_series_uid(const std::string& study_uid, const ResultContext& ctx);
std::string sc_instance_uid(const std::string& study_uid, const engine::SliceSource& source,
                            const std::string& class_name, const ResultContext& ctx);

// Where on one slice a present finding's heatmap points (engine::hot_region): the SR outlines it on that slice.
struct FindingRegion {
  std::string label;  // the finding's class
  engine::SliceSource slice;
  std::vector<cv::Point2f> outline;  // closed, in the slice's pixel coordinates
};

// `source` is the header of one CT slice of the study: patient and study attributes (and the character set) are
// copied from it. Writes `out` atomically (temporary file, then rename). Throws ResultError.
// `predecessor`: the SR this one replaces (an earlier round of the same study), named in the Predecessor Documents
// Sequence so that viewers and archives show the new one as current. `regions`: outlines of present findings (on
// the slices that got a heatmap), each an Image Region of its finding's measurement group.
void write_sr(const engine::StudyResult& study, DcmItem& source, const ResultContext& ctx,
              const std::filesystem::path& out, const store::SrReference* predecessor = nullptr,
              const std::vector<FindingRegion>& regions = {});

// The slice's display image with the class heatmap blended in and "not for diagnostic use" burned in, as an RGB
// Secondary Capture that references the CT slice it was made from. `heat`: engine::heatmap(slice, result, cls) when
// the caller already computed it (for the SR's region), so that it is not computed twice; empty: computed here.
void write_sc(const engine::Slice& slice, const engine::SliceResult& result, int cls, const std::string& class_name,
              int instance_number, DcmItem& source, const ResultContext& ctx, const std::filesystem::path& out,
              const cv::Mat& heat = cv::Mat());

}  // namespace nephra::pipeline
