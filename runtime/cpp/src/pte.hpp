// Cheap structural checks of an ExecuTorch program (.pte) before ExecuTorch sees it, the C++ side of
// runtime/pte.py's verify_program: a corrupt file is one clear error in microseconds, never a page of ExecuTorch's
// own log. ExecuTorch's InternalConsistency verification of the flatbuffer follows at load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgesdk {

// `head`: the file's first bytes (up to 64; fewer for a shorter file); `file_size`: its whole size; `what`: the
// file as a message names it. Checks the "ET12" identifier and, where an extended header ("eh00") is present, that
// the program and segment sizes it records fit the file. Throws Failure(kBundleCorrupt).
void check_program_head(const uint8_t* head, size_t head_size, uint64_t file_size, const std::string& what);

// check_program_head on a file, reading only its first 64 bytes. Throws Failure(kIoError) when it cannot be read.
void check_program_file(const std::string& path, const std::string& what);

}  // namespace edgesdk
