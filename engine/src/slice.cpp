#include "nephra/engine/slice.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmimgle/dcmimage.h>
#include <dcmtk/dcmimgle/dipixel.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace nephra::engine {
namespace {

constexpr int kMaxSide = 16384;
// What one frame may take once decoded: 16 M pixels (a 4096 x 4096 frame; CT is 512 x 512) is 64 MB as float HU.
// The node's ingest bounds the whole instance by node.max_instance_mb; this bounds what one decode step allocates,
// whatever reached the spool (or `nephra classify`) by another way.
constexpr long kMaxFramePixels = 4096L * 4096L;

void register_codecs() {
  static std::once_flag once;
  std::call_once(once, [] {
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  });
}

std::string text(DcmItem* item, const DcmTagKey& tag) {
  OFString value;
  if (item != nullptr) item->findAndGetOFString(tag, value);
  return value.c_str();
}

bool vec3(DcmItem* item, const DcmTagKey& tag, std::array<double, 3>& out, unsigned offset = 0) {
  for (unsigned i = 0; i < 3; ++i) {
    Float64 v = 0;
    if (item == nullptr || item->findAndGetFloat64(tag, v, offset + i, OFTrue).bad()) return false;
    out[i] = v;
  }
  return true;
}

DcmItem* functional_group(DcmItem* ds, const DcmTagKey& group, unsigned long frame, const DcmTagKey& macro) {
  DcmItem* item = nullptr;
  if (ds->findAndGetSequenceItem(group, item, static_cast<signed long>(frame)).bad()) return nullptr;
  DcmItem* inner = nullptr;
  if (item->findAndGetSequenceItem(macro, inner, 0).bad()) return nullptr;
  return inner;
}

struct Placement {
  double position = std::nan("");  // along the slice normal (mm)
  bool axial = true;               // the normal runs head-feet (also when the orientation is unknown)
};

// Position of a frame along the slice normal, IPP · (row × column direction), and whether that normal is axial.
Placement placement_of(DcmItem* ds, unsigned long frame, bool multiframe) {
  std::array<double, 3> ipp{};
  std::array<double, 3> row{};
  std::array<double, 3> col{};
  DcmItem* pos = ds;
  DcmItem* ori = ds;
  if (multiframe) {
    pos = functional_group(ds, DCM_PerFrameFunctionalGroupsSequence, frame, DCM_PlanePositionSequence);
    ori = functional_group(ds, DCM_SharedFunctionalGroupsSequence, 0, DCM_PlaneOrientationSequence);
    if (ori == nullptr) {
      ori = functional_group(ds, DCM_PerFrameFunctionalGroupsSequence, frame, DCM_PlaneOrientationSequence);
    }
  }
  const bool oriented =
      vec3(ori, DCM_ImageOrientationPatient, row, 0) && vec3(ori, DCM_ImageOrientationPatient, col, 3);
  const std::array<double, 3> n =
      oriented ? std::array<double, 3>{row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2],
                                       row[0] * col[1] - row[1] * col[0]}
               : std::array<double, 3>{0, 0, 1};
  Placement out;
  out.axial = std::abs(n[2]) > 0.9;
  if (vec3(pos, DCM_ImagePositionPatient, ipp)) out.position = ipp[0] * n[0] + ipp[1] * n[1] + ipp[2] * n[2];
  return out;
}

