// c10d process groups and the gradient reducer; see distributed.h.
#include "worker/trainer/distributed.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdlib>

#include "common/process_contract.h"
#ifdef DCVLR_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/version.h>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DCVLR_WITH_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace dcvlr::trainer {
namespace {

// Since libtorch 2.0 the Gloo and NCCL process groups are c10d Backends
// behind a ProcessGroup facade; before, they were ProcessGroups themselves.
#if TORCH_VERSION_MAJOR >= 2
using PgBase = c10d::Backend;
#else
using PgBase = c10d::ProcessGroup;
#endif

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

class SingleProcess : public Communicator {
 public:
  class Done : public Pending {
   public:
    void Wait() override {}
  };
  void AllReduceSum(at::Tensor&) override {}
  std::unique_ptr<Pending> AllReduceSumAsync(at::Tensor) override {
    return std::make_unique<Done>();
  }
  void Broadcast(at::Tensor&, int) override {}
  void Barrier() override {}
};

class C10dCommunicator : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::Store> store,
                   c10::intrusive_ptr<PgBase> pg, int rank, int world)
      : store_(std::move(store)), pg_(std::move(pg)) {
    rank_ = rank;
    world_size_ = world;
  }

  class Work : public Pending {
   public:
    Work(c10::intrusive_ptr<c10d::Work> w, std::vector<at::Tensor> keep)
        : work_(std::move(w)), keep_(std::move(keep)) {}
    void Wait() override { work_->wait(); }

   private:
    c10::intrusive_ptr<c10d::Work> work_;
    std::vector<at::Tensor> keep_;  // the tensors must outlive the collective
  };

  void AllReduceSum(at::Tensor& t) override { AllReduceSumAsync(t)->Wait(); }

  std::unique_ptr<Pending> AllReduceSumAsync(at::Tensor t) override {
    std::vector<at::Tensor> tensors{t};
    auto work = pg_->allreduce(tensors);
    return std::make_unique<Work>(std::move(work), std::move(tensors));
  }

  void Broadcast(at::Tensor& t, int root) override {
    std::vector<at::Tensor> tensors{t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    pg_->broadcast(tensors, opts)->wait();
  }

  void Barrier() override {
    // A one-element all-reduce rather than c10d's barrier, whose NCCL flavour
    // guesses a device from the rank.
    auto t = at::zeros({1}, device_options_);
    AllReduceSum(t);
    t.cpu();
  }

  at::TensorOptions device_options_ = at::TensorOptions(at::kFloat);

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<PgBase> pg_;
};

}  // namespace

DistEnv DistEnv::FromEnvironment() {
  DistEnv e;
  e.rank = EnvInt(contract::kRank, 0);
  e.world_size = EnvInt(contract::kWorldSize, 1);
  e.local_rank = EnvInt(contract::kLocalRank, e.rank);
  e.local_world_size = EnvInt(contract::kLocalWorldSize, e.world_size);
  if (const char* a = std::getenv(contract::kMasterAddr); a && *a)
    e.master_addr = a;
  e.master_port = EnvInt(contract::kMasterPort, 29500);
  return e;
}

std::unique_ptr<Communicator> Communicator::Create(const DistEnv& env,
                                                   at::Device device,
                                                   std::string* error) {
  if (env.world_size <= 1) return std::make_unique<SingleProcess>();
  try {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(env.master_port);
    opts.isServer = env.rank == 0;
    opts.numWorkers = env.world_size;
    opts.waitWorkers = true;
    opts.timeout = std::chrono::seconds(300);
    auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
    c10::intrusive_ptr<PgBase> pg;
    if (device.is_cuda()) {
#ifdef DCVLR_WITH_CUDA
      auto nopts = c10d::ProcessGroupNCCL::Options::create();
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank,
                                                       env.world_size, nopts);
#else
      *error = "CUDA device without NCCL support in this build";
      return nullptr;
#endif
    } else {
#ifndef DCVLR_WITH_GLOO
      *error = "CPU ranks need Gloo, which this build lacks";
      return nullptr;
#else
      auto gopts = c10d::ProcessGroupGloo::Options::create();
      gopts->timeout = std::chrono::seconds(300);
      // Loopback for a single machine; otherwise the interface that routes
      // to the master, which is what torchrun's default does.
      const bool local = env.world_size == env.local_world_size;
      gopts->devices.push_back(
          local ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                : c10d::ProcessGroupGloo::createDefaultDevice());
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank,
                                                       env.world_size, gopts);
#endif
    }
    auto comm =
        std::make_unique<C10dCommunicator>(store, pg, env.rank, env.world_size);
    comm->device_options_ = at::TensorOptions(at::kFloat).device(device);
    return comm;
  } catch (const std::exception& e) {
    *error = std::string("rendezvous at ") + env.master_addr + ":" +
             std::to_string(env.master_port) + " failed: " + e.what();
    return nullptr;
  }
}

GradReducer::GradReducer(const TrainableModel& model, Communicator* comm,
                         int64_t bucket_bytes)
    : grads_(model.flat_grads()), comm_(comm) {
  const auto& params = model.parameters();
  bucket_of_.assign(params.size(), -1);
  if (comm_->world_size() <= 1) return;
  // Parameters in flat-buffer order (reverse registration), cut into buckets.
  std::vector<int> order(params.size());
  for (size_t i = 0; i < params.size(); ++i)
    order[i] = int(params.size() - 1 - i);
  const int64_t cap =
      std::max<int64_t>(1, bucket_bytes / int64_t(sizeof(float)));
  for (int p : order) {
    const int64_t n = params[p].tensor.numel();
    if (buckets_.empty() || buckets_.back().numel >= cap)
      buckets_.push_back({params[p].offset, 0});
    Bucket& b = buckets_.back();
    b.numel = params[p].offset + n - b.offset;
    b.params++;
    bucket_of_[p] = int(buckets_.size()) - 1;
  }
  // Hooks on each parameter's gradient accumulator run once its gradient has
  // been added into the flat buffer for this backward.
  for (size_t p = 0; p < params.size(); ++p) {
    auto acc = torch::autograd::impl::grad_accumulator(params[p].tensor);
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, p](const torch::autograd::variable_list& outputs,
                  const torch::autograd::variable_list&) {
          OnGradReady(int(p));
          return outputs;
        }));
    accumulators_.push_back(std::move(acc));
  }
}

GradReducer::~GradReducer() = default;

void GradReducer::Prepare(bool final_micro_step) {
  armed_ = final_micro_step && !buckets_.empty();
  next_bucket_ = 0;
  inflight_.clear();
  for (Bucket& b : buckets_) b.pending = b.params;
}

void GradReducer::OnGradReady(int param) {
  if (!armed_) return;
  buckets_[bucket_of_[param]].pending--;
  LaunchReady();
}

void GradReducer::LaunchReady() {
  while (next_bucket_ < buckets_.size() &&
         buckets_[next_bucket_].pending <= 0) {
    const Bucket& b = buckets_[next_bucket_++];
    inflight_.push_back(
        comm_->AllReduceSumAsync(grads_.narrow(0, b.offset, b.numel)));
  }
}

void GradReducer::Finish() {
  if (!armed_) return;
  // Parameters that took no part in this backward still need their bucket
  // reduced, in the same order on every rank.
  for (Bucket& b : buckets_) b.pending = 0;
  LaunchReady();
  for (auto& w : inflight_) w->Wait();
  inflight_.clear();
  c10::NoGradGuard no_grad;
  grads_.div_(double(comm_->world_size()));
  armed_ = false;
}

}  // namespace dcvlr::trainer
