// libFuzzer harness: bytes → the engine's ONNX reader (engine/src/onnx_graph.cpp), which the oneDNN path uses on
// the model file the manifest names. std::runtime_error ("ONNX model: ...") is the documented outcome for a
// malformed file; any other exception or a sanitizer report is a finding. A parsed initialiser holds exactly as
// many values as its shape says.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include "onnx_graph.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto graph = nephra::engine::onnx::parse_graph(bytes);
    for (const auto& [name, tensor] : graph.initializers) {
      size_t count = 1;
      for (const auto d : tensor.dims) count *= static_cast<size_t>(d);
      if (count != tensor.values.size()) std::abort();
    }
  } catch (const std::runtime_error&) {
    // documented: the classifier falls back to OpenCV DNN, which reads the file its own way
  } catch (const std::exception& err) {
    std::fprintf(stderr, "undocumented exception from parse_graph: %s: %s\n", typeid(err).name(), err.what());
    std::abort();
  }
  return 0;
}
