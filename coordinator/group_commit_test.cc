#include "coordinator/group_commit.h"

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "coordinator/store_testing.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

v1::Job MakeJob(int64_t seq, const std::string& user = "alice") {
  v1::Job job;
  job.set_id(absl::StrCat("j-", seq));
  job.set_user(user);
  job.set_state(v1::JOB_STATE_PENDING);
  return job;
}

// Records, at the moment each order leaves, which jobs the store holds.
class StoreCheckingChannel : public AgentChannel {
 public:
  explicit StoreCheckingChannel(std::string path) : path_(std::move(path)) {}
  void Send(const v1::CoordinatorMessage& message) override {
    stored_when_sent.push_back(
        StoredJobs(path_).count(message.start().job_id()) > 0);
    sent.push_back(message.start().job_id());
  }
  void Close() override {}
  std::vector<std::string> sent;
  std::vector<bool> stored_when_sent;

 private:
  const std::string path_;
};

v1::CoordinatorMessage Start(const std::string& job_id) {
  v1::CoordinatorMessage message;
  message.mutable_start()->set_job_id(job_id);
  return message;
}

class GroupCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dcvlr-group-commit-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/state.db";
    auto store = Store::Open(path_, /*durable=*/true, /*busy_timeout_ms=*/50);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    commit_ = std::make_unique<GroupCommit>(
        store_.get(), &mu_, [this](std::vector<v1::Job>& submitted, bool ok) {
          for (const v1::Job& job : submitted) {
            (ok ? written_ : dropped_).push_back(job.id());
          }
        });
  }
  void TearDown() override {
    commit_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Records `fill`'s changes under the mutex and waits for them.
  template <typename F>
  absl::Status Change(F fill, bool retry = false) {
    GroupCommit::Ticket ticket;
    {
      absl::MutexLock lock(&mu_);
      fill();
      ticket = commit_->TakeTicket(retry);
    }
    return GroupCommit::Await(ticket);
  }

  std::string dir_, path_;
  std::unique_ptr<Store> store_;
  absl::Mutex mu_;
  std::vector<std::string> written_, dropped_;
  std::unique_ptr<GroupCommit> commit_;
};

TEST_F(GroupCommitTest, AnOrderLeavesOnlyOnceTheChangeBeforeItIsDurable) {
  auto channel = std::make_shared<StoreCheckingChannel>(path_);
  ASSERT_TRUE(Change([&] {
                commit_->Job(MakeJob(1));
                commit_->Send(channel, Start("j-1"));
              }).ok());
  ASSERT_EQ(channel->sent, std::vector<std::string>{"j-1"});
  EXPECT_TRUE(channel->stored_when_sent[0]);
}

TEST_F(GroupCommitTest,
       ConcurrentChangesAllBecomeDurableAndSubmitsAreReported) {
  constexpr int kThreads = 8, kEach = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const int64_t seq = 1 + t * kEach + i;
        EXPECT_TRUE(Change([&] { commit_->Submitted({MakeJob(seq)}); }).ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(StoredJobs(path_).size(), size_t{kThreads * kEach});
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(written_.size(), size_t{kThreads * kEach});
  EXPECT_TRUE(dropped_.empty());
}

TEST_F(GroupCommitTest, AFailedWriteIsStickyKeepsChangesAndDropsSubmits) {
  auto channel = std::make_shared<StoreCheckingChannel>(path_);
  WriteLock lock(path_);
  const absl::Status failed = Change([&] {
    commit_->Job(MakeJob(1));
    commit_->Submitted({MakeJob(2)});
    commit_->Send(channel, Start("j-1"));
  });
  EXPECT_FALSE(failed.ok());
  {
    absl::MutexLock l(&mu_);
    EXPECT_FALSE(commit_->error().ok());
    EXPECT_EQ(dropped_, std::vector<std::string>{"j-2"});
    // Without a retry nothing is written: the caller hears the error now.
    commit_->Job(MakeJob(3));
    const GroupCommit::Ticket now = commit_->TakeTicket();
    EXPECT_EQ(now.outcome, nullptr);
    EXPECT_FALSE(now.now.ok());
  }
  EXPECT_TRUE(channel->sent.empty());

  lock.Release();
  ASSERT_TRUE(Change([&] { commit_->Job(MakeJob(4)); }, /*retry=*/true).ok());
  {
    absl::MutexLock l(&mu_);
    EXPECT_TRUE(commit_->error().ok());
  }
  // The kept changes and the order made it; the dropped submit did not.
  const auto stored = StoredJobs(path_);
  EXPECT_EQ(stored.count("j-1"), 1u);
  EXPECT_EQ(stored.count("j-3"), 1u);
  EXPECT_EQ(stored.count("j-4"), 1u);
  EXPECT_EQ(stored.count("j-2"), 0u);
  ASSERT_EQ(channel->sent, std::vector<std::string>{"j-1"});
  EXPECT_TRUE(channel->stored_when_sent[0]);
}

TEST_F(GroupCommitTest, StopWritesWhatIsPending) {
  {
    absl::MutexLock lock(&mu_);
    commit_->Job(MakeJob(1));
    commit_->SetUsage(Usage{{{"alice", 42.0}}, 7});
  }
  commit_->Stop();
  EXPECT_EQ(StoredJobs(path_).count("j-1"), 1u);
  auto store = Store::Open(path_);
  ASSERT_TRUE(store.ok());
  auto usage = (*store)->LoadUsage();
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->user_gpu_s.at("alice"), 42.0);
}

}  // namespace
}  // namespace dcvlr
