// Bounds on what one command may read, allocate or loop over: the C++ mirror of runtime/limits.py (keep the two in
// step). Each is far above real use and far below what would exhaust a phone; a refusal names the option and limit.
#pragma once

#include <cstdint>

namespace edgesdk::limits {

constexpr int kMaxThreadsPerCpu = 4;            // oversubscription is legal; 100 000 threads hang the machine
constexpr int64_t kMaxDirections = 1024;        // ZO directions n per step
constexpr int64_t kMaxDraws = 256;
constexpr int64_t kMaxVectors = 64;             // embedding vectors of one learned token
constexpr int64_t kMaxSteps = 10000000;         // optimizer steps
constexpr int64_t kMaxDenoiseSteps = 1000;      // a schedule's training timesteps
constexpr int64_t kMaxImages = 4096;            // images one command generates or reads
constexpr int64_t kMaxPromptChars = 10000;
constexpr int64_t kMaxTokens = 1024;            // a text encoder's positions (the schema's bound on model.max_tokens)
constexpr double kMaxTimeBudgetS = 365.0 * 24 * 3600;
constexpr int64_t kMaxImagePixels = int64_t(64) * 1024 * 1024;      // one decoded image
constexpr int64_t kMaxImageFileBytes = int64_t(256) * 1024 * 1024;
constexpr int64_t kMaxArrayFileBytes = int64_t(2) * 1024 * 1024 * 1024;  // a learned token, a checkpoint
// one bundle asset (token table, schedule, vocabulary): SD-1.5's largest is 152 MB. Checked before hashing, which
// would otherwise read a hostile multi-GB (sparse) file to the end before anything else could refuse it.
constexpr int64_t kMaxAssetFileBytes = int64_t(2) * 1024 * 1024 * 1024;
constexpr int64_t kMaxReadBytes = int64_t(64) * 1024 * 1024 * 1024;  // any one file read whole (bundle files too)

}  // namespace edgesdk::limits
