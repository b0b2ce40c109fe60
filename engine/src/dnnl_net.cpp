#include "dnnl_net.h"

#include <algorithm>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <unordered_map>

#include "onnx_graph.h"

// The OpenMP runtime oneDNN was built with (Debian's: libgomp) sets the thread count; its standard entry point is
// declared here so that no compiler's OpenMP mode (and with clang, a second runtime) is needed.
extern "C" void omp_set_num_threads(int threads);  // NOLINT(readability-redundant-declaration)

namespace nephra::engine {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dims = memory::dims;
constexpr auto kF32 = memory::data_type::f32;

[[noreturn]] void unsupported(const std::string& what) { throw UnsupportedGraph("oneDNN engine: " + what); }

memory::desc plain(const Dims& dims) {
  switch (dims.size()) {
    case 1:
      return {dims, kF32, Tag::a};
    case 2:
      return {dims, kF32, Tag::ab};
    case 4:
      return {dims, kF32, Tag::abcd};
    case 5:
      return {dims, kF32, Tag::abcde};
    default:
      unsupported("a tensor of rank " + std::to_string(dims.size()));
  }
}

// Activation buffers, shared by tensors whose lives do not overlap.
struct Buffer {
  memory storage;  // bytes
  size_t bytes = 0;
  int live = 0;  // tensors held in it that are still to be read
};

struct Value {
  memory mem;
  size_t buffer = 0;
};

struct Step {
  dnnl::primitive primitive;
  std::unordered_map<int, memory> args;
};

struct Plan {
  int batch = 0;
  memory input;
  std::vector<Step> steps;
  std::vector<memory> outputs;  // as the graph leaves them (any format)
  std::vector<Buffer> buffers;
};

}  // namespace

struct DnnlNet::Impl {
  onnx::Graph graph;
  std::vector<std::string> output_names;
  int threads = 0;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<int, std::unique_ptr<Plan>> plans;  // by batch size
  std::map<std::string, size_t> last_use;      // node index of a tensor's last reader
  std::map<std::string, int> readers;

  [[nodiscard]] const onnx::Tensor& weight(const std::string& name) const {
    const auto it = graph.initializers.find(name);
    if (it == graph.initializers.end()) unsupported("input " + name + " is not a constant");
    return it->second;
  }

  [[nodiscard]] bool is_output(const std::string& name) const {
    return std::find(output_names.begin(), output_names.end(), name) != output_names.end();
  }

  void count_readers() {
    for (size_t i = 0; i < graph.nodes.size(); ++i) {
      for (const auto& in : graph.nodes[i].inputs) {
        if (graph.initializers.count(in) != 0) continue;
        last_use[in] = i;
        ++readers[in];
      }
    }
  }

  // A constant copied into the format a primitive asks for.
  memory constant(const onnx::Tensor& t, const Dims& dims, Tag tag, const memory::desc& wanted) {
    memory user({dims, kF32, tag}, engine, const_cast<float*>(t.values.data()));  // NOLINT: read only
    memory out(wanted, engine);
    dnnl::reorder(user, out).execute(stream, user, out);
    return out;
  }

  struct Builder {
    Impl& net;
    Plan& plan;
    std::map<std::string, Value> values;
    std::vector<bool> done;

    memory place(const memory::desc& md, const std::string& name) {
      const size_t bytes = md.get_size();
      std::optional<size_t> best;
      for (size_t b = 0; b < plan.buffers.size(); ++b) {
        const Buffer& buf = plan.buffers[b];
        if (buf.live == 0 && buf.bytes >= bytes && (!best || buf.bytes < plan.buffers[*best].bytes)) best = b;
      }
      if (!best) {
        plan.buffers.push_back(
            {memory({{static_cast<memory::dim>(bytes)}, memory::data_type::u8, Tag::a}, net.engine), bytes, 0});
        best = plan.buffers.size() - 1;
      }
      return bind(md, name, *best);
    }

    memory bind(const memory::desc& md, const std::string& name, size_t buffer) {
      Buffer& buf = plan.buffers[buffer];
      ++buf.live;
      memory m(md, net.engine, buf.storage.get_data_handle());
      values[name] = {m, buffer};
      return m;
    }

    const Value& value(const std::string& name) {
      const auto it = values.find(name);
      if (it == values.end()) unsupported("tensor " + name + " is read before it is written");
      return it->second;
    }

