"""Writes runtime/cpp/src/unicode_tables.hpp: the Unicode data of the C++ CLIP tokenizer (src/unicode.cpp).

    python runtime/cpp/tools/gen_unicode_tables.py [OUT]      # OUT: src/unicode_tables.hpp by default

The reference is runtime/clip_tokenizer.py, i.e. the `tokenizers` package plus Python's str methods, and those do not
share one Unicode version: here Python 3.11's unicodedata is Unicode 14, the Oniguruma regex engine inside
`tokenizers` (\\s, \\p{L}, \\p{N}) is Unicode 16, Rust's char::to_lowercase (the Lowercase normalizer) is newer
still, and its NFC (the unicode-normalization-alignments crate) is older than Python's. So each table comes from the
implementation it must match:

- regex classes (\\s, \\p{L}, \\p{N}): probed from `tokenizers`' own Regex over every code point;
- lower-casing inside the pipeline: `tokenizers`' Lowercase normalizer on every code point (one char at a time);
- NFC: unicodedata's canonical decompositions and combining classes, kept where `tokenizers`' NFD/NFC knows them
  (probed: decompositions, reordering against marks of known class, compositions);
- Python's str.lower (placeholders, words(), index keys): str.lower on every code point, plus the final-sigma
  context classes (cased, case-ignorable) probed through str.lower itself;
- Python's str.isspace (placeholder regex, strip, split).

Each table is checked against its source before it is written, and tests/cpp_fixtures.py compares the C++ results
with `tokenizers` and Python again on every code point, so a new `tokenizers` or Python release that changes any of
this fails the ctest suite instead of changing ids silently; rerun this script then.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import tokenizers
from tokenizers import Regex, normalizers

MAX = 0x110000
SIGMA = "\u03a3"
CODE_POINTS = [c for c in range(MAX) if not 0xD800 <= c < 0xE000]  # no surrogates: not in UTF-8
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def per_code_point(normalizer: normalizers.Normalizer) -> list[str]:
    """normalizer on each code point alone (joined with NUL, which every normalizer here leaves alone)."""
    assert CODE_POINTS[0] == 0 and normalizer.normalize_str("\x00") == "\x00"
    out = ["\x00", *normalizer.normalize_str("\x00".join(chr(c) for c in CODE_POINTS[1:])).split("\x00")]
    assert len(out) == len(CODE_POINTS)
    return out


def regex_classes() -> dict[int, int]:
    """0 other, 1 \\s, 2 \\p{L}, 3 \\p{N}, as `tokenizers`' Regex (Oniguruma) matches them."""
    seq = normalizers.Sequence([normalizers.Replace(Regex(r"\s"), "\x01"), normalizers.Replace(Regex(r"\p{L}"), "\x02"),
                                normalizers.Replace(Regex(r"\p{N}"), "\x03")])
    out = seq.normalize_str("".join(chr(c) for c in CODE_POINTS))
    assert len(out) == len(CODE_POINTS)
    classes = {}
    for c, ch in zip(CODE_POINTS, out, strict=True):
        classes[c] = {"\x01": 1, "\x02": 2, "\x03": 3}.get(ch, 0)
    for c in (1, 2, 3):  # the markers themselves: one at a time
        classes[c] = 0
        for value, pattern in ((1, r"\s"), (2, r"\p{L}"), (3, r"\p{N}")):
            if normalizers.Replace(Regex(pattern), "@").normalize_str(chr(c)) == "@":
                classes[c] = value
    return classes


def runs(values: dict[int, int]) -> list[int]:
    """(start << 2) | value for each run of equal values over all code points (surrogates join their neighbours)."""
    out: list[int] = []
    previous = None
    for c in range(MAX):
        v = values.get(c, previous if 0xD800 <= c < 0xE000 else 0)
        if v != previous:
            out.append(c << 2 | v)
            previous = v
    return out


def lower_runs(mapping: dict[int, int]) -> list[tuple[int, int, int, int]]:
    """(first, count, step, delta): cp = first + k * step (k < count) lower-cases to cp + delta."""
    items = sorted(mapping.items())
    out: list[list[int]] = []
    for cp, low in items:
        delta = low - cp
        if out:
            first, count, step, d = out[-1]
            last = first + (count - 1) * step
            if d == delta and ((count == 1 and cp - last in (1, 2)) or (count > 1 and cp - last == step)):
                out[-1] = [first, count + 1, cp - last if count == 1 else step, d]
                continue
        out.append([cp, 1, 1, delta])
    return [tuple(r) for r in out]


