// What the tokenizer tests share: JSON arrays of the fixtures as C++ vectors, and the message of an expected Failure.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check.hpp"
#include "errors.hpp"
#include "json.hpp"

namespace tokenizer_checks {

using edgesdk::Status;
namespace json = edgesdk::json;

inline std::vector<int64_t> integers(const json::Value& array) {
  std::vector<int64_t> out;
  for (const json::Value& item : array.as_array()) out.push_back(item.as_int());
  return out;
}

inline std::vector<std::string> strings(const json::Value& array) {
  std::vector<std::string> out;
  for (const json::Value& item : array.as_array()) out.push_back(item.as_string());
  return out;
}

// The Failure message of `call`, "" when it succeeds; a Failure of another status is reported.
template <typename Call>
std::string error_of(Call call, Status expected = Status::kInvalidArgument) {
  try {
    call();
  } catch (const edgesdk::Failure& e) {
    if (e.status() != expected) check::report(__FILE__, __LINE__, std::string("other status: ") + e.what());
    return e.what();
  }
  return "";
}

}  // namespace tokenizer_checks
