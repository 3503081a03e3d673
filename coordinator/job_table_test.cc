#include "coordinator/job_table.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

v1::Job MakeJob(int64_t seq, const std::string& name, const std::string& user,
                v1::JobState state = v1::JOB_STATE_PENDING) {
  v1::Job job;
  job.set_id(absl::StrCat("j-", seq));
  job.mutable_spec()->set_name(name);
  job.set_user(user);
  job.set_state(state);
  job.set_version(seq * 10);
  return job;
}

std::vector<std::string> Ids(const std::vector<v1::Job>& jobs) {
  std::vector<std::string> out;
  for (const v1::Job& job : jobs) out.push_back(job.id());
  return out;
}

TEST(JobTableTest, FindsByIdAndResolvesANameWithinTheUsersOwnJobs) {
  JobTable table;
  table.Add(MakeJob(3, "train", "alice"));
  table.Add(MakeJob(7, "train", "bob"));
  table.Add(MakeJob(5, "eval", "alice"));
  table.Add(MakeJob(4, "train", "alice"));
  ASSERT_NE(table.Find("j-3"), nullptr);
  EXPECT_EQ(table.Find("j-3")->user(), "alice");
  EXPECT_EQ(table.Find("train"), nullptr);  // names are not ids
  EXPECT_EQ(table.Find("j-2"), nullptr);
  // A name is the newest of the caller's own jobs of that name, however
  // newer another user's is.
  EXPECT_EQ(table.Resolve("train", "alice")->id(), "j-4");
  EXPECT_EQ(table.Resolve("train", "bob")->id(), "j-7");
  EXPECT_EQ(table.Resolve("eval", "bob"), nullptr);
  EXPECT_EQ(table.Resolve("bob/train", "alice")->id(), "j-7");
  EXPECT_EQ(table.Resolve("j-5", "bob")->id(), "j-5");
  EXPECT_EQ(table.Resolve("nothing", "alice"), nullptr);
}

TEST(JobTableTest, AddRaisesTheNextSeqAndVersionAndIgnoresADuplicate) {
  JobTable table;
  table.Add(MakeJob(9, "a", "alice"));
  table.Add(MakeJob(4, "b", "alice"));
  EXPECT_EQ(table.next_seq(), 10);
  EXPECT_EQ(table.version(), 90);
  EXPECT_EQ(table.NextVersion(), 91);
  v1::Job again = MakeJob(9, "other", "bob");
  table.Add(again);
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(table.Find("j-9")->user(), "alice");
  table.AdvanceSeq(5);  // never backwards
  EXPECT_EQ(table.next_seq(), 10);
}

TEST(JobTableTest, AJobThatEndsLeavesTheLiveIndexOnce) {
  JobTable table;
  table.Add(MakeJob(1, "a", "alice"));
  table.Add(MakeJob(2, "b", "alice"));
  table.Add(MakeJob(3, "c", "bob", v1::JOB_STATE_SUCCEEDED));
  EXPECT_EQ(table.live().size(), 2u);
  EXPECT_EQ(table.LiveCount("alice"), 2);
  EXPECT_EQ(table.LiveCount("bob"), 0);
  EXPECT_EQ(table.ended_by_state().at(v1::JOB_STATE_SUCCEEDED), 1);

  v1::Job& a = *table.Find("j-1");
  EXPECT_FALSE(table.SetState(a, v1::JOB_STATE_RUNNING, ""));
  EXPECT_EQ(table.live().size(), 2u);
  EXPECT_TRUE(table.SetState(a, v1::JOB_STATE_FAILED, "exit 1"));
  EXPECT_EQ(a.reason(), "exit 1");
  // Setting an ended job's state again does not count it twice.
  EXPECT_FALSE(table.SetState(a, v1::JOB_STATE_FAILED, "exit 1"));
  EXPECT_EQ(table.live().size(), 1u);
  EXPECT_EQ(table.live().begin()->second->id(), "j-2");
  EXPECT_EQ(table.LiveCount("alice"), 1);
  EXPECT_EQ(table.ended_by_state().at(v1::JOB_STATE_FAILED), 1);
  ASSERT_EQ(table.LiveJobs().size(), 1u);
  EXPECT_EQ(table.LiveJobs()[0]->id(), "j-2");
}

TEST(JobTableTest, ListPagesNewestFirstByCountAndBySize) {
  JobTable table;
  for (int seq = 1; seq <= 5; ++seq) {
    table.Add(MakeJob(seq, "j", seq % 2 ? "alice" : "bob"));
  }
  v1::ListJobsRequest request;
  request.set_limit(2);
  std::string token;
  EXPECT_EQ(Ids(table.List(request, &token, SIZE_MAX)),
            (std::vector<std::string>{"j-5", "j-4"}));
  EXPECT_EQ(token, "j-4");
  request.set_page_token(token);
  EXPECT_EQ(Ids(table.List(request, &token, SIZE_MAX)),
            (std::vector<std::string>{"j-3", "j-2"}));
  request.set_page_token(token);
  EXPECT_EQ(Ids(table.List(request, &token, SIZE_MAX)),
            (std::vector<std::string>{"j-1"}));
  EXPECT_EQ(token, "");

  // A byte budget smaller than one job still takes one per page.
  v1::ListJobsRequest all;
  EXPECT_EQ(Ids(table.List(all, &token, 1)), (std::vector<std::string>{"j-5"}));
  EXPECT_EQ(token, "j-5");

  v1::ListJobsRequest bobs;
  bobs.set_user("bob");
  EXPECT_EQ(Ids(table.List(bobs, &token, SIZE_MAX)),
            (std::vector<std::string>{"j-4", "j-2"}));
}

TEST(JobTableTest, ListingLiveStatesReadsTheSameAsListingEverything) {
  JobTable table;
  table.Add(MakeJob(1, "a", "alice", v1::JOB_STATE_RUNNING));
  table.Add(MakeJob(2, "b", "alice", v1::JOB_STATE_SUCCEEDED));
  table.Add(MakeJob(3, "c", "alice", v1::JOB_STATE_PENDING));
  v1::ListJobsRequest live;
  live.add_states(v1::JOB_STATE_RUNNING);
  live.add_states(v1::JOB_STATE_PENDING);
  EXPECT_EQ(Ids(table.List(live, nullptr, SIZE_MAX)),
            (std::vector<std::string>{"j-3", "j-1"}));
  v1::ListJobsRequest mixed = live;
  mixed.add_states(v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Ids(table.List(mixed, nullptr, SIZE_MAX)),
            (std::vector<std::string>{"j-3", "j-2", "j-1"}));
}

TEST(JobTableTest, RecentlyEndedIsNewestFirstAndBounded) {
  JobTable table;
  table.Add(MakeJob(1, "a", "u", v1::JOB_STATE_FAILED));
  table.Add(MakeJob(2, "b", "u", v1::JOB_STATE_RUNNING));
  table.Add(MakeJob(3, "c", "u", v1::JOB_STATE_SUCCEEDED));
  table.Add(MakeJob(4, "d", "u", v1::JOB_STATE_CANCELLED));
  std::vector<const v1::Job*> ended = table.RecentlyEnded(2);
  ASSERT_EQ(ended.size(), 2u);
  EXPECT_EQ(ended[0]->id(), "j-4");
  EXPECT_EQ(ended[1]->id(), "j-3");
  EXPECT_EQ(table.RecentlyEnded(10).size(), 3u);
}

}  // namespace
}  // namespace dcvlr
