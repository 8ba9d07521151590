// Internal error type. Library code throws edgesdk::Failure; the app-facing API (include/edgesdk/edgesdk.hpp)
// catches it at the boundary and returns a Status, so no exception ever crosses into JNI or Objective-C++.
#pragma once

#include <stdexcept>
#include <string>

#include "edgesdk/status.hpp"

namespace edgesdk {

class Failure : public std::runtime_error {
 public:
  Failure(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  Status status() const noexcept { return status_; }

 private:
  Status status_;
};

[[noreturn]] inline void fail(Status status, const std::string& message) { throw Failure(status, message); }

}  // namespace edgesdk
