#include "binary_kernel.hpp"

#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_runtime_context.h>
#include <executorch/runtime/kernel/operator_registry.h>

#include <array>
#include <exception>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

namespace edgesdk::binary_kernel {
namespace {

namespace et = ::executorch::runtime;
using ::executorch::aten::ScalarType;
using ::executorch::aten::Tensor;

thread_local WeightCache* t_cache = nullptr;
thread_local std::string* t_error = nullptr;

// whether a cached entry holds words made from the constant's bytes (a copy, or row packing) that could go stale
bool derived(const binary::PackedWeights& weights) { return weights.owned_bytes() != 0 || weights.row_packed(); }

// FNV-1a over the packed bytes: a few kilobytes a layer, far below the convolution's own cost.
uint64_t digest(const uint8_t* data, size_t bytes) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ data[i]) * 1099511628211ULL;
  return h;
}

bool contiguous(const Tensor& t) {
  auto order = t.dim_order();
  for (size_t i = 0; i < order.size(); ++i) {
    if (order[i] != i) return false;
  }
  return true;
}

std::string shape_text(const Tensor& t) {
  std::string text = "(";
  for (ssize_t d = 0; d < t.dim(); ++d) text += (d ? ", " : "") + std::to_string(t.size(d));
  return text + ")";
}

// A checked int: values the program gives are untrusted (a hostile .pte reaches here after ExecuTorch's checks).
int small_int(int64_t value, const char* what) {
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max())
    throw std::invalid_argument(std::string(what) + " " + std::to_string(value) + " is out of range");
  return int(value);
}

std::array<int, 2> pair(const et::EValue& value, const char* what) {
  if (!value.isIntList()) throw std::invalid_argument(std::string(what) + " is not a list of ints");
  auto list = value.toIntList();
  if (list.size() != 2)
    throw std::invalid_argument(std::string(what) + " must hold 2 values, got " + std::to_string(list.size()));
  return {small_int(list[0], what), small_int(list[1], what)};
}

// The whole call; throws std::invalid_argument (a bad program or input) or std::exception (no memory).
void run(Tensor& out, const et::EValue& x_value, const et::EValue& w_value, const et::EValue& channels_value,
         const et::EValue& out_channels_value, const et::EValue& kernel_value, const et::EValue& stride_value,
         const et::EValue& padding_value) {
  if (!x_value.isTensor() || !w_value.isTensor() || !channels_value.isInt() || !out_channels_value.isInt())
    throw std::invalid_argument(
        "arguments are not (Tensor x, Tensor packed_weights, int in_channels, int out_channels, ...)");
  const Tensor& x = x_value.toTensor();
  const Tensor& w = w_value.toTensor();
  if (x.scalar_type() != ScalarType::Float || out.scalar_type() != ScalarType::Float)
    throw std::invalid_argument("x and out must be float32");
  if (w.scalar_type() != ScalarType::Byte) throw std::invalid_argument("packed_weights must be uint8");
  if (x.dim() != 4 || out.dim() != 4) throw std::invalid_argument("x and out must have 4 dimensions");
  if (!contiguous(x) || !contiguous(out) || !contiguous(w))
    throw std::invalid_argument("x, packed_weights and out must be contiguous (NCHW)");

  binary::ConvGeometry g;
  g.in_channels = small_int(channels_value.toInt(), "in_channels");
  auto kernel = pair(kernel_value, "kernel_shape");
  auto stride = pair(stride_value, "stride");
  auto padding = pair(padding_value, "padding");
  g.out_channels = small_int(out_channels_value.toInt(), "out_channels");
  g.kernel_h = kernel[0], g.kernel_w = kernel[1];
  g.stride_h = stride[0], g.stride_w = stride[1];
  g.pad_top = g.pad_bottom = padding[0];
  g.pad_left = g.pad_right = padding[1];
  const std::string problem = binary::validate(g);
  if (!problem.empty()) throw std::invalid_argument(problem);
  // the kernel's layout (pack_binary_weights): (ceil(O / 8), kh, kw, ceil(C / 64), 8 lanes, 8 bytes)
  const std::array<int64_t, 6> want{(g.out_channels + binary::kOutputBlock - 1) / binary::kOutputBlock, g.kernel_h,
                                    g.kernel_w, (g.in_channels + 63) / 64, binary::kOutputBlock, 8};
  bool same = w.dim() == 6;
  for (size_t d = 0; same && d < want.size(); ++d) same = w.size(ssize_t(d)) == want[d];
  if (!same) {
    std::string text = "(";
    for (size_t d = 0; d < want.size(); ++d) text += (d ? ", " : "") + std::to_string(want[d]);
    throw std::invalid_argument("packed_weights has shape " + shape_text(w) + ", not " + text +
                                ") for in_channels " + std::to_string(g.in_channels) + " and out_channels " +
                                std::to_string(g.out_channels));
  }
  if (x.size(1) != g.in_channels)
    throw std::invalid_argument("x has shape " + shape_text(x) + ", not " + std::to_string(g.in_channels) +
                                " channels");
  const int batch = small_int(x.size(0), "batch");
  const int height = small_int(x.size(2), "height"), width = small_int(x.size(3), "width");
  int out_h = 0, out_w = 0;
  binary::output_size(g, height, width, &out_h, &out_w);  // throws for a bad input size
  const std::array<::executorch::aten::SizesType, 4> sizes{batch, g.out_channels, out_h, out_w};
  if (::executorch::runtime::resize_tensor(out, {sizes.data(), sizes.size()}) != et::Error::Ok)
    throw std::invalid_argument("out cannot take shape (" + std::to_string(batch) + ", " +
                                std::to_string(g.out_channels) + ", " + std::to_string(out_h) + ", " +
                                std::to_string(out_w) + ")");
  if (batch == 0) return;
  const uint8_t* packed = w.const_data_ptr<uint8_t>();
  const size_t packed_bytes = size_t(w.nbytes());
  if (t_cache != nullptr) {
    binary::binary_conv2d(t_cache->get(g, packed, packed_bytes), x.const_data_ptr<float>(), batch, height, width,
                          out.mutable_data_ptr<float>());
  } else {
    binary::binary_conv2d(binary::PackedWeights::view(g, packed, packed_bytes), x.const_data_ptr<float>(), batch,
                          height, width, out.mutable_data_ptr<float>());
  }
}

