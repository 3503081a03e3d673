#include "coordinator/job_table.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/names.h"
#include "coordinator/store.h"

namespace dcvlr {

void JobTable::Add(v1::Job job) {
  const int64_t seq = JobSeq(job.id());
  auto [it, inserted] = jobs_.emplace(seq, std::move(job));
  if (!inserted) return;
  v1::Job& added = it->second;
  next_seq_ = std::max(next_seq_, seq + 1);
  version_ = std::max(version_, added.version());
  if (IsTerminal(added.state())) {
    ++ended_by_state_[added.state()];
  } else {
    live_.emplace(seq, &added);
    ++live_by_user_[added.user()];
  }
  int64_t& newest =
      newest_by_name_[absl::StrCat(added.user(), "/", added.spec().name())];
  newest = std::max(newest, seq);
}

v1::Job* JobTable::Find(const std::string& ref) {
  return const_cast<v1::Job*>(std::as_const(*this).Find(ref));
}

const v1::Job* JobTable::Find(const std::string& id) const {
  const int64_t seq = JobSeq(id);
  if (seq < 0) return nullptr;
  auto it = jobs_.find(seq);
  return it == jobs_.end() ? nullptr : &it->second;
}

v1::Job* JobTable::Resolve(const std::string& ref, const std::string& user) {
  return const_cast<v1::Job*>(std::as_const(*this).Resolve(ref, user));
}

const v1::Job* JobTable::Resolve(const std::string& ref,
                                 const std::string& user) const {
  if (JobSeq(ref) >= 0) return Find(ref);
  auto named = newest_by_name_.find(
      ref.find('/') == std::string::npos ? absl::StrCat(user, "/", ref) : ref);
  if (named == newest_by_name_.end()) return nullptr;
  auto it = jobs_.find(named->second);
  return it == jobs_.end() ? nullptr : &it->second;
}

bool JobTable::SetState(v1::Job& job, v1::JobState state,
                        const std::string& reason) {
  const bool ended = IsTerminal(state) && !IsTerminal(job.state());
  job.set_state(state);
  job.set_reason(reason);
  if (!ended) return false;
  if (live_.erase(JobSeq(job.id())) == 0) return true;  // not in the table
  ++ended_by_state_[state];
  auto user = live_by_user_.find(job.user());
  if (user != live_by_user_.end() && --user->second <= 0) {
    live_by_user_.erase(user);
  }
  return true;
}

std::vector<v1::Job*> JobTable::LiveJobs() const {
  std::vector<v1::Job*> out;
  out.reserve(live_.size());
  for (const auto& [seq, job] : live_) out.push_back(job);
  return out;
}

int64_t JobTable::LiveCount(const std::string& user) const {
  auto it = live_by_user_.find(user);
  return it == live_by_user_.end() ? 0 : it->second;
}

std::vector<v1::Job> JobTable::List(const v1::ListJobsRequest& request,
                                    std::string* next_page_token,
                                    size_t max_bytes) const {
  std::vector<v1::Job> out;
  size_t bytes = 0;
  bool more = false;
  // False once the page is full (`more`: a job may be left to list).
  auto add = [&](const v1::Job& job) {
    if (!request.user().empty() && job.user() != request.user()) return true;
    if (request.states_size() > 0 &&
        std::find(request.states().begin(), request.states().end(),
                  job.state()) == request.states().end()) {
      return true;
    }
    const size_t size = job.ByteSizeLong();
    if (!out.empty() && bytes + size > max_bytes) {
      more = true;
      return false;
    }
    out.push_back(job);
    bytes += size;
    if (request.limit() > 0 && out.size() >= size_t(request.limit())) {
      more = true;
      return false;
    }
    return true;
  };
  // Below the page token's job; every job without one.
  int64_t below = std::numeric_limits<int64_t>::max();
  if (!request.page_token().empty()) {
    const int64_t seq = JobSeq(request.page_token());
    if (seq >= 0) below = seq;
  }
  // Asked only for states a job leaves when it ends (`dcvlrctl top`), the
  // live jobs hold every match.
  const bool live_only =
      request.states_size() > 0 &&
      std::none_of(request.states().begin(), request.states().end(),
                   [](int state) {
                     return IsTerminal(static_cast<v1::JobState>(state));
                   });
  if (live_only) {
    for (auto it = std::make_reverse_iterator(live_.lower_bound(below));
         it != live_.rend(); ++it) {
      if (!add(*it->second)) break;
    }
  } else {
    for (auto it = std::make_reverse_iterator(jobs_.lower_bound(below));
         it != jobs_.rend(); ++it) {
      if (!add(it->second)) break;
    }
  }
  if (next_page_token != nullptr) {
    *next_page_token = more ? out.back().id() : "";
  }
  return out;
}

std::vector<const v1::Job*> JobTable::RecentlyEnded(size_t n) const {
  std::vector<const v1::Job*> out;
  for (auto it = jobs_.rbegin(); it != jobs_.rend() && out.size() < n; ++it) {
    if (IsTerminal(it->second.state())) out.push_back(&it->second);
  }
  return out;
}

}  // namespace dcvlr
