// The C++ CLIP tokenizer against runtime/clip_tokenizer.py (references from tests/clip_fixtures.py): the Unicode
// tables on every code point, then ids and errors for ~900 prompts on sd1 (and a sixth of them on SD-2's, the
// tokenizer.json route's and variants that reach added tokens, unknown bytes, ignore_merges, ...), words,
// embeddings with learned placeholders, the index, malformed and unsupported assets, and the memory-mapped table.
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "check.hpp"
#include "tokenizer_checks.hpp"
#include "clip_tokenizer.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "json.hpp"
#include "npy.hpp"
#include "tokenizer.hpp"
#include "unicode.hpp"

using edgesdk::Status;
using edgesdk::Tokenizer;
namespace json = edgesdk::json;
namespace unicode = edgesdk::unicode;

namespace {

using tokenizer_checks::error_of;
using tokenizer_checks::integers;
using tokenizer_checks::strings;

json::Value load(const std::string& relative) {
  std::vector<uint8_t> text = edgesdk::read_file_bytes(check::fixture("clip_tokenizer/" + relative));
  return json::parse(std::string(text.begin(), text.end()), relative);
}

const json::Value& cases() {
  static const json::Value value = load("cases.json");
  return value;
}

std::string hex(const std::u32string& text) {
  std::string out;
  for (char32_t c : text) {
    char buffer[16];
    std::snprintf(buffer, sizeof buffer, "%sU+%04X", out.empty() ? "" : " ", unsigned(c));
    out += buffer;
  }
  return out;
}

std::u32string decode(const std::string& text) {
  std::u32string out;
  if (!unicode::decode_utf8(text, out)) check::report(__FILE__, __LINE__, "fixture text is not UTF-8");
  return out;
}

// Compares one answer per code point, reporting the first few differences and the count.
struct Mismatches {
  const char* what;
  int count = 0;
  void add(const std::u32string& input, const std::u32string& got, const std::u32string& want) {
    if (++count <= 8)
      std::fprintf(stderr, "  %s(%s) = %s, expected %s\n", what, hex(input).c_str(), hex(got).c_str(),
                   hex(want).c_str());
  }
  ~Mismatches() {
    if (count > 0) check::report(__FILE__, __LINE__, std::string(what) + ": " + std::to_string(count) + " differences");
  }
};

std::vector<char32_t> code_points() {
  std::vector<char32_t> out;
  for (char32_t c = 0; c < 0x110000; ++c)
    if (c < 0xD800 || c >= 0xE000) out.push_back(c);
  return out;
}

std::map<char32_t, std::u32string> per_code_point(const json::Value& object) {
  std::map<char32_t, std::u32string> out;
  for (const auto& [key, value] : object.as_object()) out[char32_t(std::stoul(key))] = decode(value.as_string());
  return out;
}

Tokenizer tokenizer_of(const std::string& name) { return Tokenizer::from_clip_asset(load("assets/" + name + ".json")); }

}  // namespace

