// Test helpers for code that writes the state store.
#ifndef DCVLR_COORDINATOR_STORE_TESTING_H_
#define DCVLR_COORDINATOR_STORE_TESTING_H_

#include <sqlite3.h>

#include <map>
#include <string>
#include <utility>

#include "coordinator/store.h"
#include "gtest/gtest.h"

namespace dcvlr {

// Holds the store's write lock from a second connection, as an operator's
// sqlite3 shell left in a transaction would: the core's writes fail.
class WriteLock {
 public:
  explicit WriteLock(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
    sqlite3_busy_timeout(db_, 10000);  // the store's owner may be writing
    EXPECT_EQ(sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr),
              SQLITE_OK);
  }
  ~WriteLock() { Release(); }
  void Release() {
    if (db_ == nullptr) return;
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(db_);
    db_ = nullptr;
  }

 private:
  sqlite3* db_ = nullptr;
};

// The jobs in the store at `path`, by id.
inline std::map<std::string, v1::Job> StoredJobs(const std::string& path) {
  std::map<std::string, v1::Job> out;
  auto store = Store::Open(path);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return out;
  auto jobs = (*store)->LoadJobs();
  EXPECT_TRUE(jobs.ok()) << jobs.status();
  if (jobs.ok()) {
    for (v1::Job& job : *jobs) out[job.id()] = std::move(job);
  }
  return out;
}

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_STORE_TESTING_H_
