#include "schema.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <vector>

#include "errors.hpp"
#include "npy.hpp"
#include "text.hpp"

namespace edgesdk::schema {
namespace {

// docs/bundle-schema.json, as CMake embedded it (a raw string literal)
const char kSchemaText[] =
#include "bundle_schema.inc"
    ;

constexpr size_t kMaxPatternInput = 4096;  // longer strings never match: std::regex recurses per character
constexpr double kMaxTensorElements = 1073741824.0;  // 2^30: one tensor at its largest batch
constexpr int64_t kMaxVocabulary = 1 << 20;
constexpr int64_t kMaxJsonAssetBytes = int64_t(64) << 20;

const std::set<std::string> kAnnotations{"$schema", "$id", "title", "description", "$defs"};
const std::set<std::string> kKeywords{
    "type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames", "minProperties",
    "maxProperties", "items", "minItems", "maxItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "$ref", "anyOf"};

class Refusal : public Failure {
 public:
  explicit Refusal(const std::string& message) : Failure(Status::kBundleCorrupt, message) {}
};

[[noreturn]] void refuse(const std::string& where, const std::string& problem) {
  throw Refusal("manifest field " + (where.empty() ? std::string("(top level)") : where) + ": " + problem +
                "; the bundle is refused");
}

std::string kind(const json::Value& value) {
  switch (value.type()) {
    case json::Value::Type::kNull: return "null";
    case json::Value::Type::kBool: return "boolean";
    case json::Value::Type::kNumber: return value.is_integer() ? "integer" : "number";
    case json::Value::Type::kString: return "string";
    case json::Value::Type::kArray: return "array";
    case json::Value::Type::kObject: return "object";
  }
  return "null";
}

bool matches_type(const json::Value& value, const std::string& wanted) {
  std::string have = kind(value);
  // a schema "number" is finite: NaN and infinities are never a valid setting
  if (wanted == "number") return have == "integer" || (have == "number" && std::isfinite(value.as_double()));
  return have == wanted;
}

bool same(const json::Value& a, const json::Value& b) {
  if (kind(a) != kind(b)) return false;
  switch (a.type()) {
    case json::Value::Type::kNull: return true;
    case json::Value::Type::kBool: return a.as_bool() == b.as_bool();
    case json::Value::Type::kNumber: return a.is_integer() ? a.as_int() == b.as_int() : a.as_double() == b.as_double();
    case json::Value::Type::kString: return a.as_string() == b.as_string();
    case json::Value::Type::kArray: {
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!same(a.as_array()[i], b.as_array()[i])) return false;
      }
      return true;
    }
    case json::Value::Type::kObject: {
      if (a.size() != b.size()) return false;
      for (const auto& [key, item] : a.as_object()) {
        const json::Value* other = b.find(key);
        if (other == nullptr || !same(item, *other)) return false;
      }
      return true;
    }
  }
  return false;
}

size_t code_points(const std::string& text) {
  size_t count = 0;
  for (unsigned char c : text) count += (c & 0xC0) != 0x80;
  return count;
}

std::string shown(const json::Value& value) {
  std::string text = json::dump(value);
  return text.size() <= 60 ? text : text.substr(0, 57) + "...";
}

std::string number_text(double x) {
  char text[64];
  if (std::floor(x) == x && std::fabs(x) < 1e15) {
    std::snprintf(text, sizeof text, "%lld", static_cast<long long>(x));
  } else {
    std::snprintf(text, sizeof text, "%.17g", x);
  }
  return text;
}

const json::Value* keyword(const json::Value& schema, const char* key) { return schema.find(key); }

const json::Value& resolve(const json::Value& schema) {
  const json::Value* node = &schema;
  while (const json::Value* ref = node->find("$ref")) {
    const std::string& text = ref->as_string();
    const std::string prefix = "#/$defs/";
    if (text.rfind(prefix, 0) != 0) fail(Status::kInternal, "bundle schema: unsupported $ref " + text);
    node = &bundle_schema().at("$defs").at(text.substr(prefix.size()));
  }
  return *node;
}

std::string range_text(const json::Value& schema) {
  const json::Value* low = keyword(schema, "minimum");
  bool exclusive_low = low == nullptr && keyword(schema, "exclusiveMinimum") != nullptr;
  if (low == nullptr) low = keyword(schema, "exclusiveMinimum");
  const json::Value* high = keyword(schema, "maximum");
  if (high == nullptr) high = keyword(schema, "exclusiveMaximum");
  if (low != nullptr && high != nullptr) {
    return std::string(" ") + (exclusive_low ? ">" : "") + number_text(low->as_double()) + ".." +
           number_text(high->as_double());
  }
  if (low != nullptr) return std::string(exclusive_low ? " > " : " >= ") + number_text(low->as_double());
  if (high != nullptr) return " <= " + number_text(high->as_double());
  return "";
}

std::string describe(const json::Value& node) {
  const json::Value& schema = resolve(node);
  if (const json::Value* value = keyword(schema, "const")) return shown(*value);
  if (const json::Value* options = keyword(schema, "enum")) {
    std::vector<std::string> items;
    for (const json::Value& option : options->as_array()) items.push_back(shown(option));
    return "one of " + join(items);
  }
  if (const json::Value* options = keyword(schema, "anyOf")) {
    std::vector<std::string> items;
    for (const json::Value& option : options->as_array()) items.push_back(describe(option));
    return join(items, " or ");
  }
  std::vector<std::string> names;
  if (const json::Value* types = keyword(schema, "type")) {
    if (types->is_array()) {
      for (const json::Value& type : types->as_array()) names.push_back(type.as_string());
    } else {
      names.push_back(types->as_string());
    }
  } else {
    names.push_back("any value");
  }
  static const std::map<std::string, std::string> articles{
      {"integer", "an integer"}, {"number", "a finite number"}, {"string", "a string"}, {"boolean", "a boolean"},
      {"null", "null"}, {"array", "an array"}, {"object", "an object"}, {"any value", "any value"}};
  std::vector<std::string> words;
  bool numeric = false;
  for (const std::string& name : names) {
    words.push_back(articles.count(name) ? articles.at(name) : name);
    numeric = numeric || name == "integer" || name == "number";
  }
  std::string text = join(words, " or ");
  if (numeric) text += range_text(schema);
  if (const json::Value* pattern = keyword(schema, "pattern")) text += " matching " + pattern->as_string();
  return text;
}

const std::regex& compiled(const std::string& pattern) {
  static std::map<std::string, std::regex> cache;
  auto found = cache.find(pattern);
  if (found == cache.end()) found = cache.emplace(pattern, std::regex(pattern, std::regex::ECMAScript)).first;
  return found->second;
}

std::string joined(const std::string& where, const std::string& key) { return where.empty() ? key : where + "." + key; }

std::string count_range(const json::Value& schema, const char* low, const char* high) {
  const json::Value* a = keyword(schema, low);
  const json::Value* b = keyword(schema, high);
  return (a ? number_text(a->as_double()) : "0") + ".." + (b ? number_text(b->as_double()) : "");
}

bool accepts(const json::Value& value, const json::Value& schema);

void check(const json::Value& value, const json::Value& node, const std::string& where) {
  const json::Value& schema = resolve(node);
  if (const json::Value* options = keyword(schema, "anyOf")) {
    bool any = false;
    for (const json::Value& option : options->as_array()) any = any || accepts(value, option);
    if (!any) refuse(where, "expected " + describe(schema) + ", got " + shown(value));
  }
  if (const json::Value* types = keyword(schema, "type")) {
    bool any = false;
    if (types->is_array()) {
      for (const json::Value& type : types->as_array()) any = any || matches_type(value, type.as_string());
    } else {
      any = matches_type(value, types->as_string());
    }
    if (!any) refuse(where, "expected " + describe(schema) + ", got " + shown(value));
  }
  if (const json::Value* constant = keyword(schema, "const")) {
    if (!same(value, *constant)) refuse(where, "expected " + shown(*constant) + ", got " + shown(value));
  }
  if (const json::Value* options = keyword(schema, "enum")) {
    bool any = false;
    for (const json::Value& option : options->as_array()) any = any || same(value, option);
    if (!any) refuse(where, "expected " + describe(schema) + ", got " + shown(value));
  }
  const std::string have = kind(value);
  if (have == "integer" || have == "number") {
    double x = value.as_double();
    bool bounded = keyword(schema, "minimum") || keyword(schema, "maximum") || keyword(schema, "exclusiveMinimum") ||
                   keyword(schema, "exclusiveMaximum");
    if (bounded && !std::isfinite(x)) refuse(where, "expected " + describe(schema) + ", got " + shown(value));
    const json::Value* bound = nullptr;
    bool out = ((bound = keyword(schema, "minimum")) && x < bound->as_double()) ||
               ((bound = keyword(schema, "exclusiveMinimum")) && x <= bound->as_double()) ||
               ((bound = keyword(schema, "maximum")) && x > bound->as_double()) ||
               ((bound = keyword(schema, "exclusiveMaximum")) && x >= bound->as_double());
    if (out) refuse(where, "expected " + describe(schema) + ", got " + shown(value));
  } else if (have == "string") {
    const std::string& text = value.as_string();
    size_t length = code_points(text);
    const json::Value* low = keyword(schema, "minLength");
    const json::Value* high = keyword(schema, "maxLength");
    if ((low && double(length) < low->as_double()) || (high && double(length) > high->as_double())) {
      refuse(where, "expected a string of " + count_range(schema, "minLength", "maxLength") + " characters, got " +
                        std::to_string(length) + " characters");
    }
    if (const json::Value* pattern = keyword(schema, "pattern")) {
      if (length > kMaxPatternInput || !std::regex_match(text, compiled(pattern->as_string()))) {
        refuse(where, "expected a string matching " + pattern->as_string() + ", got " + shown(value));
      }
    }
  } else if (have == "array") {
    size_t n = value.size();
    const json::Value* low = keyword(schema, "minItems");
    const json::Value* high = keyword(schema, "maxItems");
    if ((low && double(n) < low->as_double()) || (high && double(n) > high->as_double())) {
      refuse(where, "expected " + count_range(schema, "minItems", "maxItems") + " items, got " + std::to_string(n));
    }
    if (const json::Value* items = keyword(schema, "items")) {
      for (size_t i = 0; i < n; ++i) check(value.as_array()[i], *items, where + "[" + std::to_string(i) + "]");
    }
  } else if (have == "object") {
    size_t n = value.size();
    const json::Value* low = keyword(schema, "minProperties");
    const json::Value* high = keyword(schema, "maxProperties");
    if ((low && double(n) < low->as_double()) || (high && double(n) > high->as_double())) {
      refuse(where, "expected " + count_range(schema, "minProperties", "maxProperties") + " entries, got " +
                        std::to_string(n));
    }
    if (const json::Value* required = keyword(schema, "required")) {
      for (const json::Value& key : required->as_array()) {
        if (!value.contains(key.as_string())) refuse(joined(where, key.as_string()), "required but missing");
      }
    }
    const json::Value* properties = keyword(schema, "properties");
    const json::Value* extra = keyword(schema, "additionalProperties");
    const json::Value* names = keyword(schema, "propertyNames");
    for (const auto& [key, item] : value.as_object()) {
      if (names != nullptr && !accepts(json::Value::string(key), *names)) {
        refuse(where, "key " + shown(json::Value::string(key)) + " is not " + describe(*names));
      }
      const json::Value* known = properties ? properties->find(key) : nullptr;
      if (known != nullptr) {
        check(item, *known, joined(where, key));
      } else if (extra != nullptr && extra->is_bool() && !extra->as_bool()) {
        refuse(joined(where, key), "unknown key");
      } else if (extra != nullptr && extra->is_object()) {
        check(item, *extra, joined(where, key));
      }
    }
  }
}

bool accepts(const json::Value& value, const json::Value& schema) {
  try {
    check(value, schema, "");
  } catch (const Refusal&) {
    return false;
  }
  return true;
}

void check_keywords(const json::Value& node, const std::string& where) {
  if (!node.is_object()) fail(Status::kInternal, "bundle schema " + where + ": not an object");
  for (const auto& [key, child] : node.as_object()) {
    if (!kKeywords.count(key) && !kAnnotations.count(key)) {
      fail(Status::kInternal, "bundle schema " + where + ": unsupported keyword " + key);
    }
  }
  for (const char* key : {"properties", "$defs"}) {
    if (const json::Value* children = node.find(key)) {
      for (const auto& [name, child] : children->as_object()) check_keywords(child, where + "/" + key + "/" + name);
    }
  }
  for (const char* key : {"additionalProperties", "propertyNames", "items"}) {
    const json::Value* child = node.find(key);
    if (child != nullptr && child->is_object()) check_keywords(*child, where + "/" + key);
  }
  if (const json::Value* options = node.find("anyOf")) {
    for (size_t i = 0; i < options->size(); ++i) check_keywords(options->as_array()[i], where + "/anyOf/" + std::to_string(i));
  }
}

const json::Value* member(const json::Value& object, const char* key) {
  return object.is_object() ? object.find(key) : nullptr;
}

void check_against_model(const json::Value& spec, const json::Value& model, const std::string& where) {
  const std::string& name = spec.at("name").as_string();
  const json::Value::Array& shape = spec.at("shape").as_array();
  std::vector<std::pair<size_t, const char*>> expected;
  if (name == "latent" && shape.size() == 4) {
    expected = {{1, "latent_channels"}, {2, "latent_size"}, {3, "latent_size"}};
  } else if (name == "input_embeddings" && shape.size() == 3) {
    expected = {{1, "max_tokens"}, {2, "text_width"}};
  }
  for (const auto& [index, key] : expected) {
    const json::Value* size = member(model, key);
    if (size != nullptr && shape[index].is_integer() && shape[index].as_int() != size->as_int()) {
      refuse(where + "[" + std::to_string(index) + "]", std::to_string(shape[index].as_int()) +
                                                            " disagrees with model." + key + " (" +
                                                            std::to_string(size->as_int()) + ")");
    }
  }
}

// An .npy file's header, read without its data (the file may be a 152 MB token table).
struct Header {
  std::string dtype;
  std::vector<int64_t> shape;
  size_t data_offset = 0;
};

Header npy_header(const std::string& path, const std::string& what) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) fail(Status::kIoError, "cannot read " + what);
  const auto size = static_cast<uint64_t>(file.tellg());
  const uint64_t head = std::min<uint64_t>(size, 65536 + 12);
  std::vector<uint8_t> bytes(head);
  file.seekg(0);
  file.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(head));
  if (!file) fail(Status::kIoError, "cannot read " + what);
  // read_npy's own header parser: magic, dtype (never objects), C order, shape
  NpyArray array;
  Header header;
  header.data_offset = parse_npy_header(bytes.data(), bytes.size(), what, array);
  header.dtype = array.dtype;
  header.shape = array.shape;
  uint64_t data = static_cast<uint64_t>(array.count()) * npy_itemsize(array.dtype);
  if (size - header.data_offset != data) {
    fail(Status::kBundleCorrupt, what + " holds " + std::to_string(size - header.data_offset) +
                                     " data bytes, but its header says " + std::to_string(data) +
                                     "; re-export the bundle");
  }
  return header;
}

