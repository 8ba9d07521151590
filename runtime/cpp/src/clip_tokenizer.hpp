// CLIP's byte-level BPE tokenizer (Stable Diffusion bundles imported with `edgesdk export --from-diffusers`), the
// C++ port of runtime/clip_tokenizer.py, which stays the reference: the same ids for every prompt, the same errors.
//
// The asset is {"kind": "clip-bpe", "tokenizer": <a tokenizers.json pipeline, as a string>, "bos", "eos", "pad",
// "max_tokens"}. Python serves the pipeline with the `tokenizers` package; this file implements the parts a CLIP
// pipeline has, as `tokenizers` runs them:
//   added tokens (matched before / after normalization, leftmost-longest) ->
//   normalizers NFC, Replace(\s+ -> content), Lowercase (any order, each optional) ->
//   pre-tokenizers Split(CLIP's regex, possibly after literal alternatives such as <\|endoftext\|>, removed,
//   inverted) + ByteLevel(no prefix space; GPT-2's regex or none) ->
//   BPE (merge ranks, end-of-word suffix, unk token, fuse_unk, ignore_merges).
// Anything else in the pipeline (another normalizer or regex, byte fallback, dropout, ...) is refused with
// Failure(kBundleUnsupported) naming it. Unicode comes from src/unicode.hpp (no ICU).
//
// Tokenizer (tokenizer.hpp) holds one of these for CLIP bundles and keeps its API: callers need not know which.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "json.hpp"

namespace edgesdk {

class ClipTokenizer {
 public:
  // From the clip_tokenizer asset. Throws Failure(kBundleCorrupt) when it is malformed (the Python runtime's
  // message where it has one), Failure(kBundleUnsupported) for a pipeline part this port does not implement.
  explicit ClipTokenizer(const json::Value& asset);

  // The BPE ids of `text`, as tokenizers' encode(text, add_special_tokens=False): no bos / eos. Throws
  // Failure(kInvalidArgument) when text is not UTF-8, Failure(kBundleCorrupt) when an id is bos or eos (a broken
  // vocabulary; the Python runtime refuses it too).
  std::vector<int64_t> encode(const std::string& text) const;

  // A token id (id >= 0) or a learned placeholder (its lower-cased name).
  struct Slot {
    int64_t id = -1;
    std::string placeholder;
  };
  // runtime/clip_tokenizer.py _slots: the text between learned placeholders is tokenized in one piece (a
  // placeholder nobody learned is plain text); `learned_rows` maps lower-cased names to their row counts. Throws
  // Failure(kInvalidArgument) for an empty prompt or one over max_words() positions (BPE tokens + learned rows).
  std::vector<Slot> slots(const std::string& prompt, const std::map<std::string, int64_t>& learned_rows) const;

  // The id of word.lower() when it is exactly one BPE token, -1 otherwise (the Python runtime's `index`).
  int64_t index_of(const std::string& word) const;

  // Python's str.lower and str.strip of UTF-8 text. Throw Failure(kInvalidArgument) when it is not UTF-8.
  static std::string lower(const std::string& text);
  static std::string strip(const std::string& text);

  int max_tokens() const { return max_tokens_; }
  int64_t bos() const { return bos_; }
  int64_t eos() const { return eos_; }
  int64_t pad() const { return pad_; }

 private:
  enum class Step { kNfc, kLowercase, kReplaceSpaces };
  struct AddedToken {
    std::string pattern;  // the content, normalized when `normalized`
    uint32_t id = 0;
    bool normalized = true;
  };
  struct Piece {  // a span of text, or an added token's id
    std::string text;
    int64_t id = -1;
  };

  void parse_pipeline(const json::Value& pipeline);
  void parse_normalizer(const json::Value& normalizer);
  void parse_pre_tokenizer(const json::Value& pre_tokenizer);
  void parse_model(const json::Value& model);
  void parse_added_tokens(const json::Value& tokens);
  std::u32string normalize(std::u32string text) const;
  std::vector<Piece> split_added(const std::vector<Piece>& pieces, bool normalized) const;
  void tokenize_word(const std::string& symbols, std::vector<int64_t>& out) const;
  std::vector<int64_t> encode_raw(const std::string& text) const;

  int max_tokens_ = 0;
  int64_t bos_ = 0, eos_ = 0, pad_ = 0;
  std::vector<Step> steps_;
  std::vector<std::u32string> literals_;  // alternatives of the Split regex before CLIP's own
  bool byte_level_regex_ = false;         // ByteLevel splits each piece again with GPT-2's regex
  std::vector<std::u32string> replacements_;  // what each Replace(\s+) step writes, in order
  std::vector<AddedToken> added_;
  bool has_raw_added_ = false, has_normalized_added_ = false;
  // the BPE model
  std::unordered_map<std::string, uint32_t> vocab_;
  std::unordered_map<uint64_t, std::pair<uint32_t, uint32_t>> merges_;  // (left, right) ids -> (rank, new id)
  bool has_unk_ = false, has_suffix_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::string unk_, suffix_;
};

}  // namespace edgesdk