def python_case_classes() -> dict[int, int]:
    """Final-sigma context of str.lower: 2 case-ignorable (skipped), 1 cased (not case-ignorable), 0 neither.
    Only these two matter: CPython skips case-ignorable characters on both sides of a capital sigma, then asks
    whether the next character is cased."""
    out = {}
    for c in CODE_POINTS:
        ch = chr(c)
        after_cased = ("A" + ch + SIGMA).lower()[-1] == "\u03c2"  # case-ignorable (skipped to A) or cased
        alone = (ch + SIGMA).lower()[-1] == "\u03c2"  # cased and not case-ignorable
        out[c] = 1 if alone else (2 if after_cased else 0)
    return out


def nfc_tables() -> tuple[dict[int, int], list[tuple[int, int, int, bool]]]:
    """(combining classes, decompositions) as `tokenizers`' NFC knows them. Decompositions are one level, as
    UnicodeData.txt has them: (cp, first, second or 0, is a primary composite)."""
    nfd, nfc = normalizers.NFD(), normalizers.NFC()
    # combining classes: unicodedata's, for the marks tokenizers reorders (an older Unicode knows fewer marks; a
    # mark's class never changes once assigned). Probe: KA, a reference mark, the mark, through NFD only.
    marks = [c for c in CODE_POINTS if unicodedata.combining(chr(c))]
    probes = []
    for c in marks:
        ccc = unicodedata.combining(chr(c))
        # a mark of class < 230 moves before U+0301 (230); one of class > 1 lets U+0334 (1) move before it
        probes.append("\u0915\u0301" + chr(c) if ccc < 230 else "\u0915" + chr(c) + "\u0334")
    moved = nfd.normalize_str("\x00".join(probes)).split("\x00")
    ccc_table = {}
    for c, probe, result in zip(marks, probes, moved, strict=True):
        if result != probe:
            ccc_table[c] = unicodedata.combining(chr(c))
    # decompositions
    known_nfd = per_code_point(nfd)
    known_nfc = per_code_point(nfc)
    index = {c: i for i, c in enumerate(CODE_POINTS)}
    decompositions = []
    for c, d, composed in zip(CODE_POINTS, known_nfd, known_nfc, strict=True):
        if d == chr(c) or HANGUL_FIRST <= c <= HANGUL_LAST:
            continue
        mapping = unicodedata.decomposition(chr(c))
        assert mapping and not mapping.startswith("<"), f"U+{c:04X}: tokenizers decomposes it, unicodedata not"
        parts = [int(p, 16) for p in mapping.split()]
        assert len(parts) in (1, 2)
        # the full decomposition must be this one-level mapping, expanded: then tokenizers and the table agree
        assert "".join(known_nfd[index[p]] for p in parts) == d, f"U+{c:04X}"
        primary = len(parts) == 2 and composed == chr(c)
        decompositions.append((c, parts[0], parts[1] if len(parts) == 2 else 0, primary))
    # every primary composite must compose from its pair (in tokenizers), and nothing else composes
    pairs = [chr(a) + chr(b) for c, a, b, primary in decompositions if primary]
    composed = nfc.normalize_str("\x00".join(pairs)).split("\x00")
    for (c, _, _, _), result in zip([d for d in decompositions if d[3]], composed, strict=True):
        assert result == chr(c), f"U+{c:04X} does not compose in tokenizers"
    return ccc_table, decompositions


def ccc_runs(table: dict[int, int]) -> list[tuple[int, int, int]]:
    out: list[list[int]] = []
    for c in sorted(table):
        if out and out[-1][0] + out[-1][1] == c and out[-1][2] == table[c]:
            out[-1][1] += 1
        else:
            out.append([c, 1, table[c]])
    return [tuple(r) for r in out]


def hex_list(values: list, per_line: int) -> str:
    lines = []
    for i in range(0, len(values), per_line):
        lines.append("    " + " ".join(values[i:i + per_line]))
    return "\n".join(lines)


