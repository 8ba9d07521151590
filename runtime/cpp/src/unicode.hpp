// The Unicode operations of the CLIP tokenizer, without ICU (the runtime builds for Android's NDK and iOS too): UTF-8,
// the regex classes \s / \p{L} / \p{N}, NFC, lower-casing, and Python's str.lower / str.isspace.
//
// Each operation follows the implementation runtime/clip_tokenizer.py relies on, Unicode version included, since
// those differ: `tokenizers`' Oniguruma classes, its Lowercase normalizer (Rust's char::to_lowercase, one code point
// at a time, no final sigma) and its NFC (an older Unicode than Python's), and CPython's str.lower (with the final
// sigma rule) and str.isspace. The tables are generated from those implementations by tools/gen_unicode_tables.py
// (src/unicode_tables.hpp), and the ctest fixtures compare every code point with them again.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace edgesdk::unicode {

// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). False when `text` is not UTF-8.
bool decode_utf8(std::string_view text, std::u32string& out);
void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(std::u32string_view text);

// The classes of CLIP's pre-tokenizer regex, as `tokenizers`' regex engine (Oniguruma) has them.
enum class RegexClass : uint8_t { kOther = 0, kSpace = 1, kLetter = 2, kNumber = 3 };
RegexClass regex_class(char32_t cp);

// Python's str.isspace (what str.split(), str.strip() and re's \s use).
bool python_isspace(char32_t cp);

// Canonical combining class as `tokenizers`' NFC knows it (0 for starters and for marks it does not know).
int combining_class(char32_t cp);

// `tokenizers`' NFC normalizer: canonical decomposition, canonical ordering, canonical composition.
std::u32string nfc(std::u32string_view text);

// `tokenizers`' Lowercase normalizer: each code point through Rust's char::to_lowercase (İ becomes two).
std::u32string lowercase(std::u32string_view text);

// Python's str.lower: per-code-point full lower case plus the final sigma rule (Σ at a word end becomes ς).
std::u32string python_lower(std::u32string_view text);

}  // namespace edgesdk::unicode
