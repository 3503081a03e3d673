#include "common/logging.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// What the log shows of one message at each severity, at `level`.
std::string LogAt(const std::string& level) {
  EXPECT_TRUE(InitLogging("logging_test", level).ok());
  ::testing::internal::CaptureStderr();
  VLOG(1) << "detail-debug";
  LOG(INFO) << "detail-info";
  LOG(WARNING) << "detail-warning";
  LOG(ERROR) << "detail-error";
  return ::testing::internal::GetCapturedStderr();
}

TEST(LoggingTest, EachLevelDropsWhatIsBelowIt) {
  const std::string debug = LogAt("debug");
  EXPECT_THAT(debug, HasSubstr("detail-debug"));
  EXPECT_THAT(debug, HasSubstr("detail-error"));
  const std::string info = LogAt("info");
  EXPECT_THAT(info, Not(HasSubstr("detail-debug")));
  EXPECT_THAT(info, HasSubstr("detail-info"));
  const std::string warning = LogAt("warning");
  EXPECT_THAT(warning, Not(HasSubstr("detail-info")));
  EXPECT_THAT(warning, HasSubstr("detail-warning"));
  const std::string error = LogAt("error");
  EXPECT_THAT(error, Not(HasSubstr("detail-warning")));
  EXPECT_THAT(error, HasSubstr("detail-error"));
  // Each line names its severity and where it was logged.
  EXPECT_THAT(error, ::testing::ContainsRegex(
                         "E[0-9]{8} [0-9:.]+ +[0-9]+ logging_test.cc:[0-9]+\\] "
                         "detail-error"));
}

TEST(LoggingTest, AnUnknownLevelIsRefusedWithTheChoices) {
  const absl::Status status = InitLogging("logging_test", "verbose");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("one of debug, info, warning, error"));
}

}  // namespace
}  // namespace dcvlr
