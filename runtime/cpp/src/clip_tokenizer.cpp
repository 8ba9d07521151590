// The `tokenizers` pipeline of runtime/clip_tokenizer.py, ported step by step from the Rust sources it runs
// (tokenizer/added_vocabulary.rs, normalizers, pre_tokenizers/split.rs + byte_level.rs, models/bpe/model.rs +
// word.rs), for the configurations CLIP tokenizers have.
#include "clip_tokenizer.hpp"

#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <queue>

#include "errors.hpp"
#include "limits.hpp"
#include "text.hpp"
#include "unicode.hpp"

namespace edgesdk {
namespace {

using unicode::RegexClass;

constexpr const char* kKind = "clip-bpe";
// runtime/clip_tokenizer.py CLIP_PATTERN: the only pre-tokenizer regex implemented (in pre_tokenize below)
constexpr const char* kClipPattern = R"('s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+)";

[[noreturn]] void malformed(const std::string& what) {
  fail(Status::kBundleCorrupt, "clip_tokenizer asset is malformed (missing or bad " + what + "); re-export the bundle");
}

[[noreturn]] void invalid(const std::string& why) {
  fail(Status::kBundleCorrupt, "clip_tokenizer asset holds no valid tokenizer (" + why + "); re-export the bundle");
}

[[noreturn]] void unsupported(const std::string& what) {
  fail(Status::kBundleUnsupported, "the bundle's CLIP tokenizer uses " + what + ", which the C++ runtime does not "
                                   "implement; use the Python runtime for this bundle");
}

std::string type_name(const json::Value& value) {
  switch (value.type()) {
    case json::Value::Type::kNull: return "NoneType";
    case json::Value::Type::kBool: return "bool";
    case json::Value::Type::kNumber: return value.is_integer() ? "int" : "float";
    case json::Value::Type::kString: return "str";
    case json::Value::Type::kArray: return "list";
    default: return "dict";
  }
}

// Python's int(value) for what json.load gives, with the ValueError / TypeError text as the message.
int64_t python_int(const json::Value& value) {
  if (value.is_bool()) return value.as_bool() ? 1 : 0;
  if (value.is_integer()) return value.as_int();
  if (value.is_number()) {
    const double d = value.as_double();
    if (std::isnan(d)) malformed("cannot convert float NaN to integer");
    if (std::isinf(d) || std::fabs(d) > 9e18) malformed("cannot convert float infinity to integer");
    return static_cast<int64_t>(d);  // truncates toward zero, as int() does
  }
  if (value.is_string()) {
    // int("12"), int(" 12 "), int("+1_000"): digits, single underscores between them, a sign, surrounding space
    const std::string text = ClipTokenizer::strip(value.as_string());
    size_t i = text.empty() || (text[0] != '+' && text[0] != '-') ? 0 : 1;
    bool ok = i < text.size(), previous_digit = false;
    int64_t n = 0;
    for (; ok && i < text.size(); ++i) {
      if (text[i] >= '0' && text[i] <= '9') {
        if (n > (INT64_MAX - 9) / 10) ok = false;
        n = n * 10 + (text[i] - '0');
        previous_digit = true;
      } else if (text[i] == '_' && previous_digit && i + 1 < text.size()) {
        previous_digit = false;
      } else {
        ok = false;
      }
    }
    if (!ok || !previous_digit) malformed("invalid literal for int() with base 10: " + py_repr(value.as_string()));
    return !text.empty() && text[0] == '-' ? -n : n;
  }
  malformed("int() argument must be a string, a bytes-like object or a real number, not '" + type_name(value) + "'");
}

const json::Value& member(const json::Value& asset, const char* key) {
  const json::Value* value = asset.find(key);
  if (value == nullptr) malformed(py_repr(key));
  return *value;
}

// The byte -> printable character table of byte-level BPE (runtime/clip_tokenizer.py byte_symbols), UTF-8.
const std::array<std::string, 256>& byte_symbols() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> out;
    char32_t next = 256;
    for (unsigned b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      unicode::append_utf8(out[b], printable ? char32_t(b) : next++);
    }
    return out;
  }();
  return table;
}

