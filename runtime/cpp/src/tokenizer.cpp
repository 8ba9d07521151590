#include "tokenizer.hpp"

#include <cmath>
#include <cstring>

#include "bundle.hpp"
#include "clip_tokenizer.hpp"
#include "errors.hpp"
#include "limits.hpp"
#include "text.hpp"

namespace edgesdk {
namespace {

bool is_placeholder(const std::string& name) { return !name.empty() && placeholder_end(name, 0) == name.size(); }

bool is_punctuation(char c) { return std::strchr(",.;:!?", c) != nullptr && c != '\0'; }

// Words of a piece without placeholders: punctuation becomes space, then split on white space.
void split_words(const std::string& text, size_t begin, size_t end, std::vector<std::string>& words) {
  std::string word;
  for (size_t i = begin; i < end;) {
    size_t space = is_punctuation(text[i]) ? 1 : space_length(text, i);
    if (space > 0) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
      i += space;
    } else {
      word += text[i++];
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
}

std::string ascii_lower(std::string text) {
  for (char& c : text) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return text;
}

[[noreturn]] void malformed(const std::string& what) {
  fail(Status::kBundleCorrupt, "vocabulary.json is malformed (missing or bad " + what + "); re-export the bundle");
}

const json::Value& required(const json::Value& vocabulary, const char* key) {
  const json::Value* value = vocabulary.find(key);
  if (value == nullptr) malformed(py_repr(key));
  return *value;
}

// str(value) of Python, for the token list
std::string as_text(const json::Value& value) { return value.is_string() ? value.as_string() : json::dump(value); }

// Python truthiness, for bool(vocabulary.get("lowercase", True))
bool truthy(const json::Value& value) {
  switch (value.type()) {
    case json::Value::Type::kNull: return false;
    case json::Value::Type::kBool: return value.as_bool();
    case json::Value::Type::kNumber: return value.as_double() != 0.0;
    case json::Value::Type::kString: return !value.as_string().empty();
    default: return value.size() > 0;
  }
}

}  // namespace

Tokenizer::Tokenizer(const json::Value& vocabulary) {
  if (!vocabulary.is_object()) malformed("contents: not a JSON object");
  const json::Value& tokens = required(vocabulary, "tokens");
  if (!tokens.is_array()) malformed("'tokens'");
  for (const json::Value& token : tokens.as_array()) tokens_.push_back(as_text(token));
  const json::Value& max_tokens = required(vocabulary, "max_tokens");
  if (!max_tokens.is_number() || !std::isfinite(max_tokens.as_double()) || std::fabs(max_tokens.as_double()) > 1e9) {
    malformed("'max_tokens'");
  }
  max_tokens_ = static_cast<int>(max_tokens.as_double());  // int() truncates, as in Python
  std::vector<const json::Value*> special;
  for (const char* key : {"pad", "bos", "eos"}) special.push_back(&required(vocabulary, key));
  const json::Value* lowercase = vocabulary.find("lowercase");
  lowercase_ = lowercase == nullptr || truthy(*lowercase);

  for (size_t i = 0; i < tokens_.size(); ++i) index_[tokens_[i]] = static_cast<int64_t>(i);  // last one wins
  std::vector<std::string> unknown;
  for (const json::Value* s : special) {
    if (!s->is_string() || index_.count(s->as_string()) == 0) {
      unknown.push_back(s->is_string() ? py_repr(s->as_string()) : json::dump(*s));
    }
  }
  if (!unknown.empty()) {
    fail(Status::kBundleCorrupt, "vocabulary.json names special tokens [" + join(unknown) +
                                     "] that are not in its token list; re-export the bundle");
  }
  pad_ = index_.at(special[0]->as_string());
  bos_ = index_.at(special[1]->as_string());
  eos_ = index_.at(special[2]->as_string());
  if (max_tokens_ < 2) {
    fail(Status::kBundleCorrupt, "vocabulary max_tokens is " + std::to_string(max_tokens_) +
                                     "; it must leave room for bos and eos");
  }
  if (max_tokens_ > limits::kMaxTokens) {  // every prompt allocates max_tokens rows of the embedding width
    fail(Status::kBundleCorrupt, "vocabulary max_tokens is " + std::to_string(max_tokens_) + ", above the limit of " +
                                     std::to_string(limits::kMaxTokens) + "; re-export the bundle");
  }
}

Tokenizer Tokenizer::from_bundle(const Bundle& bundle) {
  if (bundle.has_asset("clip_tokenizer")) return from_clip_asset(bundle.asset_json("clip_tokenizer"));
  return Tokenizer(bundle.asset_json("vocabulary"));
}

Tokenizer Tokenizer::from_clip_asset(const json::Value& asset) {
  Tokenizer tokenizer;
  auto clip = std::make_shared<const ClipTokenizer>(asset);
  tokenizer.max_tokens_ = clip->max_tokens();
  tokenizer.bos_ = clip->bos();
  tokenizer.eos_ = clip->eos();
  tokenizer.pad_ = clip->pad();
  tokenizer.lowercase_ = true;  // CLIP's normalizer lower-cases, and placeholders match case-insensitively
  tokenizer.clip_ = std::move(clip);
  return tokenizer;
}

int64_t Tokenizer::index_of(const std::string& word) const {
  if (clip_) return clip_->index_of(word);
  auto found = index_.find(word);
  return found == index_.end() ? -1 : found->second;
}

std::string Tokenizer::lower(const std::string& text) const {
  return clip_ ? ClipTokenizer::lower(text) : ascii_lower(text);
}

std::string Tokenizer::lookup_key(const std::string& word) const {
  if (clip_) return ClipTokenizer::lower(ClipTokenizer::strip(word));
  const size_t first = word.find_first_not_of(" \t\n\r"), last = word.find_last_not_of(" \t\n\r");
  return ascii_lower(first == std::string::npos ? "" : word.substr(first, last - first + 1));
}

std::string Tokenizer::key(const std::string& placeholder) const {
  // prompts are lower-cased, so "<Me>" in the learned map must match "<me>" in the prompt
  if (clip_) return ClipTokenizer::lower(placeholder);
  return lowercase_ ? ascii_lower(placeholder) : placeholder;
}

std::vector<std::string> Tokenizer::words(const std::string& prompt) const {
  std::string text = clip_ ? ClipTokenizer::lower(prompt) : lowercase_ ? ascii_lower(prompt) : prompt;
  std::vector<std::string> words;
  size_t piece_start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    size_t end = placeholder_end(text, i);
    if (end == 0) continue;
    split_words(text, piece_start, i, words);
    words.push_back(text.substr(i, end - i));
    piece_start = end;
    i = end - 1;
  }
  split_words(text, piece_start, text.size(), words);
  return words;
}

std::vector<Tokenizer::Slot> Tokenizer::slots(const std::string& prompt,
                                              const std::map<std::string, int64_t>& learned_rows) const {
  if (clip_) {
    std::vector<Slot> result;
    for (ClipTokenizer::Slot& slot : clip_->slots(prompt, learned_rows))
      result.push_back({slot.id, std::move(slot.placeholder)});
    return result;
  }
  std::vector<std::string> words = this->words(prompt);
  if (words.empty()) {
    fail(Status::kInvalidArgument, "empty prompt: describe the image in a few words (the empty prompt is only "
                                   "used internally for guidance)");
  }
  std::vector<std::string> unknown;  // in order, each once
  for (const std::string& w : words) {
    if (learned_rows.count(w) == 0 && index_.count(w) == 0) {
      std::string quoted = "\"" + w + "\"";
      bool seen = false;
      for (const std::string& u : unknown) seen = seen || u == quoted;
      if (!seen) unknown.push_back(quoted);
    }
  }
  if (!unknown.empty()) {
    fail(Status::kInvalidArgument, "words not in the model's vocabulary: " + join(unknown) +
                                       "; `edgesdk inspect BUNDLE` lists the vocabulary");
  }
  int64_t positions = 0;
  for (const std::string& w : words) {
    auto found = learned_rows.find(w);
    positions += found != learned_rows.end() ? found->second : 1;
  }
  if (positions > max_words()) {
    fail(Status::kInvalidArgument, "prompt is too long: " + std::to_string(positions) + " tokens, this model takes "
                                       "at most " + std::to_string(max_words()) + "; shorten it");
  }
  std::vector<Slot> result;
  for (const std::string& w : words) {
    Slot slot;
    if (learned_rows.count(w) != 0) slot.placeholder = w;
    else slot.id = index_.at(w);
    result.push_back(std::move(slot));
  }
  return result;
}

std::vector<int64_t> Tokenizer::padded(const std::vector<int64_t>& body) const {
  std::vector<int64_t> ids{bos_};
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(eos_);
  ids.resize(static_cast<size_t>(max_tokens_), pad_);
  return ids;
}

std::vector<int64_t> Tokenizer::ids(const std::string& prompt) const {
  std::vector<int64_t> body;
  for (const Slot& slot : slots(prompt, {})) body.push_back(slot.id);
  return padded(body);
}

std::vector<int64_t> Tokenizer::unconditional_ids() const { return padded({}); }

std::vector<float> Tokenizer::embed(const std::string& prompt, const float* table, int64_t vocab, int64_t width,
                                    const std::map<std::string, std::vector<float>>& learned) const {
  if (width < 1) fail(Status::kInvalidArgument, "embedding width must be at least 1");
  std::map<std::string, int64_t> learned_rows;  // key -> k
  std::map<std::string, const std::vector<float>*> learned_values;
  for (const auto& [name, values] : learned) {
    int64_t count = static_cast<int64_t>(values.size());
    if (count == 0 || count % width != 0) {
      fail(Status::kInvalidArgument, "learned vectors for " + py_repr(name) + " have shape (" +
                                         std::to_string(count) + ",); expected (k, " + std::to_string(width) + ")");
    }
    if (!is_placeholder(name)) {
      fail(Status::kInvalidArgument, "learned token name " + py_repr(name) +
                                         " must look like <word> so prompts can refer to it");
    }
    learned_rows[key(name)] = count / width;
    learned_values[key(name)] = &values;
  }
  std::vector<Slot> body = slots(prompt, learned_rows);

  std::vector<float> out;
  out.reserve(static_cast<size_t>(max_tokens_ * width));
  auto append_token = [&](int64_t id) {
    if (id < 0 || id >= vocab) {
      fail(Status::kBundleCorrupt, "token_embedding has " + std::to_string(vocab) + " rows, but the vocabulary "
                                   "uses id " + std::to_string(id) + "; re-export the bundle");
    }
    out.insert(out.end(), table + id * width, table + (id + 1) * width);
  };
  append_token(bos_);
  for (const Slot& slot : body) {
    if (slot.id >= 0) {
      append_token(slot.id);
    } else {
      const std::vector<float>& rows = *learned_values.at(slot.placeholder);
      out.insert(out.end(), rows.begin(), rows.end());
    }
  }
  append_token(eos_);
  while (static_cast<int64_t>(out.size()) < max_tokens_ * width) append_token(pad_);
  return out;
}

}  // namespace edgesdk
