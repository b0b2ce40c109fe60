#pragma once
// The part of an ONNX model the fast engine needs, read from the protobuf wire format: nodes in order, their
// attributes, and float initialisers. No protobuf library is needed for this much, and the file is the manifest's
// (its sha256 is checked before it is read).
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace nephra::engine::onnx {

struct Attribute {
  float f = 0;
  int64_t i = 0;
  std::vector<int64_t> ints;
  std::vector<float> floats;
};

struct Node {
  std::string op_type;
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::map<std::string, Attribute> attributes;

  [[nodiscard]] int64_t int_or(const std::string& name, int64_t fallback) const;
  [[nodiscard]] float float_or(const std::string& name, float fallback) const;
  [[nodiscard]] std::vector<int64_t> ints_or(const std::string& name, const std::vector<int64_t>& fallback) const;
};

struct Tensor {
  std::vector<int64_t> dims;
  std::vector<float> values;
};

struct Graph {
  std::vector<Node> nodes;
  std::map<std::string, Tensor> initializers;  // float only
  std::vector<std::string> inputs;             // not counting initialisers
  std::vector<std::string> outputs;
};

// Throws std::runtime_error on a malformed file or a non-float initialiser.
Graph read_graph(const std::filesystem::path& path);
Graph parse_graph(const std::string& model_bytes);

}  // namespace nephra::engine::onnx
