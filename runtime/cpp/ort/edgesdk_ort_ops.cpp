// libedgesdk_ort_ops: ONNX Runtime custom operators of edgesdk, registered with
// onnxruntime.SessionOptions.register_custom_ops_library(path) (which calls RegisterCustomOps below).
//
// ai.edgesdk::BinaryConv2d, since version 1: the binary convolution of kernels/binary_conv.hpp, with an optional
// fused epilogue (the float layers that follow a binary convolution in a BNN, binary_conv.hpp, Epilogue).
//   inputs   X         float32 (N, C, H, W)
//            W_packed  uint8 (ceil(out_channels / 8), kh, kw, ceil(C / 64), 8, 8): the kernel's own layout of (W < 0),
//                      little-endian 64-bit words (binary_conv.hpp, PackedWeights; pack_binary_weights in
//                      edgesdk.runtime.binary_ops); an initializer, read in place: one bit a weight, no copy
//            scale     optional float32, out_channels values (any shape of rank <= 8 with that many elements, e.g.
//                      (O, 1, 1)); every input's rank is at most 8
//            shift     optional float32, out_channels values
//            residual  optional float32, Y's shape; or, with residual_stride s and residual_channel_offset k,
//                      (N, Cr, H' * s, W' * s) with k + Cr <= out_channels: a ResNet's option-A shortcut read in place,
//                      r = residual[n][c - k][y * s][x * s] for output channels k .. k + Cr - 1 and 0 elsewhere
//   output   Y         float32 (N, out_channels, H', W'): v = conv2d(s(X), B), s(x) = clamp(x * 2^100, -1, 1),
//                      B = +1 where W >= 0 and -1 where W < 0, zero padding; then v = max(v, 0) if activation is
//                      "relu", v = v * scale[c], v = v + shift[c], v = v + r, each where present, in this order
//                      and each rounded on its own (what Relu, Mul, Add, Add nodes compute; with a shortcut, the Add of
//                      its Reshape, Slice, Reshape and Pad nodes' output)
//   attributes  in_channels (int, required), out_channels (int, required), kernel_shape (ints [kh, kw], required),
//               strides (ints, default [1, 1]), pads (ints [top, left, bottom, right], default zeros),
//               activation (string, "none" (default) or "relu"), residual_stride (int, default 1),
//               residual_channel_offset (int, default 0)
// A graph written for the two-input form runs unchanged: the epilogue inputs are optional and trailing.
// The kernel runs on W_packed's own bytes (a PackedWeights view, made once per address: W_packed is meant to be an
// initializer). Only where they are not 8-byte aligned does it copy them, and edgesdk_ort_copied_weight_bytes()
// counts such copies; layers whose kernel row fits one word also keep row-packed words derived from them
// (binary_conv.hpp, PackedWeights::row_packed), which edgesdk_ort_row_packed_weight_bytes() counts.
// A malformed node or input is an ONNX Runtime error status: the C API of this header version has no status
// return from a kernel, so the kernel throws and ONNX Runtime turns the exception into the failing call's status.
//
// Built against onnxruntime_c_api.h only (no C++ wrapper), API version 13 (ONNX Runtime 1.13) or newer: the
// tables of the C API only grow, so a library built this way loads into any newer runtime.
#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "binary_conv.hpp"
#include "onnxruntime_c_api.h"

#if ORT_API_VERSION < 13
#error "libedgesdk_ort_ops needs onnxruntime_c_api.h of ONNX Runtime 1.13 or newer"
#endif

