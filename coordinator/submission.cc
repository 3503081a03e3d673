#include "coordinator/submission.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace dcvlr {
namespace {

const v1::Job* FindJob(const SubmitContext& context, const std::string& ref) {
  for (auto it = context.earlier.rbegin(); it != context.earlier.rend(); ++it) {
    if (it->spec().name() == ref || it->id() == ref) return &*it;
  }
  return context.jobs.Resolve(ref, context.user);
}

// An eval job's model.from: the train job whose checkpoints it scores.
void ResolveModelFrom(const ParsedJobFile& file, const SubmitContext& context,
                      nlohmann::json& config, v1::JobSpec& spec,
                      std::vector<std::string>* errors) {
  const std::string ref = config["model"]["from"].get<std::string>();
  const v1::Job* dep = FindJob(context, ref);
  const std::string where = file.Where("model.from");
  if (dep == nullptr) {
    errors->push_back(
        absl::StrCat(where, ": no job with id or name '", ref, "'"));
  } else if (dep->spec().kind() != v1::JOB_KIND_TRAIN) {
    errors->push_back(absl::StrCat(where, ": job ", dep->id(), " ('",
                                   dep->spec().name(),
                                   "') is not a train job"));
  } else if (dep->spec().launcher() == v1::LAUNCHER_TORCHRUN_OUMI) {
    errors->push_back(absl::StrCat(
        where, ": job ", dep->id(),
        " trains with Oumi, whose checkpoints dcvlr-eval does not read; "
        "score it with a command job (configs/eval/vlmevalkit.yaml)"));
  } else if (dep->spec().checkpoint_dir().empty()) {
    errors->push_back(absl::StrCat(
        where, ": job ", dep->id(),
        " checkpoints to its node's local disk, which other nodes cannot "
        "read; give it checkpoint_dir:, or start the coordinator with "
        "--checkpoint-root (or checkpoint_root in the cluster config)"));
  } else {
    config["model"] = {{"checkpoint", dep->spec().checkpoint_dir()},
                       {"from_job", dep->id()}};
    if (std::find(spec.after().begin(), spec.after().end(), dep->id()) ==
        spec.after().end()) {
      spec.add_after(dep->id());
    }
  }
}

// An eval job's benchmarks named without a path: the coordinator's.
void ResolveBenchmarks(const ParsedJobFile& file,
                       const BenchmarkRegistry& benchmarks,
                       nlohmann::json& config,
                       std::vector<std::string>* errors) {
  std::vector<std::string> known;
  for (const auto& [name, entry] : benchmarks) known.push_back(name);
  int i = 0;
  for (nlohmann::json& benchmark : config["benchmarks"]) {
    const std::string name = benchmark["name"].get<std::string>();
    if (!benchmark.contains("path")) {
      auto it = benchmarks.find(name);
      if (it == benchmarks.end()) {
        errors->push_back(absl::StrCat(
            file.Where(absl::StrCat("benchmarks[", i, "]")),
            ": unknown benchmark '", name,
            "'; known: ", absl::StrJoin(known, ", "),
            " (the coordinator's --benchmarks file), or give a TSV path"));
      } else {
        benchmark.update(it->second);
      }
    }
    ++i;
  }
}

void ResolveEval(const ParsedJobFile& file, const SubmitContext& context,
                 v1::JobSpec& spec, std::vector<std::string>* errors) {
  nlohmann::json config =
      nlohmann::json::parse(spec.worker_config_json(), nullptr, false);
  if (!config.is_object()) return;  // the parser wrote it; cannot happen
  if (config.contains("model") && config["model"].contains("from")) {
    ResolveModelFrom(file, context, config, spec, errors);
  }
  if (config.contains("benchmarks")) {
    ResolveBenchmarks(file, context.benchmarks, config, errors);
  }
  spec.set_worker_config_json(config.dump());
}

}  // namespace

