// Leveled logging for the daemons (dcvlr-coordinator, dcvlr-agent), through
// glog: LOG(INFO), LOG(WARNING), LOG(ERROR), and VLOG(1) for the detail a
// debugging operator wants (every order, report and store batch). Lines go
// to stderr, each as glog writes it:
//   I20261204 13:45:00.123456  4242 agent_service.cc:113] node=n1 connected ...
// (severity, date, time, thread id, source line). The worker programs and
// dcvlrctl do not log through it: their stdout and stderr are a job's log
// and a person's answer.
#ifndef DCVLR_COMMON_LOGGING_H_
#define DCVLR_COMMON_LOGGING_H_

#include <string>

#include "absl/status/status.h"
#include "glog/logging.h"

namespace dcvlr {

// The values of the daemons' --log-level, most detailed first.
inline const char* const kLogLevels[] = {"debug", "info", "warning", "error"};

// Sends the process's log to stderr and drops messages below `level` (one
// of kLogLevels: debug shows VLOG(1) too). May be called again to change
// the level.
absl::Status InitLogging(const char* argv0, const std::string& level);

}  // namespace dcvlr

#endif  // DCVLR_COMMON_LOGGING_H_