// CLIP's pre-tokenizer on normalized text: 's 't 're 've 'm 'll 'd, letter runs, single digits, runs of anything
// else; white space between them is dropped (Split with invert and "removed": the matches are the pieces). Same
// alternation order and greediness as the regex.
// `literals` are alternatives before CLIP's (transformers' tokenizer.json has <|startoftext|> and <|endoftext|>).
std::vector<std::u32string> pre_tokenize(const std::u32string& s, const std::vector<std::u32string>& literals) {
  static const std::u32string kContractions[] = {U"s", U"t", U"re", U"ve", U"m", U"ll", U"d"};
  std::vector<std::u32string> pieces;
  size_t i = 0;
  while (i < s.size()) {
    const std::u32string* literal = nullptr;
    for (const std::u32string& l : literals) {
      if (s.compare(i, l.size(), l) == 0) {
        literal = &l;
        break;
      }
    }
    if (literal != nullptr) {
      pieces.push_back(*literal);
      i += literal->size();
      continue;
    }
    if (s[i] == U'\'') {
      bool matched = false;
      for (const std::u32string& c : kContractions) {
        if (s.compare(i + 1, c.size(), c) == 0) {
          pieces.push_back(s.substr(i, 1 + c.size()));
          i += 1 + c.size();
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    const RegexClass cls = unicode::regex_class(s[i]);
    if (cls == RegexClass::kSpace) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    if (cls != RegexClass::kNumber)
      while (j < s.size() && unicode::regex_class(s[j]) == cls) ++j;
    pieces.push_back(s.substr(i, j - i));
    i = j;
  }
  return pieces;
}

// The literal alternatives a Split regex has before CLIP's pattern ("<\\|endoftext\\|>|" + CLIP's): false when
// the regex is not of that form.
bool literal_prefix(const std::string& regex, std::vector<std::u32string>& literals) {
  const std::string pattern = kClipPattern;
  if (regex.size() < pattern.size() || regex.compare(regex.size() - pattern.size(), pattern.size(), pattern) != 0)
    return false;
  const std::string prefix = regex.substr(0, regex.size() - pattern.size());
  std::string literal;
  for (size_t i = 0; i < prefix.size(); ++i) {
    const char c = prefix[i];
    if (c == '\\') {
      if (i + 1 >= prefix.size() || std::isalnum(static_cast<unsigned char>(prefix[i + 1]))) return false;
      literal += prefix[++i];  // an escaped punctuation character stands for itself
    } else if (c == '|') {
      std::u32string decoded;
      if (literal.empty() || !unicode::decode_utf8(literal, decoded)) return false;
      literals.push_back(decoded);
      literal.clear();
    } else if (std::strchr("[](){}.*+?^$", c) != nullptr) {
      return false;
    } else {
      literal += c;
    }
  }
  return literal.empty();  // the prefix ends with the '|' before CLIP's pattern
}

// ByteLevel's own regex (use_regex), GPT-2's, on one piece:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// After CLIP's split it changes only literal pieces (<|endoftext|> becomes <|, endoftext, |>).
std::vector<std::u32string> gpt2_split(const std::u32string& s) {
  static const std::u32string kContractions[] = {U"s", U"t", U"re", U"ve", U"m", U"ll", U"d"};
  auto cls = [&](size_t k) { return unicode::regex_class(s[k]); };
  std::vector<std::u32string> pieces;
  size_t i = 0;
  while (i < s.size()) {
    size_t end = i;
    if (s[i] == U'\'') {
      for (const std::u32string& c : kContractions) {
        if (s.compare(i + 1, c.size(), c) == 0) {
          end = i + 1 + c.size();
          break;
        }
      }
    }
    if (end == i) {
      const size_t k = s[i] == U' ' && i + 1 < s.size() && cls(i + 1) != RegexClass::kSpace ? i + 1 : i;
      if (cls(k) != RegexClass::kSpace) {  // ` ?` then a run of one class (letters, numbers, or the rest)
        end = k + 1;
        while (end < s.size() && cls(end) == cls(k)) ++end;
      } else {  // white space: the run, less its last character when \S follows (that one joins the next piece)
        end = i + 1;
        while (end < s.size() && cls(end) == RegexClass::kSpace) ++end;
        if (end < s.size() && end - 1 > i) --end;
      }
    }
    pieces.push_back(s.substr(i, end - i));
    i = end;
  }
  return pieces;
}

bool flag(const json::Value& object, const char* key, bool fallback) {
  const json::Value* value = object.find(key);
  if (value == nullptr || value->is_null()) return fallback;
  if (!value->is_bool()) invalid(std::string("'") + key + "' is not a boolean");
  return value->as_bool();
}

std::string type_of(const json::Value& object, const char* what) {
  if (!object.is_object()) invalid(std::string(what) + " is not a JSON object");
  const json::Value* type = object.find("type");
  if (type == nullptr || !type->is_string()) invalid(std::string(what) + " has no type");
  return type->as_string();
}

// A regex pattern of a Split / Replace: {"Regex": "..."}; "" for {"String": ...}.
std::string regex_of(const json::Value& object, const std::string& what) {
  const json::Value* pattern = object.find("pattern");
  if (pattern == nullptr || !pattern->is_object()) invalid(what + " has no pattern");
  const json::Value* regex = pattern->find("Regex");
  if (regex == nullptr) unsupported(what + " with a plain string pattern");
  if (!regex->is_string()) invalid(what + " has a bad pattern");
  return regex->as_string();
}

}  // namespace

// ------------------------------------------------------------------------------------------------ the asset

ClipTokenizer::ClipTokenizer(const json::Value& asset) {
  if (!asset.is_object()) malformed("contents: not a JSON object");
  const json::Value& kind = member(asset, "kind");
  if (!kind.is_string() || kind.as_string() != kKind)
    malformed("kind " + (kind.is_string() ? py_repr(kind.as_string()) : json::dump(kind)));
  const json::Value& serialized = member(asset, "tokenizer");
  bos_ = python_int(member(asset, "bos"));
  eos_ = python_int(member(asset, "eos"));
  pad_ = python_int(member(asset, "pad"));
  const int64_t max_tokens = python_int(member(asset, "max_tokens"));
  if (max_tokens < 2)
    fail(Status::kBundleCorrupt, "clip_tokenizer max_tokens is " + std::to_string(max_tokens) +
                                     "; it must leave room for bos and eos");
  if (max_tokens > limits::kMaxTokens) malformed("'max_tokens': " + std::to_string(max_tokens));
  max_tokens_ = static_cast<int>(max_tokens);
  if (!serialized.is_string()) invalid("'tokenizer' is not a JSON string");
  json::Value pipeline;
  try {
    pipeline = json::parse(serialized.as_string(), "the clip_tokenizer pipeline");
  } catch (const Failure& e) {
    invalid(e.what());
  }
  parse_pipeline(pipeline);
}

void ClipTokenizer::parse_pipeline(const json::Value& pipeline) {
  if (!pipeline.is_object()) invalid("the pipeline is not a JSON object");
  if (const json::Value* version = pipeline.find("version")) {
    if (!version->is_string() || version->as_string() != "1.0")
      invalid("Unknown tokenizer version " + json::dump(*version));
  }
  const json::Value* model = pipeline.find("model");
  if (model == nullptr || model->is_null()) invalid("Model missing");
  if (const json::Value* normalizer = pipeline.find("normalizer")) parse_normalizer(*normalizer);
  const json::Value* pre_tokenizer = pipeline.find("pre_tokenizer");
  parse_pre_tokenizer(pre_tokenizer == nullptr ? json::Value() : *pre_tokenizer);
  // a post-processor adds special tokens only when asked to (add_special_tokens=True), which the runtime never is
  if (const json::Value* post = pipeline.find("post_processor"); post != nullptr && !post->is_null()) {
    const std::string type = type_of(*post, "the post-processor");
    if (type != "RobertaProcessing" && type != "BertProcessing" && type != "TemplateProcessing" && type != "ByteLevel")
      unsupported("the post-processor " + type);
  }
  parse_model(*model);
  if (const json::Value* tokens = pipeline.find("added_tokens"); tokens != nullptr && !tokens->is_null())
    parse_added_tokens(*tokens);
}

void ClipTokenizer::parse_normalizer(const json::Value& normalizer) {
  if (normalizer.is_null()) return;
  const std::string type = type_of(normalizer, "a normalizer");
  if (type == "Sequence") {
    const json::Value* items = normalizer.find("normalizers");
    if (items == nullptr || !items->is_array()) invalid("a normalizer Sequence has no list");
    for (const json::Value& item : items->as_array()) parse_normalizer(item);
  } else if (type == "NFC") {
    steps_.push_back(Step::kNfc);
  } else if (type == "Lowercase") {
    steps_.push_back(Step::kLowercase);
  } else if (type == "Replace") {
    const std::string regex = regex_of(normalizer, "a Replace normalizer");
    if (regex != "\\s+") unsupported("a Replace normalizer with the regex " + py_repr(regex));
    const json::Value* content = normalizer.find("content");
    if (content == nullptr || !content->is_string()) invalid("a Replace normalizer has no content");
    std::u32string replacement;
    if (!unicode::decode_utf8(content->as_string(), replacement)) invalid("a Replace content is not UTF-8");
    replacements_.push_back(replacement);
    steps_.push_back(Step::kReplaceSpaces);
  } else {
    unsupported("the normalizer " + type);
  }
}

void ClipTokenizer::parse_pre_tokenizer(const json::Value& pre_tokenizer) {
  std::vector<const json::Value*> items;
  if (!pre_tokenizer.is_null()) {
    if (type_of(pre_tokenizer, "the pre-tokenizer") == "Sequence") {
      const json::Value* list = pre_tokenizer.find("pretokenizers");
      if (list == nullptr || !list->is_array()) invalid("a pre-tokenizer Sequence has no list");
      for (const json::Value& item : list->as_array()) items.push_back(&item);
    } else {
      items.push_back(&pre_tokenizer);
    }
  }
  std::vector<std::string> types;
  for (const json::Value* item : items) types.push_back(type_of(*item, "a pre-tokenizer"));
  const std::string described = types.empty() ? "no pre-tokenizer" : "the pre-tokenizers " + join(types);
  if (types != std::vector<std::string>{"Split", "ByteLevel"})
    unsupported(described + " (CLIP's are Split, ByteLevel)");
  const json::Value& split = *items[0];
  const std::string regex = regex_of(split, "the Split pre-tokenizer");
  if (!literal_prefix(regex, literals_))
    unsupported("a Split pre-tokenizer with the regex " + py_repr(regex) + " (not CLIP's)");
  const json::Value* behavior = split.find("behavior");
  if (behavior == nullptr || !behavior->is_string() || behavior->as_string() != "Removed" ||
      !flag(split, "invert", false))
    unsupported("a Split pre-tokenizer that is not CLIP's (behavior Removed, invert true)");
  const json::Value& byte_level = *items[1];
  if (flag(byte_level, "add_prefix_space", true)) unsupported("a ByteLevel pre-tokenizer that adds a prefix space");
  byte_level_regex_ = flag(byte_level, "use_regex", true);  // transformers' tokenizer.json has it
}

void ClipTokenizer::parse_model(const json::Value& model) {
  if (!model.is_object()) invalid("the model is not a JSON object");
  const json::Value* type = model.find("type");
  if (type != nullptr && (!type->is_string() || type->as_string() != "BPE"))
    unsupported("the model " + (type->is_string() ? type->as_string() : json::dump(*type)) + " (CLIP's is BPE)");
  auto optional_string = [&](const char* key, bool& present, std::string& out) {
    const json::Value* value = model.find(key);
    present = value != nullptr && !value->is_null();
    if (present && !value->is_string()) invalid(std::string("BPE '") + key + "' is not a string");
    if (present) out = value->as_string();
  };
  std::string prefix;
  bool has_prefix = false;
  optional_string("unk_token", has_unk_, unk_);
  optional_string("end_of_word_suffix", has_suffix_, suffix_);
  optional_string("continuing_subword_prefix", has_prefix, prefix);
  if (!prefix.empty()) unsupported("a BPE continuing_subword_prefix (" + py_repr(prefix) + ")");
  if (const json::Value* dropout = model.find("dropout"); dropout != nullptr && !dropout->is_null()) {
    if (!dropout->is_number() || dropout->as_double() < 0.0 || dropout->as_double() > 1.0) invalid("bad BPE dropout");
    if (dropout->as_double() != 0.0) unsupported("BPE dropout");
  }
  fuse_unk_ = flag(model, "fuse_unk", false);
  ignore_merges_ = flag(model, "ignore_merges", false);
  if (flag(model, "byte_fallback", false)) unsupported("BPE byte_fallback");

  const json::Value* vocab = model.find("vocab");
  const json::Value* merges = model.find("merges");
  if (vocab == nullptr || merges == nullptr || !vocab->is_object() || !merges->is_array())
    invalid("Missing vocab/merges");
  for (const auto& [token, id] : vocab->as_object()) {
    if (!id.is_integer() || id.as_int() < 0 || id.as_int() > int64_t(UINT32_MAX))
      invalid("vocabulary id of " + py_repr(token) + " is not an unsigned 32-bit integer");
    vocab_[token] = static_cast<uint32_t>(id.as_int());  // a repeated key: the last one wins, as in serde
  }
  uint32_t rank = 0;
  for (const json::Value& merge : merges->as_array()) {
    std::string left, right;
    if (merge.is_string()) {
      const std::string& line = merge.as_string();
      if (line.rfind("#version", 0) == 0) continue;  // the header line of a merges.txt
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        invalid("Merges text file invalid at line " + std::to_string(rank + 1));
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge.as_array()[0].is_string() &&
               merge.as_array()[1].is_string()) {
      left = merge.as_array()[0].as_string();
      right = merge.as_array()[1].as_string();
    } else {
      invalid("a merge is neither \"a b\" nor [a, b]");
    }
    auto id_of = [&](const std::string& token) {
      auto found = vocab_.find(token);
      if (found == vocab_.end()) invalid("Token " + py_repr(token) + " out of vocabulary");
      return found->second;
    };
    const uint32_t a = id_of(left), b = id_of(right), joined = id_of(left + right);
    merges_[(uint64_t(a) << 32) | b] = {rank, joined};  // a repeated pair: the later rank wins, as in the HashMap
    ++rank;
  }
}

void ClipTokenizer::parse_added_tokens(const json::Value& tokens) {
  if (!tokens.is_array()) invalid("'added_tokens' is not a list");
  // ids as tokenizers' AddedVocabulary::add_tokens gives them: the vocabulary's id for a token it has, else the
  // next free one after the vocabulary (or after the largest added id)
  struct Token {
    std::string content;
    bool normalized = true, special = false;
    bool operator==(const Token& o) const {
      return content == o.content && normalized == o.normalized && special == o.special;
    }
  };
  std::unordered_map<std::string, uint32_t> ids;
  std::map<uint32_t, Token> by_id;
  std::vector<Token> special, plain;
  for (const json::Value& item : tokens.as_array()) {
    if (!item.is_object()) invalid("an added token is not a JSON object");
    const json::Value* content = item.find("content");
    if (content == nullptr || !content->is_string()) invalid("an added token has no content");
    Token token{content->as_string(), flag(item, "normalized", true), flag(item, "special", false)};
    for (const char* option : {"single_word", "lstrip", "rstrip"})
      if (flag(item, option, false)) unsupported("the added token " + py_repr(token.content) + " with " + option);
    if (token.content.empty()) continue;
    bool known = false;
    for (const auto& [id, other] : by_id) known = known || other == token;
    if (known) continue;
    uint32_t id;
    if (auto found = ids.find(token.content); found != ids.end()) {
      id = found->second;
    } else if (auto in_vocab = vocab_.find(token.content); in_vocab != vocab_.end()) {
      id = in_vocab->second;
    } else {
      const uint32_t size = static_cast<uint32_t>(vocab_.size());
      uint32_t largest = 0;
      for (const auto& [name, value] : ids) largest = std::max(largest, value);
      id = ids.empty() ? size : (largest >= size || size == 0 ? largest + 1 : size);
    }
    ids[token.content] = id;
    by_id[id] = token;
    if (token.special) special.push_back(token);
    else plain.push_back(token);
  }
  for (const std::vector<Token>* group : {&special, &plain}) {
    for (const Token& token : *group) {
      AddedToken added;
      added.id = ids.at(token.content);
      added.normalized = token.normalized;
      if (token.normalized) {
        std::u32string text;
        if (!unicode::decode_utf8(token.content, text)) invalid("an added token is not UTF-8");
        added.pattern = unicode::encode_utf8(normalize(text));
      } else {
        added.pattern = token.content;
      }
      if (added.pattern.empty()) unsupported("an added token that normalizes to nothing");
      (token.normalized ? has_normalized_added_ : has_raw_added_) = true;
      added_.push_back(std::move(added));
    }
  }
}

// ------------------------------------------------------------------------------------------------ encoding

std::u32string ClipTokenizer::normalize(std::u32string text) const {
  size_t replace = 0;
  for (Step step : steps_) {
    if (step == Step::kNfc) {
      text = unicode::nfc(text);
    } else if (step == Step::kLowercase) {
      text = unicode::lowercase(text);
    } else {  // every run of \s (the regex engine's) becomes the content
      const std::u32string& content = replacements_[replace++];
      std::u32string out;
      for (size_t i = 0; i < text.size();) {
        if (unicode::regex_class(text[i]) != RegexClass::kSpace) {
          out.push_back(text[i++]);
          continue;
        }
        while (i < text.size() && unicode::regex_class(text[i]) == RegexClass::kSpace) ++i;
        out += content;
      }
      text = std::move(out);
    }
  }
  return text;
}

std::vector<ClipTokenizer::Piece> ClipTokenizer::split_added(const std::vector<Piece>& pieces, bool normalized) const {
  std::vector<Piece> out;
  for (const Piece& piece : pieces) {
    if (piece.id >= 0) {
      out.push_back(piece);
      continue;
    }
    const std::string& text = piece.text;
    size_t start = 0;
    for (size_t pos = 0; pos < text.size();) {
      // leftmost-longest, as the Aho-Corasick automaton tokenizers builds
      const AddedToken* best = nullptr;
      for (const AddedToken& token : added_) {
        if (token.normalized != normalized || (best != nullptr && token.pattern.size() <= best->pattern.size()))
          continue;
        if (text.compare(pos, token.pattern.size(), token.pattern) == 0) best = &token;
      }
      if (best == nullptr) {
        ++pos;
        continue;
      }
      if (pos > start) out.push_back({text.substr(start, pos - start), -1});
      out.push_back({"", int64_t(best->id)});
      pos += best->pattern.size();
      start = pos;
    }
    if (start < text.size() || text.empty()) out.push_back({text.substr(start), -1});
  }
  return out;
}

void ClipTokenizer::tokenize_word(const std::string& symbols, std::vector<int64_t>& out) const {
  if (ignore_merges_) {
    if (auto found = vocab_.find(symbols); found != vocab_.end()) {
      out.push_back(found->second);
      return;
    }
  }
  // BPE::merge_word: one symbol per character (the end-of-word suffix on the last), unknown ones as unk
  struct Symbol {
    uint32_t c;
    long prev, next;
    size_t len;
  };
  std::vector<Symbol> word;
  auto add = [&](uint32_t c, size_t len) {
    const long n = long(word.size());
    if (!word.empty()) word.back().next = n;
    word.push_back({c, n - 1, -1, len});
  };
  auto unk_id = [&]() {
    auto found = vocab_.find(unk_);
    if (found == vocab_.end())
      fail(Status::kBundleCorrupt, "the CLIP tokenizer's unk token " + py_repr(unk_) + " is not in its vocabulary; "
                                   "re-export the bundle");
    return found->second;
  };
  bool have_unk = false;
  uint32_t pending_unk = 0;
  size_t pending_len = 0;
  for (size_t i = 0; i < symbols.size();) {
    size_t length = 1;
    const auto lead = static_cast<unsigned char>(symbols[i]);
    if (lead >= 0xF0) length = 4;
    else if (lead >= 0xE0) length = 3;
    else if (lead >= 0xC0) length = 2;
    std::string s = symbols.substr(i, length);
    i += length;
    const bool last = i >= symbols.size();
    if (last && has_suffix_) s += suffix_;
    if (auto found = vocab_.find(s); found != vocab_.end()) {
      if (have_unk) add(pending_unk, pending_len);
      have_unk = false;
      add(found->second, length);
    } else if (has_unk_) {
      if (have_unk && fuse_unk_) {
        pending_len += length;
      } else {
        if (have_unk) add(pending_unk, pending_len);
        pending_unk = unk_id();
        pending_len = length;
        have_unk = true;
      }
    }  // no unk token: tokenizers drops the character
  }
  if (have_unk) add(pending_unk, pending_len);

  // Word::merge_all: the lowest (rank, position) merge first; queue entries that went stale are skipped
  struct Merge {
    size_t pos;
    uint32_t rank, new_id;
  };
  auto later = [](const Merge& a, const Merge& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  std::priority_queue<Merge, std::vector<Merge>, decltype(later)> queue(later);
  auto lookup = [&](uint32_t a, uint32_t b) -> const std::pair<uint32_t, uint32_t>* {
    auto found = merges_.find((uint64_t(a) << 32) | b);
    return found == merges_.end() ? nullptr : &found->second;
  };
  for (size_t i = 0; i + 1 < word.size(); ++i)
    if (const auto* m = lookup(word[i].c, word[i + 1].c)) queue.push({i, m->first, m->second});
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& current = word[top.pos];
    if (current.len == 0 || current.next == -1) continue;
    const size_t next_pos = size_t(current.next);
    const Symbol right = word[next_pos];
    const auto* target = lookup(current.c, right.c);
    if (target == nullptr || target->second != top.new_id) continue;
    current.c = top.new_id;
    current.len += right.len;
    current.next = right.next;
    word[next_pos].len = 0;
    if (right.next > -1 && size_t(right.next) < word.size()) word[size_t(right.next)].prev = long(top.pos);
    if (current.prev >= 0) {
      if (const auto* m = lookup(word[size_t(current.prev)].c, current.c))
        queue.push({size_t(current.prev), m->first, m->second});
    }
    if (current.next >= 0 && size_t(current.next) < word.size()) {
      if (const auto* m = lookup(current.c, word[size_t(current.next)].c)) queue.push({top.pos, m->first, m->second});
    }
  }
  for (const Symbol& symbol : word)
    if (symbol.len != 0) out.push_back(symbol.c);
}

std::vector<int64_t> ClipTokenizer::encode_raw(const std::string& text) const {
  std::u32string decoded;
  if (!unicode::decode_utf8(text, decoded)) fail(Status::kInvalidArgument, "the prompt is not valid UTF-8 text");
  // added tokens matched in the text as typed, then the rest normalized, then added tokens matched in that
  std::vector<Piece> pieces{{text, -1}};
  if (has_raw_added_) pieces = split_added(pieces, false);
  for (Piece& piece : pieces) {
    if (piece.id >= 0) continue;
    unicode::decode_utf8(piece.text, decoded);
    piece.text = unicode::encode_utf8(normalize(decoded));
  }
  if (has_normalized_added_) pieces = split_added(pieces, true);
  std::vector<int64_t> ids;
  const auto& symbols = byte_symbols();
  for (const Piece& piece : pieces) {
    if (piece.id >= 0) {
      ids.push_back(piece.id);
      continue;
    }
    unicode::decode_utf8(piece.text, decoded);
    for (const std::u32string& split : pre_tokenize(decoded, literals_)) {
      for (const std::u32string& word : byte_level_regex_ ? gpt2_split(split) : std::vector<std::u32string>{split}) {
        std::string mapped;  // ByteLevel: every UTF-8 byte as its printable symbol
        for (unsigned char byte : unicode::encode_utf8(word)) mapped += symbols[byte];
        tokenize_word(mapped, ids);
      }
    }
  }
  return ids;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids = encode_raw(text);
  for (int64_t id : ids) {
    if (id == bos_ || id == eos_) {
      // only a broken vocabulary (merges that build a special token) gets here: refuse, never send it on
      fail(Status::kBundleCorrupt, "the CLIP tokenizer turned the text " + py_repr(text) + " into a bos/eos token; "
                                   "the bundle's tokenizer is broken, re-export it");
    }
  }
  return ids;
}

std::vector<ClipTokenizer::Slot> ClipTokenizer::slots(const std::string& prompt,
                                                      const std::map<std::string, int64_t>& learned_rows) const {
  std::u32string decoded;
  if (!unicode::decode_utf8(prompt, decoded)) fail(Status::kInvalidArgument, "the prompt is not valid UTF-8 text");
  std::vector<Slot> slots;
  std::string text;  // text since the last learned placeholder: tokenized in one piece, as CLIP would see it
  auto flush = [&] {
    if (!strip(text).empty())
      for (int64_t id : encode(text)) slots.push_back({id, ""});
    text.clear();
  };
  size_t start = 0;
  for (size_t i = 0; i < prompt.size(); ++i) {
    const size_t end = placeholder_end(prompt, i);
    if (end == 0) continue;
    text += prompt.substr(start, i - start);
    const std::string name = prompt.substr(i, end - i);
    const std::string key = lower(name);
    if (learned_rows.count(key) != 0) {
      flush();
      slots.push_back({-1, key});
    } else {
      text += name;  // an unknown <word> is plain text: the byte-level BPE can spell anything
    }
    start = end;
    i = end - 1;
  }
  text += prompt.substr(start);
  flush();
  if (slots.empty()) {
    fail(Status::kInvalidArgument, "empty prompt: describe the image in a few words (the empty prompt is only "
                                   "used internally for guidance)");
  }
  int64_t positions = 0;
  for (const Slot& slot : slots) positions += slot.id >= 0 ? 1 : learned_rows.at(slot.placeholder);
  if (positions > max_tokens_ - 2) {
    fail(Status::kInvalidArgument, "prompt is too long: " + std::to_string(positions) + " tokens, this model takes "
                                       "at most " + std::to_string(max_tokens_ - 2) + "; shorten it");
  }
  return slots;
}

int64_t ClipTokenizer::index_of(const std::string& word) const {
  const std::string key = lower(word);
  if (strip(key).empty()) return -1;
  const std::vector<int64_t> ids = encode(key);
  return ids.size() == 1 ? ids[0] : -1;
}

std::string ClipTokenizer::lower(const std::string& text) {
  std::u32string decoded;
  if (!unicode::decode_utf8(text, decoded))
    fail(Status::kInvalidArgument, "the text is not valid UTF-8: " + py_repr(text));
  return unicode::encode_utf8(unicode::python_lower(decoded));
}

std::string ClipTokenizer::strip(const std::string& text) {
  std::u32string decoded;
  if (!unicode::decode_utf8(text, decoded))
    fail(Status::kInvalidArgument, "the text is not valid UTF-8: " + py_repr(text));
  size_t first = 0, last = decoded.size();
  while (first < last && unicode::python_isspace(decoded[first])) ++first;
  while (last > first && unicode::python_isspace(decoded[last - 1])) --last;
  return unicode::encode_utf8(std::u32string_view(decoded).substr(first, last - first));
}

}  // namespace edgesdk
