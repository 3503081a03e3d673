// Fair-share accounting: GPU-seconds per user and group, decayed with a
// half-life, and the fair-share factor that orders jobs of equal priority.
//
// Everything here is pure: times are passed in, nothing reads a clock. The
// coordinator keeps one UsageLedger, charges it for the GPUs its running
// attempts hold (at least once per scheduling pass), and hands a copy of its
// totals to the scheduling policy.
#ifndef DCVLR_COORDINATOR_FAIR_SHARE_H_
#define DCVLR_COORDINATOR_FAIR_SHARE_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace dcvlr {

// Decayed GPU-seconds per user, as of one instant. A group's usage is the
// sum of its users' (so a user who changes group takes its history along).
struct Usage {
  std::map<std::string, double> user_gpu_s;
  int64_t as_of_ms = 0;
};

// Exponentially decayed usage: a GPU-second charged `h` ago weighs 1/2, one
// charged 2h ago 1/4 (Slurm's PriorityDecayHalfLife). A value type; not
// thread-safe.
class UsageLedger {
 public:
  explicit UsageLedger(double half_life_s = 7 * 86400.0)
      : half_life_s_(half_life_s) {}

  // Changing the half-life applies from the next AdvanceTo() on.
  void set_half_life_s(double half_life_s) { half_life_s_ = half_life_s; }
  double half_life_s() const { return half_life_s_; }

  // Decays every total from usage().as_of_ms to `now_ms`. A time earlier
  // than the ledger's (a clock that stepped back) only moves as_of_ms.
  void AdvanceTo(int64_t now_ms);

  // Charges `user` for `gpus` GPUs held over the `duration_ms` that end at
  // usage().as_of_ms, integrating the decay over that interval. Call
  // AdvanceTo() first. The total for an interval does not depend on how it
  // is split into charges.
  void Charge(const std::string& user, double gpus, int64_t duration_ms);

  const Usage& usage() const { return usage_; }
  // Replaces the totals with saved ones (a restart); AdvanceTo() then
  // decays them over the time since usage.as_of_ms.
  void Restore(Usage usage) { usage_ = std::move(usage); }

 private:
  double half_life_s_;
  Usage usage_;
};

// One user as the fair-share tree sees it.
struct ShareAccount {
  std::string user;
  std::string group;
  double user_shares = 1;   // weight among the users of its group
  double group_shares = 1;  // weight of its group among groups
};

// The outcome for one user, for `dcvlrctl queue` and for ordering.
struct FairShare {
  std::string user;
  std::string group;
  double shares_norm = 0;  // fraction of the cluster the user is owed
  double usage_norm = 0;   // fraction of all usage that is the user's
  double group_ratio = 0;  // group's usage fraction / its share fraction
  double user_ratio = 0;   // same for the user within its group
  double factor = 1;       // 1: owed everything; 0.5: had its share; → 0
};

// A two-level variant of Slurm's classic fair-share factor 2^(-U/S), chosen
// because its fixed point is exactly the configured shares (the classic
// formula's "effective usage" over-penalises a user of a group it shares
// with others, so 3:1 shares would settle near 9:1):
//   1. Group ratio r_g = (group usage / all groups' usage)
//                      / (group shares / all groups' shares).
//   2. User ratio r_u = (user usage / its group's users' usage)
//                     / (user shares / its group's users' shares).
//      A ratio is 0 while its usage total is 0.
//   3. F = 2^(-(r_g + r_u) / 2): 1 for no usage, 0.5 when both had exactly
//      their share; a user or group with no shares gets 0.
// Under contention the user with the highest F is served first, which
// drives every ratio towards 1. The sums run over `accounts`, which should
// list every user the configuration names plus any other user with work or
// usage; group usage is the sum of its accounts' usage.
std::vector<FairShare> ComputeFairShares(
    const std::vector<ShareAccount>& accounts, const Usage& usage);

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_FAIR_SHARE_H_
