#include "worker/agent/gpu_discovery.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::ElementsAre;

// NVML's bus id of the GPU in PCI bus `bus`.
std::string Bus(int bus) {
  return absl::StrCat("00000000:", absl::Hex(bus, absl::kZeroPad2), ":00.0");
}

GpuTopology Gpu(int bus, int numa, std::vector<std::string> remotes = {}) {
  return {Bus(bus), numa, std::move(remotes)};
}

TEST(LocalityDomainsTest, WithoutNvLinkTheDomainsAreTheNumaNodes) {
  EXPECT_THAT(LocalityDomains(
                  {Gpu(0x1a, 0), Gpu(0x1b, 0), Gpu(0x3a, 1), Gpu(0x3b, -1)}),
              ElementsAre(0, 0, 1, -1));
}

TEST(LocalityDomainsTest, GpusBehindNvSwitchesAreOneIsland) {
  // HGX: every GPU has links to each of four NVSwitches; the GPUs sit on
  // two NUMA nodes, which NVLink makes irrelevant.
  const std::vector<std::string> switches = {Bus(0xc0), Bus(0xc1), Bus(0xc2),
                                             Bus(0xc3)};
  std::vector<GpuTopology> gpus;
  for (int i = 0; i < 8; ++i) gpus.push_back(Gpu(0x10 + i, i / 4, switches));
  EXPECT_THAT(LocalityDomains(gpus), ElementsAre(0, 0, 0, 0, 0, 0, 0, 0));
}

TEST(LocalityDomainsTest, BridgedPairsAreIslandsAndTheRestFallBackToNuma) {
  // NVLink bridges join GPUs 0-1 and 2-3 (each link seen from both ends,
  // the remote's bus id written in upper case with an 8-digit domain or in
  // sysfs' lower-case form); GPU 4 has no bridge.
  std::vector<GpuTopology> gpus = {
      Gpu(0x1a, 0, {Bus(0x1b), Bus(0x1b)}), Gpu(0x1b, 0, {"0000:1a:00.0"}),
      Gpu(0x3a, 0, {Bus(0x3b)}), Gpu(0x3b, 0, {Bus(0x3a)}), Gpu(0x5e, 1)};
  gpus[0].bus_id = "00000000:1A:00.0";
  EXPECT_THAT(LocalityDomains(gpus), ElementsAre(0, 0, 1, 1, 3));
}

TEST(LocalityDomainsTest, LinksJoinThroughChains) {
  // 0-1 and 1-2 directly, 3 only through a switch it shares with 2.
  EXPECT_THAT(
      LocalityDomains({Gpu(0x10, 0, {Bus(0x11)}), Gpu(0x11, 0, {Bus(0x12)}),
                       Gpu(0x12, 0, {Bus(0xc0)}), Gpu(0x13, 1, {Bus(0xc0)})}),
      ElementsAre(0, 0, 0, 0));
}

TEST(LocalityDomainsTest, AGpuAloneOnASwitchFallsBackToItsNumaNode) {
  // A virtual machine given one GPU of an NVSwitch system: its links reach
  // a switch, but no other GPU.
  EXPECT_THAT(LocalityDomains({Gpu(0x10, 1, {Bus(0xc0), Bus(0xc1)})}),
              ElementsAre(1));
  EXPECT_THAT(LocalityDomains({}), ElementsAre());
}

}  // namespace
}  // namespace dcvlr
