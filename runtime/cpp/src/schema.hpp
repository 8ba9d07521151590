// The bundle manifest's schema (docs/bundle-schema.json, embedded at build time) and the checks a schema cannot
// say, as runtime/schema.py does them: both readers accept and refuse the same manifests (one mutation corpus,
// tests/test_bundle_schema.py, runs through both). Every refusal is Failure(kBundleCorrupt) with one line naming the
// field, e.g. "manifest field components.unet.inputs[0].shape[1]: expected an integer 1..1048576, got -3".
#pragma once

#include <string>

#include "json.hpp"

namespace edgesdk::schema {

// The embedded schema, parsed once (and checked to use only the supported keywords).
const json::Value& bundle_schema();

// Types, required keys and bounds of the whole manifest against the schema.
void validate_manifest(const json::Value& manifest);

// Cross-field rules after validate_manifest: dynamic ranges, static batches inside them, backends with files,
// tensor names unique and sizes bounded, shapes that agree with the model section.
void check_consistency(const json::Value& manifest);

// The asset files (paths already checked to stay inside `root`): .npy headers before any data (a dtype the runtime
// reads, C order, a file exactly as long as the shape says), the token table (vocab, text_width) float32, the noise
// schedule (train_timesteps,) of finite values in (0, 1), JSON assets of a bounded size.
void check_assets(const std::string& root, const json::Value& manifest);

}  // namespace edgesdk::schema