namespace {

namespace bc = edgesdk::binary;

// The C API version this library asks for (its functions are all in version 13's table), and the OrtCustomOp version
// it declares: 12, the last before ONNX Runtime reads GetInputMemoryType (a field that version 13's header does not
// yet have), so the runtime reads no field past those filled in below whatever header this is compiled with.
constexpr uint32_t kApiVersion = 13;
constexpr uint32_t kCustomOpVersion = 12;

const OrtApi* g_api = nullptr;
// Bytes of W_packed copies the live kernels of this process hold (unaligned initializers only; 0 when in place).
std::atomic<int64_t> g_copied_bytes{0};
// Bytes of row-packed words the live kernels hold (layers of at most 64 / kernel_w input channels).
std::atomic<int64_t> g_row_bytes{0};

// A failed C API call as an exception carrying its message (freed here). `what` is a plain string so that a call
// that succeeds, as every call in a run does, builds no std::string.
void check_status(OrtStatus* status, const char* what) {
  if (status == nullptr) return;
  std::string message = std::string(what) + ": " + g_api->GetErrorMessage(status);
  g_api->ReleaseStatus(status);
  throw std::runtime_error(message);
}

std::vector<int64_t> ints_attribute(const OrtKernelInfo* info, const char* name, bool required,
                                    std::vector<int64_t> fallback) {
  size_t size = 0;
  OrtStatus* status = g_api->KernelInfoGetAttributeArray_int64(info, name, nullptr, &size);
  if (status != nullptr) {
    g_api->ReleaseStatus(status);
    if (required) throw std::runtime_error(std::string("BinaryConv2d: attribute '") + name + "' (ints) is required");
    return fallback;
  }
  std::vector<int64_t> values(size);
  if (size > 0) check_status(g_api->KernelInfoGetAttributeArray_int64(info, name, values.data(), &size), name);
  return values;
}

int64_t int_attribute(const OrtKernelInfo* info, const char* name) {
  int64_t value = 0;
  OrtStatus* status = g_api->KernelInfoGetAttribute_int64(info, name, &value);
  if (status != nullptr) {
    g_api->ReleaseStatus(status);
    throw std::runtime_error(std::string("BinaryConv2d: attribute '") + name + "' (int) is required");
  }
  return value;
}

// A string attribute, or `fallback` where the node has none.
std::string string_attribute(const OrtKernelInfo* info, const char* name, const std::string& fallback) {
  size_t size = 0;
  OrtStatus* status = g_api->KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (status != nullptr) {
    g_api->ReleaseStatus(status);
    return fallback;
  }
  std::string value(size, '\0');  // size counts the terminating zero
  check_status(g_api->KernelInfoGetAttribute_string(info, name, value.data(), &size), name);
  value.resize(size > 0 ? size - 1 : 0);
  return value;
}

int64_t int_attribute_or(const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t value = 0;
  OrtStatus* status = g_api->KernelInfoGetAttribute_int64(info, name, &value);
  if (status == nullptr) return value;
  g_api->ReleaseStatus(status);
  return fallback;
}

int checked_int(int64_t value, const char* what) {
  if (value < 0 || value > (int64_t(1) << 20))
    throw std::runtime_error(std::string("BinaryConv2d: ") + what + " out of range: " + std::to_string(value));
  return int(value);
}

// A tensor's dimensions, held inline (no input of this op has more than 6), so that reading them allocates nothing.
struct Dims {
  static constexpr size_t kMaxRank = 8;
  int64_t values[kMaxRank] = {};
  size_t rank = 0;
  Dims() = default;
  Dims(std::initializer_list<int64_t> list) : rank(list.size()) { std::copy(list.begin(), list.end(), values); }
  size_t size() const { return rank; }
  int64_t operator[](size_t i) const { return values[i]; }
  const int64_t* begin() const { return values; }
  const int64_t* end() const { return values + rank; }
  bool operator==(const Dims& other) const { return std::equal(begin(), end(), other.begin(), other.end()); }
  bool operator!=(const Dims& other) const { return !(*this == other); }
};

struct TensorShape {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  Dims dims;
};

TensorShape shape_of(const OrtValue* value) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  check_status(g_api->GetTensorTypeAndShape(value, &info), "BinaryConv2d: reading an input's shape");
  TensorShape shape;
  size_t rank = 0;
  OrtStatus* status = g_api->GetTensorElementType(info, &shape.type);
  if (status == nullptr) status = g_api->GetDimensionsCount(info, &rank);
  const bool too_many = status == nullptr && rank > Dims::kMaxRank;
  if (status == nullptr && !too_many) {
    shape.dims.rank = rank;
    status = g_api->GetDimensions(info, shape.dims.values, rank);
  }
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  check_status(status, "BinaryConv2d: reading an input's shape");
  if (too_many) throw std::runtime_error("BinaryConv2d: an input of rank " + std::to_string(rank) + " (at most 8)");
  return shape;
}

