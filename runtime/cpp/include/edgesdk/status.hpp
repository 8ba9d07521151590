// Status codes of the edgesdk C++ runtime: what an app branches on. Stable numbers (they cross JNI as ints).
#pragma once

namespace edgesdk {

enum class Status : int {
  kOk = 0,
  kBundleNotFound = 10,       // no such folder, or no manifest.json in it
  kBundleCorrupt = 11,        // checksum mismatch, malformed manifest or asset, missing file, path leaving the bundle
  kBundleUnsupported = 12,    // unknown format version, or a bundle of another kind (classifier vs text-to-image)
  kInvalidArgument = 20,      // bad prompt, unknown word, bad step count, ...
  kEmbeddingInvalid = 21,     // learned-token file missing, unreadable, or of the wrong width
  kImageInvalid = 22,         // an image that cannot be decoded or has the wrong shape
  kCheckpointInvalid = 23,    // a checkpoint that is corrupt or was made with other settings
  kIoError = 30,              // a file could not be read or written
  kBackendError = 40,         // ExecuTorch could not load or run a program
  kCancelled = 50,            // the app cancelled (progress callback returned false, or the cancel flag was set)
  kInternal = 99,             // a bug: please report it
};

// "ok", "bundle_not_found", ...: a stable name for logs and the CLI.
const char* status_name(Status status) noexcept;

// The CLI's exit code for a status: 0 for ok, 2 for user errors (as the Python CLI), 1 for internal/backend errors.
int exit_code(Status status) noexcept;

}  // namespace edgesdk