template <typename T>
void copy_plane(const void* data, cv::Mat& hu) {
  const auto* src = static_cast<const T*>(data);
  auto* dst = hu.ptr<float>();
  const auto n = static_cast<size_t>(hu.total());
  for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

cv::Mat hu_of(const DicomImage& image) {
  const DiPixel* inter = image.getInterData();
  if (inter == nullptr || inter->getData() == nullptr) throw InputError("no modality pixel data");
  cv::Mat hu(static_cast<int>(image.getHeight()), static_cast<int>(image.getWidth()), CV_32F);
  if (inter->getCount() < hu.total()) throw InputError("pixel data shorter than the image");
  switch (inter->getRepresentation()) {
    case EPR_Uint8:
      copy_plane<Uint8>(inter->getData(), hu);
      break;
    case EPR_Sint8:
      copy_plane<Sint8>(inter->getData(), hu);
      break;
    case EPR_Uint16:
      copy_plane<Uint16>(inter->getData(), hu);
      break;
    case EPR_Sint16:
      copy_plane<Sint16>(inter->getData(), hu);
      break;
    case EPR_Uint32:
      copy_plane<Uint32>(inter->getData(), hu);
      break;
    case EPR_Sint32:
      copy_plane<Sint32>(inter->getData(), hu);
      break;
  }
  return hu;
}

std::string unsupported_reason(const DcmXfer& xfer) {
  const std::string uid = xfer.getXferID();
  if (uid.rfind("1.2.840.10008.1.2.4.9", 0) == 0 || uid.rfind("1.2.840.10008.1.2.4.20", 0) == 0) {
    return "unsupported transfer syntax " + uid + " (" + xfer.getXferName() + "): no JPEG 2000 decoder";
  }
  return "";
}

// DCMTK 3.6.7 reads a JPEG fragment's bit depth by walking its markers (DJCodecDecoder::scanJpegDataForBitDepth)
// and never steps past a TEM marker (FF 01): a crafted instance would hold a worker forever. Walk the markers as it
// does and tell whether it would reach one before it stops.
bool jpeg_marker_walk_never_ends(const Uint8* data, Uint32 length) {
  std::uint64_t at = 0;
  while (at + 4 < length) {
    const unsigned marker = (static_cast<unsigned>(data[at]) << 8U) | data[at + 1];
    const auto segment = static_cast<std::uint64_t>((static_cast<unsigned>(data[at + 2]) << 8U) | data[at + 3]) + 2;
    const bool start_of_frame =
        marker >= 0xffc0 && marker <= 0xffcf && marker != 0xffc4 && marker != 0xffc8 && marker != 0xffcc;
    const bool with_length =
        marker == 0xffc4 || marker == 0xffc8 || marker == 0xffcc || (marker >= 0xffda && marker <= 0xfffe);
    // RSTm, SOI, EOI, and the reserved markers FF03-FFBF: two bytes
    const bool two_bytes = (marker >= 0xffd0 && marker <= 0xffd9) || (marker > 0xff02 && marker <= 0xffbf);
    if (marker == 0xff01) return true;
    if (start_of_frame) return false;  // the bit depth is found
    if (marker == 0xffff) {
      at += 1;
    } else if (with_length) {
      at += segment;
    } else if (two_bytes) {
      at += 2;
    } else {
      return false;  // not a marker: DCMTK stops with an error
    }
  }
  return false;
}

void check_jpeg_fragments(DcmDataset* ds, const DcmXfer& xfer) {
  if (xfer.getJPEGProcess8Bit() == 0) return;  // not a syntax dcmjpeg decodes (JPEG-LS, RLE, native)
  DcmElement* element = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, element).bad()) return;
  auto* pixels = dynamic_cast<DcmPixelData*>(element);
  DcmPixelSequence* fragments = nullptr;
  if (pixels == nullptr || pixels->getEncapsulatedRepresentation(xfer.getXfer(), nullptr, fragments).bad() ||
      fragments == nullptr) {
    return;
  }
  for (unsigned long i = 1; i < fragments->card(); ++i) {  // item 0 is the offset table
    DcmPixelItem* item = nullptr;
    Uint8* data = nullptr;
    if (fragments->getItem(item, i).bad() || item->getUint8Array(data).bad() || data == nullptr) continue;
    if (jpeg_marker_walk_never_ends(data, item->getLength())) {
      throw InputError("corrupt JPEG data: a TEM marker where the decoder looks for the frame header");
    }
  }
}

