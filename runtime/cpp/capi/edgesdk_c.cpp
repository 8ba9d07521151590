// The C ABI of edgesdk_c.h: catches everything the library throws and returns it as a status and a message.
#include "edgesdk_c.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "errors.hpp"
#include "session.hpp"

struct edgesdk_session {
  std::unique_ptr<edgesdk::Session> session;
  std::vector<edgesdk::Tensor> outputs;
};

namespace {

void write_error(const std::string& message, char* error, size_t error_size) {
  if (error == nullptr || error_size == 0) return;
  size_t n = std::min(message.size(), error_size - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

template <typename Body>
int guarded(char* error, size_t error_size, Body&& body) noexcept {
  try {
    body();
    write_error("", error, error_size);
    return 0;
  } catch (const edgesdk::Failure& e) {
    write_error(e.what(), error, error_size);
    return static_cast<int>(e.status());
  } catch (const std::bad_alloc&) {
    write_error("out of memory", error, error_size);
  } catch (const std::exception& e) {
    write_error(std::string("internal error: ") + e.what(), error, error_size);
  } catch (...) {
    write_error("internal error", error, error_size);
  }
  return static_cast<int>(edgesdk::Status::kInternal);
}

}  // namespace

extern "C" {

int edgesdk_session_open(const char* bundle_dir, const char* component, int verify_checksums, int lean_memory,
                         int threads, edgesdk_session** out, char* error, size_t error_size) {
  return guarded(error, error_size, [&] {
    if (bundle_dir == nullptr || component == nullptr || out == nullptr)
      edgesdk::fail(edgesdk::Status::kInvalidArgument, "edgesdk_session_open: a null argument");
    *out = nullptr;
    edgesdk::Bundle bundle = edgesdk::Bundle::open(bundle_dir, verify_checksums != 0);
    edgesdk::SessionOptions options;
    options.lean_memory = lean_memory != 0;
    options.threads = threads;
    auto handle = std::make_unique<edgesdk_session>();
    handle->session = edgesdk::Session::open(bundle, component, options);
    *out = handle.release();
  });
}

void edgesdk_session_close(edgesdk_session* session) { delete session; }

int64_t edgesdk_session_exact_batches(const edgesdk_session* session, int64_t* batches, int64_t capacity) {
  std::vector<int64_t> exact = session->session->exact_batches();
  for (int64_t i = 0; i < std::min<int64_t>(capacity, int64_t(exact.size())); ++i) batches[i] = exact[size_t(i)];
  return int64_t(exact.size());
}

const char* edgesdk_session_kernel(const edgesdk_session* session) { return session->session->kernel().c_str(); }

int64_t edgesdk_session_repacked_weight_bytes(const edgesdk_session* session) {
  return int64_t(session->session->repacked_weight_bytes());
}

int64_t edgesdk_session_row_packed_weight_bytes(const edgesdk_session* session) {
  return int64_t(session->session->row_packed_weight_bytes());
}

int edgesdk_session_run(edgesdk_session* session, int64_t count, const float* const* data,
                        const int64_t* const* shapes, const int64_t* ranks, char* error, size_t error_size) {
  return guarded(error, error_size, [&] {
    std::vector<edgesdk::Tensor> inputs(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      edgesdk::Tensor& tensor = inputs[size_t(i)];
      tensor.shape.assign(shapes[i], shapes[i] + ranks[i]);
      int64_t values = 1;
      for (int64_t dim : tensor.shape) values *= dim;
      tensor.data.assign(data[i], data[i] + values);
    }
    session->outputs.clear();
    session->outputs = session->session->run(inputs);
  });
}

int64_t edgesdk_session_output_count(const edgesdk_session* session) { return int64_t(session->outputs.size()); }

int64_t edgesdk_session_output_shape(const edgesdk_session* session, int64_t index, int64_t* shape, int64_t capacity) {
  if (index < 0 || index >= int64_t(session->outputs.size())) return -1;
  const std::vector<int64_t>& dims = session->outputs[size_t(index)].shape;
  for (int64_t i = 0; i < std::min<int64_t>(capacity, int64_t(dims.size())); ++i) shape[i] = dims[size_t(i)];
  return int64_t(dims.size());
}

int64_t edgesdk_session_output_copy(const edgesdk_session* session, int64_t index, float* values) {
  if (index < 0 || index >= int64_t(session->outputs.size())) return -1;
  const std::vector<float>& data = session->outputs[size_t(index)].data;
  std::copy(data.begin(), data.end(), values);
  return int64_t(data.size());
}

}  // extern "C"
