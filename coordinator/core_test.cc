#include "coordinator/core.h"

#include <sqlite3.h>
#include <sys/mount.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "coordinator/store_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dcvlr {
namespace {

using ::testing::HasSubstr;

// Records what the core sends to one agent.
class FakeChannel : public AgentChannel {
 public:
  void Send(const v1::CoordinatorMessage& message) override {
    sent.push_back(message);
  }
  void Close() override { closed = true; }

  std::vector<v1::StartAttempt> Starts() const {
    std::vector<v1::StartAttempt> out;
    for (const auto& m : sent) {
      if (m.has_start()) out.push_back(m.start());
    }
    return out;
  }
  std::vector<v1::StopAttempt> Stops() const {
    std::vector<v1::StopAttempt> out;
    for (const auto& m : sent) {
      if (m.has_stop()) out.push_back(m.stop());
    }
    return out;
  }

  std::vector<v1::CoordinatorMessage> sent;
  bool closed = false;
};

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dcvlr-core-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    logs_ = std::make_unique<LogStore>(dir_ + "/logs");
    core_ = MakeCore();
  }
  void TearDown() override {
    core_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<Core> MakeCore(
      std::shared_ptr<const ClusterConfig> config = nullptr) {
    CoreOptions options;
    options.now_ms = [this] { return now_ms_; };
    options.node_timeout_ms = 10000;
    options.cluster_config = std::move(config);
    // A write waits this long for another connection's lock before it
    // fails (the store-failure tests hold one).
    auto store = Store::Open(dir_ + "/state.db", /*durable=*/true,
                             /*busy_timeout_ms=*/50);
    EXPECT_TRUE(store.ok()) << store.status();
    auto core = std::make_unique<Core>(options, *std::move(store), logs_.get(),
                                       std::make_unique<FirstFitPolicy>());
    EXPECT_TRUE(core->Recover().ok());
    return core;
  }

  std::shared_ptr<FakeChannel> Register(
      const std::string& name, int gpus, int64_t* session,
      std::vector<v1::RunningAttempt> running = {},
      std::vector<int> domains = {}) {
    auto channel = std::make_shared<FakeChannel>();
    v1::RegisterRequest request;
    request.set_name(name);
    for (int i = 0; i < gpus; ++i) {
      v1::Gpu* gpu = request.add_gpus();
      gpu->set_index(i);
      gpu->set_domain(i < static_cast<int>(domains.size()) ? domains[i] : -1);
    }
    for (const auto& r : running) *request.add_running() = r;
    auto result = core_->RegisterAgent(request, "10.0.0.1", channel);
    EXPECT_TRUE(result.ok()) << result.status();
    *session = result.ok() ? *result : 0;
    return channel;
  }

  std::string Submit(const std::string& yaml) {
    auto job = core_->Submit("alice", "job.yaml", yaml, false);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->id() : "";
  }

  v1::JobState StateOf(const std::string& id) {
    auto job = core_->GetJob(id);
    EXPECT_TRUE(job.ok());
    return job.ok() ? job->state() : v1::JOB_STATE_UNSPECIFIED;
  }

  void Report(const std::string& node, int64_t session, const std::string& id,
              int attempt, v1::AttemptUpdate::Phase phase, int exit_code = 0,
              int port = 0) {
    v1::AttemptUpdate update;
    update.set_job_id(id);
    update.set_attempt(attempt);
    update.set_phase(phase);
    update.set_exit_code(exit_code);
    update.set_master_port(port);
    core_->OnAttemptUpdate(node, session, update);
  }

  std::string dir_;
  int64_t now_ms_ = 1'000'000;
  std::unique_ptr<LogStore> logs_;
  std::unique_ptr<Core> core_;
};

constexpr char kOneGpu[] =
    "kind: command\ncommand: [\"true\"]\nresources: {gpus_per_node: 1}\n"
    "retry: {backoff_s: 0}\n";

TEST_F(CoreTest, RunsAJobFromPendingToSucceeded) {
  int64_t session;
  auto channel = Register("n1", 2, &session);
  const std::string id = Submit(kOneGpu);
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_PENDING);

  core_->Tick();
  ASSERT_EQ(channel->Starts().size(), 1u);
  const v1::StartAttempt start = channel->Starts()[0];
  EXPECT_EQ(start.job_id(), id);
  EXPECT_EQ(start.attempt(), 1);
  EXPECT_EQ(start.master_addr(), "10.0.0.1");
  EXPECT_THAT(start.gpus(), ::testing::ElementsAre(0));
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_SCHEDULED);

  Report("n1", session, id, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 29500);
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_RUNNING);
  Report("n1", session, id, 1, v1::AttemptUpdate::PHASE_EXITED, 0);
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(core_->ListNodes()[0].gpus_in_use().empty());
}

TEST_F(CoreTest, GangStartsPeersOnlyAfterRankZeroHasAPort) {
  int64_t s1, s2;
  auto c1 = Register("n1", 1, &s1);
  auto c2 = Register("n2", 1, &s2);
  const std::string id = Submit(
      "kind: command\ncommand: [\"true\"]\n"
      "resources: {nodes: 2, gpus_per_node: 1}\n");
  core_->Tick();
  ASSERT_EQ(c1->Starts().size(), 1u);
  EXPECT_EQ(c1->Starts()[0].node_rank(), 0);
  EXPECT_EQ(c1->Starts()[0].master_port(), 0);
  EXPECT_TRUE(c2->Starts().empty());

  Report("n1", s1, id, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 29500);
  ASSERT_EQ(c2->Starts().size(), 1u);
  EXPECT_EQ(c2->Starts()[0].node_rank(), 1);
  EXPECT_EQ(c2->Starts()[0].num_nodes(), 2);
  EXPECT_EQ(c2->Starts()[0].master_port(), 29500);
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_SCHEDULED);
  Report("n2", s2, id, 1, v1::AttemptUpdate::PHASE_STARTED);
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_RUNNING);

  // One node failing stops the other; the job fails once both are gone.
  Report("n2", s2, id, 1, v1::AttemptUpdate::PHASE_EXITED, 3);
  ASSERT_EQ(c1->Stops().size(), 1u);
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_RUNNING);
  Report("n1", s1, id, 1, v1::AttemptUpdate::PHASE_EXITED, 143);
  auto job = core_->GetJob(id);
  EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job->exit_code(), 3);
  EXPECT_THAT(job->reason(), HasSubstr("exited with code 3 on n2"));
}