template <class Container>
std::string dims_text(const Container& dims) {
  std::string text = "(";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + ")";
}

class BinaryConvKernel {
 public:
  explicit BinaryConvKernel(const OrtKernelInfo* info) {
    const int64_t in_channels = int_attribute(info, "in_channels");
    const int64_t out_channels = int_attribute(info, "out_channels");
    const std::vector<int64_t> kernel = ints_attribute(info, "kernel_shape", true, {});
    const std::vector<int64_t> strides = ints_attribute(info, "strides", false, {1, 1});
    const std::vector<int64_t> pads = ints_attribute(info, "pads", false, {0, 0, 0, 0});
    if (kernel.size() != 2) throw std::runtime_error("BinaryConv2d: kernel_shape must have 2 values");
    if (strides.size() != 2) throw std::runtime_error("BinaryConv2d: strides must have 2 values");
    if (pads.size() != 4) throw std::runtime_error("BinaryConv2d: pads must have 4 values [top, left, bottom, right]");
    geometry_.in_channels = checked_int(in_channels, "in_channels");
    geometry_.out_channels = checked_int(out_channels, "out_channels");
    geometry_.kernel_h = checked_int(kernel[0], "kernel_shape");
    geometry_.kernel_w = checked_int(kernel[1], "kernel_shape");
    geometry_.stride_h = checked_int(strides[0], "strides");
    geometry_.stride_w = checked_int(strides[1], "strides");
    geometry_.pad_top = checked_int(pads[0], "pads");
    geometry_.pad_left = checked_int(pads[1], "pads");
    geometry_.pad_bottom = checked_int(pads[2], "pads");
    geometry_.pad_right = checked_int(pads[3], "pads");
    const std::string problem = bc::validate(geometry_);
    if (!problem.empty()) throw std::runtime_error("BinaryConv2d: " + problem);
    const std::string activation = string_attribute(info, "activation", "none");
    if (activation != "none" && activation != "relu")
      throw std::runtime_error("BinaryConv2d: activation must be \"none\" or \"relu\", got \"" + activation + "\"");
    relu_ = activation == "relu";
    residual_stride_ = checked_int(int_attribute_or(info, "residual_stride", 1), "residual_stride");
    residual_offset_ = checked_int(int_attribute_or(info, "residual_channel_offset", 0), "residual_channel_offset");
    if (residual_stride_ < 1 || residual_stride_ > 64 || residual_offset_ >= geometry_.out_channels)
      throw std::runtime_error("BinaryConv2d: residual_stride must be in [1, 64] and residual_channel_offset below "
                               "out_channels");
  }

  ~BinaryConvKernel() { forget(); }
  BinaryConvKernel(const BinaryConvKernel&) = delete;
  BinaryConvKernel& operator=(const BinaryConvKernel&) = delete;

