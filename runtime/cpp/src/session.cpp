#include "session.hpp"

#include <executorch/extension/data_loader/buffer_data_loader.h>
#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/extension/data_loader/mmap_data_loader.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor_ptr_maker.h>
#include <executorch/runtime/platform/runtime.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>

#include "binary_kernel.hpp"
#include "errors.hpp"
#include "onebit.hpp"
#include "pte.hpp"
#include "text.hpp"

// The wheel ships libexecutorch_threadpool.so but not extension/threadpool/threadpool.h. These are the two
// exported members of its ThreadPool (names and signatures as in ExecuTorch's threadpool.h); only the mangled
// names matter, this class is never instantiated here.
namespace executorch::extension::threadpool {
class ThreadPool final {
 public:
  size_t get_thread_count() const;
  // Replaces the pool by one of `num_threads` threads (destroying the old one): safe only while no loaded
  // method holds the old pool, which XNNPACK captures when it creates a method's runtime.
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace edgesdk {
namespace {

namespace et = ::executorch::runtime;
using ::executorch::extension::Module;

// ---------------------------------------------------------------- process-wide thread pool

std::mutex g_pool_mutex;
int g_open_sessions = 0;  // sessions whose methods may hold the pool

// Sets the pool size for a new session and counts it as open. A different size while other sessions are open
// is refused: resetting would destroy the pool their XNNPACK runtimes use.
void enter_pool(int threads) {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (threads > 0) {
    auto* pool = ::executorch::extension::threadpool::get_threadpool();
    if (pool == nullptr) fail(Status::kBackendError, "ExecuTorch has no thread pool on this device");
    size_t have = pool->get_thread_count();
    if (have != size_t(threads)) {
      if (g_open_sessions > 0) {
        fail(Status::kInvalidArgument,
             "threads " + std::to_string(threads) + ": ExecuTorch's thread pool is shared by the process and "
             "open sessions use it with " + std::to_string(have) + " threads; close them first or ask for " +
             std::to_string(have));
      }
      if (!pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads))) {
        fail(Status::kBackendError, "ExecuTorch could not start a thread pool of " + std::to_string(threads) +
                                        " threads");
      }
    }
  }
  ++g_open_sessions;
}

void leave_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  --g_open_sessions;
}

// ---------------------------------------------------------------- helpers

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return text + (shape.size() == 1 ? ",)" : ")");
}

std::string spec_text(const TensorSpec& spec) {
  std::vector<std::string> dims;
  for (size_t i = 0; i < spec.shape.size(); ++i) {
    dims.push_back(spec.shape[i] < 0 ? spec.dim_names[i] : std::to_string(spec.shape[i]));
  }
  return "(" + join(dims) + (dims.size() == 1 ? ",)" : ")");
}

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A manifest setting below `root` (e.g. static_shapes -> executorch -> batch), nullptr when a key on the way is
// absent or null (Python's .get(...) returning None).
const json::Value* find_path(const json::Value& root, std::initializer_list<const char*> keys) {
  const json::Value* value = &root;
  for (const char* key : keys) {
    value = value->find(key);
    if (value == nullptr || value->is_null()) return nullptr;
  }
  return value;
}

