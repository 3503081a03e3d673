#include "coordinator/fair_share.h"

#include <algorithm>
#include <cmath>

namespace dcvlr {
namespace {

double Lookup(const std::map<std::string, double>& map,
              const std::string& key) {
  auto it = map.find(key);
  return it == map.end() ? 0.0 : it->second;
}

// The ratio of an account with usage but no shares: far past any other.
constexpr double kNoShares = 1e9;

}  // namespace

void UsageLedger::AdvanceTo(int64_t now_ms) {
  if (now_ms <= usage_.as_of_ms || half_life_s_ <= 0) {
    usage_.as_of_ms = std::max(usage_.as_of_ms, now_ms);
    return;
  }
  const double elapsed_s = (now_ms - usage_.as_of_ms) / 1000.0;
  const double keep = std::exp2(-elapsed_s / half_life_s_);
  for (auto& [user, value] : usage_.user_gpu_s) value *= keep;
  usage_.as_of_ms = now_ms;
}

void UsageLedger::Charge(const std::string& user, double gpus,
                         int64_t duration_ms) {
  if (gpus <= 0 || duration_ms <= 0) return;
  const double d = duration_ms / 1000.0;
  // ∫ gpus · 2^(-(end - t)/h) dt over [end - d, end] = gpus · h/ln2 ·
  // (1 - 2^(-d/h)); without decay (h <= 0) simply gpus · d.
  double amount = gpus * d;
  if (half_life_s_ > 0) {
    amount = gpus * half_life_s_ / std::log(2.0) *
             (1 - std::exp2(-d / half_life_s_));
  }
  usage_.user_gpu_s[user] += amount;
}

std::vector<FairShare> ComputeFairShares(
    const std::vector<ShareAccount>& accounts, const Usage& usage) {
  std::map<std::string, double> group_user_shares, group_shares, group_usage;
  double all_group_shares = 0, all_usage = 0;
  for (const ShareAccount& a : accounts) {
    group_user_shares[a.group] += std::max(0.0, a.user_shares);
    auto [it, inserted] =
        group_shares.try_emplace(a.group, std::max(0.0, a.group_shares));
    if (inserted) all_group_shares += it->second;
    const double used = Lookup(usage.user_gpu_s, a.user);
    group_usage[a.group] += used;
    all_usage += used;
  }
  auto ratio = [](double used, double used_total, double shares,
                  double shares_total) {
    if (used_total <= 0) return 0.0;
    if (shares <= 0 || shares_total <= 0) return kNoShares;
    return (used / used_total) / (shares / shares_total);
  };
  std::vector<FairShare> out;
  out.reserve(accounts.size());
  for (const ShareAccount& a : accounts) {
    FairShare f;
    f.user = a.user;
    f.group = a.group;
    const double user_shares = std::max(0.0, a.user_shares);
    const double siblings = group_user_shares[a.group];
    const double used = Lookup(usage.user_gpu_s, a.user);
    f.shares_norm =
        siblings > 0 && all_group_shares > 0
            ? user_shares / siblings * group_shares[a.group] / all_group_shares
            : 0.0;
    f.usage_norm = all_usage > 0 ? used / all_usage : 0.0;
    // Steps 1 and 2.
    f.group_ratio = ratio(group_usage[a.group], all_usage,
                          group_shares[a.group], all_group_shares);
    f.user_ratio = ratio(used, group_usage[a.group], user_shares, siblings);
    // Step 3.
    f.factor = f.shares_norm > 0
                   ? std::exp2(-(f.group_ratio + f.user_ratio) / 2)
                   : 0.0;
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace dcvlr