  void compute(OrtKernelContext* context) {
    const OrtValue* x_value = nullptr;
    const OrtValue* w_value = nullptr;
    check_status(g_api->KernelContext_GetInput(context, 0, &x_value), "BinaryConv2d: input X");
    check_status(g_api->KernelContext_GetInput(context, 1, &w_value), "BinaryConv2d: input W_packed");
    const TensorShape x_shape = shape_of(x_value);
    const TensorShape w_shape = shape_of(w_value);
    if (x_shape.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || x_shape.dims.size() != 4)
      throw std::runtime_error("BinaryConv2d: X must be float32 (N, C, H, W), got rank " +
                               std::to_string(x_shape.dims.size()));
    if (x_shape.dims[1] != geometry_.in_channels)
      throw std::runtime_error("BinaryConv2d: X has " + std::to_string(x_shape.dims[1]) + " channels, in_channels is " +
                               std::to_string(geometry_.in_channels));
    const Dims want{(geometry_.out_channels + bc::kOutputBlock - 1) / bc::kOutputBlock,
                    geometry_.kernel_h, geometry_.kernel_w, (geometry_.in_channels + 63) / 64, bc::kOutputBlock, 8};
    if (w_shape.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || w_shape.dims != want)
      throw std::runtime_error("BinaryConv2d: W_packed must be uint8 " + dims_text(want) + " for in_channels " +
                               std::to_string(geometry_.in_channels) + " and out_channels " +
                               std::to_string(geometry_.out_channels) + ", got " + dims_text(w_shape.dims));
    for (int64_t d : x_shape.dims)
      if (d < 0 || d > (int64_t(1) << 20)) throw std::runtime_error("BinaryConv2d: X shape out of range");
    const int batch = int(x_shape.dims[0]), height = int(x_shape.dims[2]), width = int(x_shape.dims[3]);
    const int out_channels = geometry_.out_channels;

    const void* w_data = nullptr;
    check_status(g_api->GetTensorMutableData(const_cast<OrtValue*>(w_value), const_cast<void**>(&w_data)),
                 "BinaryConv2d: W_packed data");
    size_t w_bytes = 1;
    for (int64_t d : w_shape.dims) w_bytes *= size_t(d);
    // a view of the initializer's bytes (geometry and size checked), made once per address and kept: sessions may
    // run concurrently, so under the lock
    std::shared_ptr<const bc::PackedWeights> weights;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!packed_ || packed_source_ != w_data) {
        forget();
        packed_ = std::make_shared<const bc::PackedWeights>(bc::PackedWeights::view(geometry_, w_data, w_bytes));
        packed_source_ = w_data;
        g_copied_bytes += packed_->owned_bytes();
        g_row_bytes += packed_->row_bytes();
      }
      weights = packed_;
    }

    int out_h = 0, out_w = 0;
    bc::output_size(geometry_, height, width, &out_h, &out_w);
    const int64_t y_dims[4] = {batch, out_channels, out_h, out_w};
    OrtValue* y_value = nullptr;
    check_status(g_api->KernelContext_GetOutput(context, 0, y_dims, 4, &y_value), "BinaryConv2d: output Y");
    if (batch == 0) return;  // an empty batch: an empty output of the right shape
    const void* x_data = nullptr;
    void* y_data = nullptr;
    check_status(g_api->GetTensorMutableData(const_cast<OrtValue*>(x_value), const_cast<void**>(&x_data)),
                 "BinaryConv2d: X data");
    check_status(g_api->GetTensorMutableData(y_value, &y_data), "BinaryConv2d: Y data");
    bc::Epilogue epilogue;
    epilogue.relu = relu_;
    epilogue.scale = channel_values(context, 2, "scale");
    epilogue.shift = channel_values(context, 3, "shift");
    epilogue.residual = residual(context, y_dims, &epilogue.residual_channels);
    epilogue.residual_offset = residual_offset_;
    epilogue.residual_stride = residual_stride_;
    bc::binary_conv2d(*weights, static_cast<const float*>(x_data), batch, height, width, static_cast<float*>(y_data),
                      epilogue);
  }

 private:
  // An optional input: null where the node leaves it out.
  static const OrtValue* optional_input(OrtKernelContext* context, size_t index) {
    size_t count = 0;
    check_status(g_api->KernelContext_GetInputCount(context, &count), "BinaryConv2d: input count");
    if (index >= count) return nullptr;
    const OrtValue* value = nullptr;
    check_status(g_api->KernelContext_GetInput(context, index, &value), "BinaryConv2d: an optional input");
    return value;
  }

  static const float* float_data(const OrtValue* value, const char* what) {
    const void* data = nullptr;
    if (OrtStatus* status = g_api->GetTensorMutableData(const_cast<OrtValue*>(value), const_cast<void**>(&data)))
      check_status(status, (std::string("BinaryConv2d: ") + what + " data").c_str());
    return static_cast<const float*>(data);
  }

  // scale or shift: out_channels float32 values, or null where the input is absent
  const float* channel_values(OrtKernelContext* context, size_t index, const char* what) const {
    const OrtValue* value = optional_input(context, index);
    if (value == nullptr) return nullptr;
    const TensorShape shape = shape_of(value);
    int64_t elements = 1;
    for (int64_t d : shape.dims) elements = d < 0 ? -1 : elements * d;
    if (shape.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || elements != geometry_.out_channels)
      throw std::runtime_error(std::string("BinaryConv2d: ") + what + " must be float32 with out_channels (" +
                               std::to_string(geometry_.out_channels) + ") values, got " + dims_text(shape.dims));
    return float_data(value, what);
  }

  // the residual: float32 (N, Cr, H' * stride, W' * stride) with Cr <= out_channels - offset (Y's shape where stride
  // and offset are the defaults), or null where the input is absent
  const float* residual(OrtKernelContext* context, const int64_t (&y_dims)[4], int* channels) const {
    const OrtValue* value = optional_input(context, 4);
    if (value == nullptr) return nullptr;
    const TensorShape shape = shape_of(value);
    const int64_t s = residual_stride_;
    const bool plain = s == 1 && residual_offset_ == 0;
    const bool fits = shape.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && shape.dims.size() == 4 &&
                      shape.dims[0] == y_dims[0] && shape.dims[2] == y_dims[2] * s && shape.dims[3] == y_dims[3] * s &&
                      (plain ? shape.dims[1] == y_dims[1]
                             : shape.dims[1] >= 1 && shape.dims[1] <= y_dims[1] - residual_offset_);
    if (!fits)
      throw std::runtime_error("BinaryConv2d: residual must be float32 " +
                               (plain ? dims_text(Dims{y_dims[0], y_dims[1], y_dims[2], y_dims[3]}) + " (Y's shape)"
                                      : std::string("(N, at most out_channels - residual_channel_offset, H' * ") +
                                            "residual_stride, W' * residual_stride)") +
                               ", got " + dims_text(shape.dims));
    *channels = int(shape.dims[1]);
    return float_data(value, "residual");
  }

  // drops the kept weights from the counters (the caller holds the lock, or is the destructor)
  void forget() {
    if (!packed_) return;
    g_copied_bytes -= packed_->owned_bytes();
    g_row_bytes -= packed_->row_bytes();
    packed_.reset();
  }

  bc::ConvGeometry geometry_;
  bool relu_ = false;
  int residual_stride_ = 1;
  int residual_offset_ = 0;
  std::mutex mutex_;
  std::shared_ptr<const bc::PackedWeights> packed_;
  const void* packed_source_ = nullptr;
};

