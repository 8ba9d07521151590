#include <cmath>
#include <string>

#include "check.hpp"
#include "edgesdk/status.hpp"
#include "errors.hpp"
#include "json.hpp"

using edgesdk::Failure;
using edgesdk::Status;
namespace json = edgesdk::json;

namespace {

// The message of the Failure that parsing `text` throws ("" when it parses).
std::string parse_error(const std::string& text) {
  try {
    json::parse(text, "test.json");
  } catch (const Failure& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("status names and exit codes") {
  CHECK_EQ(std::string(edgesdk::status_name(Status::kOk)), "ok");
  CHECK_EQ(std::string(edgesdk::status_name(Status::kBundleCorrupt)), "bundle_corrupt");
  CHECK_EQ(std::string(edgesdk::status_name(Status::kBackendError)), "backend_error");
  CHECK_EQ(std::string(edgesdk::status_name(static_cast<Status>(7))), "unknown");
  CHECK_EQ(edgesdk::exit_code(Status::kOk), 0);
  CHECK_EQ(edgesdk::exit_code(Status::kInvalidArgument), 2);
  CHECK_EQ(edgesdk::exit_code(Status::kBundleNotFound), 2);
  CHECK_EQ(edgesdk::exit_code(Status::kBackendError), 1);
  CHECK_EQ(edgesdk::exit_code(Status::kInternal), 1);
}

TEST_CASE("parse scalars, arrays and objects") {
  json::Value v = json::parse(R"( {"a": 1, "b": [true, false, null], "c": "x", "d": -2.5e1, "e": {}} )");
  CHECK(v.is_object());
  CHECK_EQ(v.size(), size_t(5));
  CHECK_EQ(v.at("a").as_int(), 1);
  CHECK(v.at("a").is_integer());
  CHECK(v.at("b").as_array()[0].as_bool());
  CHECK(!v.at("b").as_array()[1].as_bool());
  CHECK(v.at("b").as_array()[2].is_null());
  CHECK_EQ(v.at("c").as_string(), "x");
  CHECK_NEAR(v.at("d").as_double(), -25.0, 0);
  CHECK(v.at("e").is_object() && v.at("e").size() == 0);
  CHECK(v.find("zzz") == nullptr);
  CHECK(!v.contains("zzz"));
  // key order is the file's
  CHECK_EQ(v.as_object()[0].first, "a");
  CHECK_EQ(v.as_object()[4].first, "e");
}

TEST_CASE("integers stay exact; integral doubles convert; fractions refuse") {
  json::Value v = json::parse("[9007199254740993, -9223372036854775808, 1e3, 16.0, 1.5, 1e300, 99999999999999999999]");
  const auto& a = v.as_array();
  CHECK_EQ(a[0].as_int(), int64_t(9007199254740993));  // beyond 2^53: a double would round it
  CHECK_EQ(a[1].as_int(), INT64_MIN);
  CHECK_EQ(a[2].as_int(), 1000);
  CHECK(!a[2].is_integer());
  CHECK_EQ(a[3].as_int(), 16);
  CHECK_THROWS_STATUS(a[4].as_int(), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(a[5].as_int(), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(a[6].as_int(), Status::kBundleCorrupt);  // beyond int64: a double
  CHECK_NEAR(a[6].as_double(), 1e20, 1e5);
}

TEST_CASE("strings: escapes, \\u, surrogate pairs, UTF-8") {
  json::Value v = json::parse(R"(["a\"b\\c\/d\b\f\n\r\t", "\u00e9\u4e2d", "\ud83d\ude00", "café 中"])");
  const auto& a = v.as_array();
  CHECK_EQ(a[0].as_string(), "a\"b\\c/d\b\f\n\r\t");
  CHECK_EQ(a[1].as_string(), "\xc3\xa9\xe4\xb8\xad");
  CHECK_EQ(a[2].as_string(), "\xf0\x9f\x98\x80");  // U+1F600 from its surrogate pair
  CHECK_EQ(a[3].as_string(), "caf\xc3\xa9 \xe4\xb8\xad");
  CHECK(!parse_error(R"(["\ud83d"])").empty());        // lone high surrogate
  CHECK(!parse_error(R"(["\ude00"])").empty());        // lone low surrogate
  CHECK(!parse_error(R"(["\ud83d\u0041"])").empty());  // high surrogate + non-surrogate
  CHECK(!parse_error("[\"\xff\"]").empty());           // invalid UTF-8
  CHECK(!parse_error("[\"\xc0\xaf\"]").empty());       // overlong UTF-8
  CHECK(!parse_error("[\"a\nb\"]").empty());           // raw control character
  CHECK(!parse_error(R"(["\x"])").empty());            // unknown escape
}

TEST_CASE("NaN and Infinity as Python's json writes them") {
  json::Value v = json::parse("[NaN, Infinity, -Infinity]");
  CHECK(std::isnan(v.as_array()[0].as_double()));
  CHECK(std::isinf(v.as_array()[1].as_double()) && v.as_array()[1].as_double() > 0);
  CHECK(std::isinf(v.as_array()[2].as_double()) && v.as_array()[2].as_double() < 0);
  CHECK_EQ(json::dump(v), "[NaN,Infinity,-Infinity]");
}

TEST_CASE("errors name the source, the reason, the line and the column") {
  std::string message = parse_error("{\n  \"a\": 1,\n  \"b\" 2\n}");
  CHECK(contains(message, "test.json: "));
  CHECK(contains(message, "line 3 column 7"));
  CHECK(contains(parse_error("[1, 2"), "line 1 column 6"));
  CHECK(contains(parse_error("{\"é\": x}"), "line 1 column 7"));  // columns count characters, not bytes
  CHECK(contains(parse_error("[1] 2"), "extra data"));
  CHECK(contains(parse_error(""), "line 1 column 1"));
  CHECK(contains(parse_error("\"abc"), "unterminated"));
  for (const char* bad : {"{,}", "[1,]", "{\"a\":1,}", "01", "1.", "-", ".5", "+1", "tru", "nul", "[1 2]",
                          "{'a': 1}", "{\"a\" 1}", "1e", "--1"}) {
    if (parse_error(bad).empty()) check::report(__FILE__, __LINE__, std::string("parsed: ") + bad);
  }
  CHECK_THROWS_STATUS(json::parse("[", "x"), Status::kBundleCorrupt);
  std::string deep(600, '[');
  CHECK(contains(parse_error(deep), "nesting"));
}

TEST_CASE("accessors throw kBundleCorrupt on a type mismatch") {
  json::Value v = json::parse(R"({"s": "x", "n": 1})");
  CHECK_THROWS_STATUS(v.at("s").as_int(), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(v.at("n").as_string(), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(v.at("n").as_array(), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(v.at("s").as_object(), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(v.at("s").as_bool(), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(v.at("missing"), Status::kBundleCorrupt);
  try {
    v.at("missing");
  } catch (const Failure& e) {
    CHECK(contains(e.what(), "missing"));
  }
  CHECK_THROWS_STATUS(v.at("s").at("k"), Status::kBundleCorrupt);
  CHECK(v.at("s").find("k") == nullptr);
}

TEST_CASE("duplicate keys: the last value wins, in the first position (as Python's dict)") {
  json::Value v = json::parse(R"({"a": 1, "b": 2, "a": 3})");
  CHECK_EQ(v.size(), size_t(2));
  CHECK_EQ(v.as_object()[0].first, "a");
  CHECK_EQ(v.at("a").as_int(), 3);
}

TEST_CASE("set, mutable access and copy on write") {
  json::Value v = json::Value::object();
  v.set("x", json::Value::integer(1));
  v.set("y", json::Value::string("two"));
  v.set("x", json::Value::number(1.5));
  CHECK_EQ(json::dump(v), R"({"x":1.5,"y":"two"})");
  json::Value copy = v;
  copy.set("z", json::Value::boolean(true));
  CHECK_EQ(v.size(), size_t(2));  // the original is unchanged
  CHECK_EQ(copy.size(), size_t(3));
  json::Value list = json::Value::array({json::Value::integer(1)});
  json::Value list_copy = list;
  list_copy.mutable_array().push_back(json::Value());
  CHECK_EQ(json::dump(list), "[1]");
  CHECK_EQ(json::dump(list_copy), "[1,null]");
}

TEST_CASE("dump: compact, exact integers, round-tripping doubles, escapes") {
  CHECK_EQ(json::dump(json::Value::integer(INT64_MAX)), "9223372036854775807");
  CHECK_EQ(json::dump(json::Value::number(0.1)), "0.1");
  CHECK_EQ(json::dump(json::Value::number(2.0)), "2.0");  // stays a float when read back
  CHECK_EQ(json::dump(json::Value::number(1e300)), "1e+300");
  CHECK_EQ(json::dump(json::Value::number(-0.0)), "-0.0");
  double third = 1.0 / 3.0;
  CHECK(json::parse(json::dump(json::Value::number(third))).as_double() == third);
  CHECK_EQ(json::dump(json::Value::string("a\"\\\n\x01 é")), "\"a\\\"\\\\\\n\\u0001 é\"");
  CHECK_EQ(json::dump(json::Value()), "null");
  std::string text = R"({"a":[1,2.5,"x",{"b":null}],"c":true,"d":"\ud83d\ude00"})";
  json::Value parsed = json::parse(text);
  CHECK_EQ(json::dump(json::parse(json::dump(parsed))), json::dump(parsed));
  CHECK_EQ(json::dump(parsed), R"({"a":[1,2.5,"x",{"b":null}],"c":true,"d":"😀"})");
}

TEST_MAIN()
