// One flagged slice with its class heatmap as an RGB Secondary Capture, for archives and viewers that show images
// but not SR content. The warning is burned into the pixels because a capture travels without its SR.
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "nephra/pipeline/results.h"
#include "result_dataset.h"

namespace nephra::pipeline {
namespace {

using detail::put;

constexpr const char* kWarning = "AI RESULT - NOT FOR DIAGNOSTIC USE";

// Outlined text stays legible over both black background and bright heatmap.
void draw_line(cv::Mat& rgb, const std::string& line, cv::Point origin, double scale, int thickness,
               const cv::Scalar& colour) {
  constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
  cv::putText(rgb, line, origin, kFont, scale, cv::Scalar(0, 0, 0), thickness + 2 * std::max(1, thickness / 2),
              cv::LINE_AA);
  cv::putText(rgb, line, origin, kFont, scale, colour, thickness, cv::LINE_AA);
}

cv::Mat render(const engine::Slice& slice, const engine::SliceResult& result, int cls, const std::string& class_name,
               const ResultContext& ctx, const cv::Mat& heat) {
  if (slice.display.empty() || slice.display.type() != CV_8UC1) throw ResultError("slice has no 8-bit display image");
  cv::Mat rgb;
  cv::cvtColor(engine::overlay(slice, heat.empty() ? engine::heatmap(slice, result, cls) : heat), rgb,
               cv::COLOR_BGR2RGB);

  // The warning line spans at most 90% of the width; the other lines use the same size.
  int baseline = 0;
  const cv::Size unit = cv::getTextSize(kWarning, cv::FONT_HERSHEY_SIMPLEX, 1.0, 1, &baseline);
  const double scale = std::min(0.9 * rgb.cols / unit.width, rgb.rows / 512.0);
  const int thickness = std::max(1, static_cast<int>(std::lround(scale * 1.5)));
  const int step = static_cast<int>(unit.height * scale * 1.8) + 1;
  const int margin = std::max(4, rgb.cols / 64);

  char prob[64];
  std::snprintf(prob, sizeof prob, "%s: probability %.2f", class_name.c_str(),
                result.probabilities.at(static_cast<size_t>(cls)));
  draw_line(rgb, kWarning, {margin, margin + step}, scale, thickness, cv::Scalar(255, 255, 0));
  draw_line(rgb, prob, {margin, margin + 2 * step}, scale, thickness, cv::Scalar(255, 255, 255));
  draw_line(rgb, ctx.model_name + " " + ctx.model_version, {margin, rgb.rows - margin}, scale * 0.8,
            std::max(1, thickness - 1), cv::Scalar(255, 255, 255));
  return rgb;
}

void put_pixels(DcmItem& ds, const cv::Mat& rgb) {
  const cv::Mat packed = rgb.isContinuous() ? rgb : rgb.clone();
  put(ds, DCM_SamplesPerPixel, "3");
  put(ds, DCM_PhotometricInterpretation, "RGB");
  put(ds, DCM_PlanarConfiguration, "0");
  put(ds, DCM_Rows, std::to_string(packed.rows));
  put(ds, DCM_Columns, std::to_string(packed.cols));
  put(ds, DCM_BitsAllocated, "8");
  put(ds, DCM_BitsStored, "8");
  put(ds, DCM_HighBit, "7");
  put(ds, DCM_PixelRepresentation, "0");
  const auto bytes = static_cast<unsigned long>(packed.total() * packed.elemSize());
  if (ds.putAndInsertUint8Array(DCM_PixelData, packed.ptr<Uint8>(), bytes).bad()) {
    throw ResultError("cannot store the SC pixel data");
  }
}

void put_source_reference(DcmItem& ds, const engine::SliceSource& source) {
  DcmItem* ref = nullptr;
  if (ds.findOrCreateSequenceItem(DCM_SourceImageSequence, ref, -2).bad()) throw ResultError("SourceImageSequence");
  put(*ref, DCM_ReferencedSOPClassUID, source.sop_class_uid);
  put(*ref, DCM_ReferencedSOPInstanceUID, source.sop_instance_uid);
  if (source.frame > 0) put(*ref, DCM_ReferencedFrameNumber, std::to_string(source.frame));
  detail::put_code(*ref, DCM_PurposeOfReferenceCodeSequence, "121322", "DCM",
                   "Source image for image processing operation");
}

void put_image_attributes(DcmItem& ds, const std::string& class_name, int instance_number, const ResultContext& ctx) {
  const std::string date = detail::current_date();
  const std::string time = detail::current_time();
  put(ds, DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  put(ds, DCM_Modality, "OT");
  put(ds, DCM_ConversionType, "WSD");
  put(ds, DCM_SeriesNumber, std::to_string(kScSeriesNumber));
  put(ds, DCM_SeriesDescription, kScSeriesDescription);
  put(ds, DCM_InstanceNumber, std::to_string(instance_number));
  put(ds, DCM_ImageType, "DERIVED\\SECONDARY");
  put(ds, DCM_BurnedInAnnotation, "YES");
  put(ds, DCM_LossyImageCompression, "00");
  // The capture shows a whole axial slice with both kidneys: "KIDNEY" is a paired part and would need a Laterality
  // of R or L, while an unpaired "ABDOMEN" lets (0020,0060) be absent, as the General Series module wants.
  put(ds, DCM_BodyPartExamined, "ABDOMEN");
  ds.insertEmptyElement(DCM_PatientOrientation);
  put(ds, DCM_InstanceCreationDate, date);
  put(ds, DCM_InstanceCreationTime, time);
  put(ds, DCM_ContentDate, date);
  put(ds, DCM_ContentTime, time);
  put(ds, DCM_DateOfSecondaryCapture, date);
  put(ds, DCM_TimeOfSecondaryCapture, time);
  const std::string charset = detail::get_string(ds, DCM_SpecificCharacterSet);
  put(ds, DCM_DerivationDescription,
      detail::encode_text("Heatmap (class activation map) of " + class_name + " from " + ctx.model_name + " " +
                              ctx.model_version + " over the windowed CT slice",
                          charset));
  put(ds, DCM_SecondaryCaptureDeviceManufacturer, detail::encode_text(ctx.manufacturer, charset));
  put(ds, DCM_SecondaryCaptureDeviceManufacturerModelName, "nephrad");
  if (!ctx.software_version.empty()) {
    put(ds, DCM_SecondaryCaptureDeviceSoftwareVersions, detail::encode_text(ctx.software_version, charset));
  }
}

}  // namespace

void write_sc(const engine::Slice& slice, const engine::SliceResult& result, int cls, const std::string& class_name,
              int instance_number, DcmItem& source, const ResultContext& ctx, const std::filesystem::path& out,
              const cv::Mat& heat) {
  detail::check_context(ctx);
  if (cls < 0 || static_cast<size_t>(cls) >= result.probabilities.size() ||
      static_cast<size_t>(cls) >= result.cams.size()) {
    throw ResultError("class index " + std::to_string(cls) + " out of range");
  }
  if (slice.source.sop_class_uid.empty() || slice.source.sop_instance_uid.empty()) {
    throw ResultError("slice " + slice.source.label() + " is not a DICOM instance");
  }
  const std::string study_uid = detail::get_string(source, DCM_StudyInstanceUID);
  const cv::Mat rgb = render(slice, result, cls, class_name, ctx, heat);

  DcmFileFormat file;
  DcmDataset& ds = *file.getDataset();
  detail::copy_patient_study(source, ds);
  put_image_attributes(ds, class_name, instance_number, ctx);
  put(ds, DCM_SeriesInstanceUID, sc_series_uid(study_uid, ctx));
  put(ds, DCM_SOPInstanceUID, sc_instance_uid(study_uid, slice.source, class_name, ctx));
  put_source_reference(ds, slice.source);
  detail::put_equipment(ds, ctx);
  put_pixels(ds, rgb);
  detail::save(file, out);
}

}  // namespace nephra::pipeline