// Index of the first NaN or infinity among `count` little-endian float32 values at `offset` of a file, or -1.
// Streamed through a small buffer, not mapped: a 152 MB token table must not count against the process's memory.
int64_t first_non_finite_f32(const std::string& path, size_t offset, int64_t count, const std::string& what) {
  std::ifstream file(path, std::ios::binary);
  file.seekg(std::streamoff(offset));
  std::vector<float> chunk(size_t(1) << 18);
  for (int64_t done = 0; done < count;) {
    const int64_t take = std::min<int64_t>(count - done, int64_t(chunk.size()));
    file.read(reinterpret_cast<char*>(chunk.data()), std::streamsize(take * sizeof(float)));
    if (!file) fail(Status::kIoError, "cannot read " + what);
    for (int64_t i = 0; i < take; ++i) {
      if (!std::isfinite(chunk[size_t(i)])) return done + i;
    }
    done += take;
  }
  return -1;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::vector<std::string> dims;
  for (int64_t d : shape) dims.push_back(std::to_string(d));
  return "(" + join(dims) + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace

const json::Value& bundle_schema() {
  static const json::Value schema = [] {
    json::Value parsed = json::parse(kSchemaText, "bundle-schema.json");
    check_keywords(parsed, "#");
    return parsed;
  }();
  return schema;
}

void validate_manifest(const json::Value& manifest) { check(manifest, bundle_schema(), ""); }

void check_consistency(const json::Value& manifest) {
  static const json::Value kEmpty = json::Value::object();
  const json::Value* model_entry = manifest.find("model");
  const json::Value& model = model_entry != nullptr ? *model_entry : kEmpty;
  const json::Value& files = manifest.at("files");
  for (const auto& [name, entry] : manifest.at("components").as_object()) {
    const std::string where = "components." + name;
    const json::Value* ranges_entry = entry.find("dynamic_dims");
    const json::Value& ranges = ranges_entry != nullptr ? *ranges_entry : kEmpty;
    for (const auto& [dim, bounds] : ranges.as_object()) {
      if (bounds.at("min").as_int() > bounds.at("max").as_int()) {
        refuse(where + ".dynamic_dims." + dim, "min " + std::to_string(bounds.at("min").as_int()) +
                                                   " is above max " + std::to_string(bounds.at("max").as_int()));
      }
    }
    const json::Value* batch_range = ranges.find("batch");
    if (const json::Value* statics = entry.find("static_shapes")) {
      for (const auto& [backend, shape] : statics->as_object()) {
        const std::string at = where + ".static_shapes." + backend;
        if (!entry.at("files").contains(backend)) {
          refuse(at, "names backend " + py_repr(backend) + ", which has no file in " + where + ".files");
        }
        std::vector<int64_t> batches{shape.at("batch").as_int()};
        if (const json::Value* methods = shape.find("methods")) {
          for (const auto& [batch, method] : methods->as_object()) batches.push_back(std::stoll(batch));
        }
        for (int64_t batch : batches) {
          if (batch_range != nullptr &&
              (batch < batch_range->at("min").as_int() || batch > batch_range->at("max").as_int())) {
            refuse(at, "static batch " + std::to_string(batch) + " is outside the dynamic range " +
                           std::to_string(batch_range->at("min").as_int()) + ".." +
                           std::to_string(batch_range->at("max").as_int()));
          }
        }
      }
    }
    const json::Value* engine = entry.find("tensorrt_engine");
    if (engine != nullptr && engine->is_string() && !files.contains(engine->as_string())) {
      refuse(where + ".tensorrt_engine", py_repr(engine->as_string()) + " is not listed in files");
    }
    for (const char* side : {"inputs", "outputs"}) {
      std::set<std::string> seen;
      const json::Value::Array& specs = entry.at(side).as_array();
      for (size_t i = 0; i < specs.size(); ++i) {
        const std::string at = where + "." + side + "[" + std::to_string(i) + "]";
        const std::string& tensor = specs[i].at("name").as_string();
        if (!seen.insert(tensor).second) refuse(at + ".name", py_repr(tensor) + " is listed twice");
        double elements = 1;
        const json::Value::Array& shape = specs[i].at("shape").as_array();
        for (size_t j = 0; j < shape.size(); ++j) {
          if (shape[j].is_string()) {
            const json::Value* range = ranges.find(shape[j].as_string());
            if (range == nullptr) {
              refuse(at + ".shape[" + std::to_string(j) + "]", "dynamic dim " + py_repr(shape[j].as_string()) +
                                                                   " has no range in " + where + ".dynamic_dims");
            }
            elements *= double(range->at("max").as_int());
          } else {
            elements *= double(shape[j].as_int());
          }
        }
        if (elements > kMaxTensorElements) {
          refuse(at + ".shape", number_text(elements) + " elements at the largest batch, more than " +
                                    number_text(kMaxTensorElements));
        }
        check_against_model(specs[i], model, at + ".shape");
      }
    }
  }
  for (auto [a, b] : {std::pair{"tile_overlap", "tile"}, {"timestep", "train_timesteps"}}) {
    const json::Value* low = member(model, a);
    const json::Value* high = member(model, b);
    if (low != nullptr && high != nullptr && low->as_int() >= high->as_int()) {
      refuse(std::string("model.") + a, std::to_string(low->as_int()) + " must be below model." + b + " (" +
                                            std::to_string(high->as_int()) + ")");
    }
  }
  if (const json::Value* channels = member(model, "channels")) {
    for (const char* key : {"mean", "std"}) {
      const json::Value* values = member(model, key);
      if (values != nullptr && int64_t(values->size()) != channels->as_int()) {
        refuse(std::string("model.") + key, "has " + std::to_string(values->size()) + " values for " +
                                                std::to_string(channels->as_int()) + " channels");
      }
    }
  }
}

void check_assets(const std::string& root, const json::Value& manifest) {
  static const json::Value kEmpty = json::Value::object();
  const json::Value* model_entry = manifest.find("model");
  const json::Value& model = model_entry != nullptr ? *model_entry : kEmpty;
  const json::Value* assets = manifest.find("assets");
  if (assets == nullptr) return;
  auto ends_with = [](const std::string& text, const std::string& tail) {
    return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (const auto& [name, rel_value] : assets->as_object()) {
    const std::string& rel = rel_value.as_string();
    const std::string where = "assets." + name;
    const std::string path = root + "/" + rel;
    if (ends_with(rel, ".json")) {
      struct stat info {};
      if (::stat(path.c_str(), &info) == 0 && int64_t(info.st_size) > kMaxJsonAssetBytes) {
        refuse(where, py_repr(rel) + " is larger than " + std::to_string(kMaxJsonAssetBytes) + " bytes");
      }
      continue;
    }
    if (!ends_with(rel, ".npy")) continue;
    Header header = npy_header(path, "bundle asset " + py_repr(rel));
    if (name == "token_embedding") {
      if (header.shape.size() != 2 || header.dtype != "<f4" || header.shape[0] < 1 ||
          header.shape[0] > kMaxVocabulary) {
        refuse(where, "expected a (vocabulary 1.." + std::to_string(kMaxVocabulary) +
                          ", text_width) float32 table, got " + shape_text(header.shape) + " " + header.dtype);
      }
      const json::Value* width = member(model, "text_width");
      if (width != nullptr && header.shape[1] != width->as_int()) {
        refuse(where, "the table is " + std::to_string(header.shape[1]) + " wide, model.text_width is " +
                          std::to_string(width->as_int()));
      }
      // any row may reach the text encoder (a prompt picks them): one NaN would silently make an image of noise
      const int64_t bad = first_non_finite_f32(path, header.data_offset, header.shape[0] * header.shape[1],
                                               "bundle asset " + py_repr(rel));
      if (bad >= 0) {
        refuse(where, "the table holds a value that is not a finite number (row " +
                          std::to_string(bad / header.shape[1]) + ")");
      }
    } else if (name == "alphas_cumprod") {
      if (header.shape.size() != 1 || (header.dtype != "<f4" && header.dtype != "<f8")) {
        refuse(where, "expected a 1-D float schedule, got " + shape_text(header.shape) + " " + header.dtype);
      }
      const json::Value* steps = member(model, "train_timesteps");
      if (steps != nullptr && header.shape[0] != steps->as_int()) {
        refuse(where, "the schedule has " + std::to_string(header.shape[0]) + " steps, model.train_timesteps is " +
                          std::to_string(steps->as_int()));
      }
      for (double value : read_npy(path).to_float64()) {
        if (!(std::isfinite(value) && value > 0 && value < 1)) {
          refuse(where, "the schedule holds values that are not finite numbers in (0, 1)");
        }
      }
    }
  }
}

}  // namespace edgesdk::schema
