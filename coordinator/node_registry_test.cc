#include "coordinator/node_registry.h"

#include "gtest/gtest.h"

namespace dcvlr {
namespace {

class RecordingChannel : public AgentChannel {
 public:
  void Send(const v1::CoordinatorMessage&) override { ++sent; }
  void Close() override { closed = true; }
  int sent = 0;
  bool closed = false;
};

v1::RegisterRequest Request(const std::string& name, int gpus) {
  v1::RegisterRequest request;
  request.set_name(name);
  request.set_metrics_address("0.0.0.0:9101");
  for (int i = 0; i < gpus; ++i) request.add_gpus()->set_index(i);
  return request;
}

TEST(NodeRegistryTest, EachRegistrationFencesOffTheSessionBefore) {
  NodeRegistry nodes;
  auto first = std::make_shared<RecordingChannel>();
  const int64_t old_session =
      nodes.Register(Request("n1", 2), "10.0.0.1", first, 100).session;
  EXPECT_NE(nodes.Current("n1", old_session), nullptr);

  auto second = std::make_shared<RecordingChannel>();
  NodeEntry& again = nodes.Register(Request("n1", 4), "10.0.0.1", second, 200);
  EXPECT_TRUE(first->closed);
  EXPECT_FALSE(second->closed);
  EXPECT_NE(again.session, old_session);
  EXPECT_EQ(nodes.Current("n1", old_session), nullptr);
  EXPECT_EQ(nodes.Current("n1", again.session), &again);
  EXPECT_EQ(again.info.gpus_size(), 4);
  EXPECT_EQ(again.last_seen_ms, 200);
  // A stale stream's disconnect does not disconnect the node.
  EXPECT_FALSE(nodes.Disconnect("n1", old_session));
  EXPECT_EQ(again.state, v1::NODE_STATE_READY);
  EXPECT_TRUE(nodes.Disconnect("n1", again.session));
  EXPECT_EQ(again.state, v1::NODE_STATE_DISCONNECTED);
  EXPECT_EQ(again.last_seen_ms, 200);
}

TEST(NodeRegistryTest, RegistrationKeepsDrainAndFillsTheMetricsHost) {
  NodeRegistry nodes;
  v1::Node stored;
  stored.set_name("n1");
  stored.set_drained(true);
  nodes.Restore(stored, 50);
  EXPECT_EQ(nodes.Find("n1")->state, v1::NODE_STATE_DISCONNECTED);
  NodeEntry& node = nodes.Register(Request("n1", 1), "10.0.0.7",
                                   std::make_shared<RecordingChannel>(), 60);
  EXPECT_TRUE(node.info.drained());
  EXPECT_EQ(node.shown_state(), v1::NODE_STATE_DRAINED);
  EXPECT_EQ(node.info.address(), "10.0.0.7");
  EXPECT_EQ(node.info.metrics_address(), "10.0.0.7:9101");
}

TEST(NodeRegistryTest, MetricsAddressFillsOnlyAWildcardHost) {
  EXPECT_EQ(MetricsAddress("", "h"), "");
  EXPECT_EQ(MetricsAddress(":9101", "h"), "h:9101");
  EXPECT_EQ(MetricsAddress("[::]:9101", "fd00::1"), "[fd00::1]:9101");
  EXPECT_EQ(MetricsAddress("10.1.1.1:9101", "h"), "10.1.1.1:9101");
}

TEST(NodeRegistryTest, ALostNodeEndsItsSessionAndGivesUpItsAttempts) {
  NodeRegistry nodes;
  auto channel = std::make_shared<RecordingChannel>();
  NodeEntry& node = nodes.Register(Request("n1", 4), "h", channel, 0);
  const int64_t session = node.session;
  nodes.Hold("n1", {"j-1", 1}, {0, 1});
  nodes.Hold("n1", {"j-2", 3}, {2});
  EXPECT_TRUE(nodes.Silent(5000, 5000).empty());
  EXPECT_EQ(nodes.Silent(5001, 5000), std::vector<std::string>{"n1"});

  std::vector<AttemptKey> held = nodes.MarkLost(node);
  EXPECT_EQ(held, (std::vector<AttemptKey>{{"j-1", 1}, {"j-2", 3}}));
  EXPECT_TRUE(channel->closed);
  EXPECT_EQ(node.state, v1::NODE_STATE_LOST);
  EXPECT_EQ(nodes.Current("n1", session), nullptr);
  EXPECT_EQ(nodes.Current("n1", 0), nullptr);
  EXPECT_TRUE(nodes.Silent(99999, 5000).empty());  // lost once
}

TEST(NodeRegistryTest, HoldsShowAsGpusInUseUntilReleased) {
  NodeRegistry nodes;
  nodes.Register(Request("n1", 4), "h", std::make_shared<RecordingChannel>(),
                 0);
  nodes.Hold("n1", {"j-1", 1}, {3, 1});
  // A recovered attempt on a node the store did not know.
  nodes.Hold("n9", {"j-2", 1}, {0});
  std::vector<v1::Node> list = nodes.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name(), "n1");
  EXPECT_EQ(std::vector<int>(list[0].gpus_in_use().begin(),
                             list[0].gpus_in_use().end()),
            (std::vector<int>{1, 3}));
  EXPECT_EQ(list[0].attempts(0), "j-1/1");
  EXPECT_EQ(list[1].name(), "n9");
  EXPECT_TRUE(nodes.Release("n1", {"j-1", 1}));
  EXPECT_FALSE(nodes.Release("n1", {"j-1", 1}));
  EXPECT_FALSE(nodes.Release("n7", {"j-1", 1}));
  EXPECT_EQ(nodes.List()[0].gpus_in_use_size(), 0);
}

TEST(NodeRegistryTest, CapacityCountsTheNodesThatFit) {
  NodeRegistry nodes;
  EXPECT_TRUE(nodes.empty());
  for (auto [name, gpus] : {std::pair{"a", 8}, {"b", 4}, {"c", 8}}) {
    nodes.Register(Request(name, gpus), "h",
                   std::make_shared<RecordingChannel>(), 0);
  }
  const NodeRegistry::Fit fit = nodes.Capacity(8);
  EXPECT_EQ(fit.largest, 8);
  EXPECT_EQ(fit.fitting, 2);
  EXPECT_EQ(nodes.Capacity(4).fitting, 3);
}

TEST(NodeRegistryTest, ALostNodeIsNoCapacity) {
  NodeRegistry nodes;
  nodes.Register(Request("big", 8), "h", std::make_shared<RecordingChannel>(),
                 0);
  nodes.Register(Request("small", 2), "h", std::make_shared<RecordingChannel>(),
                 0);
  EXPECT_EQ(nodes.Capacity(8).largest, 8);
  nodes.MarkLost(*nodes.Find("big"));
  EXPECT_EQ(nodes.Capacity(8).largest, 2);
  EXPECT_EQ(nodes.Capacity(8).fitting, 0);
  EXPECT_EQ(nodes.Capacity(2).fitting, 1);
}

}  // namespace
}  // namespace dcvlr