TEST_CASE("the Unicode tables give tokenizers' and Python's answers on every code point") {
  const std::vector<char32_t> all = code_points();
  const std::vector<uint8_t> expected = edgesdk::read_file_bytes(check::fixture("clip_tokenizer/codepoints.bin"));
  CHECK_EQ(expected.size(), all.size());
  const json::Value reference = load("unicode.json");
  const auto rust_lower = per_code_point(reference.at("rust_lower"));
  const auto python_lower = per_code_point(reference.at("python_lower"));
  const auto nfc_single = per_code_point(reference.at("nfc_single"));
  Mismatches classes{"regex class"}, spaces{"isspace"}, sigma{"final sigma context"}, lower{"Lowercase"},
      py_lower{"str.lower"}, nfc{"NFC"};
  const char32_t kSigma = 0x3A3, kFinal = 0x3C2;
  for (size_t i = 0; i < all.size() && i < expected.size(); ++i) {
    const char32_t c = all[i];
    const std::u32string one(1, c);
    const int cls = expected[i] & 3, space = (expected[i] >> 2) & 1, context = expected[i] >> 3;
    if (int(unicode::regex_class(c)) != cls) classes.add(one, std::u32string(1, char32_t(unicode::regex_class(c))),
                                                         std::u32string(1, char32_t(cls)));
    if (int(unicode::python_isspace(c)) != space) spaces.add(one, {}, {});
    // "A" x "Σ": final (ς) when x is case-ignorable or cased; x "Σ": final when x is cased
    const bool after_a = unicode::python_lower(std::u32string{U'A', c, kSigma}).back() == kFinal;
    const bool alone = unicode::python_lower(std::u32string{c, kSigma}).back() == kFinal;
    if (after_a != (context != 0) || alone != (context == 1))
      sigma.add(one, std::u32string(1, char32_t(alone ? 1 : after_a ? 2 : 0)), std::u32string(1, char32_t(context)));
    auto want = [&](const std::map<char32_t, std::u32string>& table) {
      auto found = table.find(c);
      return found == table.end() ? one : found->second;
    };
    if (unicode::lowercase(one) != want(rust_lower)) lower.add(one, unicode::lowercase(one), want(rust_lower));
    if (unicode::python_lower(one) != want(python_lower))
      py_lower.add(one, unicode::python_lower(one), want(python_lower));
    if (unicode::nfc(one) != want(nfc_single)) nfc.add(one, unicode::nfc(one), want(nfc_single));
  }
  int probes = 0;
  for (const json::Value& pair : reference.at("nfc_probes").as_array()) {
    const std::u32string input = decode(pair.as_array()[0].as_string());
    const std::u32string output = decode(pair.as_array()[1].as_string());
    if (unicode::nfc(input) != output) nfc.add(input, unicode::nfc(input), output);
    ++probes;
  }
  for (const json::Value& pair : reference.at("python_lower_strings").as_array()) {
    const std::u32string input = decode(pair.as_array()[0].as_string());
    const std::u32string output = decode(pair.as_array()[1].as_string());
    if (unicode::python_lower(input) != output) py_lower.add(input, unicode::python_lower(input), output);
  }
  std::fprintf(stderr, "  %zu code points, %d NFC sequences\n", all.size(), probes);
  CHECK(probes > 10000);
}

