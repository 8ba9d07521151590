// JSON as Python's json module reads and writes it: strict RFC 8259 plus NaN / Infinity / -Infinity, which
// json.dump writes for non-finite floats (a parity record of an exact fp32 export holds sqnr_db = Infinity).
#include "json.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "errors.hpp"

namespace edgesdk::json {

// ---------------------------------------------------------------- values

Value Value::boolean(bool b) {
  Value v;
  v.type_ = Type::kBool;
  v.bool_ = b;
  return v;
}

Value Value::number(double d) {
  Value v;
  v.type_ = Type::kNumber;
  v.number_ = d;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.type_ = Type::kNumber;
  v.number_ = static_cast<double>(i);
  v.integer_ = i;
  v.integral_ = true;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.type_ = Type::kString;
  v.string_ = std::move(s);
  return v;
}

Value Value::array(Array items) {
  Value v;
  v.type_ = Type::kArray;
  v.array_ = std::make_shared<Array>(std::move(items));
  return v;
}

Value Value::object(Object members) {
  Value v;
  v.type_ = Type::kObject;
  v.object_ = std::make_shared<Object>(std::move(members));
  return v;
}

namespace {

const char* type_name(Value::Type type) {
  switch (type) {
    case Value::Type::kNull: return "null";
    case Value::Type::kBool: return "a boolean";
    case Value::Type::kNumber: return "a number";
    case Value::Type::kString: return "a string";
    case Value::Type::kArray: return "an array";
    case Value::Type::kObject: return "an object";
  }
  return "?";
}

[[noreturn]] void wrong_type(Value::Type have, const char* expected) {
  fail(Status::kBundleCorrupt, std::string("JSON value is ") + type_name(have) + ", expected " + expected);
}

}  // namespace

bool Value::as_bool() const {
  if (type_ != Type::kBool) wrong_type(type_, "a boolean");
  return bool_;
}

double Value::as_double() const {
  if (type_ != Type::kNumber) wrong_type(type_, "a number");
  return integral_ ? static_cast<double>(integer_) : number_;
}

int64_t Value::as_int() const {
  if (type_ != Type::kNumber) wrong_type(type_, "an integer");
  if (integral_) return integer_;
  // 1e3 or 16.0: integral values written another way. 2^63 itself does not fit, hence the strict bound.
  constexpr double kLimit = 9223372036854775808.0;
  if (!std::isfinite(number_) || std::floor(number_) != number_ || number_ >= kLimit || number_ < -kLimit) {
    char text[64];
    std::snprintf(text, sizeof text, "%.17g", number_);
    fail(Status::kBundleCorrupt, std::string("JSON number ") + text + " is not an integer, expected an integer");
  }
  return static_cast<int64_t>(number_);
}

const std::string& Value::as_string() const {
  if (type_ != Type::kString) wrong_type(type_, "a string");
  return string_;
}

const Value::Array& Value::as_array() const {
  if (type_ != Type::kArray) wrong_type(type_, "an array");
  return *array_;
}

const Value::Object& Value::as_object() const {
  if (type_ != Type::kObject) wrong_type(type_, "an object");
  return *object_;
}

// Copy on write: values share containers after a copy, so a mutation first makes this value's own copy.
Value::Array& Value::mutable_array() {
  if (type_ != Type::kArray) wrong_type(type_, "an array");
  if (array_.use_count() > 1) array_ = std::make_shared<Array>(*array_);
  return *array_;
}

Value::Object& Value::mutable_object() {
  if (type_ != Type::kObject) wrong_type(type_, "an object");
  if (object_.use_count() > 1) object_ = std::make_shared<Object>(*object_);
  return *object_;
}

const Value* Value::find(std::string_view key) const {
  if (type_ != Type::kObject) return nullptr;
  for (const auto& [name, value] : *object_) {
    if (name == key) return &value;
  }
  return nullptr;
}

const Value& Value::at(std::string_view key) const {
  if (type_ != Type::kObject) wrong_type(type_, "an object");
  const Value* value = find(key);
  if (value == nullptr) fail(Status::kBundleCorrupt, "JSON object has no key \"" + std::string(key) + "\"");
  return *value;
}

void Value::set(std::string key, Value value) {
  Object& members = mutable_object();
  for (auto& [name, existing] : members) {
    if (name == key) {
      existing = std::move(value);
      return;
    }
  }
  members.emplace_back(std::move(key), std::move(value));
}

size_t Value::size() const {
  if (type_ == Type::kArray) return array_->size();
  if (type_ == Type::kObject) return object_->size();
  return 0;
}

// ---------------------------------------------------------------- parser

namespace {

constexpr int kMaxDepth = 512;  // deeper nesting is refused rather than risking the stack on a hostile file

class Parser {
 public:
  Parser(std::string_view text, const std::string& what) : text_(text), what_(what) {}