TEST_F(CoreTest, ExitSeventyFiveRequeuesAfterBackoff) {
  int64_t session;
  auto channel = Register("n1", 1, &session);
  const std::string id = Submit(
      "kind: command\ncommand: [\"true\"]\nresources: {gpus_per_node: 1}\n"
      "retry: {max_attempts: 2, backoff_s: 5}\n");
  core_->Tick();
  Report("n1", session, id, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  Report("n1", session, id, 1, v1::AttemptUpdate::PHASE_EXITED, 75);
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_PENDING);
  core_->Tick();
  EXPECT_EQ(channel->Starts().size(), 1u) << "backoff not honoured";
  now_ms_ += 5000;
  core_->Tick();
  ASSERT_EQ(channel->Starts().size(), 2u);
  EXPECT_EQ(channel->Starts()[1].attempt(), 2);
  Report("n1", session, id, 2, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  Report("n1", session, id, 2, v1::AttemptUpdate::PHASE_EXITED, 75);
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_FAILED);  // attempts spent
}

TEST_F(CoreTest, UserFailureIsRetriedOnlyOnFailureTimes) {
  int64_t session;
  auto channel = Register("n1", 1, &session);
  const std::string id = Submit(
      "kind: command\ncommand: [\"false\"]\n"
      "retry: {max_attempts: 5, on_failure: 1, backoff_s: 0}\n");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    core_->Tick();
    Report("n1", session, id, attempt, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
    Report("n1", session, id, attempt, v1::AttemptUpdate::PHASE_EXITED, 1);
  }
  auto job = core_->GetJob(id);
  EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job->attempt(), 2);
  EXPECT_EQ(job->exit_code(), 1);
}

TEST_F(CoreTest, LostNodeRequeuesItsAttemptOnAnotherNode) {
  int64_t s1, s2;
  auto c1 = Register("n1", 1, &s1);
  const std::string id = Submit(kOneGpu);
  core_->Tick();
  Report("n1", s1, id, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  auto c2 = Register("n2", 1, &s2);
  core_->OnAgentDisconnected("n1", s1);
  now_ms_ += 5000;
  core_->OnHeartbeat("n2", s2);
  core_->Tick();
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_RUNNING) << "lost before the timeout";
  now_ms_ += 5001;
  core_->OnHeartbeat("n2", s2);
  core_->Tick();  // n1 lost: requeued
  core_->Tick();  // and placed again
  ASSERT_EQ(c2->Starts().size(), 1u);
  EXPECT_EQ(c2->Starts()[0].attempt(), 2);
  auto job = core_->GetJob(id);
  EXPECT_THAT(job->attempts(0).reason(), HasSubstr("node n1 lost"));
}

TEST_F(CoreTest, CancelOfARunningJobWaitsForItsProcesses) {
  int64_t session;
  auto channel = Register("n1", 1, &session);
  const std::string id = Submit(kOneGpu);
  core_->Tick();
  Report("n1", session, id, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  auto job = core_->Cancel(id, "alice");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_RUNNING);
  ASSERT_EQ(channel->Stops().size(), 1u);
  Report("n1", session, id, 1, v1::AttemptUpdate::PHASE_EXITED, 143);
  job = core_->GetJob(id);
  EXPECT_EQ(job->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job->reason(), "cancelled by alice");
  EXPECT_FALSE(core_->Cancel(id, "alice").ok());
}

TEST_F(CoreTest, OnlyTheOwnerOrAnAdminCancelsAJobAndNamesAreTheCallersOwn) {
  const std::string id = Submit("name: train-a\nkind: command\nrun: x\n");
  auto bobs = core_->Submit("bob", "job.yaml",
                            "name: train-a\nkind: command\nrun: x\n", false);
  ASSERT_TRUE(bobs.ok()) << bobs.status();
  // bob's train-a is newer, but alice's name means her own job.
  auto job = core_->Cancel("train-a", "alice");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->id(), id);
  EXPECT_EQ(StateOf(bobs->id()), v1::JOB_STATE_PENDING);

  auto refused = core_->Cancel(bobs->id(), "alice");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("may cancel only their own jobs"));
  EXPECT_EQ(StateOf(bobs->id()), v1::JOB_STATE_PENDING);
  EXPECT_EQ(core_->GetJob("bob/train-a")->id(), bobs->id());

  auto by_admin = core_->Cancel("bob/train-a", Principal::User("carol", true));
  ASSERT_TRUE(by_admin.ok()) << by_admin.status();
  EXPECT_EQ(by_admin->reason(), "cancelled by carol");
}

TEST_F(CoreTest, APriorityAboveTheUsersCapIsRefusedAtItsKeyButNotForAnAdmin) {
  auto config = std::make_shared<ClusterConfig>();
  config->users["bob"].max_priority = 80;
  core_ = MakeCore(config);
  const std::string yaml = "kind: command\nrun: x\npriority: 90\n";
  auto refused = core_->Submit("alice", "job.yaml", yaml, false);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("job.yaml:3:11: priority: 90 is above 50, the most "
                        "user alice may ask"));
  EXPECT_FALSE(core_->Submit("bob", "job.yaml", yaml, false).ok());
  EXPECT_TRUE(core_
                  ->Submit("bob", "job.yaml",
                           "kind: command\nrun: x\npriority: 80\n", false)
                  .ok());
  EXPECT_TRUE(
      core_->Submit(Principal::User("root", true), "job.yaml", yaml, false)
          .ok());
  EXPECT_TRUE(core_->ListJobs({}).size() == 2u);
}

TEST_F(CoreTest, ASecondLiveAgentOfANameIsRefusedUntilTheFirstFallsSilent) {
  int64_t first;
  auto channel = Register("n1", 2, &first);
  v1::RegisterRequest twin;
  twin.set_name("n1");
  twin.add_gpus()->set_index(0);
  auto refused =
      core_->RegisterAgent(twin, "10.0.0.9", std::make_shared<FakeChannel>());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("node n1 is registered by a live agent at 10.0.0.1"));
  ASSERT_EQ(core_->ListNodes().size(), 1u);
  EXPECT_EQ(core_->ListNodes()[0].gpus_size(), 2);
  EXPECT_FALSE(channel->closed);
  // An agent whose old stream went quiet (cut off, or it restarted before
  // the stream's end was noticed) takes over.
  now_ms_ += 3000;
  auto taken =
      core_->RegisterAgent(twin, "10.0.0.9", std::make_shared<FakeChannel>());
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_NE(*taken, first);
  EXPECT_TRUE(channel->closed);
}

