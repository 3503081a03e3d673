// Loading a dcvlr-train checkpoint for inference: which step directory, the
// model configuration it was trained with (trainer_state.json's "model"
// echo), and its safetensors weights.
#ifndef DCVLR_WORKER_EVAL_MODEL_LOADER_H_
#define DCVLR_WORKER_EVAL_MODEL_LOADER_H_

#include <cstdint>
#include <string>

#include "worker/trainer/model.h"
#include "worker/trainer/presets.h"

namespace dcvlr::eval {

// `path` is either one step directory (holding model.safetensors) or a
// checkpoint root holding step-N/ directories, of which the newest with a
// COMMIT marker is taken. A step directory without COMMIT is an error (its
// files may be half-written).
bool ResolveCheckpointDir(const std::string& path, std::string* step_dir,
                          std::string* error);

// The model configuration recorded in <step_dir>/trainer_state.json.
bool ReadCheckpointPreset(const std::string& step_dir,
                          trainer::ModelPreset* preset, std::string* error);

// Copies <step_dir>/model.safetensors into `model`. Every model tensor must
// be present as F32 with the model's shape, and the file must hold no other
// tensor; otherwise the error names the tensor and both shapes.
bool LoadModelWeights(const std::string& step_dir, trainer::VlmModel* model,
                      std::string* error);

}  // namespace dcvlr::eval

#endif  // DCVLR_WORKER_EVAL_MODEL_LOADER_H_
