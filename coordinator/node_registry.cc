#include "coordinator/node_registry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dcvlr {

std::string MetricsAddress(const std::string& reported,
                           const std::string& node_host) {
  if (reported.empty()) return "";
  const size_t colon = reported.rfind(':');
  if (colon == std::string::npos) return reported;
  const std::string host = reported.substr(0, colon);
  if (!host.empty() && host != "0.0.0.0" && host != "::" && host != "[::]") {
    return reported;
  }
  const bool v6 = node_host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", node_host, v6 ? "]" : "",
                      reported.substr(colon));
}

void NodeRegistry::Restore(v1::Node info, int64_t now_ms) {
  NodeEntry& node = nodes_[info.name()];
  node.info = std::move(info);
  node.state = v1::NODE_STATE_DISCONNECTED;
  node.last_seen_ms = now_ms;
}

NodeEntry& NodeRegistry::Register(const v1::RegisterRequest& request,
                                  const std::string& peer_host,
                                  std::shared_ptr<AgentChannel> channel,
                                  int64_t now_ms) {
  NodeEntry& node = nodes_[request.name()];
  if (node.channel != nullptr) {
    // A newer stream from the same agent (it restarted or reconnected
    // before we noticed): the old one is stale.
    node.channel->Close();
  }
  const bool drained = node.info.drained();
  node.info.set_name(request.name());
  node.info.set_address(
      request.advertise_host().empty() ? peer_host : request.advertise_host());
  node.info.mutable_gpus()->CopyFrom(request.gpus());
  node.info.set_drained(drained);
  node.info.set_metrics_address(
      MetricsAddress(request.metrics_address(), node.info.address()));
  node.state = v1::NODE_STATE_READY;
  node.last_seen_ms = now_ms;
  node.session = next_session_++;
  node.channel = std::move(channel);
  return node;
}

NodeEntry* NodeRegistry::Current(const std::string& name, int64_t session) {
  auto it = nodes_.find(name);
  if (it == nodes_.end() || it->second.session != session || session == 0) {
    return nullptr;
  }
  return &it->second;
}

NodeEntry* NodeRegistry::Find(const std::string& name) {
  auto it = nodes_.find(name);
  return it == nodes_.end() ? nullptr : &it->second;
}

const NodeEntry* NodeRegistry::Find(const std::string& name) const {
  auto it = nodes_.find(name);
  return it == nodes_.end() ? nullptr : &it->second;
}

bool NodeRegistry::Disconnect(const std::string& name, int64_t session) {
  NodeEntry* node = Current(name, session);
  if (node == nullptr) return false;
  node->state = v1::NODE_STATE_DISCONNECTED;
  node->channel = nullptr;
  return true;
}

std::vector<AttemptKey> NodeRegistry::MarkLost(NodeEntry& node) {
  node.state = v1::NODE_STATE_LOST;
  if (node.channel != nullptr) node.channel->Close();
  node.channel = nullptr;
  node.session = 0;
  std::vector<AttemptKey> held;
  for (const auto& [key, gpus] : node.holds) held.push_back(key);
  return held;
}

std::vector<std::string> NodeRegistry::Silent(int64_t now_ms,
                                              int64_t timeout_ms) const {
  std::vector<std::string> out;
  for (const auto& [name, node] : nodes_) {
    if (node.state != v1::NODE_STATE_LOST &&
        now_ms - node.last_seen_ms > timeout_ms) {
      out.push_back(name);
    }
  }
  return out;
}

void NodeRegistry::Hold(const std::string& node, const AttemptKey& key,
                        std::vector<int> gpus) {
  NodeEntry& entry = nodes_[node];
  if (entry.info.name().empty()) entry.info.set_name(node);
  entry.holds[key] = std::move(gpus);
}

bool NodeRegistry::Release(const std::string& node, const AttemptKey& key) {
  auto it = nodes_.find(node);
  return it != nodes_.end() && it->second.holds.erase(key) > 0;
}

NodeRegistry::Fit NodeRegistry::Capacity(int gpus_per_node) const {
  Fit fit;
  for (const auto& [name, node] : nodes_) {
    // A lost node is gone until its agent registers again.
    if (node.state == v1::NODE_STATE_LOST) continue;
    fit.largest = std::max(fit.largest, node.info.gpus_size());
    if (node.info.gpus_size() >= gpus_per_node) ++fit.fitting;
  }
  return fit;
}

std::vector<v1::Node> NodeRegistry::List() const {
  std::vector<v1::Node> out;
  for (const auto& [name, node] : nodes_) {
    v1::Node info = node.info;
    info.set_state(node.shown_state());
    info.set_last_seen_ms(node.last_seen_ms);
    std::vector<int> in_use;
    for (const auto& [key, gpus] : node.holds) {
      info.add_attempts(absl::StrCat(key.job_id, "/", key.attempt));
      in_use.insert(in_use.end(), gpus.begin(), gpus.end());
    }
    std::sort(in_use.begin(), in_use.end());
    for (int gpu : in_use) info.add_gpus_in_use(gpu);
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace dcvlr