    // Frees the buffers of tensors node `index` read for the last time.
    void release_inputs_of(size_t index) {
      for (const auto& in : net.graph.nodes[index].inputs) {
        const auto lu = net.last_use.find(in);
        if (lu == net.last_use.end() || lu->second != index || net.is_output(in)) continue;
        const auto v = values.find(in);
        if (v != values.end()) --plan.buffers[v->second.buffer].live;
      }
    }

    // The single node reading `name`, when there is exactly one and `name` is not an output.
    std::optional<size_t> sole_reader(const std::string& name, size_t after) {
      if (net.is_output(name) || net.readers[name] != 1) return std::nullopt;
      for (size_t j = after + 1; j < net.graph.nodes.size(); ++j) {
        const auto& ins = net.graph.nodes[j].inputs;
        if (std::find(ins.begin(), ins.end(), name) != ins.end()) return j;
      }
      return std::nullopt;
    }

    struct ConvShape {
      Dims dst, weights, stride, pad_l, pad_r;
      memory::dim out_c = 0;
      int64_t group = 1;
    };

    static ConvShape conv_shape(const onnx::Node& node, const Dims& in, const onnx::Tensor& w) {
      ConvShape c;
      c.group = node.int_or("group", 1);
      if (w.dims.size() != 4 || in.size() != 4) unsupported("a convolution that is not 2-D");
      const auto dil = node.ints_or("dilations", {1, 1});
      if (std::any_of(dil.begin(), dil.end(), [](int64_t d) { return d != 1; })) unsupported("a dilated convolution");
      if (node.attributes.count("auto_pad") != 0) unsupported("auto_pad");
      const auto pads = node.ints_or("pads", {0, 0, 0, 0});
      const auto strides = node.ints_or("strides", {1, 1});
      c.stride = {strides.at(0), strides.at(1)};
      c.pad_l = {pads.at(0), pads.at(1)};
      c.pad_r = {pads.at(2), pads.at(3)};
      if (c.stride[0] < 1 || c.stride[1] < 1) unsupported("a stride below 1");
      c.out_c = w.dims[0];
      if (c.group < 1 || in[1] != w.dims[1] * c.group || c.out_c % c.group != 0) {
        unsupported("convolution channels do not match");
      }
      const memory::dim oh = (in[2] + c.pad_l[0] + c.pad_r[0] - w.dims[2]) / c.stride[0] + 1;
      const memory::dim ow = (in[3] + c.pad_l[1] + c.pad_r[1] - w.dims[3]) / c.stride[1] + 1;
      c.dst = {in[0], c.out_c, oh, ow};
      c.weights = c.group == 1 ? Dims{w.dims[0], w.dims[1], w.dims[2], w.dims[3]}
                               : Dims{c.group, w.dims[0] / c.group, w.dims[1], w.dims[2], w.dims[3]};
      return c;
    }

    struct Followers {
      dnnl::post_ops ops;
      std::string out;                      // the tensor the fused step produces
      std::optional<std::string> residual;  // the tensor whose buffer it adds into and overwrites
    };

    // What follows convolution `index` and can ride along: a Clip/Relu, then an Add of a tensor read for the last
    // time there, whose buffer the convolution may then overwrite.
    Followers fuse_followers(size_t index, const Dims& dst_dims) {
      const onnx::Node& node = net.graph.nodes[index];
      Followers f;
      f.out = node.outputs.at(0);
      if (const auto next = sole_reader(f.out, index); next && activation(net.graph.nodes[*next], f.ops)) {
        done[*next] = true;
        f.out = net.graph.nodes[*next].outputs.at(0);
      }
      if (const auto next = sole_reader(f.out, index); next && net.graph.nodes[*next].op_type == "Add") {
        const onnx::Node& add = net.graph.nodes[*next];
        const std::string& other = add.inputs.at(0) == f.out ? add.inputs.at(1) : add.inputs.at(0);
        const auto v = values.find(other);
        if (v != values.end() && other != node.inputs[0] && !net.is_output(other) && net.last_use[other] == *next &&
            v->second.mem.get_desc().dims() == dst_dims) {
          f.ops.append_sum(1.0F);
          f.residual = other;
          done[*next] = true;
          f.out = add.outputs.at(0);
        }
      }
      return f;
    }

