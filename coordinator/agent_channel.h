// The coordinator's end of one agent's stream, as the core sees it.
#ifndef DCVLR_COORDINATOR_AGENT_CHANNEL_H_
#define DCVLR_COORDINATOR_AGENT_CHANNEL_H_

#include "dcvlr/v1/agent.pb.h"

namespace dcvlr {

// Send() must not block (it queues); Close() ends the stream from the
// coordinator's side.
class AgentChannel {
 public:
  virtual ~AgentChannel() = default;
  virtual void Send(const v1::CoordinatorMessage& message) = 0;
  virtual void Close() = 0;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_AGENT_CHANNEL_H_
