// Coordinator core benchmark: what the jobs a coordinator has finished cost
// the work it repeats.
//
// A lab's coordinator keeps every job it ever ran (ListJobs, GetJob, logs).
// This drives the real Core (SQLite store in a temporary directory, the lab
// policy) with that history: --finished ended jobs in the store when it
// starts, 16 nodes x 8 GPUs busy with 128 running one-GPU jobs, and
// --pending jobs waiting. Then, with nothing changing, it times
//
//   tick      Core::Tick(), run by the daemon every 200 ms and after every
//             change: node liveness, time limits, usage, dependencies, a
//             scheduling pass;
//   snapshot  Core::Snapshot(50), what every Prometheus scrape reads;
//   list      ListJobs with limit 50, what `dcvlrctl list` asks for;
//   list live ListJobs of pending, scheduled and running jobs, what
//             `dcvlrctl top` asks for at every refresh;
//   by name   GetJob of a name no job has (a typo), which reads every job.
//
//   core_tick_bench [--finished=0,10000,100000] [--pending=500] [--ticks=300]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "coordinator/core.h"
#include "coordinator/scheduler.h"
#include "coordinator/store.h"

namespace dcvlr {
namespace {

constexpr int kNodes = 16;
constexpr int kGpusPerNode = 8;

class NullChannel : public AgentChannel {
 public:
  void Send(const v1::CoordinatorMessage&) override {}
  void Close() override {}
};

// A job as the store holds it: a train job's spec (its worker config is
// the bulk of it), submitted, scheduled, run and ended.
v1::Job MakeJob(int64_t seq, int64_t now_ms, bool ended) {
  v1::Job job;
  job.set_id(absl::StrCat("j-", seq));
  job.set_user(absl::StrCat("user", seq % 16));
  job.set_source_name("train.yaml");
  job.set_submit_time_ms(now_ms - 3'600'000);
  v1::JobSpec* spec = job.mutable_spec();
  spec->set_name(absl::StrCat("sweep-lr-", seq));
  spec->set_kind(v1::JOB_KIND_COMMAND);
  spec->add_command("true");
  spec->set_priority(50);
  spec->set_time_limit_s(ended ? 0 : 86'400);
  spec->mutable_resources()->set_nodes(1);
  spec->mutable_resources()->set_gpus_per_node(1);
  spec->set_worker_config_json(
      R"({"model":{"model_name":"tiny-vlm"},"data":{"train":{"datasets":[)"
      R"({"dataset_name":"synthetic_shapes","dataset_kwargs":{"split":"train",)"
      R"("num_samples":4000}}]}},"training":{"learning_rate":0.001,)"
      R"("max_steps":300,"per_device_train_batch_size":16,"seed":7}})");
  auto event = [&](v1::EventType type, const std::string& message) {
    v1::JobEvent* e = job.add_events();
    e->set_time_ms(now_ms - 3'000'000);
    e->set_type(type);
    e->set_message(message);
  };
  event(v1::EVENT_TYPE_SUBMITTED, "submitted by user from train.yaml");
  if (!ended) {
    job.set_state(v1::JOB_STATE_PENDING);
    return job;
  }
  job.set_attempt(1);
  v1::Attempt* attempt = job.add_attempts();
  attempt->set_number(1);
  attempt->set_scheduled_ms(now_ms - 3'000'000);
  v1::Placement* p = attempt->add_placements();
  p->set_node(absl::StrCat("gpu", seq % kNodes));
  p->add_gpus(int(seq % kGpusPerNode));
  event(v1::EVENT_TYPE_SCHEDULED, "attempt 1 on gpu0[3]");
  event(v1::EVENT_TYPE_STARTED, "attempt 1 running");
  event(v1::EVENT_TYPE_SUCCEEDED, "attempt 1 exited 0");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  job.set_end_time_ms(now_ms - 60'000);
  return job;
}

struct Stats {
  double p50_us = 0, p99_us = 0, cpu_p50_us = 0;
};

template <typename F>
Stats Time(int rounds, F&& f) {
  std::vector<double> wall, cpu;
  for (int i = 0; i < rounds; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = bench::ThreadCpuMs();
    f();
    cpu.push_back((bench::ThreadCpuMs() - c0) * 1e3);
    wall.push_back(std::chrono::duration<double, std::micro>(
                       std::chrono::steady_clock::now() - t0)
                       .count());
  }
  return {bench::Percentile(wall, 0.5), bench::Percentile(wall, 0.99),
          bench::Percentile(cpu, 0.5)};
}

int Run(int64_t finished, int pending, int ticks) {
  char tmpl[] = "/tmp/dcvlr-core-bench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  int64_t now_ms = 1'800'000'000'000;
  {
    auto store = Store::Open(dir + "/state.db");
    if (!store.ok()) {
      fprintf(stderr, "%s\n", store.status().ToString().c_str());
      return 1;
    }
    std::vector<v1::Job> jobs;
    const int64_t total = finished + kNodes * kGpusPerNode + pending;
    for (int64_t seq = 1; seq <= total; ++seq) {
      jobs.push_back(MakeJob(seq, now_ms, seq <= finished));
      if (jobs.size() == 10'000 || seq == total) {
        if (absl::Status s = (*store)->PutJobs(jobs); !s.ok()) {
          fprintf(stderr, "%s\n", s.ToString().c_str());
          return 1;
        }
        jobs.clear();
      }
    }
  }
  CoreOptions options;
  options.now_ms = [&now_ms] { return now_ms; };
  LogStore logs(dir + "/logs");
  auto store = Store::Open(dir + "/state.db");
  Core core(options, *std::move(store), &logs, std::make_unique<LabPolicy>());
  if (absl::Status s = core.Recover(); !s.ok()) {
    fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<int64_t> sessions;
  for (int n = 0; n < kNodes; ++n) {
    v1::RegisterRequest request;
    request.set_name(absl::StrCat("gpu", n));
    for (int g = 0; g < kGpusPerNode; ++g) request.add_gpus()->set_index(g);
    auto session = core.RegisterAgent(request, "127.0.0.1",
                                      std::make_shared<NullChannel>());
    if (!session.ok()) {
      fprintf(stderr, "%s\n", session.status().ToString().c_str());
      return 1;
    }
    sessions.push_back(*session);
  }
  core.Tick();  // places the first 128 pending jobs; the rest wait
  auto heartbeat = [&] {
    now_ms += 200;
    for (int n = 0; n < kNodes; ++n)
      core.OnHeartbeat(absl::StrCat("gpu", n), sessions[n]);
  };
  int changed = 0;
  const Stats tick = Time(ticks, [&] {
    heartbeat();
    changed += core.Tick();
  });
  size_t active = 0;
  const Stats snapshot =
      Time(ticks, [&] { active += core.Snapshot(50).active.size(); });
  v1::ListJobsRequest list_request;
  list_request.set_limit(50);
  size_t listed = 0;
  const Stats list =
      Time(ticks, [&] { listed += core.ListJobs(list_request).size(); });
  v1::ListJobsRequest live_request;
  for (v1::JobState state : {v1::JOB_STATE_PENDING, v1::JOB_STATE_SCHEDULED,
                             v1::JOB_STATE_RUNNING}) {
    live_request.add_states(state);
  }
  size_t live = 0;
  const Stats list_live =
      Time(ticks, [&] { live += core.ListJobs(live_request).size(); });
  int missing = 0;
  const Stats by_name = Time(std::min(ticks, 50), [&] {
    missing += !core.GetJob("no-such-job").ok();
  });
  auto row = [](const char* what, const Stats& s) {
    printf("  %-9s p50 %9.1f us   p99 %9.1f us   cpu p50 %9.1f us\n", what,
           s.p50_us, s.p99_us, s.cpu_p50_us);
  };
  printf("finished=%lld running=%d pending=%d\n", (long long)finished,
         kNodes * kGpusPerNode, pending);
  row("tick", tick);
  row("snapshot", snapshot);
  row("list", list);
  row("list live", list_live);
  row("by name", by_name);
  // What the loops saw, so a broken setup shows: nothing changes, 128
  // attempts run, 50 jobs listed, every live job listed, no job is called
  // "no-such-job".
  printf(
      "  checks: ticks that changed=%d active/snapshot=%zu listed/call=%zu "
      "live/call=%zu missing=%d/%d\n",
      changed, active / ticks, listed / ticks, live / ticks, missing,
      std::min(ticks, 50));
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace dcvlr

int main(int argc, char** argv) {
  std::vector<int64_t> finished = {0, 10'000, 100'000};
  int pending = 500, ticks = 300;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    bool ok = true;
    if (absl::StartsWith(arg, "--finished=")) {
      finished.clear();
      for (absl::string_view v :
           absl::StrSplit(arg.substr(11), ',', absl::SkipEmpty())) {
        int64_t n = 0;
        ok = ok && absl::SimpleAtoi(v, &n) && n >= 0;
        finished.push_back(n);
      }
    } else if (absl::StartsWith(arg, "--pending=")) {
      ok = absl::SimpleAtoi(arg.substr(10), &pending) && pending >= 0;
    } else if (absl::StartsWith(arg, "--ticks=")) {
      ok = absl::SimpleAtoi(arg.substr(8), &ticks) && ticks > 0;
    } else {
      ok = false;
    }
    if (!ok) {
      fprintf(stderr,
              "core_tick_bench: bad argument '%s'\nusage: core_tick_bench "
              "[--finished=N,N,...] [--pending=N] [--ticks=N]\n",
              argv[i]);
      return 2;
    }
  }
  for (int64_t n : finished) {
    if (int rc = dcvlr::Run(n, pending, ticks); rc != 0) return rc;
  }
  return 0;
}