    void conv(size_t index) {
      const onnx::Node& node = net.graph.nodes[index];
      const memory& src = value(node.inputs.at(0)).mem;
      const Dims in = src.get_desc().dims();
      const onnx::Tensor& w = net.weight(node.inputs.at(1));
      const ConvShape shape = conv_shape(node, in, w);
      const Dims& dst_dims = shape.dst;
      const Dims& w_dims = shape.weights;
      const int64_t group = shape.group;
      const memory::dim out_c = shape.out_c;
      Followers followers = fuse_followers(index, dst_dims);
      const dnnl::post_ops& ops = followers.ops;
      const std::string& out = followers.out;
      const std::optional<std::string>& residual = followers.residual;
      dnnl::primitive_attr attr;
      attr.set_post_ops(ops);
      // Activations stay channels-last (nhwc), the layout of oneDNN's fastest f32 kernels for 1x1 and depthwise
      // convolutions here: letting each convolution pick its own sent some to the reference kernel.
      const memory::desc dst_md = residual ? values[*residual].mem.get_desc() : memory::desc(dst_dims, kF32, Tag::acdb);
      const bool has_bias = node.inputs.size() > 2 && !node.inputs[2].empty();
      const memory::desc bias_md = has_bias ? memory::desc({out_c}, kF32, Tag::a) : memory::desc();
      const dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                              memory::desc(in, kF32, Tag::any), memory::desc(w_dims, kF32, Tag::any),
                                              bias_md, dst_md, shape.stride, shape.pad_l, shape.pad_r);
      const dnnl::convolution_forward::primitive_desc pd(d, attr, net.engine);
      const memory input = converted(src, pd.src_desc(), out + "#src");
      const memory weights = net.constant(w, w_dims, group == 1 ? Tag::oihw : Tag::goihw, pd.weights_desc());
      memory dst;
      if (residual) {
        const Value& r = values[*residual];
        dst = bind(r.mem.get_desc(), out, r.buffer);
      } else {
        dst = place(pd.dst_desc(), out);
      }
      Step step{dnnl::convolution_forward(pd),
                {{DNNL_ARG_SRC, input}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}}};
      if (has_bias) step.args[DNNL_ARG_BIAS] = net.constant(net.weight(node.inputs[2]), {out_c}, Tag::a, bias_md);
      plan.steps.push_back(std::move(step));
      if (input != src) --plan.buffers[values[out + "#src"].buffer].live;
    }

    // `src` as a primitive wants it: itself, or a copy in another layout made by a reorder step (its buffer is
    // freed by the caller once the primitive is added).
    memory converted(const memory& src, const memory::desc& wanted, const std::string& name) {
      if (src.get_desc() == wanted) return src;
      memory copy = place(wanted, name);
      plan.steps.push_back({dnnl::reorder(src, copy), {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, copy}}});
      return copy;
    }

    // Adds `node` as an eltwise post-op when it is one; false otherwise.
    static bool activation(const onnx::Node& node, dnnl::post_ops& ops) {
      if (node.op_type == "Relu") {
        ops.append_eltwise(1.0F, dnnl::algorithm::eltwise_relu, 0.0F, 0.0F);
        return true;
      }
      if (node.op_type == "Clip" && node.inputs.size() == 1) {  // opset < 11: bounds are attributes
        ops.append_eltwise(1.0F, dnnl::algorithm::eltwise_clip, node.float_or("min", -3.4e38F),
                           node.float_or("max", 3.4e38F));
        return true;
      }
      return false;
    }

    void eltwise(size_t index) {
      const onnx::Node& node = net.graph.nodes[index];
      dnnl::post_ops ops;
      if (!activation(node, ops)) unsupported(node.op_type + " with its bounds as inputs");
      float scale = 0, alpha = 0, beta = 0;
      dnnl::algorithm alg{};
      ops.get_params_eltwise(0, scale, alg, alpha, beta);
      const memory& src = value(node.inputs.at(0)).mem;
      const dnnl::eltwise_forward::primitive_desc pd(
          {dnnl::prop_kind::forward_inference, alg, src.get_desc(), alpha, beta}, net.engine);
      const memory dst = place(pd.dst_desc(), node.outputs.at(0));
      plan.steps.push_back({dnnl::eltwise_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}});
    }

    void add(size_t index) {
      const onnx::Node& node = net.graph.nodes[index];
      const memory& a = value(node.inputs.at(0)).mem;
      const memory& b = value(node.inputs.at(1)).mem;
      const dnnl::binary::primitive_desc pd({dnnl::algorithm::binary_add, a.get_desc(), b.get_desc(), a.get_desc()},
                                            net.engine);
      const memory dst = place(pd.dst_desc(), node.outputs.at(0));
      plan.steps.push_back({dnnl::binary(pd), {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, dst}}});
    }

    void global_average_pool(size_t index) {
      const onnx::Node& node = net.graph.nodes[index];
      const memory& src = value(node.inputs.at(0)).mem;
      const Dims in = src.get_desc().dims();
      if (in.size() != 4) unsupported("GlobalAveragePool of rank " + std::to_string(in.size()));
      const dnnl::pooling_forward::desc d(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_avg_exclude_padding, src.get_desc(),
          memory::desc({in[0], in[1], 1, 1}, kF32, Tag::any), {1, 1}, {in[2], in[3]}, {0, 0}, {0, 0});
      const dnnl::pooling_forward::primitive_desc pd(d, net.engine);
      const memory dst = place(pd.dst_desc(), node.outputs.at(0));
      plan.steps.push_back({dnnl::pooling_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}});
    }

    void flatten(size_t index) {
      const onnx::Node& node = net.graph.nodes[index];
      const memory& src = value(node.inputs.at(0)).mem;
      const Dims in = src.get_desc().dims();
      const int64_t axis = node.int_or("axis", 1);
      if (axis != 1) unsupported("Flatten on axis " + std::to_string(axis));
      memory::dim rest = 1;
      for (size_t k = 1; k < in.size(); ++k) rest *= in[k];
      const memory dense = place(plain(in), node.outputs.at(0) + "#dense");
      plan.steps.push_back({dnnl::reorder(src, dense), {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dense}}});
      const Value& v = values[node.outputs.at(0) + "#dense"];
      bind(plain({in[0], rest}), node.outputs.at(0), v.buffer);
      --plan.buffers[v.buffer].live;  // the dense copy lives on under the flat name
    }

    void gemm(size_t index) {
      const onnx::Node& node = net.graph.nodes[index];
      if (node.int_or("transA", 0) != 0 || node.int_or("transB", 0) != 1 || node.float_or("alpha", 1) != 1.0F ||
          node.float_or("beta", 1) != 1.0F) {
        unsupported("Gemm other than A x B^T + C");
      }
      const memory& src = value(node.inputs.at(0)).mem;
      const onnx::Tensor& w = net.weight(node.inputs.at(1));
      const onnx::Tensor& b = net.weight(node.inputs.at(2));
      const Dims in = src.get_desc().dims();
      if (w.dims.size() != 2 || in.size() != 2 || w.dims[1] != in[1]) unsupported("Gemm shapes");
      const memory::dim k = w.dims[0];
      const dnnl::inner_product_forward::desc d(
          dnnl::prop_kind::forward_inference, src.get_desc(), memory::desc({k, in[1]}, kF32, Tag::any),
          memory::desc({k}, kF32, Tag::a), memory::desc({in[0], k}, kF32, Tag::ab));
      const dnnl::inner_product_forward::primitive_desc pd(d, net.engine);
      const memory dst = place(pd.dst_desc(), node.outputs.at(0));
      plan.steps.push_back({dnnl::inner_product_forward(pd),
                            {{DNNL_ARG_SRC, src},
                             {DNNL_ARG_WEIGHTS, net.constant(w, {k, in[1]}, Tag::ab, pd.weights_desc())},
                             {DNNL_ARG_BIAS, net.constant(b, {k}, Tag::a, pd.bias_desc())},
                             {DNNL_ARG_DST, dst}}});
    }

    void build(const Dims& input_dims) {
      if (net.graph.inputs.size() != 1) unsupported("a graph with other than one input");
      plan.input = place(plain(input_dims), net.graph.inputs[0]);
      done.assign(net.graph.nodes.size(), false);
      for (size_t i = 0; i < net.graph.nodes.size(); ++i) {
        if (!done[i]) {
          const std::string& op = net.graph.nodes[i].op_type;
          if (op == "Conv") {
            conv(i);
          } else if (op == "Clip" || op == "Relu") {
            eltwise(i);
          } else if (op == "Add") {
            add(i);
          } else if (op == "GlobalAveragePool") {
            global_average_pool(i);
          } else if (op == "Flatten") {
            flatten(i);
          } else if (op == "Gemm") {
            gemm(i);
          } else {
            unsupported("operator " + op);
          }
        }
        release_inputs_of(i);
      }
      for (const auto& name : net.output_names) plan.outputs.push_back(value(name).mem);
    }
  };

  Plan& plan_for(const Dims& input_dims) {
    const int batch = static_cast<int>(input_dims[0]);
    auto& slot = plans[batch];
    if (slot && slot->input.get_desc().dims() != input_dims) slot.reset();
    if (!slot) {
      auto plan = std::make_unique<Plan>();
      plan->batch = batch;
      Builder{*this, *plan, {}, {}}.build(input_dims);
      slot = std::move(plan);
    }
    return *slot;
  }

  // The smallest plan already built that holds `input_dims` (same image shape, as large a batch or larger): a
  // study's last, smaller batch runs zero-padded in the full batch's plan instead of building and keeping buffers for
  // every batch size a remainder ever had (each plan holds its own activations: at 336 px and batch 8, 87 MB in its
  // largest layer alone).
  Plan* plan_holding(const Dims& input_dims) {
    Plan* best = nullptr;
    for (auto& [batch, plan] : plans) {
      const Dims dims = plan->input.get_desc().dims();
      if (batch >= input_dims[0] && std::equal(dims.begin() + 1, dims.end(), input_dims.begin() + 1) &&
          (best == nullptr || batch < best->batch)) {
        best = plan.get();
      }
    }
    return best;
  }
};