void check_image_geometry(DcmDataset* ds) {
  Uint16 rows = 0;
  Uint16 cols = 0;
  Uint16 spp = 1;
  ds->findAndGetUint16(DCM_Rows, rows);
  ds->findAndGetUint16(DCM_Columns, cols);
  ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
  if (rows > kMaxSide || cols > kMaxSide) throw InputError("image larger than 16384 pixels on a side");
  if (static_cast<long>(rows) * cols > kMaxFramePixels) {
    throw InputError("a frame of " + std::to_string(rows) + " x " + std::to_string(cols) +
                     " pixels is more than the engine decodes (4096 x 4096)");
  }
  if (!ds->tagExists(DCM_PixelData)) throw InputError("no pixel data");
  if (rows == 0 || cols == 0) throw InputError("image has zero rows or columns");
  if (spp != 1) throw InputError("not a grayscale image (SamplesPerPixel " + std::to_string(spp) + ")");
}

std::vector<Slice> load_dicom(const std::filesystem::path& path, const Model& model) {
  register_codecs();
  DcmFileFormat file;
  if (const OFCondition cond = file.loadFile(path.c_str()); cond.bad()) {
    throw InputError(std::string("unreadable DICOM: ") + cond.text());
  }
  DcmDataset* ds = file.getDataset();
  const DcmXfer xfer(ds->getOriginalXfer());
  if (auto reason = unsupported_reason(xfer); !reason.empty()) throw InputError(reason);
  check_image_geometry(ds);
  check_jpeg_fragments(ds, xfer);
  long frames = 1;
  if (Sint32 n = 0; ds->findAndGetSint32(DCM_NumberOfFrames, n).good() && n > 1) frames = n;
  SliceSource base;
  base.path = path.string();
  base.sop_class_uid = text(ds, DCM_SOPClassUID);
  base.sop_instance_uid = text(ds, DCM_SOPInstanceUID);
  base.series_instance_uid = text(ds, DCM_SeriesInstanceUID);
  if (Sint32 n = 0; ds->findAndGetSint32(DCM_InstanceNumber, n).good()) base.instance_number = n;
  std::vector<Slice> out;
  for (long f = 0; f < frames; ++f) {  // one frame at a time: a large multi-frame image never sits in memory twice
    DicomImage image(&file, ds->getOriginalXfer(), CIF_UsePartialAccessToPixelData, static_cast<unsigned long>(f), 1);
    if (image.getStatus() != EIS_Normal) {
      throw InputError(std::string("cannot decode pixel data (") + xfer.getXferName() +
                       "): " + DicomImage::getString(image.getStatus()));
    }
    if (!image.isMonochrome()) throw InputError("not a monochrome image");
    Slice slice = preprocess_hu(hu_of(image), model);
    slice.source = base;
    slice.source.frame = frames > 1 ? static_cast<int>(f + 1) : 0;
    const Placement placement = placement_of(ds, static_cast<unsigned long>(f), frames > 1);
    slice.source.position = placement.position;
    slice.outside_abdomen = placement.axial && slice.body_air > model.preprocessing.body_crop.max_air_fraction;
    out.push_back(std::move(slice));
  }
  return out;
}

std::vector<Slice> load_image_file(const std::filesystem::path& path, const Model& model) {
  cv::Mat img = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
  if (img.empty()) throw InputError("unreadable image file (not DICOM, PNG or JPEG)");
  if (img.depth() == CV_16U) img.convertTo(img, CV_8U, 1.0 / 257.0);
  if (img.depth() != CV_8U) throw InputError("unsupported image depth");
  if (img.channels() == 3) cv::cvtColor(img, img, cv::COLOR_BGR2GRAY);
  if (img.channels() == 4) cv::cvtColor(img, img, cv::COLOR_BGRA2GRAY);
  if (img.channels() != 1) throw InputError("unsupported channel count");
  Slice slice = preprocess_image(img, model);
  slice.source.path = path.string();
  return {std::move(slice)};
}

