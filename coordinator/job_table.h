// The coordinator's jobs: every job ever submitted, by sequence number (the
// N of its id j-N), with the indexes that keep the core's repeated work
// proportional to the jobs that have not ended: the live jobs, the newest
// job of each name, counts of ended jobs by state and of live jobs by user.
//
// A job enters the table once its submission is durable, and its state
// changes only through SetState(), which keeps the indexes right. Ended
// jobs never come back to life.
//
// Not thread-safe: the core guards it with its mutex.
#ifndef DCVLR_COORDINATOR_JOB_TABLE_H_
#define DCVLR_COORDINATOR_JOB_TABLE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "dcvlr/v1/client.pb.h"
#include "dcvlr/v1/job.pb.h"

namespace dcvlr {

class JobTable {
 public:
  // Adds a job whose id is j-<seq> (a recovered one, or a submitted one
  // once durable); ignored if that id is present. Raises next_seq() and
  // version() past the job's.
  void Add(v1::Job job);

  // The job of an id; null if none.
  v1::Job* Find(const std::string& id);
  const v1::Job* Find(const std::string& id) const;
  // What a user means by `ref`: a job id; "OWNER/NAME", the newest job of
  // that name of that owner; or a NAME, the newest of `user`'s own jobs of
  // that name (other users' jobs of the same name are not theirs to mean).
  // Null if none.
  v1::Job* Resolve(const std::string& ref, const std::string& user);
  const v1::Job* Resolve(const std::string& ref, const std::string& user) const;

  // Sets the job's state and reason; a job that ends here leaves the live
  // index. Returns true if it ended with this call.
  bool SetState(v1::Job& job, v1::JobState state, const std::string& reason);

  // The sequence number the next submitted job gets; AdvanceSeq() moves it
  // past ids handed out.
  int64_t next_seq() const { return next_seq_; }
  void AdvanceSeq(int64_t next) { next_seq_ = std::max(next_seq_, next); }
  // Versions order every change of every job (AwaitChange); NextVersion()
  // hands out the next.
  int64_t version() const { return version_; }
  int64_t NextVersion() { return ++version_; }

  // The jobs that have not ended (pending, scheduled, running, preempted),
  // by seq, pointing into the table.
  const std::map<int64_t, v1::Job*>& live() const { return live_; }
  // The same, oldest first, for loops that may end some of them.
  std::vector<v1::Job*> LiveJobs() const;
  // Live jobs of `user`.
  int64_t LiveCount(const std::string& user) const;
  // How many ended jobs are in each terminal state.
  const std::map<v1::JobState, int>& ended_by_state() const {
    return ended_by_state_;
  }
  size_t size() const { return jobs_.size(); }

  // Newest first, from below request.page_token (a job id; empty: the
  // newest), filtered by request.user and request.states. Stops at
  // request.limit jobs, or once the jobs taken reach `max_bytes` serialized
  // (at least one is taken); `next_page_token` then gets the last job's id,
  // and is emptied when the listing is complete.
  std::vector<v1::Job> List(const v1::ListJobsRequest& request,
                            std::string* next_page_token,
                            size_t max_bytes) const;
  // The `n` most recently submitted jobs that ended, newest first.
  std::vector<const v1::Job*> RecentlyEnded(size_t n) const;

 private:
  std::map<int64_t, v1::Job> jobs_;
  std::map<int64_t, v1::Job*> live_;
  std::map<v1::JobState, int> ended_by_state_;
  std::map<std::string, int64_t> live_by_user_;
  // "OWNER/NAME" -> the newest job's seq.
  absl::flat_hash_map<std::string, int64_t> newest_by_name_;
  int64_t next_seq_ = 1;
  int64_t version_ = 0;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_JOB_TABLE_H_
