#include "coordinator/fair_share.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

constexpr int64_t kHour = 3600 * 1000;

TEST(UsageLedgerTest, UsageHalvesEveryHalfLife) {
  UsageLedger ledger(/*half_life_s=*/7 * 86400.0);
  ledger.AdvanceTo(1000 * kHour);
  ledger.Charge("alice", 8, 1000);
  const double start = ledger.usage().user_gpu_s.at("alice");
  ledger.AdvanceTo(1000 * kHour + 7 * 24 * kHour);
  EXPECT_NEAR(ledger.usage().user_gpu_s.at("alice"), start / 2, start * 1e-9);
  ledger.AdvanceTo(1000 * kHour + 14 * 24 * kHour);
  EXPECT_NEAR(ledger.usage().user_gpu_s.at("alice"), start / 4, start * 1e-9);
}

TEST(UsageLedgerTest, ChargeDoesNotDependOnHowTimeIsSplit) {
  UsageLedger once(3600), often(3600);
  once.AdvanceTo(10 * kHour);
  once.Charge("u", 4, 10 * kHour);  // [0, 10 h] in one charge
  for (int64_t t = kHour / 4; t <= 10 * kHour; t += kHour / 4) {
    often.AdvanceTo(t);
    often.Charge("u", 4, kHour / 4);  // the same window in 40
  }
  const double expected = once.usage().user_gpu_s.at("u");
  EXPECT_NEAR(often.usage().user_gpu_s.at("u"), expected, expected * 1e-9);
  // 4 GPUs for 10 half-lives: close to the 4 · h/ln2 limit.
  EXPECT_NEAR(expected, 4 * 3600 / std::log(2.0),
              4 * 3600 / std::log(2.0) * 1e-3);
}

TEST(UsageLedgerTest, WithoutDecayUsageIsPlainGpuSeconds) {
  UsageLedger ledger(0);
  ledger.AdvanceTo(kHour);
  ledger.Charge("u", 2, kHour);
  ledger.AdvanceTo(100 * kHour);
  EXPECT_DOUBLE_EQ(ledger.usage().user_gpu_s.at("u"), 2 * 3600.0);
}

TEST(UsageLedgerTest, ClockGoingBackChangesNothing) {
  UsageLedger ledger(3600);
  ledger.AdvanceTo(10 * kHour);
  ledger.Charge("u", 1, kHour);
  const double before = ledger.usage().user_gpu_s.at("u");
  ledger.AdvanceTo(5 * kHour);
  EXPECT_EQ(ledger.usage().as_of_ms, 10 * kHour);
  EXPECT_DOUBLE_EQ(ledger.usage().user_gpu_s.at("u"), before);
}

FairShare Find(const std::vector<FairShare>& shares, const std::string& user) {
  for (const FairShare& f : shares) {
    if (f.user == user) return f;
  }
  ADD_FAILURE() << "no " << user;
  return {};
}

TEST(FairShareTest, NoUsageMeansFactorOne) {
  std::vector<FairShare> shares =
      ComputeFairShares({{"a", "g", 1, 1}, {"b", "g", 3, 1}}, Usage{});
  EXPECT_DOUBLE_EQ(Find(shares, "a").factor, 1.0);
  EXPECT_DOUBLE_EQ(Find(shares, "b").factor, 1.0);
  EXPECT_DOUBLE_EQ(Find(shares, "a").shares_norm, 0.25);
  EXPECT_DOUBLE_EQ(Find(shares, "b").shares_norm, 0.75);
}

TEST(FairShareTest, UsageExactlyAtSharesGivesOneHalfForEveryone) {
  Usage usage;
  usage.user_gpu_s = {{"a", 100}, {"b", 300}, {"c", 400}};
  std::vector<FairShare> shares = ComputeFairShares(
      {{"a", "g1", 1, 1}, {"b", "g1", 3, 1}, {"c", "g2", 1, 1}}, usage);
  for (const FairShare& f : shares) EXPECT_DOUBLE_EQ(f.factor, 0.5) << f.user;
}

TEST(FairShareTest, OverUseLowersTheFactorAndGroupUsageCounts) {
  Usage usage;
  usage.user_gpu_s = {{"a", 100}, {"b", 100}, {"c", 0}};
  std::vector<FairShare> shares = ComputeFairShares(
      {{"a", "g1", 1, 1}, {"b", "g1", 1, 1}, {"c", "g2", 1, 1}}, usage);
  // g1 used everything: its users rank below c, who used nothing.
  EXPECT_LT(Find(shares, "a").factor, Find(shares, "c").factor);
  EXPECT_DOUBLE_EQ(Find(shares, "a").factor, Find(shares, "b").factor);
  EXPECT_DOUBLE_EQ(Find(shares, "c").factor, 1.0);
  EXPECT_DOUBLE_EQ(Find(shares, "a").group_ratio, 2.0);
  EXPECT_DOUBLE_EQ(Find(shares, "a").user_ratio, 1.0);
}

TEST(FairShareTest, ZeroSharesGiveFactorZero) {
  std::vector<FairShare> shares =
      ComputeFairShares({{"a", "g", 0, 1}, {"b", "g", 1, 1}}, Usage{});
  EXPECT_DOUBLE_EQ(Find(shares, "a").factor, 0.0);
  EXPECT_DOUBLE_EQ(Find(shares, "b").factor, 1.0);
}

}  // namespace
}  // namespace dcvlr
