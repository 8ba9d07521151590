// The bundle's tokenizer, with the API of runtime/tokenizer.py's PromptEncoding: the word-level tokenizer of
// runtime/tokenizer.py (rules in docs/bundle-format.md), or, for bundles with a `clip_tokenizer` asset (Stable
// Diffusion imported with `edgesdk export --from-diffusers`), CLIP's byte-level BPE (clip_tokenizer.hpp), to which
// every call below is handed. Callers need not know which one a bundle has.
//
// Word level: a prompt is lower-cased, `,.;:!?` become spaces, it is split on white space, and the ids are [bos]
// words... [eos] [pad]... up to max_tokens. Placeholders such as `<me>` (learned on device, not in the vocabulary)
// are cut out first, because punctuation handling must not touch their angle brackets.
//
// Word-level lower-casing is ASCII only (A-Z): Python's str.lower() also lowers non-ASCII letters, so the two
// runtimes differ only for a vocabulary with non-ASCII words, which no edgesdk export writes. White space is
// Unicode white space, as Python's str.split() and regex \s (UTF-8 decoded). The CLIP tokenizer lower-cases as
// Python does (full Unicode, final sigma included).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "json.hpp"

namespace edgesdk {

class Bundle;
class ClipTokenizer;

class Tokenizer {
 public:
  // From the bundle's vocabulary.json contents. Throws Failure(kBundleCorrupt) when it is malformed.
  explicit Tokenizer(const json::Value& vocabulary);

  // The bundle's tokenizer: CLIP BPE when it has a `clip_tokenizer` asset (imported Stable Diffusion), else the
  // word-level vocabulary. A CLIP pipeline this port does not implement throws Failure(kBundleUnsupported).
  static Tokenizer from_bundle(const Bundle& bundle);
  // A CLIP tokenizer from the clip_tokenizer asset's contents (ClipTokenizer's Failures).
  static Tokenizer from_clip_asset(const json::Value& asset);

  // Vocabulary words and `<placeholder>` words of a prompt, in order (CLIP: lower-cased words, for "does the
  // caption name the placeholder").
  std::vector<std::string> words(const std::string& prompt) const;

  // (max_tokens) ids of a user prompt. Throws Failure(kInvalidArgument) for an empty prompt, unknown words
  // (placeholders included: use embed for those) or a prompt longer than max_tokens - 2. CLIP: no word is unknown
  // (an unlearned <placeholder> is text too), and the length counts BPE tokens.
  std::vector<int64_t> ids(const std::string& prompt) const;

  // Ids of the empty prompt, the classifier-free guidance input.
  std::vector<int64_t> unconditional_ids() const;

  // (max_tokens, width) float32 embeddings, row-major: `table` is the (vocab, width) token embedding and each
  // `learned` placeholder ("<me>" -> k * width floats) splices its k rows in. Same errors as ids(), plus
  // Failure(kInvalidArgument) for learned vectors that are not k rows of `width` or a name that is not <word>.
  std::vector<float> embed(const std::string& prompt, const float* table, int64_t vocab, int64_t width,
                           const std::map<std::string, std::vector<float>>& learned = {}) const;

  // -1 when the word is not in the vocabulary (CLIP: when word.lower() is not exactly one BPE token)
  int64_t index_of(const std::string& word) const;
  // How the Python runtime keys a placeholder or a word given by the user: token.lower() (ASCII lower-casing for the
  // word-level tokenizer, see above) and word.strip().lower().
  std::string lower(const std::string& text) const;
  std::string lookup_key(const std::string& word) const;
  bool is_clip() const { return clip_ != nullptr; }
  int max_tokens() const { return max_tokens_; }
  int max_words() const { return max_tokens_ - 2; }  // bos and eos take two positions
  bool lowercase() const { return lowercase_; }
  const std::vector<std::string>& tokens() const { return tokens_; }  // word level only (empty for CLIP)
  int64_t pad() const { return pad_; }
  int64_t bos() const { return bos_; }
  int64_t eos() const { return eos_; }

 private:
  Tokenizer() = default;
  // A slot is a token id (word >= 0) or a learned placeholder (the key into the learned rows).
  struct Slot {
    int64_t id = -1;
    std::string placeholder;
  };
  std::vector<Slot> slots(const std::string& prompt, const std::map<std::string, int64_t>& learned_rows) const;
  std::vector<int64_t> padded(const std::vector<int64_t>& body) const;
  std::string key(const std::string& placeholder) const;

  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> index_;
  int max_tokens_ = 0;
  bool lowercase_ = true;
  int64_t pad_ = 0, bos_ = 0, eos_ = 0;
  std::shared_ptr<const ClipTokenizer> clip_;  // set for CLIP bundles
};

}  // namespace edgesdk