// ---- the OrtCustomOp table ----

void* ORT_API_CALL create_kernel(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo* info) {
  return new BinaryConvKernel(info);
}
const char* ORT_API_CALL op_name(const OrtCustomOp*) { return "BinaryConv2d"; }
const char* ORT_API_CALL op_provider(const OrtCustomOp*) { return "CPUExecutionProvider"; }
ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp*, size_t index) {
  return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
size_t ORT_API_CALL input_count(const OrtCustomOp*) { return 5; }  // X, W_packed, then the optional epilogue
ONNXTensorElementDataType ORT_API_CALL output_type(const OrtCustomOp*, size_t) {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
size_t ORT_API_CALL output_count(const OrtCustomOp*) { return 1; }
void ORT_API_CALL kernel_compute(void* kernel, OrtKernelContext* context) {
  static_cast<BinaryConvKernel*>(kernel)->compute(context);
}
void ORT_API_CALL kernel_destroy(void* kernel) { delete static_cast<BinaryConvKernel*>(kernel); }
OrtCustomOpInputOutputCharacteristic ORT_API_CALL input_characteristic(const OrtCustomOp*, size_t index) {
  return index < 2 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}
OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp*, size_t) {
  return INPUT_OUTPUT_REQUIRED;
}

OrtCustomOp make_binary_conv_op() {
  OrtCustomOp op;
  std::memset(&op, 0, sizeof(op));  // fields of newer versions stay null
  op.version = kCustomOpVersion;
  op.CreateKernel = create_kernel;
  op.GetName = op_name;
  op.GetExecutionProviderType = op_provider;
  op.GetInputType = input_type;
  op.GetInputTypeCount = input_count;
  op.GetOutputType = output_type;
  op.GetOutputTypeCount = output_count;
  op.KernelCompute = kernel_compute;
  op.KernelDestroy = kernel_destroy;
  op.GetInputCharacteristic = input_characteristic;
  op.GetOutputCharacteristic = required;
  return op;
}

// The op table followed by zeros: should a runtime read fields of a newer OrtCustomOp than this header declares,
// it finds null pointers (meaning "not provided") rather than whatever lies next in memory.
struct PaddedCustomOp {
  OrtCustomOp op;
  void* newer_fields[64];
};
const PaddedCustomOp g_binary_conv_op = {make_binary_conv_op(), {}};

}  // namespace

