#include "coordinator/store.h"

#include <sqlite3.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dcvlr {
namespace {

// Finalizes a prepared statement when it goes out of scope.
struct Statement {
  sqlite3_stmt* stmt = nullptr;
  ~Statement() { sqlite3_finalize(stmt); }
};

absl::Status SqliteError(sqlite3* db, const std::string& what) {
  return absl::UnavailableError(
      absl::StrCat("state store: ", what, ": ", sqlite3_errmsg(db)));
}

}  // namespace

int64_t JobSeq(const std::string& id) {
  int64_t seq;
  if (id.rfind("j-", 0) != 0 || !absl::SimpleAtoi(id.substr(2), &seq)) {
    return -1;
  }
  return seq;
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path,
                                                   bool durable,
                                                   int busy_timeout_ms) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(db, absl::StrCat("open ", path));
    sqlite3_close(db);
    return status;
  }
  std::unique_ptr<Store> store(new Store(db));
  sqlite3_busy_timeout(db, busy_timeout_ms);
  for (const char* sql : {
           "PRAGMA journal_mode=WAL",
           durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
           "CREATE TABLE IF NOT EXISTS jobs ("
           "  seq INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL,"
           "  record BLOB NOT NULL)",
           "CREATE TABLE IF NOT EXISTS nodes ("
           "  name TEXT PRIMARY KEY, record BLOB NOT NULL)",
           // Decayed GPU-seconds per user as of as_of_ms (the same in
           // every row).
           "CREATE TABLE IF NOT EXISTS usage ("
           "  user TEXT PRIMARY KEY, gpu_s REAL NOT NULL,"
           "  as_of_ms INTEGER NOT NULL)",
           "CREATE TABLE IF NOT EXISTS metric_series ("
           "  job_id TEXT NOT NULL, key TEXT NOT NULL, record BLOB NOT NULL,"
           "  PRIMARY KEY (job_id, key))",
           // Who changed what (and what was refused), in order.
           "CREATE TABLE IF NOT EXISTS audit ("
           "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
           "  time_ms INTEGER NOT NULL, record BLOB NOT NULL)",
           "CREATE INDEX IF NOT EXISTS audit_time ON audit(time_ms)",
           "CREATE TABLE IF NOT EXISTS metric_offsets ("
           "  job_id TEXT NOT NULL, attempt INTEGER NOT NULL,"
           "  offset INTEGER NOT NULL, PRIMARY KEY (job_id, attempt))",
       }) {
    if (absl::Status s = store->Exec(sql); !s.ok()) return s;
  }
  return store;
}

Store::~Store() { sqlite3_close(db_); }

absl::Status Store::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error ? error : "unknown error";
    sqlite3_free(error);
    return absl::UnavailableError(absl::StrCat("state store: ", message));
  }
  return absl::OkStatus();
}

absl::Status Store::Write(const StoreBatch& batch) {
  if (batch.empty()) return absl::OkStatus();
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  absl::Status status = WriteJobs(batch.jobs);
  if (status.ok()) status = WriteNodes(batch.nodes);
  if (status.ok() && batch.usage) status = WriteUsage(*batch.usage);
  if (status.ok()) status = WriteAudit(batch.audit);
  if (status.ok() && batch.prune_audit_before_ms) {
    status = PruneAudit(*batch.prune_audit_before_ms);
  }
  if (status.ok()) status = Exec("COMMIT");
  if (!status.ok()) Exec("ROLLBACK").IgnoreError();
  return status;
}

