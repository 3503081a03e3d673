// The coordinator's nodes: what each agent registered (address, GPUs and
// their topology), its liveness, its session, and the GPUs that attempts
// hold on it.
//
// Sessions are the fencing epochs. Every registration starts a new one and
// closes the node's previous stream; calls that name an older session
// (a stale stream of an agent that reconnected) find no node in Current()
// and are ignored. A lost node's session is 0, which no stream has.
//
// A hold lasts from the placement of an attempt until the node's agent
// reports the attempt's processes gone (or the node is lost), so GPUs are
// never handed out twice, whatever the job's state says meanwhile.
//
// Not thread-safe: the core guards it with its mutex.
#ifndef DCVLR_COORDINATOR_NODE_REGISTRY_H_
#define DCVLR_COORDINATOR_NODE_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/agent_channel.h"
#include "dcvlr/v1/agent.pb.h"
#include "dcvlr/v1/client.pb.h"

namespace dcvlr {

// One attempt of one job.
struct AttemptKey {
  std::string job_id;
  int attempt = 0;
  auto operator<=>(const AttemptKey&) const = default;
};

struct NodeEntry {
  v1::Node info;  // name, address, metrics address, GPUs, drained
  v1::NodeState state = v1::NODE_STATE_DISCONNECTED;
  int64_t last_seen_ms = 0;
  int64_t session = 0;  // 0: no live stream
  std::shared_ptr<AgentChannel> channel;
  // GPUs held on this node, by attempt.
  std::map<AttemptKey, std::vector<int>> holds;

  // The state as shown to people: DRAINED for a ready, drained node.
  v1::NodeState shown_state() const {
    return state == v1::NODE_STATE_READY && info.drained()
               ? v1::NODE_STATE_DRAINED
               : state;
  }
};

class NodeRegistry {
 public:
  // A node known from the store: disconnected, with a full node timeout
  // from `now_ms` for its agent to come back.
  void Restore(v1::Node info, int64_t now_ms);

  // Starts a new session for the agent of `request.name()`: its previous
  // stream is closed, its registration replaces the node's address and
  // GPUs (drained is kept), and it is READY and seen now.
  NodeEntry& Register(const v1::RegisterRequest& request,
                      const std::string& peer_host,
                      std::shared_ptr<AgentChannel> channel, int64_t now_ms);
  // The node, if `session` is its current session (fencing); else null.
  NodeEntry* Current(const std::string& name, int64_t session);
  NodeEntry* Find(const std::string& name);
  const NodeEntry* Find(const std::string& name) const;
  // Ends `session`'s stream: DISCONNECTED, last seen unchanged (the node
  // timeout runs from the last sign of life). False if the session is not
  // current.
  bool Disconnect(const std::string& name, int64_t session);
  // LOST: the stream is closed and the session ended. Returns the attempts
  // it holds GPUs for, whose holds the caller releases.
  std::vector<AttemptKey> MarkLost(NodeEntry& node);
  // Nodes not lost that were last seen more than `timeout_ms` ago.
  std::vector<std::string> Silent(int64_t now_ms, int64_t timeout_ms) const;

  // `gpus` of `node` held by `key` (the node is created if unknown: a
  // recovered attempt on a node the store did not have).
  void Hold(const std::string& node, const AttemptKey& key,
            std::vector<int> gpus);
  // True if `key` held something on `node`.
  bool Release(const std::string& node, const AttemptKey& key);

  // The largest node's GPU count, and how many nodes have at least
  // `gpus_per_node` GPUs; lost nodes do not count.
  struct Fit {
    int largest = 0;
    int fitting = 0;
  };
  Fit Capacity(int gpus_per_node) const;

  // What `dcvlrctl nodes` shows: state, last seen, attempts and GPUs in use.
  std::vector<v1::Node> List() const;
  const std::map<std::string, NodeEntry>& nodes() const { return nodes_; }
  bool empty() const { return nodes_.empty(); }

 private:
  std::map<std::string, NodeEntry> nodes_;
  int64_t next_session_ = 1;
};

// An agent's metrics address with its host filled in: an empty or wildcard
// host means the node's own address.
std::string MetricsAddress(const std::string& reported,
                           const std::string& node_host);

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_NODE_REGISTRY_H_