TEST_CASE("UTF-8: strict decoding, round trips") {
  std::u32string out;
  CHECK(unicode::decode_utf8("caf\xc3\xa9 \xf0\x9f\x99\x82", out));
  CHECK(out == std::u32string(U"caf\u00e9 \U0001F642"));
  CHECK(unicode::encode_utf8(out) == "caf\xc3\xa9 \xf0\x9f\x99\x82");
  for (const char* bad : {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", "a\xe2\x82"})
    CHECK(!unicode::decode_utf8(bad, out));
  Tokenizer sd1 = tokenizer_of("sd1");
  CHECK_THROWS_STATUS(sd1.ids("caf\xc3 red"), Status::kInvalidArgument);
}

TEST_CASE("ids and errors equal the Python ClipTokenizer's for every asset and prompt") {
  int compared = 0, assets = 0;
  for (const auto& [name, recorded] : cases().at("assets").as_object()) {
    Tokenizer tokenizer = tokenizer_of(name);
    ++assets;
    CHECK_EQ(tokenizer.bos(), recorded.at("bos").as_int());
    CHECK_EQ(tokenizer.eos(), recorded.at("eos").as_int());
    CHECK_EQ(tokenizer.pad(), recorded.at("pad").as_int());
    CHECK_EQ(tokenizer.max_tokens(), recorded.at("max_tokens").as_int());
    CHECK(tokenizer.is_clip() && tokenizer.lowercase() && tokenizer.tokens().empty());
    // a broken vocabulary (text that becomes eos) is the bundle's fault; everything else is the user's
    const Status status = name == "eos_in_text" ? Status::kBundleCorrupt : Status::kInvalidArgument;
    int failed = 0;
    for (const json::Value& c : recorded.at("cases").as_array()) {
      const std::string& prompt = c.at("prompt").as_string();
      std::vector<int64_t> ids;
      const std::string error = error_of([&] { ids = tokenizer.ids(prompt); }, status);
      const bool ok = c.at("error").is_null() ? error.empty() && ids == integers(c.at("ids"))
                                              : error == c.at("error").as_string();
      if (!ok && ++failed <= 5) check::report(__FILE__, __LINE__, name + ": " + json::dump(c.at("prompt")) +
                                                                      (error.empty() ? "" : " -> " + error));
      ++compared;
    }
    if (failed > 5) check::report(__FILE__, __LINE__, name + ": " + std::to_string(failed) + " prompts differ");
  }
  std::fprintf(stderr, "  %d prompts over %d assets\n", compared, assets);
  CHECK(assets >= 11);
  CHECK(compared >= 2000);
}

TEST_CASE("words, embeddings with learned placeholders and the index equal Python's (through a bundle)") {
  edgesdk::Bundle bundle = edgesdk::Bundle::open(check::fixture("clip_tokenizer/clip.edge"));
  Tokenizer tokenizer = Tokenizer::from_bundle(bundle);
  CHECK(tokenizer.is_clip());
  CHECK(tokenizer.unconditional_ids() == integers(cases().at("unconditional")));
  // the table through the memory map, as the pipelines read it
  auto table = edgesdk::MappedFloat32Npy::open(bundle.asset_path("token_embedding"));
  CHECK(table != nullptr);
  if (table == nullptr) return;
  const int64_t vocab = table->shape()[0], width = table->shape()[1];
  std::map<std::string, std::vector<float>> learned;
  for (const auto& [name, rows] : cases().at("learned").as_object())
    for (const json::Value& row : rows.as_array())
      for (const json::Value& v : row.as_array()) learned[name].push_back(float(v.as_double()));
  const std::vector<float> all = edgesdk::read_npy(check::fixture("clip_tokenizer/embeddings.npy")).to_float32();
  const int64_t per_prompt = tokenizer.max_tokens() * width;
  int compared = 0, spliced = 0;
  for (const json::Value& c : cases().at("sd1").as_array()) {
    const std::string& prompt = c.at("prompt").as_string();
    if (tokenizer.words(prompt) != strings(c.at("words")))
      check::report(__FILE__, __LINE__, "words: " + json::dump(c.at("prompt")));
    std::vector<float> vectors;
    const std::string error =
        error_of([&] { vectors = tokenizer.embed(prompt, table->data(), vocab, width, learned); });
    if (c.at("embed_index").is_null()) {
      if (error != c.at("embed_error").as_string())
        check::report(__FILE__, __LINE__, "embed error: " + json::dump(c.at("prompt")) + ": " + error);
      continue;
    }
    const int64_t index = c.at("embed_index").as_int();
    const std::vector<float> want(all.begin() + index * per_prompt, all.begin() + (index + 1) * per_prompt);
    if (!error.empty() || vectors != want)
      check::report(__FILE__, __LINE__, "embedding: " + json::dump(c.at("prompt")));
    // a learned row is in it when the prompt names a placeholder that was learned
    for (const auto& [name, rows] : learned)
      if (vectors.size() == want.size() && std::search(vectors.begin(), vectors.end(), rows.begin(), rows.end()) !=
                                               vectors.end()) {
        ++spliced;
        break;
      }
    ++compared;
  }
  std::fprintf(stderr, "  %d embeddings, %d with learned rows\n", compared, spliced);
  CHECK(compared >= 700);
  CHECK(spliced >= 50);
  int words = 0;
  for (const auto& [word, id] : cases().at("index").as_object()) {
    const int64_t want = id.is_null() ? -1 : id.as_int();
    if (tokenizer.index_of(word) != want)
      check::report(__FILE__, __LINE__, "index: " + json::dump(json::Value::string(word)) + " -> " +
                                            std::to_string(tokenizer.index_of(word)));
    ++words;
  }
  CHECK(words >= 500);
  CHECK(tokenizer.index_of("red") >= 0 && tokenizer.index_of("RED") == tokenizer.index_of("red"));
  CHECK_EQ(tokenizer.index_of("zebra"), -1);
  // personalization's keys: token.lower() and init_word.strip().lower(), as Python has them
  CHECK_EQ(tokenizer.lower("<ΟΔΟΣ>"), "<οδος>");
  CHECK_EQ(tokenizer.lookup_key("\u3000  Red\t"), "red");
}

TEST_CASE("bad learned vectors: Python's errors") {
  Tokenizer tokenizer = tokenizer_of("sd1");
  const json::Value& errors = cases().at("learned_errors");
  const int64_t width = 8, vocab = 600;
  std::vector<float> table(size_t(vocab * width), 0.5f);
  const std::string prompt = "a <me> on the left";
  const std::string wrong = error_of([&] {
    tokenizer.embed(prompt, table.data(), vocab, width, {{"<me>", std::vector<float>(2 * (width + 1))}});
  });
  // Python names the (2, 9) array; the C++ API takes flat values, so it names their count
  CHECK_EQ(wrong, "learned vectors for '<me>' have shape (18,); expected (k, 8)");
  CHECK_EQ(wrong.substr(0, 37), errors.at("wrong_width").as_string().substr(0, 37));
  CHECK_EQ(error_of([&] { tokenizer.embed(prompt, table.data(), vocab, width, {{"me", std::vector<float>(8)}}); }),
           errors.at("bad_name").as_string());
  CHECK_EQ(error_of([&] {
             tokenizer.embed(prompt, table.data(), vocab, width, {{"<me>", std::vector<float>(76 * 8)}});
           }),
           errors.at("too_long").as_string());
  CHECK_THROWS_STATUS(tokenizer.embed("a red dog", table.data(), 5, width), Status::kBundleCorrupt);
}

TEST_CASE("malformed assets are kBundleCorrupt with Python's messages") {
  int checked = 0;
  for (const auto& [name, entry] : cases().at("malformed").as_object()) {
    const std::string error =
        error_of([&] { Tokenizer::from_clip_asset(entry.at("asset")); }, Status::kBundleCorrupt);
    const std::string& want = entry.at("error").as_string();
    // Python quotes the Rust parser's words there; the start of the message is the same
    const std::string kInvalid = "clip_tokenizer asset holds no valid tokenizer (";
    const bool same = want.rfind(kInvalid, 0) == 0 ? error.rfind(kInvalid, 0) == 0 : error == want;
    if (!same) check::report(__FILE__, __LINE__, name + ": " + error + " (Python: " + want + ")");
    ++checked;
  }
  CHECK(checked >= 8);
  CHECK_THROWS_STATUS(Tokenizer::from_clip_asset(json::Value::array()), Status::kBundleCorrupt);
}

TEST_CASE("pipelines the port does not implement are kBundleUnsupported, naming the part") {
  int checked = 0;
  for (const auto& [name, entry] : cases().at("unsupported").as_object()) {
    const std::string error =
        error_of([&] { Tokenizer::from_clip_asset(entry.at("asset")); }, Status::kBundleUnsupported);
    const bool named = error.find(entry.at("word").as_string()) != std::string::npos;
    if (!named || error.find("Python runtime") == std::string::npos)
      check::report(__FILE__, __LINE__, name + ": " + error);
    ++checked;
  }
  CHECK(checked >= 8);
}

TEST_CASE("the token table is memory-mapped when it is float32, loaded otherwise") {
  const std::string path = check::fixture("clip_tokenizer/table.npy");
  auto mapped = edgesdk::MappedFloat32Npy::open(path);
  CHECK(mapped != nullptr);
  if (mapped == nullptr) return;
  const edgesdk::NpyArray loaded = edgesdk::read_npy(path);
  CHECK(mapped->shape() == loaded.shape);
  const std::vector<float> values = loaded.to_float32();
  CHECK(std::equal(values.begin(), values.end(), mapped->data()));
  CHECK(edgesdk::MappedFloat32Npy::open(check::fixture("npy/f8.npy")) == nullptr);  // float64: read_npy then
  CHECK_THROWS_STATUS(edgesdk::MappedFloat32Npy::open(check::fixture("npy/truncated.npy")), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(edgesdk::MappedFloat32Npy::open(check::fixture("npy/fortran.npy")), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(edgesdk::MappedFloat32Npy::open(check::fixture("npy/no-such.npy")), Status::kIoError);
}

TEST_MAIN()