  Value document() {
    skip_space();
    Value value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) error("extra data after the value");
    return value;
  }

 private:
  std::string_view text_;
  const std::string& what_;
  size_t pos_ = 0;

  // Line and column (1-based, counting characters, not bytes) of a byte offset: computed only for a message.
  [[noreturn]] void error_at(size_t offset, const std::string& reason) const {
    int line = 1, column = 1;
    for (size_t i = 0; i < offset && i < text_.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(text_[i]);
      if (c == '\n') {
        ++line;
        column = 1;
      } else if ((c & 0xC0) != 0x80) {  // continuation bytes belong to the previous character
        ++column;
      }
    }
    fail(Status::kBundleCorrupt, what_ + ": " + reason + " at line " + std::to_string(line) + " column " +
                                     std::to_string(column));
  }
  [[noreturn]] void error(const std::string& reason) const { error_at(pos_, reason); }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_space() {
    while (!at_end()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  bool consume_word(const char* word) {
    size_t length = std::strlen(word);
    if (text_.compare(pos_, length, word) != 0) return false;
    pos_ += length;
    return true;
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) error("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
    if (at_end()) error("expecting a value, found the end of the text");
    char c = peek();
    switch (c) {
      case '{': return parse_object(depth);
      case '[': return parse_array(depth);
      case '"': return Value::string(parse_string());
      case 't': if (consume_word("true")) return Value::boolean(true); break;
      case 'f': if (consume_word("false")) return Value::boolean(false); break;
      case 'n': if (consume_word("null")) return Value(); break;
      case 'N': if (consume_word("NaN")) return Value::number(std::numeric_limits<double>::quiet_NaN()); break;
      case 'I': if (consume_word("Infinity")) return Value::number(std::numeric_limits<double>::infinity()); break;
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
    }
    error("expecting a value");
  }

  Value parse_object(int depth) {
    ++pos_;  // '{'
    Value::Object members;
    std::unordered_map<std::string, size_t> index;  // duplicate keys: the last value wins, as in Python
    skip_space();
    if (peek() == '}') {
      ++pos_;
      return Value::object(std::move(members));
    }
    while (true) {
      skip_space();
      if (peek() != '"') error("expecting a property name in double quotes");
      std::string key = parse_string();
      skip_space();
      if (peek() != ':') error("expecting ':' after a property name");
      ++pos_;
      skip_space();
      Value value = parse_value(depth + 1);
      auto found = index.find(key);
      if (found != index.end()) {
        members[found->second].second = std::move(value);
      } else {
        index.emplace(key, members.size());
        members.emplace_back(std::move(key), std::move(value));
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return Value::object(std::move(members));
      }
      error("expecting ',' or '}' in an object");
    }
  }

  Value parse_array(int depth) {
    ++pos_;  // '['
    Value::Array items;
    skip_space();
    if (peek() == ']') {
      ++pos_;
      return Value::array(std::move(items));
    }
    while (true) {
      skip_space();
      items.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return Value::array(std::move(items));
      }
      error("expecting ',' or ']' in an array");
    }
  }

  Value parse_number() {
    size_t start = pos_;
    if (peek() == '-') {
      ++pos_;
      if (consume_word("Infinity")) return Value::number(-std::numeric_limits<double>::infinity());
    }
    if (peek() == '0') {
      ++pos_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      error("expecting a digit");
    }
    bool integral = true;
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) error("expecting a digit after '.'");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) error("expecting a digit in the exponent");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    std::string literal(text_.substr(start, pos_ - start));
    if (integral) {
      errno = 0;
      char* end = nullptr;
      long long parsed = std::strtoll(literal.c_str(), &end, 10);
      if (errno == 0 && end == literal.c_str() + literal.size()) return Value::integer(parsed);
      // beyond int64: kept as a double, as a C++ reader can do no better
    }
    return Value::number(std::strtod(literal.c_str(), nullptr));
  }