DnnlNet::DnnlNet(const std::filesystem::path& onnx, std::vector<std::string> outputs, int threads)
    : impl_(std::make_unique<Impl>()) {
  try {
    impl_->graph = onnx::read_graph(onnx);
  } catch (const std::runtime_error& err) {
    throw UnsupportedGraph(err.what());
  }
  impl_->output_names = std::move(outputs);
  impl_->threads = threads;
  impl_->count_readers();
}

DnnlNet::~DnnlNet() = default;

void DnnlNet::prepare(const std::vector<int>& shape) {
  // oneDNN sizes each primitive's work split by the OpenMP thread count when it creates the primitive, and runs
  // with the count of the thread that executes it: both must see `threads`.
  if (impl_->threads > 0) omp_set_num_threads(impl_->threads);
  try {
    impl_->plan_for(Dims(shape.begin(), shape.end()));
  } catch (const dnnl::error& err) {
    throw UnsupportedGraph(std::string("oneDNN engine: ") + err.what());
  } catch (const std::out_of_range& err) {  // an attribute or input a supported operator must have is missing
    throw UnsupportedGraph(std::string("oneDNN engine: incomplete node: ") + err.what());
  }
}

std::vector<cv::Mat> DnnlNet::forward(const cv::Mat& blob) {
  if (!blob.isContinuous() || blob.type() != CV_32F || blob.dims != 4) throw std::invalid_argument("bad input blob");
  if (impl_->threads > 0) omp_set_num_threads(impl_->threads);  // the calling thread's count is the one that runs
  const int n = blob.size[0];
  const Dims input_dims{n, blob.size[1], blob.size[2], blob.size[3]};
  Plan* plan = impl_->plan_holding(input_dims);
  if (plan == nullptr) {
    prepare({n, blob.size[1], blob.size[2], blob.size[3]});
    plan = impl_->plans[n].get();
  }
  auto* in = static_cast<float*>(plan->input.get_data_handle());
  std::memcpy(in, blob.ptr<float>(), blob.total() * sizeof(float));
  const size_t padded = plan->input.get_desc().get_size() / sizeof(float);
  std::fill(in + blob.total(), in + padded, 0.0F);
  for (auto& step : plan->steps) step.primitive.execute(impl_->stream, step.args);
  std::vector<cv::Mat> outs;
  for (memory& out : plan->outputs) {
    const Dims dims = out.get_desc().dims();
    std::vector<int> shape(dims.begin(), dims.end());
    cv::Mat m(static_cast<int>(shape.size()), shape.data(), CV_32F);
    memory dense(plain(dims), impl_->engine, m.ptr<float>());
    dnnl::reorder(out, dense).execute(impl_->stream, out, dense);
    outs.push_back(m);
  }
  impl_->stream.wait();
  if (plan->batch > n) {  // the padding's rows dropped
    for (cv::Mat& m : outs) {
      std::vector<cv::Range> rows(static_cast<size_t>(m.dims), cv::Range::all());
      rows[0] = cv::Range(0, n);
      m = m(rows).clone();
    }
  }
  return outs;
}

}  // namespace nephra::engine
