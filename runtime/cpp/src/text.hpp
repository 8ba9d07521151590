// Small text helpers for messages that match the Python runtime's wording.
#pragma once

#include <string>
#include <vector>

namespace edgesdk {

// A string as Python's repr() writes it: 'text' (or "text" when it holds a ' and no "), with \\, \n, \r, \t
// and other control characters escaped, so a message reads the same from either runtime.
std::string py_repr(const std::string& text);

// "a, b, c"
std::string join(const std::vector<std::string>& items, const std::string& separator = ", ");

}  // namespace edgesdk