TEST_F(CoreTest, ReportsForAnAttemptPlacedElsewhereAreRefused) {
  int64_t s1, s2;
  Register("n1", 1, &s1);
  auto c2 = Register("n2", 1, &s2);
  const std::string id = Submit(kOneGpu);
  core_->Tick();
  const std::string placed =
      core_->GetJob(id)->attempts(0).placements(0).node();
  const std::string other = placed == "n1" ? "n2" : "n1";
  const int64_t other_session = placed == "n1" ? s2 : s1;
  v1::AttemptUpdate exited;
  exited.set_job_id(id);
  exited.set_attempt(1);
  exited.set_phase(v1::AttemptUpdate::PHASE_EXITED);
  absl::Status s = core_->OnAttemptUpdate(other, other_session, exited);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("was not placed on node " + other));
  EXPECT_EQ(StateOf(id), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(core_->CheckPlaced(placed, id, 2).code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(core_->CheckPlaced(placed, id, 1, 0).ok());
  EXPECT_EQ(core_->CheckPlaced(placed, id, 1, 5).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(CoreTest, StaleAttemptsAreStoppedWhenAnAgentRegisters) {
  int64_t session;
  const std::string id = Submit(kOneGpu);
  v1::RunningAttempt stale;
  stale.set_job_id(id);
  stale.set_attempt(7);
  auto channel = Register("n1", 1, &session, {stale});
  ASSERT_EQ(channel->Stops().size(), 1u);
  EXPECT_EQ(channel->Stops()[0].attempt(), 7);
  // A STARTED report for an attempt that is not current is fenced too.
  Report("n1", session, id, 9, v1::AttemptUpdate::PHASE_STARTED);
  EXPECT_EQ(channel->Stops().size(), 2u);
}

TEST_F(CoreTest, ChecksJobsAgainstTheClusterWithPositions) {
  int64_t session;
  Register("n1", 8, &session);
  auto too_big = core_->Submit("alice", "big.yaml",
                               "kind: command\nrun: x\n"
                               "resources: {gpus_per_node: 16}\n",
                               false);
  ASSERT_FALSE(too_big.ok());
  EXPECT_THAT(std::string(too_big.status().message()),
              HasSubstr("big.yaml:3:28: resources.gpus_per_node: 16 GPUs per "
                        "node asked for, but the largest node has 8"));
  auto too_many = core_->Submit("alice", "many.yaml",
                                "kind: command\nrun: x\n"
                                "resources: {nodes: 2, gpus_per_node: 8}\n",
                                false);
  ASSERT_FALSE(too_many.ok());
  EXPECT_THAT(std::string(too_many.status().message()),
              HasSubstr("many.yaml:3:20: resources.nodes"));
  auto unknown = core_->Submit("alice", "dep.yaml",
                               "kind: command\nrun: x\nafter: [nope]\n", false);
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(
      std::string(unknown.status().message()),
      HasSubstr("dep.yaml:3:9: after[0]: no job with id or name 'nope'"));
  EXPECT_TRUE(core_->ListJobs({}).empty()) << "a rejected job was stored";
  auto dry = core_->Submit("alice", "ok.yaml", kOneGpu, true);
  ASSERT_TRUE(dry.ok());
  EXPECT_TRUE(core_->ListJobs({}).empty()) << "a dry run was stored";
}

TEST_F(CoreTest, DependentJobsWaitAndAreCancelledWhenADependencyFails) {
  int64_t session;
  auto channel = Register("n1", 2, &session);
  const std::string first = Submit("name: prep\n" + std::string(kOneGpu));
  const std::string second = Submit(std::string(kOneGpu) + "after: [prep]\n");
  core_->Tick();
  ASSERT_EQ(channel->Starts().size(), 1u) << "the dependent job started early";
  Report("n1", session, first, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  Report("n1", session, first, 1, v1::AttemptUpdate::PHASE_EXITED, 2);
  core_->Tick();
  auto job = core_->GetJob(second);
  EXPECT_EQ(job->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(job->reason(),
              HasSubstr("dependency " + first + " ended FAILED"));
}

TEST_F(CoreTest, CheckpointRootGivesEveryAttemptTheSameDirectory) {
  CoreOptions options;
  options.now_ms = [this] { return now_ms_; };
  options.checkpoint_root = "/shared/ckpt";
  auto store = Store::Open(dir_ + "/state.db");
  ASSERT_TRUE(store.ok());
  core_ = std::make_unique<Core>(options, *std::move(store), logs_.get(),
                                 std::make_unique<FirstFitPolicy>());
  ASSERT_TRUE(core_->Recover().ok());
  const std::string id = Submit(kOneGpu);
  EXPECT_EQ(core_->GetJob(id)->spec().checkpoint_dir(), "/shared/ckpt/" + id);
  const std::string own =
      Submit(std::string(kOneGpu) + "checkpoint_dir: /mine\n");
  EXPECT_EQ(core_->GetJob(own)->spec().checkpoint_dir(), "/mine");

  auto config = std::make_shared<ClusterConfig>();
  config->checkpoint_root = "/cluster/ckpt";
  core_->SetClusterConfig(config);
  const std::string third = Submit(kOneGpu);
  EXPECT_EQ(core_->GetJob(third)->spec().checkpoint_dir(),
            "/cluster/ckpt/" + third);
}

TEST_F(CoreTest, TimeLimitStopsTheAttemptAndFailsTheJob) {
  int64_t session;
  auto channel = Register("n1", 1, &session);
  const std::string id = Submit(std::string(kOneGpu) + "time_limit_s: 60\n");
  core_->Tick();
  Report("n1", session, id, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  for (int s = 0; s < 59; ++s) {
    now_ms_ += 1000;
    core_->OnHeartbeat("n1", session);
    core_->Tick();
  }
  EXPECT_TRUE(channel->Stops().empty());
  now_ms_ += 1000;
  core_->OnHeartbeat("n1", session);
  core_->Tick();
  ASSERT_EQ(channel->Stops().size(), 1u);
  EXPECT_THAT(channel->Stops()[0].reason(), HasSubstr("time limit"));
  Report("n1", session, id, 1, v1::AttemptUpdate::PHASE_EXITED, 143);
  auto job = core_->GetJob(id);
  EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job->reason(), HasSubstr("over its time limit of 60 s"));
}

TEST_F(CoreTest, PreemptionStopsTheVictimAndPlacesTheUrgentJobOnceFree) {
  auto config = std::make_shared<ClusterConfig>();
  config->preemption = true;
  config->max_priority = 100;
  core_ = MakeCore(config);
  int64_t session;
  auto channel = Register("n1", 1, &session);
  const std::string low = Submit(
      "kind: command\nrun: x\npriority: 10\nresources: {gpus_per_node: 1}\n");
  core_->Tick();
  Report("n1", session, low, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  // The victim reports a checkpoint; the mechanism records it.
  v1::AttemptUpdate checkpoint;
  checkpoint.set_job_id(low);
  checkpoint.set_attempt(1);
  checkpoint.set_phase(v1::AttemptUpdate::PHASE_CHECKPOINT);
  checkpoint.set_checkpoint_step(100);
  core_->OnAttemptUpdate("n1", session, checkpoint);
  EXPECT_EQ(core_->GetJob(low)->attempts(0).last_checkpoint_step(), 100);

  const std::string urgent = Submit(
      "kind: command\nrun: x\npriority: 90\nresources: {gpus_per_node: 1}\n");
  for (int i = 0; i < 5 && channel->Stops().empty(); ++i) {
    now_ms_ += 60000;
    core_->OnHeartbeat("n1", session);
    core_->Tick();
  }
  ASSERT_EQ(channel->Stops().size(), 1u) << "no preemption";
  EXPECT_EQ(channel->Stops()[0].job_id(), low);
  EXPECT_EQ(channel->Starts().size(), 1u) << "placed before the GPU was free";
  Report("n1", session, low, 1, v1::AttemptUpdate::PHASE_EXITED, 75);
  EXPECT_EQ(StateOf(low), v1::JOB_STATE_PENDING);
  core_->Tick();
  ASSERT_EQ(channel->Starts().size(), 2u);
  EXPECT_EQ(channel->Starts()[1].job_id(), urgent);
  auto victim = core_->GetJob(low);
  bool recorded = false;
  for (const auto& event : victim->events()) {
    recorded |=
        event.message().find("preempted for " + urgent) != std::string::npos;
  }
  EXPECT_TRUE(recorded) << victim->DebugString();
}

TEST_F(CoreTest, QueueShowsOrderReasonsAndFairShares) {
  auto config = std::make_shared<ClusterConfig>();
  config->groups["vision"].max_gpus = 1;
  config->users["alice"].group = "vision";
  core_ = MakeCore(config);
  int64_t session;
  Register("n1", 4, &session);
  Submit(kOneGpu);
  const std::string second = Submit(kOneGpu);
  core_->Tick();
  v1::GetQueueResponse queue = core_->Queue();
  ASSERT_EQ(queue.entries_size(), 1);
  EXPECT_EQ(queue.entries(0).job_id(), second);
  EXPECT_EQ(queue.entries(0).user(), "alice");
  EXPECT_THAT(queue.entries(0).reason(),
              HasSubstr("group vision at quota 1/1"));
  EXPECT_THAT(core_->GetJob(second)->reason(), HasSubstr("quota"));
  ASSERT_GE(queue.users_size(), 1);
  EXPECT_EQ(queue.users(0).user(), "alice");
  EXPECT_EQ(queue.users(0).gpus_in_use(), 1);
}

// Passes explain the queue at most once per explain_interval_ms; a pass
// that did not is explained when the queue or a pending job is read.
TEST_F(CoreTest, QueueIsThatOfTheLastPassEvenWhenThePassDidNotExplain) {
  auto config = std::make_shared<ClusterConfig>();
  config->groups["vision"].max_gpus = 1;
  config->users["alice"].group = "vision";
  core_ = MakeCore(config);
  int64_t session;
  Register("n1", 4, &session);
  Submit(kOneGpu);
  core_->Tick();  // places it, and explains: the first pass
  EXPECT_EQ(core_->Queue().entries_size(), 0);

  const std::string second = Submit(kOneGpu);
  now_ms_ += 100;  // within the interval: this pass does not explain
  core_->Tick();
  auto listed = [&](const std::string& id) {
    for (const v1::Job& job : core_->ListJobs({})) {
      if (job.id() == id) return job.reason();
    }
    return std::string("(not listed)");
  };
  EXPECT_EQ(listed(second), "") << "explained before anyone asked";
  EXPECT_THAT(core_->GetJob(second)->reason(), HasSubstr("quota"));
  v1::GetQueueResponse queue = core_->Queue();
  EXPECT_EQ(queue.as_of_ms(), now_ms_);
  ASSERT_EQ(queue.entries_size(), 1);
  EXPECT_EQ(queue.entries(0).job_id(), second);
  EXPECT_THAT(queue.entries(0).reason(), HasSubstr("group vision at quota"));

  // Once the interval has passed, the pass explains by itself.
  const std::string third = Submit(kOneGpu);
  now_ms_ += 1000;
  core_->Tick();
  EXPECT_THAT(listed(third), HasSubstr("quota"));
  queue = core_->Queue();
  EXPECT_EQ(queue.entries_size(), 2);
}

TEST_F(CoreTest, GpusComeFromOneLocalityDomainWhenTheAgentReportsThem) {
  int64_t session;
  auto channel = Register("n1", 8, &session, {}, {0, 0, 0, 0, 1, 1, 1, 1});
  Submit("kind: command\nrun: x\nresources: {gpus_per_node: 3}\n");
  core_->Tick();
  Submit("kind: command\nrun: x\nresources: {gpus_per_node: 2}\n");
  core_->Tick();
  const std::vector<v1::StartAttempt> starts = channel->Starts();
  ASSERT_EQ(starts.size(), 2u);
  std::vector<int> second(starts[1].gpus().begin(), starts[1].gpus().end());
  ASSERT_EQ(second.size(), 2u);
  // GPU 3 is free too, but pairing it with 4 would cross domains.
  EXPECT_GE(second[0], 4);
  EXPECT_GE(second[1], 4);
}

TEST_F(CoreTest, RestartKeepsEveryJobAndItsRunningAttempt) {
  int64_t session;
  auto channel = Register("n1", 2, &session);
  const std::string done = Submit(kOneGpu);
  const std::string running = Submit(kOneGpu);
  const std::string pending =
      Submit("kind: command\nrun: x\nresources: {gpus_per_node: 2}\n");
  core_->Tick();
  Report("n1", session, done, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  Report("n1", session, done, 1, v1::AttemptUpdate::PHASE_EXITED, 0);
  Report("n1", session, running, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);

  core_ = MakeCore();  // the old one's state is gone; only the store remains
  EXPECT_EQ(StateOf(done), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(StateOf(running), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(StateOf(pending), v1::JOB_STATE_PENDING);
  // The agent comes back still running the attempt: it goes on untouched.
  v1::RunningAttempt still;
  still.set_job_id(running);
  still.set_attempt(1);
  auto again = Register("n1", 2, &session, {still});
  EXPECT_TRUE(again->Stops().empty());
  EXPECT_EQ(StateOf(running), v1::JOB_STATE_RUNNING);
  auto nodes = core_->ListNodes();
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].gpus_in_use_size(), 1);
  // New jobs get new ids.
  EXPECT_EQ(Submit(kOneGpu), "j-4");
}

// Ended jobs leave the work that ticks and snapshots repeat, but every
// lookup, count and listing still sees them, before and after a restart.
TEST_F(CoreTest, EndedJobsStayFindableAndCountedButAreNeverScheduled) {
  int64_t session;
  auto channel = Register("n1", 1, &session);
  const std::string sweep = std::string("name: sweep\n") + kOneGpu;
  const std::string first = Submit(sweep);
  core_->Tick();
  Report("n1", session, first, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  Report("n1", session, first, 1, v1::AttemptUpdate::PHASE_EXITED, 0);
  const std::string second = Submit(sweep);
  ASSERT_TRUE(core_->Cancel(second, "alice").ok());
  const std::string third = Submit(sweep);
  core_->Tick();
  Report("n1", session, third, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  const std::string waiting = Submit(kOneGpu);  // the one GPU is taken
  core_->Tick();

  auto ids = [](const std::vector<ClusterSnapshot::JobLabels>& jobs) {
    std::vector<std::string> out;
    for (const auto& job : jobs) out.push_back(job.id);
    return out;
  };
  using State = std::map<v1::JobState, int>;
  ClusterSnapshot snapshot = core_->Snapshot(1);
  EXPECT_EQ(snapshot.jobs_by_state, (State{{v1::JOB_STATE_PENDING, 1},
                                           {v1::JOB_STATE_RUNNING, 1},
                                           {v1::JOB_STATE_SUCCEEDED, 1},
                                           {v1::JOB_STATE_CANCELLED, 1}}));
  EXPECT_THAT(ids(snapshot.active), ::testing::ElementsAre(third));
  EXPECT_THAT(ids(snapshot.recently_ended), ::testing::ElementsAre(second));
  ASSERT_TRUE(core_->GetJob("sweep", "alice").ok());
  EXPECT_EQ(core_->GetJob("sweep", "alice")->id(), third);
  auto listed = [this](std::vector<v1::JobState> states, int limit = 0) {
    v1::ListJobsRequest request;
    for (v1::JobState state : states) request.add_states(state);
    request.set_limit(limit);
    std::vector<std::string> out;
    for (const v1::Job& job : core_->ListJobs(request)) out.push_back(job.id());
    return out;
  };
  EXPECT_THAT(listed({v1::JOB_STATE_PENDING, v1::JOB_STATE_RUNNING}),
              ::testing::ElementsAre(waiting, third));
  EXPECT_THAT(listed({v1::JOB_STATE_PENDING, v1::JOB_STATE_RUNNING}, 1),
              ::testing::ElementsAre(waiting));
  EXPECT_THAT(listed({v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED}),
              ::testing::ElementsAre(third, first));
  EXPECT_THAT(listed({}),
              ::testing::ElementsAre(waiting, third, second, first));

  Report("n1", session, third, 1, v1::AttemptUpdate::PHASE_EXITED, 0);
  core_->Tick();
  std::vector<std::string> started;
  for (const auto& start : channel->Starts()) started.push_back(start.job_id());
  EXPECT_THAT(started, ::testing::ElementsAre(first, third, waiting));
  const State after = {{v1::JOB_STATE_SCHEDULED, 1},
                       {v1::JOB_STATE_SUCCEEDED, 2},
                       {v1::JOB_STATE_CANCELLED, 1}};
  snapshot = core_->Snapshot(10);
  EXPECT_EQ(snapshot.jobs_by_state, after);
  EXPECT_THAT(ids(snapshot.recently_ended),
              ::testing::ElementsAre(third, second, first));

  core_ = MakeCore();  // rebuilt from the store alone
  snapshot = core_->Snapshot(10);
  EXPECT_EQ(snapshot.jobs_by_state, after);
  EXPECT_THAT(ids(snapshot.recently_ended),
              ::testing::ElementsAre(third, second, first));
  ASSERT_TRUE(core_->GetJob("sweep", "alice").ok());
  EXPECT_EQ(core_->GetJob("sweep", "alice")->id(), third);
  v1::RunningAttempt still;
  still.set_job_id(waiting);
  still.set_attempt(1);
  auto again = Register("n1", 1, &session, {still});
  core_->Tick();
  EXPECT_TRUE(again->Starts().empty());
  EXPECT_TRUE(again->Stops().empty());
  EXPECT_EQ(StateOf(first), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(StateOf(second), v1::JOB_STATE_CANCELLED);
}

// Fair-share usage is saved with the passes' charges and reloaded on
// restart: a user who ran for an hour still ranks behind one who did not.
TEST_F(CoreTest, FairShareUsageSurvivesARestart) {
  int64_t session;
  auto channel = Register("n1", 2, &session);
  const std::string first = Submit(kOneGpu);  // alice's
  core_->Tick();
  ASSERT_EQ(channel->Starts().size(), 1u);
  Report("n1", session, first, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  now_ms_ += 3600 * 1000;  // alice holds one GPU for an hour
  core_->OnHeartbeat("n1", session);
  core_->Tick();

  core_ = MakeCore();
  // Both submit; the node is not back yet, so both wait, in fair-share
  // order.
  const std::string alices = Submit(kOneGpu);
  auto bobs = core_->Submit("bob", "job.yaml", kOneGpu, false);
  ASSERT_TRUE(bobs.ok()) << bobs.status();
  now_ms_ += 1000;
  core_->Tick();
  v1::GetQueueResponse queue = core_->Queue();
  ASSERT_EQ(queue.entries_size(), 2);
  EXPECT_EQ(queue.entries(0).job_id(), bobs->id());
  EXPECT_EQ(queue.entries(1).job_id(), alices);
  double alice_usage = -1, alice_factor = 2, bob_factor = -1;
  for (const v1::UserShare& user : queue.users()) {
    if (user.user() == "alice") {
      alice_usage = user.usage_norm();
      alice_factor = user.factor();
    }
    if (user.user() == "bob") bob_factor = user.factor();
  }
  EXPECT_DOUBLE_EQ(alice_usage, 1.0);
  EXPECT_LT(alice_factor, bob_factor);
}

// Usage is written at most once per usage_save_interval_ms: a restart
// within the interval forgets what was charged since the last save, unless
// the coordinator saved it on its way down.
TEST_F(CoreTest, FairShareUsageIsSavedInBatches) {
  int64_t session;
  auto channel = Register("n1", 1, &session);
  const std::string first = Submit(kOneGpu);
  core_->Tick();  // places the job; saves the (empty) usage
  ASSERT_EQ(channel->Starts().size(), 1u);
  now_ms_ += 30 * 1000;  // within the default minute
  core_->OnHeartbeat("n1", session);
  core_->Tick();  // charges 30 GPU-seconds, saves nothing

  core_ = MakeCore();
  auto bobs = core_->Submit("bob", "job.yaml", kOneGpu, false);
  ASSERT_TRUE(bobs.ok());
  core_->Tick();
  v1::GetQueueResponse queue = core_->Queue();
  bool seen = false;
  for (const v1::UserShare& user : queue.users()) {
    if (user.user() == "alice") {
      seen = true;
      EXPECT_DOUBLE_EQ(user.usage_norm(), 0.0);
    }
  }
  EXPECT_TRUE(seen);

  // A clean shutdown saves at once. The agent comes back with alice's job
  // still running and a second GPU, where bob's job starts.
  v1::RunningAttempt still;
  still.set_job_id(first);
  still.set_attempt(1);
  int64_t again;
  auto channel_again = Register("n1", 2, &again, {still});
  core_->Tick();
  ASSERT_EQ(channel_again->Starts().size(), 1u);
  EXPECT_EQ(channel_again->Starts()[0].job_id(), bobs->id());
  now_ms_ += 30 * 1000;
  core_->OnHeartbeat("n1", again);
  ASSERT_TRUE(core_->SaveUsage().ok());

  core_ = MakeCore();
  ASSERT_TRUE(core_->Submit("carol", "job.yaml", kOneGpu, false).ok());
  core_->Tick();
  double alice_usage = 0, bob_usage = 0;
  const v1::GetQueueResponse after = core_->Queue();
  for (const v1::UserShare& user : after.users()) {
    if (user.user() == "alice") alice_usage = user.usage_norm();
    if (user.user() == "bob") bob_usage = user.usage_norm();
  }
  // 30 GPU-seconds each since the last periodic save.
  EXPECT_NEAR(alice_usage, 0.5, 1e-6);
  EXPECT_NEAR(bob_usage, 0.5, 1e-6);
}

}  // namespace
}  // namespace dcvlr

namespace dcvlr {
namespace {

class SubmitFileTest : public CoreTest {
 protected:
  void UseCheckpointRoot() {
    auto config = std::make_shared<ClusterConfig>();
    config->checkpoint_root = "/shared/ckpt";
    core_->SetClusterConfig(config);
  }
};

constexpr char kPipeline[] =
    "name: train\nkind: train\ntraining: {max_steps: 5}\n"
    "---\n"
    "name: score\nkind: eval\nmodel: {from: train}\n"
    "benchmarks: [synthetic_shapes, /data/x.tsv]\n";

TEST_F(SubmitFileTest, PipelineIsSubmittedTogetherAndEvalFindsTheCheckpoint) {
  UseCheckpointRoot();
  auto result = core_->SubmitFile("alice", "p.yaml", kPipeline, false);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->jobs.size(), 2u);
  const v1::Job& train = result->jobs[0];
  const v1::Job& eval = result->jobs[1];
  EXPECT_EQ(train.spec().checkpoint_dir(), "/shared/ckpt/" + train.id());
  // model.from implies after:, and becomes the train job's checkpoint dir.
  EXPECT_THAT(eval.spec().after(), ::testing::ElementsAre(train.id()));
  auto config = nlohmann::json::parse(eval.spec().worker_config_json());
  EXPECT_EQ(config["model"]["checkpoint"], train.spec().checkpoint_dir());
  EXPECT_EQ(config["model"]["from_job"], train.id());
  // Benchmark names become what the registry says.
  EXPECT_EQ(config["benchmarks"][0]["synthetic"]["split"], "test");
  EXPECT_EQ(config["benchmarks"][1]["path"], "/data/x.tsv");
  // Both are stored: a restarted coordinator has them.
  core_ = MakeCore();
  EXPECT_EQ(StateOf(train.id()), v1::JOB_STATE_PENDING);
  EXPECT_EQ(StateOf(eval.id()), v1::JOB_STATE_PENDING);
}

TEST_F(SubmitFileTest, OneBadDocumentSubmitsNothing) {
  UseCheckpointRoot();
  auto result = core_->SubmitFile("alice", "p.yaml",
                                  std::string(kPipeline) +
                                      "---\nname: c\nkind: command\nrun: x\n"
                                      "after: [nope]\n",
                                  false);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(
      std::string(result.status().message()),
      HasSubstr("p.yaml:13:9: after[0]: no job with id or name 'nope'"));
  v1::ListJobsRequest all;
  EXPECT_TRUE(core_->ListJobs(all).empty());
}

TEST_F(SubmitFileTest, EvalErrorsNameTheKey) {
  // Without a shared checkpoint root the train job's checkpoints stay on
  // its node.
  auto local = core_->SubmitFile("alice", "p.yaml", kPipeline, false);
  ASSERT_FALSE(local.ok());
  EXPECT_THAT(std::string(local.status().message()),
              HasSubstr("p.yaml:7:15: model.from: job j-1 checkpoints to its "
                        "node's local disk"));
  UseCheckpointRoot();
  auto unknown = core_->SubmitFile(
      "alice", "e.yaml",
      "kind: eval\nmodel: /ckpt/a\nbenchmarks: [synthetic_shapes, mmmu]\n",
      false);
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr("e.yaml:3:32: benchmarks[1]: unknown benchmark 'mmmu'; "
                        "known: synthetic_shapes"));
  const std::string prep = Submit("name: prep\nkind: command\nrun: x\n");
  auto not_train = core_->SubmitFile(
      "alice", "e.yaml",
      "kind: eval\nmodel: {from: " + prep + "}\nbenchmarks: [/x/a.tsv]\n",
      false);
  ASSERT_FALSE(not_train.ok());
  EXPECT_THAT(std::string(not_train.status().message()),
              HasSubstr("is not a train job"));
  // A registry from --benchmarks knows more names.
  auto registry = ParseBenchmarks(
      "b.yaml", "benchmarks:\n  mmmu: {path: /data/MMMU.tsv}\n");
  ASSERT_TRUE(registry.ok()) << registry.status();
  core_->SetBenchmarks(*registry);
  auto known = core_->SubmitFile(
      "alice", "e.yaml",
      "kind: eval\nmodel: /ckpt/a\nbenchmarks: [synthetic_shapes, mmmu]\n",
      false);
  ASSERT_TRUE(known.ok()) << known.status();
  EXPECT_EQ(
      nlohmann::json::parse(
          known->jobs[0].spec().worker_config_json())["benchmarks"][1]["path"],
      "/data/MMMU.tsv");
}

TEST_F(SubmitFileTest, OumiWarningsComeBackWithTheJob) {
  auto result =
      core_->SubmitFile("alice", "qwen.yaml",
                        "model: {model_name: Qwen/Qwen2.5-VL-7B-Instruct}\n"
                        "training: {save_steps: 0}\n",
                        false, JobFileOptions{.nodes = 2, .gpus_per_node = 8});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->jobs[0].spec().resources().nodes(), 2);
  EXPECT_EQ(result->jobs[0].spec().launcher(), v1::LAUNCHER_TORCHRUN_OUMI);
  ASSERT_EQ(result->warnings.size(), 2u);
  EXPECT_THAT(result->warnings[0], HasSubstr("training.save_steps"));
}

TEST(BenchmarksTest, FileErrorsNameTheKey) {
  auto bad = ParseBenchmarks("b.yaml",
                             "benchmarks:\n  a: {path: rel.tsv}\n"
                             "  b: {synthetic: {split: dev}}\n  c: {}\n");
  ASSERT_FALSE(bad.ok());
  const std::string message(bad.status().message());
  EXPECT_THAT(message, HasSubstr("b.yaml:2:13: benchmarks.a.path: must be an "
                                 "absolute path"));
  EXPECT_THAT(
      message,
      HasSubstr(
          "b.yaml:3:26: benchmarks.b.synthetic.split: expected train or test"));
  EXPECT_THAT(message, HasSubstr("b.yaml:4:6: benchmarks.c: give path"));
  auto defaults = ParseBenchmarks("b.yaml", "");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->count("synthetic_shapes"), 1u);
}

TEST_F(CoreTest, AFailedWriteTurnsTheCoreReadOnlyUntilAWriteSucceeds) {
  int64_t session;
  auto channel = Register("n1", 1, &session);
  const std::string running = Submit(kOneGpu);
  core_->Tick();
  Report("n1", session, running, 1, v1::AttemptUpdate::PHASE_STARTED, 0, 1);
  ASSERT_EQ(StateOf(running), v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(core_->StoreStatus().ok());

  WriteLock lock(dir_ + "/state.db");
  // The submit whose write fails is refused, and never stored later.
  auto refused = core_->Submit("alice", "job.yaml", kOneGpu, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(core_->StoreStatus().ok());
  EXPECT_FALSE(core_->Snapshot().store_healthy);
  // Later changes from clients are refused at once, saying why.
  auto again = core_->Submit("alice", "job.yaml", kOneGpu, false);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(again.status().message(), HasSubstr("read-only"));
  EXPECT_EQ(core_->Cancel(running, "alice").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_FALSE(core_->SetDrained("n1", true).ok());
  EXPECT_EQ(StateOf(running), v1::JOB_STATE_RUNNING);
  // Dry runs need no write.
  EXPECT_TRUE(core_->Submit("alice", "job.yaml", kOneGpu, true).ok());

  // The running job ends meanwhile: applied, kept, and retried each tick.
  Report("n1", session, running, 1, v1::AttemptUpdate::PHASE_EXITED, 0);
  EXPECT_EQ(StateOf(running), v1::JOB_STATE_SUCCEEDED);
  core_->Tick();
  EXPECT_FALSE(core_->StoreStatus().ok());

  lock.Release();
  core_->Tick();
  EXPECT_TRUE(core_->StoreStatus().ok());
  EXPECT_TRUE(core_->Snapshot().store_healthy);
  std::map<std::string, v1::Job> stored = StoredJobs(dir_ + "/state.db");
  ASSERT_EQ(stored.size(), 1u) << "a refused submit was stored";
  EXPECT_EQ(stored[running].state(), v1::JOB_STATE_SUCCEEDED);
  // Writable again.
  const std::string next = Submit(kOneGpu);
  EXPECT_EQ(StoredJobs(dir_ + "/state.db").count(next), 1u);
}

TEST_F(CoreTest, AStartOrderLeavesOnlyOnceItsPlacementIsDurable) {
  int64_t session;
  auto channel = Register("n1", 1, &session);
  const std::string id = Submit(kOneGpu);
  {
    WriteLock lock(dir_ + "/state.db");
    core_->Tick();  // places the job; the write of the placement fails
    EXPECT_FALSE(core_->StoreStatus().ok());
    EXPECT_TRUE(channel->Starts().empty())
        << "a start order left before its placement was written";
    core_->Tick();  // retries, fails again; places nothing new
    EXPECT_TRUE(channel->Starts().empty());
  }
  core_->Tick();
  ASSERT_EQ(channel->Starts().size(), 1u);
  EXPECT_EQ(channel->Starts()[0].job_id(), id);
  EXPECT_EQ(channel->Starts()[0].attempt(), 1);
  v1::Job stored = StoredJobs(dir_ + "/state.db")[id];
  EXPECT_EQ(stored.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(stored.attempt(), 1);
}

TEST_F(CoreTest, AFullFileSystemRefusesChangesAndLosesNothing) {
  // A real full disk: the state directory on a small tmpfs (needs root).
  const std::string mount_dir = dir_ + "/small";
  std::filesystem::create_directories(mount_dir);
  if (mount("tmpfs", mount_dir.c_str(), "tmpfs", 0, "size=512k") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here: " << strerror(errno);
  }
  struct Unmount {
    std::string dir;
    ~Unmount() { umount2(dir.c_str(), MNT_DETACH); }
  } unmount{mount_dir};
  CoreOptions options;
  options.now_ms = [this] { return now_ms_; };
  auto store = Store::Open(mount_dir + "/state.db", true, 50);
  ASSERT_TRUE(store.ok()) << store.status();
  core_ = std::make_unique<Core>(options, *std::move(store), logs_.get(),
                                 std::make_unique<FirstFitPolicy>());
  ASSERT_TRUE(core_->Recover().ok());
  std::vector<std::string> kept;
  for (int i = 0; i < 5; ++i) kept.push_back(Submit(kOneGpu));

  // Fill the file system.
  const std::string filler = mount_dir + "/filler";
  {
    std::ofstream out(filler, std::ios::binary);
    const std::string block(4096, 'x');
    while (out.write(block.data(), block.size())) {
    }
  }
  // Jobs with large specs, until a write does not fit.
  std::string big = std::string(kOneGpu) + "env: {PAD: \"" +
                    std::string(64 * 1024, 'p') + "\"}\n";
  absl::Status failed;
  for (int i = 0; i < 20 && failed.ok(); ++i) {
    auto job = core_->Submit("alice", "big.yaml", big, false);
    if (job.ok())
      kept.push_back(job->id());
    else
      failed = job.status();
  }
  ASSERT_FALSE(failed.ok()) << "the file system never filled";
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_FALSE(core_->StoreStatus().ok());
  EXPECT_FALSE(core_->Cancel(kept[0], "alice").ok());

  std::filesystem::remove(filler);
  core_->Tick();
  EXPECT_TRUE(core_->StoreStatus().ok()) << core_->StoreStatus();
  EXPECT_TRUE(core_->Cancel(kept[0], "alice").ok());
  // Every acknowledged job is stored, and the cancel with it.
  core_.reset();
  std::map<std::string, v1::Job> stored = StoredJobs(mount_dir + "/state.db");
  for (const std::string& id : kept) EXPECT_EQ(stored.count(id), 1u) << id;
  EXPECT_EQ(stored.size(), kept.size());
  EXPECT_EQ(stored[kept[0]].state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(CoreTest, ListJobsPagesByCountAndBySize) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(Submit(kOneGpu));
  // By count: 3, 3, 1, newest first, each page below the last.
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    v1::ListJobsRequest request;
    request.set_limit(3);
    request.set_page_token(token);
    std::vector<v1::Job> page = core_->ListJobs(request, &token);
    EXPECT_LE(page.size(), 3u);
    for (const v1::Job& job : page) seen.push_back(job.id());
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(seen, std::vector<std::string>(ids.rbegin(), ids.rend()));
  EXPECT_EQ(pages, 3);
  // By size: a budget of two and a half jobs gives pages of two.
  const size_t size = core_->GetJob(ids[0])->ByteSizeLong();
  std::vector<v1::Job> page =
      core_->ListJobs(v1::ListJobsRequest(), &token, size * 5 / 2);
  EXPECT_EQ(page.size(), 2u);
  EXPECT_EQ(token, ids[5]);
  // A budget smaller than one job still gives one, so paging goes on.
  page = core_->ListJobs(v1::ListJobsRequest(), &token, 1);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(token, ids[6]);
  // The last page says so.
  v1::ListJobsRequest rest;
  rest.set_page_token(ids[1]);
  page = core_->ListJobs(rest, &token);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].id(), ids[0]);
  EXPECT_TRUE(token.empty());
}

TEST_F(CoreTest, SubmitLimitsBoundPendingJobsPerUser) {
  auto config = std::make_shared<ClusterConfig>();
  config->max_pending_jobs = 3;
  config->users["bob"].max_pending_jobs = 4;
  core_ = MakeCore(config);
  std::vector<std::string> alice;
  for (int i = 0; i < 3; ++i) alice.push_back(Submit(kOneGpu));
  auto refused = core_->Submit("alice", "job.yaml", kOneGpu, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("user alice has 3 jobs that have not ended; the "
                        "cluster allows 3 (submit_limits.max_pending_jobs)"));
  // Dry runs cost nothing; other users have their own bound.
  EXPECT_TRUE(core_->Submit("alice", "job.yaml", kOneGpu, true).ok());
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(core_->Submit("bob", "job.yaml", kOneGpu, false).ok()) << i;
  }
  EXPECT_FALSE(core_->Submit("bob", "job.yaml", kOneGpu, false).ok());
  // A job that ends makes room.
  ASSERT_TRUE(core_->Cancel(alice[0], "alice").ok());
  EXPECT_TRUE(core_->Submit("alice", "job.yaml", kOneGpu, false).ok());
  // The count survives a restart.
  core_ = MakeCore(config);
  EXPECT_FALSE(core_->Submit("alice", "job.yaml", kOneGpu, false).ok());
}

TEST_F(CoreTest, SubmitLimitsBoundTheRatePerUser) {
  auto config = std::make_shared<ClusterConfig>();
  config->submit_jobs_per_s = 1;
  config->submit_burst = 2;
  core_ = MakeCore(config);
  EXPECT_TRUE(core_->Submit("alice", "job.yaml", kOneGpu, false).ok());
  EXPECT_TRUE(core_->Submit("alice", "job.yaml", kOneGpu, false).ok());
  auto refused = core_->Submit("alice", "job.yaml", kOneGpu, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("submit rate limit of 1 jobs/s (burst 2"));
  EXPECT_THAT(refused.status().message(), HasSubstr("retry in 1 s"));
  EXPECT_TRUE(core_->Submit("bob", "job.yaml", kOneGpu, false).ok());
  now_ms_ += 1000;
  EXPECT_TRUE(core_->Submit("alice", "job.yaml", kOneGpu, false).ok());
  EXPECT_FALSE(core_->Submit("alice", "job.yaml", kOneGpu, false).ok());
  // A file bigger than the burst can never pass, and says so.
  now_ms_ += 60000;
  auto big =
      core_->SubmitFile("alice", "jobs.yaml",
                        std::string(kOneGpu) + "name: a\n---\n" + kOneGpu +
                            "name: b\n---\n" + kOneGpu + "name: c\n",
                        false);
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(big.status().message(),
              HasSubstr("a file of 3 jobs is more than the 2 jobs"));
}

TEST_F(CoreTest, ConcurrentSubmitsAreAllDurableWithDistinctIds) {
  constexpr int kThreads = 8;
  constexpr int kEach = 25;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto job = core_->Submit("user" + std::to_string(t), "job.yaml",
                                 kOneGpu, false);
        ASSERT_TRUE(job.ok()) << job.status();
        ids[t].push_back(job->id());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::set<std::string> all;
  for (const auto& some : ids) all.insert(some.begin(), some.end());
  EXPECT_EQ(all.size(), size_t(kThreads * kEach));
  std::map<std::string, v1::Job> stored = StoredJobs(dir_ + "/state.db");
  EXPECT_EQ(stored.size(), all.size());
  for (const std::string& id : all) {
    EXPECT_EQ(stored.count(id), 1u) << id;
    EXPECT_EQ(core_->GetJob(id)->state(), v1::JOB_STATE_PENDING);
  }
}

}  // namespace
}  // namespace dcvlr