extern "C" {

// The entry point of SessionOptions.register_custom_ops_library: adds the ai.edgesdk domain to the options. The
// domain lives as long as the library (ONNX Runtime keeps a pointer to it in every session made from the options).
__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                                 const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kApiVersion);
  if (api == nullptr) {
    const OrtApi* oldest = api_base->GetApi(1);  // to report it: every runtime serves version 1
    return oldest->CreateStatus(ORT_FAIL, "libedgesdk_ort_ops needs ONNX Runtime 1.13 or newer");
  }
  g_api = api;
  static std::mutex domains_mutex;
  static std::vector<OrtCustomOpDomain*> domains;  // one per registration; freed with the process
  std::lock_guard<std::mutex> lock(domains_mutex);
  OrtCustomOpDomain* domain = nullptr;
  if (OrtStatus* status = api->CreateCustomOpDomain("ai.edgesdk", &domain)) return status;
  domains.push_back(domain);
  if (OrtStatus* status = api->CustomOpDomain_Add(domain, &g_binary_conv_op.op)) return status;
  return api->AddCustomOpDomain(options, domain);
}

// Which instruction path the binary convolution runs now ("avx512", "avx2", "neon", "scalar"; EDGESDK_BINARY_ISA
// forces one), or an error text starting with "error:" when EDGESDK_BINARY_ISA names one this CPU cannot run.
__attribute__((visibility("default"))) const char* edgesdk_binary_isa_name(void) {
  try {
    return edgesdk::binary::binary_isa_name();
  } catch (const std::exception&) {
    return "error: EDGESDK_BINARY_ISA names a path this build or CPU cannot run";
  }
}

// Bytes of weight copies the BinaryConv2d kernels alive in this process hold beside their W_packed initializers: 0
// when every kernel runs on its initializer in place (the initializers 8-byte aligned, as ONNX Runtime allocates them).
__attribute__((visibility("default"))) int64_t edgesdk_ort_copied_weight_bytes(void) { return g_copied_bytes.load(); }

// Bytes of row-packed words the BinaryConv2d kernels alive in this process derived from their W_packed (layers whose
// kernel row of in_channels * kernel_w bits fits one 64-bit word: binary_conv.hpp, PackedWeights::row_packed).
__attribute__((visibility("default"))) int64_t edgesdk_ort_row_packed_weight_bytes(void) { return g_row_bytes.load(); }

}  // extern "C"
