#include "onnx_graph.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace nephra::engine::onnx {
namespace {

// Field numbers from onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto).
constexpr uint32_t kModelGraph = 7;
constexpr uint32_t kGraphNode = 1, kGraphInitializer = 5, kGraphInput = 11, kGraphOutput = 12;
constexpr uint32_t kNodeInput = 1, kNodeOutput = 2, kNodeOpType = 4, kNodeAttribute = 5;
constexpr uint32_t kAttrName = 1, kAttrF = 2, kAttrI = 3, kAttrFloats = 7, kAttrInts = 8;
constexpr uint32_t kTensorDims = 1, kTensorDataType = 2, kTensorFloatData = 4, kTensorName = 8, kTensorRaw = 9;
constexpr uint32_t kTensorDataLocation = 14;
constexpr uint32_t kValueInfoName = 1;
constexpr int64_t kFloat = 1;

enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

[[noreturn]] void bad(const std::string& what) { throw std::runtime_error("ONNX model: " + what); }

// Little-endian floats, as raw_data and packed fields hold them (the engine runs on little-endian machines only).
void append_raw(std::string_view raw, std::vector<float>& out) {
  if (raw.size() % 4 != 0) bad("float data of odd length");
  if (raw.empty()) return;  // an empty view may have no data pointer, which memcpy must not get
  const size_t first = out.size();
  out.resize(first + raw.size() / 4);
  std::memcpy(out.data() + first, raw.data(), raw.size());
}

// One protobuf message: fields in order, each with its number, wire type and value.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool next() {
    if (pos_ >= data_.size()) return false;
    const uint64_t key = varint();
    field_ = static_cast<uint32_t>(key >> 3U);
    wire_ = static_cast<uint32_t>(key & 7U);
    switch (wire_) {
      case kVarint:
        value_ = varint();
        break;
      case kFixed64:
        bytes_ = take(8);
        break;
      case kBytes:
        bytes_ = take(varint());
        break;
      case kFixed32:
        bytes_ = take(4);
        break;
      default:
        bad("unknown wire type " + std::to_string(wire_));
    }
    return true;
  }

  [[nodiscard]] uint32_t field() const { return field_; }
  [[nodiscard]] uint32_t wire() const { return wire_; }
  // Each accessor insists on its wire type: a field of the wrong type is a malformed model, never a stale value.
  [[nodiscard]] int64_t integer() const {
    expect(kVarint);
    return static_cast<int64_t>(value_);
  }
  [[nodiscard]] std::string_view bytes() const {
    expect(kBytes);
    return bytes_;
  }
  [[nodiscard]] float fixed32() const {
    expect(kFixed32);
    float f = 0;
    std::memcpy(&f, bytes_.data(), sizeof(f));
    return f;
  }

  // A repeated integer: packed (bytes) or one per field.
  void append_ints(std::vector<int64_t>& out) const {
    if (wire_ == kVarint) {
      out.push_back(integer());
      return;
    }
    Reader packed(bytes());
    while (!packed.at_end()) out.push_back(static_cast<int64_t>(packed.varint()));
  }

  void append_floats(std::vector<float>& out) const {
    if (wire_ == kFixed32) {
      out.push_back(fixed32());
      return;
    }
    append_raw(bytes(), out);
  }

 private:
  void expect(uint32_t wire) const {
    if (wire_ != wire) {
      bad("field " + std::to_string(field_) + " has wire type " + std::to_string(wire_) + ", expected " +
          std::to_string(wire));
    }
  }

  [[nodiscard]] bool at_end() const { return pos_ >= data_.size(); }

  uint64_t varint() {
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) bad("truncated varint");
      const auto b = static_cast<unsigned char>(data_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7FU) << shift;
      if ((b & 0x80U) == 0) return v;
    }
    bad("varint too long");
  }

  std::string_view take(uint64_t n) {
    if (n > data_.size() - pos_) bad("field runs past its message");
    const std::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  std::string_view data_;
  size_t pos_ = 0;
  uint32_t field_ = 0, wire_ = 0;
  uint64_t value_ = 0;
  std::string_view bytes_;
};

std::string name_of_value_info(std::string_view message) {
  Reader r(message);
  while (r.next()) {
    if (r.field() == kValueInfoName) return std::string(r.bytes());
  }
  return {};
}