cv::Mat window_u8(const cv::Mat& hu, const Preprocessing& p) {
  // Same float32 operations, in the same order, as training/preprocess.py (so the truncation agrees bit for bit).
  const auto low = static_cast<float>(p.window_center - p.window_width / 2.0);
  const auto width = static_cast<float>(p.window_width);
  cv::Mat out(hu.size(), CV_8U);
  for (int r = 0; r < hu.rows; ++r) {
    const auto* src = hu.ptr<float>(r);
    auto* dst = out.ptr<uchar>(r);
    for (int c = 0; c < hu.cols; ++c) {
      const float scaled = (src[c] - low) / width * 255.0F;
      // NaN (float pixel data can hold it) would make the cast undefined: show it as air.
      dst[c] = std::isnan(scaled) ? uchar{0} : static_cast<uchar>(std::clamp(scaled, 0.0F, 255.0F));
    }
  }
  return out;
}

struct Body {
  cv::Rect box;      // square around the body with a margin; may reach outside the image
  double air = 0.0;  // fraction of the body's filled outline that is not the body region itself
  cv::Mat filled;    // the body region with its holes filled (255); empty when no body was found
};

// The body region with its holes filled (lungs, bowel gas become body).
cv::Mat filled_outline(const cv::Mat& mask) {
  std::vector<std::vector<cv::Point>> outline;
  cv::findContours(mask, outline, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
  cv::Mat filled = cv::Mat::zeros(mask.size(), CV_8U);
  cv::drawContours(filled, outline, -1, cv::Scalar(255), cv::FILLED);
  return filled;
}

// Fraction of the filled outline that is not body: lungs, bowel gas.
double air_fraction(const cv::Mat& mask, const cv::Mat& filled) {
  const int area = cv::countNonZero(filled);
  return area == 0 ? 0.0 : static_cast<double>(area - cv::countNonZero(mask)) / area;
}

// The body: largest connected region of `mask` (HU above threshold_hu, or an export's gray above its threshold).
Body measure_body(const cv::Mat& mask, const BodyCrop& crop) {
  const cv::Rect whole(0, 0, mask.cols, mask.rows);
  if (!crop.enabled) return {whole, 0.0, {}};
  cv::Mat labels;
  cv::Mat stats;
  cv::Mat centroids;
  const int n = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (best == 0 || stats.at<int>(i, cv::CC_STAT_AREA) > stats.at<int>(best, cv::CC_STAT_AREA)) best = i;
  }
  if (best == 0 || stats.at<int>(best, cv::CC_STAT_AREA) < static_cast<int>(mask.total() / 100))
    return {whole, 0.0, {}};
  const int x = stats.at<int>(best, cv::CC_STAT_LEFT);
  const int y = stats.at<int>(best, cv::CC_STAT_TOP);
  const int w = stats.at<int>(best, cv::CC_STAT_WIDTH);
  const int h = stats.at<int>(best, cv::CC_STAT_HEIGHT);
  // floor(v + 0.5), as training/preprocess.py rounds
  const auto side = static_cast<int>(std::floor(std::max(w, h) * (1.0 + 2.0 * crop.margin) + 0.5));
  const auto x0 = static_cast<int>(std::floor(x + w / 2.0 - side / 2.0 + 0.5));
  const auto y0 = static_cast<int>(std::floor(y + h / 2.0 - side / 2.0 + 0.5));
  const cv::Mat region = labels == best;
  cv::Mat filled = filled_outline(region);
  const double air = air_fraction(region, filled);
  return {{x0, y0, side, side}, air, std::move(filled)};
}