absl::Status ResolveSpec(const ParsedJobFile& file,
                         const SubmitContext& context, v1::JobSpec& spec) {
  std::vector<std::string> errors;
  // `after:` names jobs by id or name; store ids.
  std::vector<std::string> resolved;
  for (int i = 0; i < spec.after_size(); ++i) {
    const v1::Job* dep = FindJob(context, spec.after(i));
    if (dep == nullptr) {
      errors.push_back(absl::StrCat(file.Where(absl::StrCat("after[", i, "]")),
                                    ": no job with id or name '", spec.after(i),
                                    "'"));
    } else {
      resolved.push_back(dep->id());
    }
  }
  spec.clear_after();
  for (const std::string& id : resolved) spec.add_after(id);
  if (spec.kind() == v1::JOB_KIND_EVAL)
    ResolveEval(file, context, spec, &errors);

  // Only a cluster that has nodes can say a job is too big for it.
  const auto& res = spec.resources();
  const NodeRegistry::Fit fit = context.nodes.Capacity(res.gpus_per_node());
  if (!context.nodes.empty() && res.gpus_per_node() > fit.largest) {
    errors.push_back(absl::StrCat(
        file.Where("resources.gpus_per_node"), ": ", res.gpus_per_node(),
        " GPUs per node asked for, but the largest node has ", fit.largest));
  } else if (!context.nodes.empty() && fit.fitting < res.nodes()) {
    errors.push_back(absl::StrCat(
        file.Where("resources.nodes"), ": ", res.nodes(), " nodes with ",
        res.gpus_per_node(), " GPUs each asked for, but the cluster has ",
        fit.fitting));
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  }
  return absl::OkStatus();
}

absl::Status SubmitLimiter::Admit(const ClusterConfig& config,
                                  const std::string& user, int64_t jobs,
                                  int64_t live, int64_t now_ms) {
  const UserConfig& limits = config.User(user);
  const int64_t max_pending = limits.max_pending_jobs >= 0
                                  ? limits.max_pending_jobs
                                  : config.max_pending_jobs;
  if (max_pending > 0) {
    const int64_t pending = live + in_flight(user);
    if (pending + jobs > max_pending) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "user ", user, " has ", pending, " jobs that have not ended; ",
          "the cluster allows ", max_pending,
          " (submit_limits.max_pending_jobs): wait for some to end or "
          "cancel them"));
    }
  }
  const double rate = config.submit_jobs_per_s;
  if (rate > 0) {
    const double burst =
        config.submit_burst > 0 ? config.submit_burst : 10 * rate;
    auto [it, added] = buckets_.try_emplace(user);
    Bucket& bucket = it->second;
    if (added) {
      bucket.tokens = burst;
    } else {
      bucket.tokens = std::min(
          burst, bucket.tokens + static_cast<double>(now_ms - bucket.at_ms) *
                                     rate / 1000.0);
    }
    bucket.at_ms = now_ms;
    if (static_cast<double>(jobs) > burst) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "a file of ", jobs, " jobs is more than the ", burst,
          " jobs one user may submit at once (submit_limits.burst)"));
    }
    if (bucket.tokens < static_cast<double>(jobs)) {
      const double wait_s = (static_cast<double>(jobs) - bucket.tokens) / rate;
      return absl::ResourceExhaustedError(absl::StrCat(
          "user ", user, ": submit rate limit of ", rate, " jobs/s (burst ",
          burst, ", submit_limits) reached; retry in ", absl::SixDigits(wait_s),
          " s"));
    }
    bucket.tokens -= static_cast<double>(jobs);
  }
  in_flight_[user] += jobs;
  return absl::OkStatus();
}

void SubmitLimiter::Finish(const std::string& user, int64_t jobs) {
  auto it = in_flight_.find(user);
  if (it != in_flight_.end() && (it->second -= jobs) <= 0) {
    in_flight_.erase(it);
  }
}

int64_t SubmitLimiter::in_flight(const std::string& user) const {
  auto it = in_flight_.find(user);
  return it == in_flight_.end() ? 0 : it->second;
}

}  // namespace dcvlr