std::pair<std::string, Attribute> attribute_of(std::string_view message) {
  std::pair<std::string, Attribute> out;
  Reader r(message);
  while (r.next()) {
    switch (r.field()) {
      case kAttrName:
        out.first = r.bytes();
        break;
      case kAttrF:
        out.second.f = r.fixed32();
        break;
      case kAttrI:
        out.second.i = r.integer();
        break;
      case kAttrFloats:
        r.append_floats(out.second.floats);
        break;
      case kAttrInts:
        r.append_ints(out.second.ints);
        break;
      default:
        break;
    }
  }
  return out;
}

Node node_of(std::string_view message) {
  Node n;
  Reader r(message);
  while (r.next()) {
    switch (r.field()) {
      case kNodeInput:
        n.inputs.emplace_back(r.bytes());
        break;
      case kNodeOutput:
        n.outputs.emplace_back(r.bytes());
        break;
      case kNodeOpType:
        n.op_type = r.bytes();
        break;
      case kNodeAttribute:
        n.attributes.insert(attribute_of(r.bytes()));
        break;
      default:
        break;
    }
  }
  return n;
}

std::pair<std::string, Tensor> tensor_of(std::string_view message) {
  std::pair<std::string, Tensor> out;
  int64_t type = 0;
  std::string_view raw;
  Reader r(message);
  while (r.next()) {
    switch (r.field()) {
      case kTensorDims:
        r.append_ints(out.second.dims);
        break;
      case kTensorDataType:
        type = r.integer();
        break;
      case kTensorFloatData:
        r.append_floats(out.second.values);
        break;
      case kTensorName:
        out.first = r.bytes();
        break;
      case kTensorRaw:
        raw = r.bytes();
        break;
      case kTensorDataLocation:
        if (r.integer() != 0) bad("initialiser " + out.first + " is stored outside the model file");
        break;
      default:
        break;
    }
  }
  if (type != kFloat) bad("initialiser " + out.first + " is not float (type " + std::to_string(type) + ")");
  if (!raw.empty()) append_raw(raw, out.second.values);
  int64_t count = 1;
  for (const int64_t d : out.second.dims) {
    constexpr int64_t kMaxValues = int64_t{1} << 40;
    if (d < 0 || (d != 0 && count > kMaxValues / d)) bad("initialiser " + out.first + " has a bad shape");
    count *= d;
  }
  if (count != static_cast<int64_t>(out.second.values.size())) {
    bad("initialiser " + out.first + " holds " + std::to_string(out.second.values.size()) + " values, its shape " +
        std::to_string(count));
  }
  return out;
}

}  // namespace

int64_t Node::int_or(const std::string& name, int64_t fallback) const {
  const auto it = attributes.find(name);
  return it == attributes.end() ? fallback : it->second.i;
}

float Node::float_or(const std::string& name, float fallback) const {
  const auto it = attributes.find(name);
  return it == attributes.end() ? fallback : it->second.f;
}

std::vector<int64_t> Node::ints_or(const std::string& name, const std::vector<int64_t>& fallback) const {
  const auto it = attributes.find(name);
  return it == attributes.end() ? fallback : it->second.ints;
}

Graph parse_graph(const std::string& model_bytes) {
  Graph g;
  std::string_view graph;
  Reader model(model_bytes);
  while (model.next()) {
    if (model.field() == kModelGraph && model.wire() == kBytes) graph = model.bytes();
  }
  if (graph.empty()) bad("no graph");
  Reader r(graph);
  std::vector<std::string> declared_inputs;
  while (r.next()) {
    if (r.wire() != kBytes) continue;
    switch (r.field()) {
      case kGraphNode:
        g.nodes.push_back(node_of(r.bytes()));
        break;
      case kGraphInitializer:
        g.initializers.insert(tensor_of(r.bytes()));
        break;
      case kGraphInput:
        declared_inputs.push_back(name_of_value_info(r.bytes()));
        break;
      case kGraphOutput:
        g.outputs.push_back(name_of_value_info(r.bytes()));
        break;
      default:
        break;
    }
  }
  for (auto& name : declared_inputs) {
    if (g.initializers.count(name) == 0) g.inputs.push_back(std::move(name));
  }
  return g;
}

Graph read_graph(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) bad("cannot read " + path.string());
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return parse_graph(bytes.str());
}

}  // namespace nephra::engine::onnx
