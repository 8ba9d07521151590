/* A C ABI over one component session of the edgesdk C++ runtime (src/session.hpp), for callers that cannot link C++:
 * the Python runtime loads it with ctypes to run .pte programs without torch (edgesdk/runtime/cpp_backend.py).
 *
 * Tensors are float32, row-major. Every call that can fail returns a status (edgesdk/status.hpp's numbers, 0 ok) and
 * writes a one-line message into `error` (truncated to error_size). A session is not thread-safe. */
#ifndef EDGESDK_C_H
#define EDGESDK_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct edgesdk_session edgesdk_session;

/* Opens component `component` of the bundle in `bundle_dir` on ExecuTorch. verify_checksums: 0 when the caller has
 * verified the bundle already. threads: 0 for ExecuTorch's default. */
int edgesdk_session_open(const char* bundle_dir, const char* component, int verify_checksums, int lean_memory,
                         int threads, edgesdk_session** out, char* error, size_t error_size);
void edgesdk_session_close(edgesdk_session* session);

/* Batches a method takes as they are; writes up to `capacity` of them and returns how many there are. */
int64_t edgesdk_session_exact_batches(const edgesdk_session* session, int64_t* batches, int64_t capacity);

/* Which kernel path the session runs: "float", or "binary <isa> (...)" where it opened a BNN bundle's binary-kernel
 * program. Valid while the session is open. */
const char* edgesdk_session_kernel(const edgesdk_session* session);
/* Bytes of binary-layer weights repacked into the kernel's layout so far (0 for the float program). */
int64_t edgesdk_session_repacked_weight_bytes(const edgesdk_session* session);
/* Bytes of row-packed words derived for binary layers whose kernel row fits one 64-bit word (16 channels at 3x3). */
int64_t edgesdk_session_row_packed_weight_bytes(const edgesdk_session* session);

/* Runs the component on `count` inputs in the manifest's order (input i: ranks[i] dims at shapes[i], values at
 * data[i]). The outputs stay in the session until the next run: read them with the calls below. */
int edgesdk_session_run(edgesdk_session* session, int64_t count, const float* const* data,
                        const int64_t* const* shapes, const int64_t* ranks, char* error, size_t error_size);
int64_t edgesdk_session_output_count(const edgesdk_session* session);
/* Writes up to `capacity` dims of output `index` and returns its rank (-1 for no such output). */
int64_t edgesdk_session_output_shape(const edgesdk_session* session, int64_t index, int64_t* shape, int64_t capacity);
/* Copies output `index` (product of its shape values) to `values`; returns the number copied (-1 for no such output). */
int64_t edgesdk_session_output_copy(const edgesdk_session* session, int64_t index, float* values);

#ifdef __cplusplus
}
#endif

#endif
