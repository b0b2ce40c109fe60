// libFuzzer harness: arbitrary bytes as a received file → DCMTK → nephra::engine::load_slices, which decodes the
// pixel data (every transfer syntax the engine registers), converts to HU and runs preprocess_hu (window, body
// crop, resize, CLAHE). The documented failure is engine::InputError; any other exception, a sanitizer report,
// a timeout or RSS above -rss_limit_mb is a finding (fuzz/run.sh also caps single allocations: see README).
//
// The bytes go to a file because load_slices takes a path (as the pipeline does with spooled instances); a second
// pass parses the same bytes from memory with DcmInputBufferStream, the way the SCP reads a data set off the wire.
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/oflog/oflog.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <typeinfo>

#include "nephra/engine/model.h"
#include "nephra/engine/slice.h"

namespace {

std::unique_ptr<nephra::engine::Model> g_model;
std::filesystem::path g_input;

std::filesystem::path manifest_path() {
  if (const char* env = std::getenv("NEPHRA_MODEL"); env != nullptr && *env != '\0') return env;
  return std::filesystem::path(NEPHRA_SOURCE_DIR) / "models" / "nephra-kidney.json";
}

// DcmFileFormat::read over a memory buffer, as DcmSCU/DcmSCP do with received PDVs: must never crash either.
void parse_from_memory(const uint8_t* data, size_t size) {
  DcmInputBufferStream in;
  in.setBuffer(data, static_cast<offile_off_t>(size));
  in.setEos();
  DcmFileFormat file;
  file.transferInit();
  const OFCondition cond = file.read(in, EXS_Unknown, EGL_noChange, 1024 * 1024);
  file.transferEnd();
  if (cond.good()) {
    DcmDataset* ds = file.getDataset();
    OFString uid;
    ds->findAndGetOFString(DCM_SOPInstanceUID, uid);
    (void)DcmXfer(ds->getOriginalXfer()).getXferName();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // DCMTK warns on stderr about nearly every mutated input; that costs more than the parse. NEPHRA_FUZZ_VERBOSE=1
  // keeps its messages (for replaying a single reproducer).
  if (std::getenv("NEPHRA_FUZZ_VERBOSE") == nullptr) OFLog::configure(OFLogger::OFF_LOG_LEVEL);
  g_model = std::make_unique<nephra::engine::Model>(nephra::engine::load_model(manifest_path()));
  const char* dir = std::getenv("TMPDIR");
  g_input = std::filesystem::path(dir != nullptr && *dir != '\0' ? dir : "/tmp") /
            ("nephra-fuzz-dicom-" + std::to_string(getpid()) + ".dcm");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  parse_from_memory(data, size);
  {
    std::ofstream out(g_input, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const auto slices = nephra::engine::load_slices(g_input, *g_model);
    for (const auto& s : slices) {
      // What the classifier relies on: one input_size² 8-bit image per slice, a display image, a crop.
      if (s.input.rows != g_model->input_size || s.input.cols != g_model->input_size || s.input.type() != CV_8UC1 ||
          s.display.empty()) {
        std::fprintf(stderr, "load_slices returned a malformed slice (%dx%d type %d)\n", s.input.cols, s.input.rows,
                     s.input.type());
        std::abort();
      }
    }
  } catch (const nephra::engine::InputError&) {
    // documented: the file is reported as unreadable and the study goes on
  } catch (const cv::Exception& err) {
    // fuzz/run.sh makes ASan refuse single allocations above max_allocation_size_mb (a node under a memory
    // limit); OpenCV then throws StsNoMem, which the pipeline catches like any std::exception. Anything else
    // from OpenCV escaping load_slices is a finding.
    if (err.code != cv::Error::StsNoMem && std::getenv("NEPHRA_FUZZ_LENIENT") == nullptr) {
      std::fprintf(stderr, "undocumented exception from load_slices: cv::Exception: %s\n", err.what());
      std::abort();
    }
  } catch (const std::exception& err) {
    if (std::getenv("NEPHRA_FUZZ_LENIENT") == nullptr) {
      std::fprintf(stderr, "undocumented exception from load_slices: %s: %s\n", typeid(err).name(), err.what());
      std::abort();
    }
  }
  return 0;
}
