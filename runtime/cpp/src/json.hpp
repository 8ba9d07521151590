// A small JSON reader/writer: enough for bundle manifests, assets, safetensors headers and checkpoint configs.
// Written here (no dependency) because apps on Android and iOS get no JSON library from the platform's C++ side.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace edgesdk::json {

class Value {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;  // keeps the file's key order

  Value() = default;  // null
  static Value boolean(bool b);
  static Value number(double d);
  static Value integer(int64_t i);  // kept exact (numbers carry their source text / int64 when integral)
  static Value string(std::string s);
  static Value array(Array items = {});
  static Value object(Object members = {});

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }
  bool is_integer() const { return type_ == Type::kNumber && integral_; }  // stored as an exact int64

  // Accessors throw edgesdk::Failure(Status::kBundleCorrupt, "...expected a string...") on a type mismatch.
  bool as_bool() const;
  double as_double() const;
  int64_t as_int() const;  // integral numbers only (1e3 and 1000 are fine; 1.5 is refused); exact up to 2^63
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;
  Array& mutable_array();
  Object& mutable_object();

  // Object lookup: find() returns nullptr when absent (or when this is not an object); at() throws kBundleCorrupt
  // naming the key; set() replaces or appends.
  const Value* find(std::string_view key) const;
  const Value& at(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  void set(std::string key, Value value);
  size_t size() const;  // array or object element count, 0 otherwise

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  int64_t integer_ = 0;
  bool integral_ = false;  // the number was written without fraction/exponent and fits int64
  std::string string_;
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
};

// Parse UTF-8 JSON text. Throws edgesdk::Failure(Status::kBundleCorrupt, "<what>: <reason> at line L column C").
// `what` names the source in the message (e.g. "manifest.json").
Value parse(std::string_view text, const std::string& what = "JSON");

// Compact JSON (no spaces), keys in stored order; doubles round-trip (%.17g), integers exact.
std::string dump(const Value& value);

}  // namespace edgesdk::json
