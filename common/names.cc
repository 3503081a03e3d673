#include "common/names.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dcvlr {
namespace {

// Drops the enum's type prefix: JOB_STATE_PENDING -> PENDING.
std::string StripPrefix(const std::string& full, absl::string_view prefix) {
  if (absl::StartsWith(full, prefix)) return full.substr(prefix.size());
  return full;
}

}  // namespace

std::string JobStateName(dcvlr::v1::JobState state) {
  return StripPrefix(dcvlr::v1::JobState_Name(state), "JOB_STATE_");
}

std::optional<dcvlr::v1::JobState> ParseJobState(absl::string_view name) {
  dcvlr::v1::JobState state;
  std::string full = absl::StrCat("JOB_STATE_", absl::AsciiStrToUpper(name));
  if (!dcvlr::v1::JobState_Parse(full, &state) ||
      state == dcvlr::v1::JOB_STATE_UNSPECIFIED) {
    return std::nullopt;
  }
  return state;
}

bool IsTerminal(dcvlr::v1::JobState state) {
  return state == dcvlr::v1::JOB_STATE_SUCCEEDED ||
         state == dcvlr::v1::JOB_STATE_FAILED ||
         state == dcvlr::v1::JOB_STATE_CANCELLED;
}

std::string JobKindName(dcvlr::v1::JobKind kind) {
  return absl::AsciiStrToLower(
      StripPrefix(dcvlr::v1::JobKind_Name(kind), "JOB_KIND_"));
}

std::string NodeStateName(dcvlr::v1::NodeState state) {
  return StripPrefix(dcvlr::v1::NodeState_Name(state), "NODE_STATE_");
}

std::string EventTypeName(dcvlr::v1::EventType type) {
  return absl::AsciiStrToLower(
      StripPrefix(dcvlr::v1::EventType_Name(type), "EVENT_TYPE_"));
}

}  // namespace dcvlr