// Rows [begin, end) of a tensor, then `pad` copies of its last row.
Tensor slice_rows(const Tensor& t, int64_t begin, int64_t end, int64_t pad) {
  int64_t row = t.rows() == 0 ? 0 : static_cast<int64_t>(t.data.size()) / t.rows();
  Tensor out;
  out.shape = t.shape;
  out.shape[0] = end - begin + pad;
  out.data.assign(t.data.begin() + begin * row, t.data.begin() + end * row);
  for (int64_t i = 0; i < pad; ++i) {
    out.data.insert(out.data.end(), t.data.begin() + (end - 1) * row, t.data.begin() + end * row);
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------- the session

struct Session::Impl {
  ComponentInfo info;
  std::string path;
  std::vector<std::string> input_names, output_names;
  // The unpacked bytes of a .1bit container: declared before the module, so it outlives the loader that reads it.
  std::vector<uint8_t> program_bytes;
  std::unique_ptr<Module> module;
  std::map<int64_t, std::string> batch_methods;  // batch -> method with exactly that static batch
  int64_t batch = 0;  // the chunk size (static batch, or the bounded dynamic batch); 0: no chunking
  bool pad = true;    // false for a bounded dynamic batch: chunks may be short
  std::vector<bool> batched;  // per input: its first dim is "batch" (split into chunks), else passed whole
  bool in_pool = false;
  // the binary-kernel program (binary_kernel.executorch) is loaded: its binary layers run edgesdk::binary_conv2d
  bool binary = false;
  std::string kernel = "float";  // which kernel path runs, for notes ("binary avx512 ..." or "float")
  binary_kernel::WeightCache weight_cache;  // the binary layers' weights in the kernel's layout, packed once

  ~Impl() {
    module.reset();  // methods (and the XNNPACK runtimes holding the thread pool) go before the pool count drops
    if (in_pool) leave_pool();
  }

  [[noreturn]] void backend_error(et::Error error, const std::string& what) const {
    char code[16];
    std::snprintf(code, sizeof code, "0x%02x", static_cast<unsigned>(error));
    fail(Status::kBackendError, info.name + ": ExecuTorch error " + code + ": " + what + " (" + et::to_string(error) + ")");
  }

  void load_program(bool lean_memory) {
    std::unique_ptr<et::DataLoader> loader;
    // the identifier and header sizes first: ExecuTorch would refuse a corrupt file too, but only after logging it
    const bool one_bit = is_1bit_path(path);
    if (!one_bit) check_program_file(path, py_repr(path));
    if (one_bit) {
      program_bytes = read_model_bytes(path);
      check_program_head(program_bytes.data(), std::min<size_t>(program_bytes.size(), 64), program_bytes.size(),
                         py_repr(path));
      loader = std::make_unique<::executorch::extension::BufferDataLoader>(program_bytes.data(), program_bytes.size());
    } else if (lean_memory) {
      // mmap without mlock: the program's pages are file-backed and clean, so the OS can drop them under memory
      // pressure and read them again, and the XNNPACK blob is unmapped once packed; nothing is copied to the heap.
      auto mapped = ::executorch::extension::MmapDataLoader::from(
          path.c_str(), ::executorch::extension::MmapDataLoader::MlockConfig::NoMlock);
      if (!mapped.ok()) backend_error(mapped.error(), "cannot map " + path);
      loader = std::make_unique<::executorch::extension::MmapDataLoader>(std::move(mapped.get()));
    } else {
      // ExecuTorch's default (Module's LoadMode::File): segments are read into heap buffers once, so runs never
      // wait on page faults; the delegate blob is freed after XNNPACK packs it.
      auto file = ::executorch::extension::FileDataLoader::from(path.c_str());
      if (!file.ok()) backend_error(file.error(), "cannot open " + path);
      loader = std::make_unique<::executorch::extension::FileDataLoader>(std::move(file.get()));
    }
    module = std::make_unique<Module>(std::move(loader));
    // full verification: a checksum says the file is the one exported, not that the exporter can be trusted
    et::Error error = module->load(et::Program::Verification::InternalConsistency);
    if (error != et::Error::Ok) {
      // the file came from the bundle and passed its checksum, so a program that fails verification is a corrupt
      // or hostile bundle (a user error, exit 2), not a fault of this runtime
      char code[16];
      std::snprintf(code, sizeof code, "0x%02x", static_cast<unsigned>(error));
      fail(Status::kBundleCorrupt, py_repr(path) + " is not a valid ExecuTorch program (verification failed: " +
                                       et::to_string(error) + ", " + code + "); re-export the bundle");
    }
  }

  void check_methods() const {
    auto names = module->method_names();
    if (!names.ok()) backend_error(names.error(), "cannot list the methods of " + path);
    std::vector<std::string> wanted{"forward"};
    for (const auto& [b, name] : batch_methods) wanted.push_back(name);
    std::vector<std::string> missing;
    for (const std::string& name : wanted) {
      if (names->count(name) == 0) missing.push_back(py_repr(name));
    }
    if (!missing.empty()) {
      fail(Status::kBundleCorrupt, py_repr(path) + " lacks method(s) [" + join(missing) +
                                       "] that the manifest names; re-export the bundle");
    }
  }

  // The manifest's shape of one input or output against the program's own (its method metadata): the rank and
  // every fixed dimension must agree, or the pipelines would size their buffers from a manifest that lies. Named
  // (dynamic) dimensions are the program's upper bounds in the metadata and are not compared.
  void check_shape(const std::string& method, const char* role, const TensorSpec& spec,
                   ::executorch::runtime::Span<const int32_t> sizes) const {
    if (spec.shape.empty()) return;  // the manifest gives no shape for it
    bool agrees = spec.shape.size() == sizes.size();
    for (size_t d = 0; agrees && d < sizes.size(); ++d) agrees = spec.shape[d] < 0 || spec.shape[d] == sizes[d];
    if (!agrees) {
      std::vector<int64_t> program(sizes.begin(), sizes.end());
      fail(Status::kBundleCorrupt, info.name + ": the manifest gives " + role + " " + py_repr(spec.name) +
                                       " the shape " + spec_text(spec) + ", but method '" + method + "' has " +
                                       shape_text(program) + "; re-export the bundle");
    }
  }

  // Loads a method on first use and checks its inputs and outputs are float32 tensors, as many as the manifest's.
  void ensure_loaded(const std::string& name) {
    if (module->is_method_loaded(name)) return;
    auto meta = module->method_meta(name);
    if (!meta.ok()) backend_error(meta.error(), "cannot read method '" + name + "'");
    if (meta->num_inputs() != info.inputs.size() || meta->num_outputs() != info.outputs.size()) {
      fail(Status::kBundleCorrupt, info.name + ": method '" + name + "' takes " + std::to_string(meta->num_inputs()) +
                                       " inputs and returns " + std::to_string(meta->num_outputs()) +
                                       " outputs, but the manifest lists " + std::to_string(info.inputs.size()) +
                                       " and " + std::to_string(info.outputs.size()) + "; re-export the bundle");
    }
    for (size_t i = 0; i < meta->num_inputs(); ++i) {
      auto tensor = meta->input_tensor_meta(i);
      if (!tensor.ok() || tensor->scalar_type() != ::executorch::aten::ScalarType::Float) {
        fail(Status::kBundleUnsupported, info.name + ": method '" + name + "' input " + std::to_string(i) +
                                             " is not a float32 tensor; the C++ runtime runs float32 programs only");
      }
      check_shape(name, "input", info.inputs[i], tensor->sizes());
    }
    for (size_t i = 0; i < meta->num_outputs(); ++i) {
      auto tensor = meta->output_tensor_meta(i);
      if (!tensor.ok() || tensor->scalar_type() != ::executorch::aten::ScalarType::Float) {
        fail(Status::kBundleUnsupported, info.name + ": method '" + name + "' output " + std::to_string(i) +
                                             " is not a float32 tensor; the C++ runtime runs float32 programs only");
      }
      check_shape(name, "output", info.outputs[i], tensor->sizes());
    }
    et::Error error = module->load_method(name);
    if (error == et::Error::OperatorMissing) {
      // a program naming an operator neither ExecuTorch's kernels nor ours provide: refused, as any bundle this
      // runtime cannot run (ExecuTorch's log, shown with --verbose, names the operator)
      fail(Status::kBundleUnsupported, py_repr(path) + " method '" + name + "' calls an operator this runtime does "
                                           "not have (ExecuTorch: OperatorMissing; besides ExecuTorch's kernels it "
                                           "adds only " + binary_kernel::kOpName + "); re-export the bundle");
    }
    if (error != et::Error::Ok) backend_error(error, "cannot load method '" + name + "'");
  }

  // One call of the method for the first input's batch (ExecuTorchSession.run).
  std::vector<Tensor> run_method(const std::vector<Tensor>& inputs) {
    int64_t rows = !inputs.empty() && !inputs[0].shape.empty() ? inputs[0].shape[0] : -1;
    auto found = batch_methods.find(rows);
    std::string name = found != batch_methods.end() ? found->second : "forward";
    ensure_loaded(name);

    // Copies, as the Python runtime's: a kernel working in place must never change the caller's data.
    std::vector<std::vector<float>> buffers;
    std::vector<::executorch::extension::TensorPtr> tensors;
    std::vector<et::EValue> values;
    buffers.reserve(inputs.size());
    for (const Tensor& input : inputs) {
      buffers.push_back(input.data);
      std::vector<::executorch::aten::SizesType> sizes(input.shape.begin(), input.shape.end());
      tensors.push_back(::executorch::extension::from_blob(buffers.back().data(), std::move(sizes)));
      values.emplace_back(*tensors.back());
    }
    binary_kernel::Scope scope(binary ? &weight_cache : nullptr);
    auto result = module->execute(name, values);
    if (!result.ok() && !scope.error().empty()) {
      // the kernel refused what the program gave it (a packed weight of the wrong shape, ...): a corrupt program
      fail(Status::kBundleCorrupt, py_repr(path) + " method '" + name + "': " + scope.error() +
                                       "; re-export the bundle");
    }
    if (!result.ok()) backend_error(result.error(), "method '" + name + "' failed to run");

    std::vector<Tensor> outputs;
    for (const et::EValue& value : *result) {
      if (!value.isTensor() || value.toTensor().scalar_type() != ::executorch::aten::ScalarType::Float) {
        fail(Status::kBundleUnsupported, info.name + ": method '" + name + "' returned a non-float32 output");
      }
      const auto& tensor = value.toTensor();
      Tensor out;
      out.shape.assign(tensor.sizes().begin(), tensor.sizes().end());
      const float* data = tensor.const_data_ptr<float>();
      out.data.assign(data, data + tensor.numel());  // the method's own memory is reused by the next run
      outputs.push_back(std::move(out));
    }
    return outputs;
  }

  void check_inputs(const std::vector<Tensor>& inputs) const {
    if (inputs.size() != info.inputs.size()) {
      fail(Status::kInvalidArgument, "component " + py_repr(info.name) + " needs " +
                                         std::to_string(info.inputs.size()) + " inputs (" + join(input_names) +
                                         "); got " + std::to_string(inputs.size()));
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      const TensorSpec& spec = info.inputs[i];
      const Tensor& t = inputs[i];
      bool fits = spec.shape.empty() || spec.shape.size() == t.shape.size();
      for (size_t d = 0; fits && d < spec.shape.size(); ++d) fits = spec.shape[d] < 0 || spec.shape[d] == t.shape[d];
      for (int64_t d : t.shape) fits = fits && d >= 0;
      if (!fits) {
        fail(Status::kInvalidArgument, "component " + py_repr(info.name) + " input " + py_repr(spec.name) +
                                           " has shape " + shape_text(t.shape) + "; it takes " + spec_text(spec));
      }
      if (element_count(t.shape) != static_cast<int64_t>(t.data.size())) {
        fail(Status::kInvalidArgument, "component " + py_repr(info.name) + " input " + py_repr(spec.name) +
                                           " has " + std::to_string(t.data.size()) + " values for shape " +
                                           shape_text(t.shape));
      }
    }
  }

  // StaticBatchSession.run
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) {
    check_inputs(inputs);
    if (batch == 0) return run_method(inputs);
    std::set<int64_t> sizes;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (batched[i]) sizes.insert(inputs[i].rows());
    }
    if (sizes.size() != 1) {
      std::vector<std::string> listed;
      for (int64_t s : sizes) listed.push_back(std::to_string(s));
      fail(Status::kInvalidArgument, "inputs disagree on batch size: [" + join(listed) +
                                         "]; pass the same number of rows");
    }
    int64_t total = *sizes.begin();
    if (total < 1) fail(Status::kInvalidArgument, "inputs have no rows; pass at least one");
    bool exact = total == batch || batch_methods.count(total) != 0;
    if (exact || (!pad && total < batch)) return run_method(inputs);  // nothing to split or pad

    std::vector<Tensor> joined;
    for (int64_t start = 0; start < total; start += batch) {
      int64_t end = std::min(start + batch, total), real = end - start;
      std::vector<Tensor> chunk;
      for (size_t i = 0; i < inputs.size(); ++i) {
        // padding repeats the last real row (not zeros): in-distribution, no NaNs or slow denormal paths
        chunk.push_back(batched[i] ? slice_rows(inputs[i], start, end, pad ? batch - real : 0) : inputs[i]);
      }
      std::vector<Tensor> outputs = run_method(chunk);
      if (joined.empty()) joined.resize(outputs.size());
      for (size_t o = 0; o < outputs.size(); ++o) {
        Tensor kept = slice_rows(outputs[o], 0, std::min(real, outputs[o].rows()), 0);
        if (joined[o].shape.empty()) {
          joined[o] = std::move(kept);
        } else {
          joined[o].shape[0] += kept.shape[0];
          joined[o].data.insert(joined[o].data.end(), kept.data.begin(), kept.data.end());
        }
      }
    }
    return joined;
  }
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

std::unique_ptr<Session> Session::open(const Bundle& bundle, const std::string& component,
                                       const SessionOptions& options) {
  static std::once_flag initialised;
  std::call_once(initialised, [] { et::runtime_init(); });

  auto impl = std::make_unique<Impl>();
  impl->info = bundle.component(component);
  const ComponentInfo& info = impl->info;
  auto file = info.files.find("executorch");
  if (file == info.files.end()) {
    std::vector<std::string> have;
    for (const auto& [backend, rel] : info.files) have.push_back(backend);
    fail(Status::kBundleUnsupported, "bundle has no 'executorch' file for component " + py_repr(component) +
                                         "; it has: " + (have.empty() ? "none" : join(have)) +
                                         " (re-export with --target executorch)");
  }
  for (const auto* specs : {&info.inputs, &info.outputs}) {
    for (const TensorSpec& spec : *specs) {
      if (spec.dtype != "float32") {
        fail(Status::kBundleUnsupported, "component " + py_repr(component) + " tensor " + py_repr(spec.name) +
                                             " is " + spec.dtype + "; the C++ runtime runs float32 tensors only "
                                             "(use the Python runtime)");
      }
    }
  }
  for (const TensorSpec& spec : info.inputs) impl->input_names.push_back(spec.name);
  for (const TensorSpec& spec : info.outputs) impl->output_names.push_back(spec.name);

  // batch -> method, static batch, or bounded dynamic batch (backends.py open_session)
  if (const json::Value* executorch = info.static_shapes.find("executorch")) {
    if (const json::Value* methods = executorch->find("methods")) {
      for (const auto& [batch, name] : methods->as_object()) {
        try {
          impl->batch_methods[std::stoll(batch)] = name.as_string();
        } catch (const std::logic_error&) {
          fail(Status::kBundleCorrupt, "component " + py_repr(component) + " names a method for batch " +
                                           py_repr(batch) + "; re-export the bundle");
        }
      }
    }
  }
  if (const json::Value* static_batch = find_path(info.static_shapes, {"executorch", "batch"})) {
    if (static_batch->as_int() < 1) {
      fail(Status::kBundleCorrupt, "static batch must be at least 1, got " + json::dump(*static_batch) +
                                       "; re-export the bundle");
    }
    impl->batch = static_batch->as_int();
  } else if (const json::Value* max_batch = find_path(info.dynamic_dims, {"batch", "max"})) {
    // exported with a bounded dynamic batch (ExecuTorch enforces the bound): split, no padding needed
    if (max_batch->as_int() < 1) {
      fail(Status::kBundleCorrupt, "dynamic batch max must be at least 1, got " + json::dump(*max_batch) +
                                       "; re-export the bundle");
    }
    impl->batch = max_batch->as_int();
    impl->pad = false;
  }
  // inputs whose first dim is not "batch" are passed whole to every chunk; without such shape information in
  // the manifest every input counts as batched
  bool any_batched = false;
  for (const TensorSpec& spec : info.inputs) {
    bool is_batched = !spec.dim_names.empty() && spec.dim_names[0] == "batch";
    impl->batched.push_back(is_batched);
    any_batched = any_batched || is_batched;
  }
  if (!any_batched) impl->batched.assign(info.inputs.size(), true);

  impl->path = bundle.path_of(file->second);
  // A BNN bundle's binary-kernel program, when the bundle has one (its path was checked with every other file at
  // Bundle::open): the same methods as the float program, binary layers as edgesdk::binary_conv2d.out.
  if (options.binary_kernel && info.binary_kernel.count("executorch") != 0) {
    const BinaryKernelInfo& binary = info.binary_kernel.at("executorch");
    if (binary.op != binary_kernel::kOpName) {
      fail(Status::kBundleUnsupported, "component " + py_repr(component) + " binary-kernel program " +
                                           py_repr(binary.file) + " needs the operator " + py_repr(binary.op) +
                                           "; this runtime has " + binary_kernel::kOpName);
    }
    const char* isa = nullptr;
    try {
      isa = binary::binary_isa_name();
    } catch (const std::invalid_argument& e) {
      fail(Status::kInvalidArgument, e.what());
    }
    binary_kernel::register_kernel_once();
    impl->path = bundle.path_of(binary.file);
    impl->binary = true;
    impl->kernel = std::string("binary ") + isa + " (XNOR-popcount, 1 thread; float layers on XNNPACK)";
  }
  enter_pool(options.threads);
  impl->in_pool = true;
  impl->load_program(options.lean_memory);
  impl->check_methods();
  // "forward" loads now (XNNPACK packs its weights at open) unless lean_memory asks for nothing before use:
  // each loaded method packs its own copy of the weights, so other methods wait for their first run.
  if (!options.lean_memory) impl->ensure_loaded("forward");
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

const std::vector<std::string>& Session::input_names() const { return impl_->input_names; }
const std::vector<std::string>& Session::output_names() const { return impl_->output_names; }
std::vector<Tensor> Session::run(const std::vector<Tensor>& inputs) { return impl_->run(inputs); }

const std::string& Session::kernel() const { return impl_->kernel; }
size_t Session::repacked_weight_bytes() const { return impl_->weight_cache.bytes(); }
size_t Session::row_packed_weight_bytes() const { return impl_->weight_cache.row_bytes(); }

std::vector<int64_t> Session::exact_batches() const {
  std::vector<int64_t> batches;
  for (const auto& [batch, name] : impl_->batch_methods) batches.push_back(batch);
  return batches;
}

std::vector<std::string> Session::loaded_methods() const {
  std::vector<std::string> names;
  if (impl_->module->is_method_loaded("forward")) names.push_back("forward");
  for (const auto& [batch, name] : impl_->batch_methods) {
    if (name != "forward" && impl_->module->is_method_loaded(name)) names.push_back(name);
  }
  return names;
}

}  // namespace edgesdk
