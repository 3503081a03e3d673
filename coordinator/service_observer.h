// What the gRPC services report for monitoring: refused calls and agent
// messages (coordinator/metrics.h counts them). Kept free of gRPC so that
// the exporter does not depend on it. Calls come from any thread and must
// be quick.
#ifndef DCVLR_COORDINATOR_SERVICE_OBSERVER_H_
#define DCVLR_COORDINATOR_SERVICE_OBSERVER_H_

#include <string>

#include "absl/status/status.h"

namespace dcvlr {

class ServiceObserver {
 public:
  virtual ~ServiceObserver() = default;
  // A client call refused: UNAUTHENTICATED (no good credential) or
  // PERMISSION_DENIED (not theirs to do).
  virtual void OnClientRefused(const absl::Status& why) = 0;
  // An agent's message refused; `reason` is one of not_placed_here,
  // unknown_attempt, bad_offset.
  virtual void OnAgentMessageRefused(const std::string& node,
                                     const std::string& reason) = 0;
  // An agent's registration refused; `reason` is one of no_certificate,
  // wrong_certificate, name_mismatch, duplicate.
  virtual void OnRegistrationRefused(const std::string& reason) = 0;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_SERVICE_OBSERVER_H_
