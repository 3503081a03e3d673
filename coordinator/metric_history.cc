#include "coordinator/metric_history.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace dcvlr {

// ---------------------------------------------------------------- series

void SeriesHistory::Add(int64_t step, int64_t time_ms, double value) {
  latest_ = {step, time_ms, value};
  const bool keep = seen_ % stride_ == 0;
  ++seen_;
  if (!keep) return;
  points_.push_back(latest_);
  if (points_.size() >= max_points_ && max_points_ >= 2) {
    // Halve: keep arrivals 0, 2s, 4s, ... and from now on one in 2s.
    size_t out = 0;
    for (size_t i = 0; i < points_.size(); i += 2) points_[out++] = points_[i];
    points_.resize(out);
    stride_ *= 2;
  }
}

void SeriesHistory::ToProto(const std::string& key, bool latest_only,
                            v1::MetricSeries* out) const {
  out->set_key(key);
  out->set_stride(stride_);
  out->set_seen(seen_);
  auto add = [out](const Point& p) {
    out->add_steps(p.step);
    out->add_values(p.value);
    out->add_times_ms(p.time_ms);
  };
  if (seen_ == 0) return;
  if (latest_only) {
    add(latest_);
    return;
  }
  out->mutable_steps()->Reserve(static_cast<int>(points_.size() + 1));
  out->mutable_values()->Reserve(static_cast<int>(points_.size() + 1));
  out->mutable_times_ms()->Reserve(static_cast<int>(points_.size() + 1));
  for (const Point& p : points_) add(p);
  // The newest arrival was kept unless it fell between strides.
  if ((seen_ - 1) % stride_ != 0) add(latest_);
}

SeriesHistory SeriesHistory::FromProto(const v1::MetricSeries& series,
                                       size_t max_points) {
  SeriesHistory history(max_points);
  history.stride_ = std::max<int64_t>(1, series.stride());
  history.seen_ = series.seen();
  const int n = std::min(
      {series.steps_size(), series.values_size(), series.times_ms_size()});
  for (int i = 0; i < n; ++i) {
    history.points_.push_back(
        {series.steps(i), series.times_ms(i), series.values(i)});
  }
  if (!history.points_.empty()) {
    history.latest_ = history.points_.back();
    if (history.seen_ > 0 && (history.seen_ - 1) % history.stride_ != 0) {
      history.points_.pop_back();  // the newest, kept beside the history
    }
  }
  return history;
}

// ---------------------------------------------------------------- history

MetricHistory::MetricHistory(MetricHistoryOptions options,
                             std::unique_ptr<Store> store)
    : options_(options), store_(std::move(store)) {}

absl::Status MetricHistory::Recover() {
  absl::MutexLock flush_lock(&flush_mu_);
  if (store_ == nullptr) return absl::OkStatus();
  absl::StatusOr<std::vector<MetricsOffsetRecord>> offsets =
      store_->LoadMetricsOffsets();
  if (!offsets.ok()) return offsets.status();
  absl::MutexLock lock(&mu_);
  for (const MetricsOffsetRecord& record : *offsets) {
    offsets_[{record.job_id, record.attempt}] = record.offset;
  }
  return absl::OkStatus();
}

MetricHistory::JobHistory* MetricHistory::LoadedJob(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second;
}

absl::StatusOr<int64_t> MetricHistory::Ingest(const v1::MetricBatch& batch) {
  const std::string& job_id = batch.job_id();
  {
    // A job seen before this coordinator started has history in the store:
    // load it before adding to it.
    bool load = false;
    {
      absl::MutexLock lock(&mu_);
      if (LoadedJob(job_id) == nullptr) {
        auto it = offsets_.lower_bound({job_id, 0});
        load = it != offsets_.end() && it->first.first == job_id;
      }
    }
    if (load) Get(job_id, {}, /*latest_only=*/true).IgnoreError();
  }
  absl::MutexLock lock(&mu_);
  const auto held = offsets_.find({job_id, batch.attempt()});
  const int64_t have = held == offsets_.end() ? 0 : held->second;
  if (batch.end_offset() < batch.start_offset() ||
      batch.start_offset() > have) {
    return absl::OutOfRangeError(absl::StrCat(
        "metrics of job ", job_id, " at ", batch.start_offset(), "..",
        batch.end_offset(), " would leave a gap after ", have));
  }
  int64_t& offset = offsets_[{job_id, batch.attempt()}];
  if (batch.start_offset() < offset) return 0;  // resent: we have it
  offset = batch.end_offset();
  dirty_offsets_.insert({job_id, batch.attempt()});
  JobHistory& job = jobs_[job_id];
  // Resolve the batch's names once.
  std::vector<SeriesHistory*> series(batch.names_size(), nullptr);
  for (int i = 0; i < batch.names_size(); ++i) {
    const std::string& name = batch.names(i);
    auto it = job.series.find(name);
    if (it == job.series.end()) {
      if (job.series.size() >= options_.max_keys_per_job) continue;
      it = job.series.emplace(name, SeriesHistory(options_.max_points_per_key))
               .first;
    }
    series[i] = &it->second;
    job.dirty.insert(name);
  }
  int64_t taken = 0;
  for (const v1::MetricPoint& point : batch.points()) {
    const int n = std::min(point.keys_size(), point.values_size());
    for (int i = 0; i < n; ++i) {
      const uint32_t key = point.keys(i);
      if (key < series.size() && series[key] != nullptr) {
        series[key]->Add(point.step(), point.time_ms(), point.values(i));
      }
    }
    if (point.step() >= 0) {
      job.latest_step = point.step();
      job.has_step = true;
    }
    ++taken;
  }
  points_ingested_ += taken;
  return taken;
}

