// Names of enum values as people read and type them (PENDING, command).
#ifndef DCVLR_COMMON_NAMES_H_
#define DCVLR_COMMON_NAMES_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "dcvlr/v1/client.pb.h"
#include "dcvlr/v1/job.pb.h"

namespace dcvlr {

// "PENDING", "RUNNING", ... as docs/architecture.md ("The job lifecycle")
// writes them.
std::string JobStateName(dcvlr::v1::JobState state);
std::optional<dcvlr::v1::JobState> ParseJobState(absl::string_view name);
bool IsTerminal(dcvlr::v1::JobState state);

// "command", "train", "eval".
std::string JobKindName(dcvlr::v1::JobKind kind);

// "READY", "DRAINED", ...
std::string NodeStateName(dcvlr::v1::NodeState state);

// "submitted", "scheduled", ...
std::string EventTypeName(dcvlr::v1::EventType type);

}  // namespace dcvlr

#endif  // DCVLR_COMMON_NAMES_H_
