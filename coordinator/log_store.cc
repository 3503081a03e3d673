#include "coordinator/log_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "coordinator/store.h"

namespace dcvlr {

namespace fs = std::filesystem;

std::string LogStore::PathOf(const std::string& job_id, int attempt,
                             int rank) const {
  return absl::StrCat(dir_, "/", job_id, "/attempt-", attempt, "/rank-", rank,
                      ".log");
}

absl::Status LogStore::Append(const std::string& job_id, int attempt, int rank,
                              int64_t offset, const std::string& data) {
  // Ids come from the network: only ours make paths.
  if (JobSeq(job_id) < 0 || attempt < 1 || rank < 0 || offset < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad log chunk for ", job_id));
  }
  const std::string path = PathOf(job_id, attempt, rank);
  absl::MutexLock lock(&mu_);
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("open ", path, ": ", strerror(errno)));
  }
  struct stat st;
  fstat(fd, &st);
  const int64_t size = st.st_size;
  absl::Status status;
  if (offset > size) {
    status = absl::OutOfRangeError(absl::StrCat(
        path, ": chunk at ", offset, " would leave a gap after ", size));
  } else if (offset + static_cast<int64_t>(data.size()) > size) {
    const int64_t skip = size - offset;
    const char* p = data.data() + skip;
    size_t left = data.size() - skip;
    int64_t at = size;
    while (left > 0) {
      ssize_t n = pwrite(fd, p, left, at);
      if (n < 0) {
        if (errno == EINTR) continue;
        status = absl::UnavailableError(
            absl::StrCat("write ", path, ": ", strerror(errno)));
        break;
      }
      p += n;
      left -= n;
      at += n;
    }
  }
  close(fd);
  ++appends_;
  return status;
}

absl::StatusOr<std::string> LogStore::Read(const std::string& job_id,
                                           int attempt, int rank,
                                           int64_t offset,
                                           int64_t max_bytes) const {
  const std::string path = PathOf(job_id, attempt, rank);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    return absl::UnavailableError(
        absl::StrCat("open ", path, ": ", strerror(errno)));
  }
  std::string out(static_cast<size_t>(max_bytes), '\0');
  ssize_t n = pread(fd, out.data(), out.size(), offset);
  close(fd);
  if (n < 0) {
    return absl::UnavailableError(
        absl::StrCat("read ", path, ": ", strerror(errno)));
  }
  out.resize(static_cast<size_t>(n));
  return out;
}

int64_t LogStore::Size(const std::string& job_id, int attempt, int rank) const {
  struct stat st;
  if (stat(PathOf(job_id, attempt, rank).c_str(), &st) != 0) return 0;
  return st.st_size;
}

std::map<int, int64_t> LogStore::Sizes(const std::string& job_id,
                                       int attempt) const {
  std::map<int, int64_t> sizes;
  std::error_code ec;
  const fs::path dir = absl::StrCat(dir_, "/", job_id, "/attempt-", attempt);
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    int rank;
    if (name.rfind("rank-", 0) == 0 && name.size() > 9 &&
        absl::SimpleAtoi(name.substr(5, name.size() - 9), &rank)) {
      sizes[rank] = static_cast<int64_t>(entry.file_size(ec));
    }
  }
  return sizes;
}

void LogStore::AwaitAppend(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const int64_t seen = appends_;
  auto changed = [this, seen]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return appends_ != seen;
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
}

}  // namespace dcvlr