cv::Mat crop_square(const cv::Mat& img, const cv::Rect& box) {
  if (box == cv::Rect(0, 0, img.cols, img.rows)) return img;
  cv::Mat canvas = cv::Mat::zeros(box.size(), img.type());
  const cv::Rect inside = box & cv::Rect(0, 0, img.cols, img.rows);
  img(inside).copyTo(canvas(cv::Rect(inside.x - box.x, inside.y - box.y, inside.width, inside.height)));
  return canvas;
}

cv::Mat resize_to(const cv::Mat& img, int side) {
  if (img.rows == side && img.cols == side) return img.clone();
  cv::Mat out;
  cv::resize(img, out, cv::Size(side, side), 0, 0, cv::INTER_LANCZOS4);
  return out;
}

// The rendering at the network's input size: bilinear to enlarge, area to shrink (training/augment.py resize).
cv::Mat to_network(cv::Mat rendered, int side) {
  if (rendered.rows == side && rendered.cols == side) return rendered;
  cv::Mat out;
  cv::resize(rendered, out, cv::Size(side, side), 0, 0, side > rendered.rows ? cv::INTER_LINEAR : cv::INTER_AREA);
  return out;
}

// Windowed 8-bit slice → square crop around the body → resize → CLAHE: one rendering for DICOM and exports.
Slice render(cv::Mat display, const cv::Mat& body_mask, const Model& model) {
  const Preprocessing& p = model.preprocessing;
  Slice slice;
  slice.display = std::move(display);
  const Body body = measure_body(body_mask, p.body_crop);
  slice.crop = body.box;
  slice.body_air = body.air;
  slice.body = body.filled;
  const cv::Mat resized = resize_to(crop_square(slice.display, slice.crop), model.render_side());
  cv::Mat rendered;
  cv::createCLAHE(p.clahe_clip, cv::Size(p.clahe_tiles, p.clahe_tiles))->apply(resized, rendered);
  slice.input = to_network(std::move(rendered), model.input_size);
  return slice;
}

}  // namespace

std::string SliceSource::label() const { return frame > 0 ? path + "#" + std::to_string(frame) : path; }

bool is_dicom_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::array<char, 132> head{};
  in.read(head.data(), head.size());
  return in.gcount() == 132 && std::string(head.data() + 128, 4) == "DICM";
}

Slice preprocess_hu(const cv::Mat& hu, const Model& model) {
  const Preprocessing& p = model.preprocessing;
  return render(window_u8(hu, p), hu > static_cast<float>(p.body_crop.threshold_hu), model);
}

Slice preprocess_image(const cv::Mat& gray_u8, const Model& model) {
  const int side = model.render_side();
  if (!model.preprocessing.image_files.export_rendering || gray_u8.size() == cv::Size(side, side)) {
    Slice slice;  // the dataset's own form: already cropped, resized and CLAHE-processed
    slice.display = gray_u8.clone();
    slice.crop = cv::Rect(0, 0, gray_u8.cols, gray_u8.rows);
    slice.input = to_network(resize_to(gray_u8, side), model.input_size);
    return slice;
  }
  return render(gray_u8.clone(), gray_u8 > model.preprocessing.image_files.body_threshold_gray, model);
}

Slice reload_slice(const SliceSource& source, const Model& model) {
  for (auto& slice : load_slices(source.path, model)) {
    if (slice.source.frame != source.frame) continue;
    slice.source = source;
    return std::move(slice);
  }
  throw InputError("frame " + std::to_string(source.frame) + " is gone from " + source.path);
}

std::vector<Slice> load_slices(const std::filesystem::path& path, const Model& model) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw InputError("not a readable file");
  if (is_dicom_file(path)) return load_dicom(path, model);
  try {
    return load_image_file(path, model);
  } catch (const InputError&) {
    try {
      return load_dicom(path, model);  // a data set without the DICM preamble
    } catch (const InputError& err) {
      throw InputError(std::string("neither a DICOM file nor a readable PNG/JPEG (") + err.what() + ")");
    }
  }
}

}  // namespace nephra::engine
