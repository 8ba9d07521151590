#include "edgesdk/status.hpp"

namespace edgesdk {

const char* status_name(Status status) noexcept {
  switch (status) {
    case Status::kOk: return "ok";
    case Status::kBundleNotFound: return "bundle_not_found";
    case Status::kBundleCorrupt: return "bundle_corrupt";
    case Status::kBundleUnsupported: return "bundle_unsupported";
    case Status::kInvalidArgument: return "invalid_argument";
    case Status::kEmbeddingInvalid: return "embedding_invalid";
    case Status::kImageInvalid: return "image_invalid";
    case Status::kCheckpointInvalid: return "checkpoint_invalid";
    case Status::kIoError: return "io_error";
    case Status::kBackendError: return "backend_error";
    case Status::kCancelled: return "cancelled";
    case Status::kInternal: return "internal";
  }
  return "unknown";  // a number that crossed JNI without being one of ours
}

int exit_code(Status status) noexcept {
  switch (status) {
    case Status::kOk:
      return 0;
    case Status::kBackendError:
    case Status::kInternal:
      return 1;
    default:
      return 2;  // everything the user can fix: a bundle, an argument, a file (as the Python CLI's EdgeSDKError)
  }
}

}  // namespace edgesdk
