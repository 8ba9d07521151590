#include "unicode.hpp"

#include <algorithm>
#include <iterator>
#include <unordered_map>
#include <vector>

#include "unicode_tables.hpp"

namespace edgesdk::unicode {
namespace {

namespace t = unicode_tables;

constexpr char32_t kSigma = 0x3A3, kFinalSigma = 0x3C2;
// Hangul syllables are composed and decomposed by arithmetic (Unicode chapter 3.12)
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// The value of the run holding cp in a (first << shift) | value table.
template <size_t N>
uint32_t run_value(const uint32_t (&runs)[N], char32_t cp, unsigned shift) {
  const uint32_t key = (uint32_t(cp) << shift) | ((1u << shift) - 1);
  const uint32_t* after = std::upper_bound(std::begin(runs), std::end(runs), key);
  return after == std::begin(runs) ? 0 : (*(after - 1) & ((1u << shift) - 1));
}

template <size_t N>
const t::Mapping* find_mapping(const t::Mapping (&table)[N], char32_t cp) {
  const t::Mapping* found = std::lower_bound(std::begin(table), std::end(table), cp,
                                             [](const t::Mapping& m, char32_t c) { return m.cp < c; });
  return found != std::end(table) && found->cp == cp ? found : nullptr;
}

void append_mapping(std::u32string& out, const t::Mapping& m) {
  for (uint32_t c : m.to)
    if (c != 0) out.push_back(char32_t(c));
}

// Rust's char::to_lowercase of one code point, appended.
void append_lower(std::u32string& out, char32_t cp) {
  if (const t::Mapping* multi = find_mapping(t::kLowerMulti, cp)) return append_mapping(out, *multi);
  const t::LowerRun* run = std::upper_bound(std::begin(t::kLowerRuns), std::end(t::kLowerRuns), cp,
                                            [](char32_t c, const t::LowerRun& r) { return c < r.first; });
  if (run != std::begin(t::kLowerRuns)) {
    --run;
    const uint32_t offset = uint32_t(cp) - run->first;
    if (offset % run->step == 0 && offset / run->step < run->count) {
      out.push_back(char32_t(int64_t(cp) + run->delta));
      return;
    }
  }
  out.push_back(cp);
}

// One level of canonical decomposition: (first, second) with second 0 for a singleton; nullptr when none.
const uint32_t* decomposition(char32_t cp) {
  constexpr size_t kCount = std::size(t::kDecompositions) / 3;
  size_t low = 0, high = kCount;
  while (low < high) {
    const size_t mid = (low + high) / 2;
    const uint32_t key = t::kDecompositions[3 * mid] & 0x7FFFFFFFu;
    if (key < cp) low = mid + 1;
    else high = mid;
  }
  if (low < kCount && (t::kDecompositions[3 * low] & 0x7FFFFFFFu) == cp) return &t::kDecompositions[3 * low + 1];
  return nullptr;
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t index = cp - kSBase;
    out.push_back(kLBase + index / kNCount);
    out.push_back(kVBase + (index % kNCount) / kTCount);
    if (index % kTCount != 0) out.push_back(kTBase + index % kTCount);
    return;
  }
  const uint32_t* pair = decomposition(cp);
  if (pair == nullptr) {
    out.push_back(cp);
    return;
  }
  decompose(char32_t(pair[0]), out);
  if (pair[1] != 0) decompose(char32_t(pair[1]), out);
}

uint64_t pair_key(char32_t a, char32_t b) { return (uint64_t(a) << 21) | uint64_t(b); }

const std::unordered_map<uint64_t, char32_t>& compositions() {
  static const std::unordered_map<uint64_t, char32_t> table = [] {
    std::unordered_map<uint64_t, char32_t> out;
    for (size_t i = 0; i < std::size(t::kDecompositions); i += 3)
      if (t::kDecompositions[i] & 0x80000000u)
        out.emplace(pair_key(t::kDecompositions[i + 1], t::kDecompositions[i + 2]),
                    char32_t(t::kDecompositions[i] & 0x7FFFFFFFu));
    return out;
  }();
  return table;
}

// The primary composite of (a, b), 0 when there is none.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& table = compositions();
  auto found = table.find(pair_key(a, b));
  return found == table.end() ? 0 : found->second;
}

// CPython's final-sigma context: 2 case-ignorable, 1 cased (and not case-ignorable), 0 neither.
uint32_t python_case(char32_t cp) { return run_value(t::kPythonCaseRuns, cp, 2); }

}  // namespace

