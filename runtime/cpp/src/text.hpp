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

// Byte length of the white-space character at text[pos] (UTF-8), 0 when it is not one. The set is Python's
// str.isspace(), which str.split(), str.strip() and the regex \s of the Python tokenizers use.
size_t space_length(const std::string& text, size_t pos);

// End (one past '>') of a placeholder `<[^<>\s]+>` starting at text[pos], 0 when none starts there.
size_t placeholder_end(const std::string& text, size_t pos);

}  // namespace edgesdk