  unsigned hex4() {
    if (pos_ + 4 > text_.size()) error("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_++];
      code <<= 4;
      if (c >= '0' && c <= '9') code |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') code |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') code |= static_cast<unsigned>(c - 'A' + 10);
      else error_at(pos_ - 1, "invalid \\u escape");
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  // \uXXXX, joining a UTF-16 surrogate pair into one character. A lone surrogate has no UTF-8 form: refused.
  void parse_unicode_escape(std::string& out, size_t escape_start) {
    unsigned code = hex4();
    if (code >= 0xDC00 && code <= 0xDFFF) error_at(escape_start, "lone low surrogate in \\u escape");
    if (code >= 0xD800 && code <= 0xDBFF) {
      if (!(consume_word("\\u"))) error_at(escape_start, "high surrogate not followed by a low surrogate");
      unsigned low = hex4();
      if (low < 0xDC00 || low > 0xDFFF) error_at(escape_start, "high surrogate not followed by a low surrogate");
      code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    }
    append_utf8(out, code);
  }

  // Length of the valid UTF-8 sequence starting at pos_ (0 when invalid): text must be UTF-8, as Python requires.
  size_t utf8_length() const {
    auto byte = [&](size_t i) { return pos_ + i < text_.size() ? static_cast<unsigned char>(text_[pos_ + i]) : 0u; };
    unsigned c = byte(0);
    auto continuation = [&](size_t i) { return (byte(i) & 0xC0) == 0x80; };
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return continuation(1) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
      unsigned c1 = byte(1);
      if (!continuation(1) || !continuation(2)) return 0;
      if (c == 0xE0 && c1 < 0xA0) return 0;  // overlong
      if (c == 0xED && c1 >= 0xA0) return 0;  // surrogates
      return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
      unsigned c1 = byte(1);
      if (!continuation(1) || !continuation(2) || !continuation(3)) return 0;
      if (c == 0xF0 && c1 < 0x90) return 0;  // overlong
      if (c == 0xF4 && c1 >= 0x90) return 0;  // beyond U+10FFFF
      return 4;
    }
    return 0;
  }

  std::string parse_string() {
    size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (at_end()) error_at(start, "unterminated string");
      unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) error("invalid control character in a string");
      if (c == '\\') {
        size_t escape_start = pos_;
        ++pos_;
        if (at_end()) error_at(start, "unterminated string");
        char e = text_[pos_++];
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': parse_unicode_escape(out, escape_start); break;
          default: error_at(escape_start, "invalid escape");
        }
        continue;
      }
      size_t length = utf8_length();
      if (length == 0) error("invalid UTF-8 in a string");
      out.append(text_.substr(pos_, length));
      pos_ += length;
    }
  }
};

// ---------------------------------------------------------------- writer

void dump_string(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char escape[8];
          std::snprintf(escape, sizeof escape, "\\u%04x", c);
          out += escape;
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through (as json.dumps(ensure_ascii=False))
        }
    }
  }
  out += '"';
}

// The shortest "%.Ng" that reads back as the same double (what Python's repr prints), with ".0" added to an
// integral-looking result so the value reads back as a float, not an integer.
void dump_double(double d, std::string& out) {
  if (std::isnan(d)) {
    out += "NaN";
    return;
  }
  if (std::isinf(d)) {
    out += d > 0 ? "Infinity" : "-Infinity";
    return;
  }
  char text[40];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(text, sizeof text, "%.*g", precision, d);
    if (std::strtod(text, nullptr) == d) break;
  }
  out += text;
  if (std::strpbrk(text, ".eE") == nullptr) out += ".0";
}

void dump_value(const Value& value, std::string& out) {
  switch (value.type()) {
    case Value::Type::kNull: out += "null"; return;
    case Value::Type::kBool: out += value.as_bool() ? "true" : "false"; return;
    case Value::Type::kString: dump_string(value.as_string(), out); return;
    case Value::Type::kNumber:
      // integers stay exact; other numbers round-trip as doubles
      if (value.is_integer()) {
        out += std::to_string(value.as_int());
      } else {
        dump_double(value.as_double(), out);
      }
      return;
    case Value::Type::kArray: {
      out += '[';
      bool first = true;
      for (const Value& item : value.as_array()) {
        if (!first) out += ',';
        first = false;
        dump_value(item, out);
      }
      out += ']';
      return;
    }
    case Value::Type::kObject: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : value.as_object()) {
        if (!first) out += ',';
        first = false;
        dump_string(key, out);
        out += ':';
        dump_value(item, out);
      }
      out += '}';
      return;
    }
  }
}

}  // namespace

Value parse(std::string_view text, const std::string& what) { return Parser(text, what).document(); }

std::string dump(const Value& value) {
  std::string out;
  dump_value(value, out);
  return out;
}

}  // namespace edgesdk::json
