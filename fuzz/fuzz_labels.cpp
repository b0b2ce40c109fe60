// libFuzzer harness: bytes → nephra::validate::parse_labels (the labels file a site hands `nephra validate`).
// LabelsError (naming the line) is the documented outcome for anything invalid; any other exception or a sanitizer
// report is a finding. Parsed labels must hold what the parser promises: a study name, 0/1 per finding, ranges
// from 1 with first <= last, only for findings marked present.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include "nephra/validate/labels.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    for (const auto& label : nephra::validate::parse_labels(text, {"Cyst", "Stone", "Tumor"}, "fuzz.csv")) {
      if (label.study.empty() || label.present.size() != 3) std::abort();
      for (const auto& [finding, ranges] : label.where) {
        if (!label.present.at(finding)) std::abort();
        for (const auto& r : ranges) {
          if (r.first < 1 || r.last < r.first) std::abort();
        }
      }
    }
  } catch (const nephra::validate::LabelsError&) {
    // documented: the file and line are named, nephra validate exits 4
  } catch (const std::exception& err) {
    std::fprintf(stderr, "undocumented exception from parse_labels: %s: %s\n", typeid(err).name(), err.what());
    std::abort();
  }
  return 0;
}