int64_t MetricHistory::Offset(const std::string& job_id, int attempt) const {
  absl::MutexLock lock(&mu_);
  auto it = offsets_.find({job_id, attempt});
  return it == offsets_.end() ? 0 : it->second;
}

absl::StatusOr<v1::GetJobMetricsResponse> MetricHistory::Get(
    const std::string& job_id, const std::vector<std::string>& keys,
    bool latest_only) {
  auto fill = [&](const JobHistory& job) {
    v1::GetJobMetricsResponse response;
    response.set_job_id(job_id);
    for (const auto& [key, series] : job.series) {
      if (!keys.empty() &&
          std::find(keys.begin(), keys.end(), key) == keys.end()) {
        continue;
      }
      series.ToProto(key, latest_only, response.add_series());
    }
    return response;
  };
  {
    absl::MutexLock lock(&mu_);
    if (const JobHistory* job = LoadedJob(job_id)) return fill(*job);
  }
  // Not in memory: read it back from the store.
  absl::MutexLock flush_lock(&flush_mu_);
  std::vector<v1::MetricSeries> stored;
  if (store_ != nullptr) {
    absl::StatusOr<std::vector<v1::MetricSeries>> loaded =
        store_->LoadMetricSeries(job_id);
    if (!loaded.ok()) return loaded.status();
    stored = *std::move(loaded);
  }
  absl::MutexLock lock(&mu_);
  if (const JobHistory* job = LoadedJob(job_id)) return fill(*job);
  if (stored.empty()) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " has reported no metrics"));
  }
  JobHistory& job = jobs_[job_id];
  for (const v1::MetricSeries& series : stored) {
    SeriesHistory history =
        SeriesHistory::FromProto(series, options_.max_points_per_key);
    if (history.latest_step() >= job.latest_step) {
      job.latest_step = history.latest_step();
      job.has_step = job.latest_step >= 0;
    }
    job.series.emplace(series.key(), std::move(history));
  }
  // It leaves memory again in turn (a running job's JobEnded comes later
  // and moves it to the back).
  ended_.push_back(job_id);
  return fill(job);
}

std::map<std::string, std::map<std::string, double>> MetricHistory::Latest(
    const std::vector<std::string>& job_ids) const {
  std::map<std::string, std::map<std::string, double>> out;
  absl::MutexLock lock(&mu_);
  for (const std::string& id : job_ids) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) continue;
    std::map<std::string, double>& values = out[id];
    for (const auto& [key, series] : it->second.series) {
      if (series.seen() > 0) values[key] = series.latest_value();
    }
    if (it->second.has_step) {
      values["step"] = static_cast<double>(it->second.latest_step);
    }
  }
  return out;
}

void MetricHistory::JobEnded(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  if (jobs_.count(job_id) == 0) return;
  ended_.erase(std::remove(ended_.begin(), ended_.end(), job_id), ended_.end());
  ended_.push_back(job_id);
}

absl::Status MetricHistory::Flush() {
  absl::MutexLock flush_lock(&flush_mu_);
  std::vector<std::pair<std::string, v1::MetricSeries>> series;
  std::vector<MetricsOffsetRecord> offsets;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [job_id, job] : jobs_) {
      for (const std::string& key : job.dirty) {
        auto it = job.series.find(key);
        if (it == job.series.end()) continue;
        series.emplace_back(job_id, v1::MetricSeries());
        it->second.ToProto(key, /*latest_only=*/false, &series.back().second);
      }
      job.dirty.clear();
    }
    for (const auto& key : dirty_offsets_) {
      offsets.push_back({key.first, key.second, offsets_[key]});
    }
    dirty_offsets_.clear();
  }
  absl::Status status = absl::OkStatus();
  if (store_ != nullptr && (!series.empty() || !offsets.empty())) {
    status = store_->PutMetrics(series, offsets);
  }
  absl::MutexLock lock(&mu_);
  if (!status.ok()) {
    // Written next time.
    for (const auto& [job_id, one] : series)
      jobs_[job_id].dirty.insert(one.key());
    for (const MetricsOffsetRecord& o : offsets) {
      dirty_offsets_.insert({o.job_id, o.attempt});
    }
    return status;
  }
  // Ended jobs beyond the limit leave memory once written (without a store,
  // their history is gone then).
  while (ended_.size() > options_.ended_jobs_in_memory) {
    auto it = jobs_.find(ended_.front());
    if (it != jobs_.end() && !it->second.dirty.empty()) break;
    if (it != jobs_.end()) jobs_.erase(it);
    ended_.pop_front();
  }
  return absl::OkStatus();
}

int64_t MetricHistory::points_ingested() const {
  absl::MutexLock lock(&mu_);
  return points_ingested_;
}

}  // namespace dcvlr