absl::Status Store::WriteJobs(const std::vector<v1::Job>& jobs) {
  if (jobs.empty()) return absl::OkStatus();
  Statement s;
  if (sqlite3_prepare_v2(
          db_,
          "INSERT INTO jobs(seq, id, record) VALUES(?, ?, ?) "
          "ON CONFLICT(seq) DO UPDATE SET record=excluded.record",
          -1, &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  std::string record;
  for (const v1::Job& job : jobs) {
    const int64_t seq = JobSeq(job.id());
    if (seq < 0) return absl::InvalidArgumentError("bad job id " + job.id());
    job.SerializeToString(&record);
    sqlite3_bind_int64(s.stmt, 1, seq);
    sqlite3_bind_text(s.stmt, 2, job.id().c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(s.stmt, 3, record.data(), static_cast<int>(record.size()),
                      SQLITE_TRANSIENT);
    if (sqlite3_step(s.stmt) != SQLITE_DONE) {
      return SqliteError(db_, "write job " + job.id());
    }
    sqlite3_reset(s.stmt);
  }
  return absl::OkStatus();
}

absl::Status Store::WriteAudit(const std::vector<v1::AuditRecord>& records) {
  if (records.empty()) return absl::OkStatus();
  Statement s;
  if (sqlite3_prepare_v2(db_, "INSERT INTO audit(time_ms, record) VALUES(?, ?)",
                         -1, &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  std::string record;
  for (const v1::AuditRecord& r : records) {
    r.SerializeToString(&record);
    sqlite3_bind_int64(s.stmt, 1, r.time_ms());
    sqlite3_bind_blob(s.stmt, 2, record.data(), static_cast<int>(record.size()),
                      SQLITE_TRANSIENT);
    if (sqlite3_step(s.stmt) != SQLITE_DONE) {
      return SqliteError(db_, "write audit record");
    }
    sqlite3_reset(s.stmt);
  }
  return absl::OkStatus();
}

absl::Status Store::PruneAudit(int64_t before_ms) {
  Statement s;
  if (sqlite3_prepare_v2(db_, "DELETE FROM audit WHERE time_ms < ?", -1,
                         &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  sqlite3_bind_int64(s.stmt, 1, before_ms);
  if (sqlite3_step(s.stmt) != SQLITE_DONE) {
    return SqliteError(db_, "prune audit");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::AuditRecord>> Store::LoadAudit(int64_t since_ms,
                                                              int limit) {
  Statement s;
  if (sqlite3_prepare_v2(db_,
                         "SELECT record FROM audit WHERE time_ms >= ? "
                         "ORDER BY seq DESC LIMIT ?",
                         -1, &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  sqlite3_bind_int64(s.stmt, 1, since_ms);
  sqlite3_bind_int(s.stmt, 2, limit);
  std::vector<v1::AuditRecord> out;
  int rc;
  while ((rc = sqlite3_step(s.stmt)) == SQLITE_ROW) {
    v1::AuditRecord record;
    record.ParseFromArray(sqlite3_column_blob(s.stmt, 0),
                          sqlite3_column_bytes(s.stmt, 0));
    out.push_back(std::move(record));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, "read audit");
  return out;
}

absl::Status Store::PutJob(const v1::Job& job) { return PutJobs({job}); }

absl::Status Store::PutJobs(const std::vector<v1::Job>& jobs) {
  StoreBatch batch;
  batch.jobs = jobs;
  return Write(batch);
}

absl::StatusOr<std::vector<v1::Job>> Store::LoadJobs() {
  Statement s;
  if (sqlite3_prepare_v2(db_, "SELECT id, record FROM jobs ORDER BY seq", -1,
                         &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  std::vector<v1::Job> jobs;
  int rc;
  while ((rc = sqlite3_step(s.stmt)) == SQLITE_ROW) {
    v1::Job job;
    const void* blob = sqlite3_column_blob(s.stmt, 1);
    int size = sqlite3_column_bytes(s.stmt, 1);
    if (!job.ParseFromArray(blob, size)) {
      return absl::DataLossError(absl::StrCat(
          "state store: job ",
          reinterpret_cast<const char*>(sqlite3_column_text(s.stmt, 0)),
          " is unreadable"));
    }
    jobs.push_back(std::move(job));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, "read jobs");
  return jobs;
}

absl::Status Store::WriteNodes(const std::vector<v1::Node>& nodes) {
  if (nodes.empty()) return absl::OkStatus();
  Statement s;
  if (sqlite3_prepare_v2(
          db_,
          "INSERT INTO nodes(name, record) VALUES(?, ?) "
          "ON CONFLICT(name) DO UPDATE SET record=excluded.record",
          -1, &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  std::string record;
  for (const v1::Node& node : nodes) {
    node.SerializeToString(&record);
    sqlite3_bind_text(s.stmt, 1, node.name().c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(s.stmt, 2, record.data(), static_cast<int>(record.size()),
                      SQLITE_TRANSIENT);
    if (sqlite3_step(s.stmt) != SQLITE_DONE) {
      return SqliteError(db_, "write node " + node.name());
    }
    sqlite3_reset(s.stmt);
  }
  return absl::OkStatus();
}

absl::Status Store::PutNode(const v1::Node& node) {
  StoreBatch batch;
  batch.nodes.push_back(node);
  return Write(batch);
}

absl::StatusOr<std::vector<v1::Node>> Store::LoadNodes() {
  Statement s;
  if (sqlite3_prepare_v2(db_, "SELECT record FROM nodes ORDER BY name", -1,
                         &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  std::vector<v1::Node> nodes;
  int rc;
  while ((rc = sqlite3_step(s.stmt)) == SQLITE_ROW) {
    v1::Node node;
    if (!node.ParseFromArray(sqlite3_column_blob(s.stmt, 0),
                             sqlite3_column_bytes(s.stmt, 0))) {
      return absl::DataLossError("state store: a node record is unreadable");
    }
    nodes.push_back(std::move(node));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, "read nodes");
  return nodes;
}

absl::Status Store::WriteUsage(const Usage& usage) {
  if (absl::Status s = Exec("DELETE FROM usage"); !s.ok()) return s;
  Statement s;
  if (sqlite3_prepare_v2(db_,
                         "INSERT INTO usage(user, gpu_s, as_of_ms) "
                         "VALUES(?, ?, ?)",
                         -1, &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  for (const auto& [user, gpu_s] : usage.user_gpu_s) {
    sqlite3_bind_text(s.stmt, 1, user.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s.stmt, 2, gpu_s);
    sqlite3_bind_int64(s.stmt, 3, usage.as_of_ms);
    if (sqlite3_step(s.stmt) != SQLITE_DONE) {
      return SqliteError(db_, "write usage of " + user);
    }
    sqlite3_reset(s.stmt);
  }
  return absl::OkStatus();
}

absl::Status Store::PutUsage(const Usage& usage) {
  StoreBatch batch;
  batch.usage = usage;
  return Write(batch);
}

absl::StatusOr<Usage> Store::LoadUsage() {
  Statement s;
  if (sqlite3_prepare_v2(db_, "SELECT user, gpu_s, as_of_ms FROM usage", -1,
                         &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  Usage usage;
  int rc;
  while ((rc = sqlite3_step(s.stmt)) == SQLITE_ROW) {
    const unsigned char* user = sqlite3_column_text(s.stmt, 0);
    usage.user_gpu_s[user ? reinterpret_cast<const char*>(user) : ""] =
        sqlite3_column_double(s.stmt, 1);
    usage.as_of_ms = sqlite3_column_int64(s.stmt, 2);
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, "read usage");
  return usage;
}

absl::Status Store::PutMetrics(
    const std::vector<std::pair<std::string, v1::MetricSeries>>& series,
    const std::vector<MetricsOffsetRecord>& offsets) {
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto fail = [this](const std::string& what) {
    absl::Status status = SqliteError(db_, what);
    Exec("ROLLBACK").IgnoreError();
    return status;
  };
  {
    Statement s;
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO metric_series(job_id, key, record) "
                           "VALUES(?, ?, ?) ON CONFLICT(job_id, key) DO "
                           "UPDATE SET record=excluded.record",
                           -1, &s.stmt, nullptr) != SQLITE_OK) {
      return fail("prepare");
    }
    std::string record;
    for (const auto& [job_id, one] : series) {
      one.SerializeToString(&record);
      sqlite3_bind_text(s.stmt, 1, job_id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(s.stmt, 2, one.key().c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_blob(s.stmt, 3, record.data(),
                        static_cast<int>(record.size()), SQLITE_TRANSIENT);
      if (sqlite3_step(s.stmt) != SQLITE_DONE) {
        return fail("write metrics of job " + job_id);
      }
      sqlite3_reset(s.stmt);
    }
  }
  {
    Statement s;
    if (sqlite3_prepare_v2(
            db_,
            "INSERT INTO metric_offsets(job_id, attempt, offset) "
            "VALUES(?, ?, ?) ON CONFLICT(job_id, attempt) DO "
            "UPDATE SET offset=excluded.offset",
            -1, &s.stmt, nullptr) != SQLITE_OK) {
      return fail("prepare");
    }
    for (const MetricsOffsetRecord& offset : offsets) {
      sqlite3_bind_text(s.stmt, 1, offset.job_id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int(s.stmt, 2, offset.attempt);
      sqlite3_bind_int64(s.stmt, 3, offset.offset);
      if (sqlite3_step(s.stmt) != SQLITE_DONE) {
        return fail("write metrics offset of job " + offset.job_id);
      }
      sqlite3_reset(s.stmt);
    }
  }
  if (absl::Status s = Exec("COMMIT"); !s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::MetricSeries>> Store::LoadMetricSeries(
    const std::string& job_id) {
  Statement s;
  if (sqlite3_prepare_v2(db_,
                         "SELECT record FROM metric_series WHERE job_id = ? "
                         "ORDER BY key",
                         -1, &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  sqlite3_bind_text(s.stmt, 1, job_id.c_str(), -1, SQLITE_TRANSIENT);
  std::vector<v1::MetricSeries> out;
  int rc;
  while ((rc = sqlite3_step(s.stmt)) == SQLITE_ROW) {
    v1::MetricSeries series;
    if (!series.ParseFromArray(sqlite3_column_blob(s.stmt, 0),
                               sqlite3_column_bytes(s.stmt, 0))) {
      return absl::DataLossError(absl::StrCat(
          "state store: a metric series of job ", job_id, " is unreadable"));
    }
    out.push_back(std::move(series));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, "read metrics of " + job_id);
  return out;
}

absl::StatusOr<std::vector<MetricsOffsetRecord>> Store::LoadMetricsOffsets() {
  Statement s;
  if (sqlite3_prepare_v2(db_,
                         "SELECT job_id, attempt, offset FROM metric_offsets",
                         -1, &s.stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, "prepare");
  }
  std::vector<MetricsOffsetRecord> out;
  int rc;
  while ((rc = sqlite3_step(s.stmt)) == SQLITE_ROW) {
    MetricsOffsetRecord record;
    record.job_id =
        reinterpret_cast<const char*>(sqlite3_column_text(s.stmt, 0));
    record.attempt = sqlite3_column_int(s.stmt, 1);
    record.offset = sqlite3_column_int64(s.stmt, 2);
    out.push_back(std::move(record));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, "read metrics offsets");
  return out;
}

}  // namespace dcvlr
