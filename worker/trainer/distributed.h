// Process-group setup from torchrun's environment and the bucketed gradient
// all-reduce that overlaps backward.
#ifndef DCVLR_WORKER_TRAINER_DISTRIBUTED_H_
#define DCVLR_WORKER_TRAINER_DISTRIBUTED_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "worker/trainer/model.h"

namespace dcvlr::trainer {

// torchrun's variables; a process started by hand is rank 0 of 1.
struct DistEnv {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;

  static DistEnv FromEnvironment();
};

// Collectives over a c10d process group (Gloo on CPU, NCCL on CUDA), or
// no-ops for a single process. Created once per process, used from the
// training thread (and from autograd hooks through GradReducer).
class Communicator {
 public:
  // Rendezvous on MASTER_ADDR:MASTER_PORT through a TCPStore; rank 0 hosts it.
  static std::unique_ptr<Communicator> Create(const DistEnv& env,
                                              at::Device device,
                                              std::string* error);
  virtual ~Communicator() = default;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  // In-place sum across ranks; blocks until done.
  virtual void AllReduceSum(at::Tensor& t) = 0;
  // Starts an in-place sum; returns a handle whose Wait() completes it.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void Wait() = 0;
  };
  virtual std::unique_ptr<Pending> AllReduceSumAsync(at::Tensor t) = 0;
  virtual void Broadcast(at::Tensor& t, int root) = 0;
  virtual void Barrier() = 0;

 protected:
  int rank_ = 0;
  int world_size_ = 1;
};

// All-reduces a model's flat gradient buffer in buckets launched from
// autograd hooks: when every parameter of a bucket has its gradient for the
// final micro-step of an optimizer step, the bucket's sum starts while
// backward goes on. Buckets launch in index order on every rank (a
// collective's order must match across ranks).
class GradReducer {
 public:
  GradReducer(const TrainableModel& model, Communicator* comm,
              int64_t bucket_bytes);
  ~GradReducer();

  // Call before each backward; only a final micro-step's backward reduces.
  void Prepare(bool final_micro_step);
  // After a final micro-step's backward: waits for all buckets and averages.
  void Finish();

 private:
  void OnGradReady(int param);
  void LaunchReady();

  struct Bucket {
    int64_t offset, numel;
    int pending = 0;
    int params = 0;
  };
  at::Tensor grads_;
  Communicator* comm_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;                       // parameter -> bucket
  std::vector<std::shared_ptr<void>> accumulators_;  // keeps hooks alive
  std::vector<std::unique_ptr<Communicator::Pending>> inflight_;
  size_t next_bucket_ = 0;
  bool armed_ = false;
};

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_DISTRIBUTED_H_
