#include "common/logging.h"

#include <mutex>

#include "absl/strings/str_cat.h"

namespace dcvlr {

absl::Status InitLogging(const char* argv0, const std::string& level) {
  int min_level = -1;
  int verbosity = 0;
  if (level == "debug") {
    min_level = google::GLOG_INFO;
    verbosity = 1;
  } else if (level == "info") {
    min_level = google::GLOG_INFO;
  } else if (level == "warning") {
    min_level = google::GLOG_WARNING;
  } else if (level == "error") {
    min_level = google::GLOG_ERROR;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--log-level ", level, ": one of debug, info, warning, error"));
  }
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = min_level;
  FLAGS_v = verbosity;
  static std::once_flag once;
  std::call_once(once, [argv0] { google::InitGoogleLogging(argv0); });
  return absl::OkStatus();
}

}  // namespace dcvlr