// The boxed kernel: the stack holds the schema's 8 arguments (out last), then the returned value (out again).
void binary_conv2d_out(et::KernelRuntimeContext& context, et::Span<et::EValue*> stack) {
  std::string problem;
  try {
    if (stack.size() < 8 || !stack[7]->isTensor())
      throw std::invalid_argument("called with " + std::to_string(stack.size()) + " values, not the op's 7 + out");
    Tensor& out = stack[7]->toTensor();
    run(out, *stack[0], *stack[1], *stack[2], *stack[3], *stack[4], *stack[5], *stack[6]);
    if (stack.size() > 8) *stack[8] = et::EValue(out);
    return;
  } catch (const std::exception& e) {
    problem = e.what();
  } catch (...) {
    problem = "unknown failure";
  }
  // ExecuTorch kernels report failure through the context, never by throwing across its C-style executor
  if (t_error != nullptr && t_error->empty()) *t_error = std::string(kOpName) + ": " + problem;
  context.fail(et::Error::InvalidArgument);
}

}  // namespace

void register_kernel_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    static const et::Kernel kernel(kOpName, binary_conv2d_out);
    (void)et::register_kernel(kernel);  // returns Ok or aborts (a name registered twice), per operator_registry.h
  });
}

const binary::PackedWeights& WeightCache::get(const binary::ConvGeometry& g, const uint8_t* packed, size_t bytes) {
  const Key key{packed, bytes, g.in_channels, g.out_channels, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
                g.pad_top, g.pad_left, g.pad_bottom, g.pad_right};
  auto found = entries_.find(key);
  if (found != entries_.end()) {
    // a view reads the constants themselves, so it cannot go stale; a copy or row-packed words derived from them
    // are checked against the digest of the bytes they were made from
    if (!derived(found->second.weights) || found->second.digest == digest(packed, bytes)) return found->second.weights;
    entries_.erase(found);
  }
  binary::PackedWeights weights = binary::PackedWeights::view(g, packed, bytes);
  const uint64_t sum = derived(weights) ? digest(packed, bytes) : 0;
  auto inserted = entries_.emplace(key, Entry{sum, std::move(weights)});
  return inserted.first->second.weights;
}

size_t WeightCache::bytes() const {
  size_t total = 0;
  for (const auto& [key, entry] : entries_) total += entry.weights.owned_bytes();
  return total;
}

size_t WeightCache::row_bytes() const {
  size_t total = 0;
  for (const auto& [key, entry] : entries_) total += entry.weights.row_bytes();
  return total;
}

Scope::Scope(WeightCache* cache) : previous_cache_(t_cache), previous_error_(t_error) {
  t_cache = cache;
  t_error = &error_;
}

Scope::~Scope() {
  t_cache = previous_cache_;
  t_error = previous_error_;
}

const std::string& Scope::error() const { return error_; }

}  // namespace edgesdk::binary_kernel
