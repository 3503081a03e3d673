// Checkpoints: `step-N/` directories under the checkpoint dir holding
//   model.safetensors      fp32 weights, Hugging Face names (rank 0)
//   optimizer.safetensors  AdamW moments, flat (rank 0)
//   trainer_state.json     step, schedule, data position, config echo (rank 0)
//   rank-K.json            each rank's data cursor and RNG state
//   COMMIT                 written last by rank 0, renamed into place
// A directory without COMMIT is incomplete and ignored (and replaced when the
// same step is saved again). After a commit, rank 0 prunes to the newest K.
#ifndef DCVLR_WORKER_TRAINER_CHECKPOINT_H_
#define DCVLR_WORKER_TRAINER_CHECKPOINT_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "worker/trainer/distributed.h"
#include "worker/trainer/model.h"
#include "worker/trainer/optimizer.h"

namespace dcvlr::trainer {

class CheckpointManager {
 public:
  // `keep_last` <= 0 keeps every checkpoint. All ranks construct one and call
  // Save together (it synchronizes through `comm`).
  CheckpointManager(std::string dir, int keep_last, Communicator* comm);

  bool Save(int64_t step, const TrainableModel& model, FlatAdamW& optimizer,
            const nlohmann::json& trainer_state,
            const nlohmann::json& rank_state, std::string* error);

  // The newest complete checkpoint's step, or -1 if there is none.
  int64_t LatestComplete() const;

  // Restores weights and optimizer state in place and returns the JSON
  // states. The rank file is this rank's (world size must match).
  bool Load(int64_t step, TrainableModel* model, FlatAdamW* optimizer,
            nlohmann::json* trainer_state, nlohmann::json* rank_state,
            std::string* error) const;

  std::string StepDir(int64_t step) const;

 private:
  void Prune() const;

  std::string dir_;
  int keep_last_;
  Communicator* comm_;
};

// The default CPU generator's state as base64, and back.
std::string SaveCpuRngState();
bool RestoreCpuRngState(const std::string& encoded);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_CHECKPOINT_H_