bool decode_utf8(std::string_view text, std::u32string& out) {
  out.clear();
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    const unsigned lead = byte(i);
    if (lead < 0x80) {
      out.push_back(lead);
      ++i;
      continue;
    }
    size_t length;
    char32_t cp, minimum;
    if ((lead & 0xE0) == 0xC0) length = 2, cp = lead & 0x1F, minimum = 0x80;
    else if ((lead & 0xF0) == 0xE0) length = 3, cp = lead & 0x0F, minimum = 0x800;
    else if ((lead & 0xF8) == 0xF0) length = 4, cp = lead & 0x07, minimum = 0x10000;
    else return false;
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((byte(i + k) & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (byte(i + k) & 0x3F);
    }
    if (cp < minimum || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return false;
    out.push_back(cp);
    i += length;
  }
  return true;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string encode_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text) append_utf8(out, cp);
  return out;
}

RegexClass regex_class(char32_t cp) { return RegexClass(run_value(t::kRegexClassRuns, cp, 2)); }

bool python_isspace(char32_t cp) { return run_value(t::kPythonSpaceRuns, cp, 2) != 0; }

int combining_class(char32_t cp) {
  const t::CombiningRun* run = std::upper_bound(std::begin(t::kCombiningRuns), std::end(t::kCombiningRuns), cp,
                                                [](char32_t c, const t::CombiningRun& r) { return c < r.first; });
  if (run == std::begin(t::kCombiningRuns)) return 0;
  --run;
  return uint32_t(cp) - run->first < run->count ? run->ccc : 0;
}

std::u32string nfc(std::u32string_view text) {
  // 1. full canonical decomposition
  std::u32string decomposed;
  decomposed.reserve(text.size());
  for (char32_t cp : text) decompose(cp, decomposed);
  // 2. canonical ordering: each run of non-starters sorted by combining class, stably
  std::vector<int> classes(decomposed.size());
  for (size_t i = 0; i < decomposed.size(); ++i) classes[i] = combining_class(decomposed[i]);
  for (size_t i = 0; i < decomposed.size();) {
    if (classes[i] == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < decomposed.size() && classes[end] != 0) ++end;
    for (size_t a = i + 1; a < end; ++a)  // insertion sort: runs are short, and it is stable
      for (size_t b = a; b > i && classes[b - 1] > classes[b]; --b) {
        std::swap(classes[b - 1], classes[b]);
        std::swap(decomposed[b - 1], decomposed[b]);
      }
    i = end;
  }
  // 3. canonical composition: a character joins the last starter unless a character between them is a starter or
  // has a combining class at least its own (blocked)
  std::u32string out;
  std::vector<int> out_classes;
  out.reserve(decomposed.size());
  size_t starter = std::u32string::npos;
  for (size_t i = 0; i < decomposed.size(); ++i) {
    const char32_t cp = decomposed[i];
    const int ccc = classes[i];
    if (starter != std::u32string::npos) {
      const bool adjacent = starter + 1 == out.size();
      const int previous = out_classes.back();
      if (adjacent || (previous != 0 && previous < ccc)) {
        if (char32_t composite = compose(out[starter], cp)) {
          out[starter] = composite;
          continue;
        }
      }
    }
    if (ccc == 0) starter = out.size();
    out.push_back(cp);
    out_classes.push_back(ccc);
  }
  return out;
}

std::u32string lowercase(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t cp : text) append_lower(out, cp);
  return out;
}

std::u32string python_lower(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t cp = text[i];
    if (cp == kSigma) {
      // CPython's handle_capital_sigma: \p{cased} \p{case-ignorable}* Σ !(\p{case-ignorable}* \p{cased})
      size_t j = i;
      while (j > 0 && python_case(text[j - 1]) == 2) --j;
      bool final_sigma = j > 0 && python_case(text[j - 1]) == 1;
      if (final_sigma) {
        size_t k = i + 1;
        while (k < text.size() && python_case(text[k]) == 2) ++k;
        final_sigma = k == text.size() || python_case(text[k]) != 1;
      }
      out.push_back(final_sigma ? kFinalSigma : char32_t(0x3C3));
      continue;
    }
    if (const t::Mapping* exception = find_mapping(t::kPythonLowerExceptions, cp)) {
      append_mapping(out, *exception);
      continue;
    }
    append_lower(out, cp);
  }
  return out;
}

}  // namespace edgesdk::unicode