def main(out: Path) -> None:
    classes = regex_classes()

    rust_lower_strings = per_code_point(normalizers.Lowercase())
    rust_single: dict[int, int] = {}
    rust_multi: dict[int, str] = {}
    for c, low in zip(CODE_POINTS, rust_lower_strings, strict=True):
        if low == chr(c):
            continue
        if len(low) == 1:
            rust_single[c] = ord(low)
        else:
            rust_multi[c] = low
    assert all(len(s) <= 3 for s in rust_multi.values())

    python_exceptions: dict[int, str] = {}  # where str.lower (per code point) differs from Rust's to_lowercase
    for c, rust in zip(CODE_POINTS, rust_lower_strings, strict=True):
        py = chr(c).lower()
        if py != rust:
            python_exceptions[c] = py
    assert all(len(s) <= 3 for s in python_exceptions.values())
    case = python_case_classes()
    python_space = {c: 1 for c in CODE_POINTS if chr(c).isspace()}

    ccc, decompositions = nfc_tables()

    single = lower_runs(rust_single)
    lines = [
        "// Generated by runtime/cpp/tools/gen_unicode_tables.py; do not edit. Regenerate when the `tokenizers` or",
        "// Python version changes (the ctest fixture step compares these tables with both and fails if they differ).",
        f"// Sources: tokenizers {tokenizers.__version__} (regex classes, Lowercase, NFC coverage); Python "
        f"{sys.version.split()[0]}, unicodedata {unicodedata.unidata_version}",
        "// (decompositions, combining classes, str.lower, str.isspace).",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "namespace edgesdk::unicode_tables {",
        "",
        "// Runs over all code points: (first << 2) | value, sorted; a run lasts until the next entry's first.",
        "// Regex classes of tokenizers' Oniguruma: 0 other, 1 \\s, 2 \\p{L}, 3 \\p{N}.",
        f"inline constexpr uint32_t kRegexClassRuns[{len(runs(classes))}] = {{",
        hex_list([f"0x{v:x}," for v in runs(classes)], 10),
        "};",
        "// Python's str.lower final-sigma context: 0 neither, 1 cased (not case-ignorable), 2 case-ignorable.",
        f"inline constexpr uint32_t kPythonCaseRuns[{len(runs(case))}] = {{",
        hex_list([f"0x{v:x}," for v in runs(case)], 10),
        "};",
        "// Python's str.isspace: 1 space.",
        f"inline constexpr uint32_t kPythonSpaceRuns[{len(runs(python_space))}] = {{",
        hex_list([f"0x{v:x}," for v in runs(python_space)], 10),
        "};",
        "",
        "// Lower case of one code point (tokenizers' Lowercase, i.e. Rust's char::to_lowercase): first + k * step",
        "// (k < count) maps to itself + delta.",
        "struct LowerRun {",
        "  uint32_t first;",
        "  uint16_t count;",
        "  uint8_t step;",
        "  int32_t delta;",
        "};",
        f"inline constexpr LowerRun kLowerRuns[{len(single)}] = {{",
        hex_list([f"{{0x{a:x}, {n}, {s}, {d}}}," for a, n, s, d in single], 4),
        "};",
        "// Code points that lower-case to several (up to 3; 0 = none).",
        "struct Mapping {",
        "  uint32_t cp;",
        "  uint32_t to[3];",
        "};",
        f"inline constexpr Mapping kLowerMulti[{len(rust_multi)}] = {{",
        hex_list([f"{{0x{c:x}, {{{', '.join(f'0x{ord(x):x}' for x in s)}}}}}," for c, s in sorted(rust_multi.items())],
                 4),
        "};",
        "// Where Python's str.lower of one code point differs from the above (an older Unicode in Python).",
        f"inline constexpr Mapping kPythonLowerExceptions[{len(python_exceptions)}] = {{",
        hex_list([f"{{0x{c:x}, {{{', '.join(f'0x{ord(x):x}' for x in s)}}}}},"
                  for c, s in sorted(python_exceptions.items())], 4),
        "};",
        "",
        "// Canonical combining classes (non-zero) of the marks tokenizers' NFC knows: first, count, class.",
        "struct CombiningRun {",
        "  uint32_t first;",
        "  uint16_t count;",
        "  uint8_t ccc;",
        "};",
        f"inline constexpr CombiningRun kCombiningRuns[{len(ccc_runs(ccc))}] = {{",
        hex_list([f"{{0x{a:x}, {n}, {k}}}," for a, n, k in ccc_runs(ccc)], 6),
        "};",
        "// One-level canonical decompositions (Hangul syllables are algorithmic, not listed), sorted, three words",
        "// each: cp | 0x80000000 when it is a primary composite (NFC builds it back from the pair), first, second",
        "// (0 for a singleton).",
        f"inline constexpr uint32_t kDecompositions[{3 * len(decompositions)}] = {{",
        hex_list([f"0x{c | (0x80000000 if p else 0):x},0x{a:x},0x{b:x}," for c, a, b, p in decompositions], 4),
        "};",
        "",
        "}  // namespace edgesdk::unicode_tables",
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"{out}: {out.stat().st_size} bytes; {len(runs(classes))} class runs, {len(single)} lower runs, "
          f"{len(python_exceptions)} Python exceptions, {len(ccc_runs(ccc))} combining runs, "
          f"{len(decompositions)} decompositions")


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "src" / "unicode_tables.hpp"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
