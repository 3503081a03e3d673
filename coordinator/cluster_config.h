// The cluster configuration (`--cluster-config`): users, groups, their
// fair-share weights and GPU quotas, and the scheduler's switches.
//
//   preemption: true                 # default false
//   fair_share_half_life: 7d         # s, m, h, d suffix or plain seconds
//   default_grace_s: 30              # stop grace when a job gives none
//   checkpoint_root: /shared/ckpt    # shared checkpoints: <root>/<job id>
//   aging: {points_per_hour: 1, max_points: 50}
//   backfill: {max_reservations: 4}
//   submit_limits: {max_pending_jobs: 10000, jobs_per_s: 50, burst: 1000}
//   admins: [carol, "@wheel"]        # users and @Unix-groups; uid 0 always
//   max_priority: 50                 # highest job priority users may ask
//   audit_retention: 180d            # the audit trail is kept this long
//   groups:
//     vision: {shares: 3, max_gpus: 16, max_priority: 60}
//     nlp: {shares: 1}
//   users:
//     alice: {group: vision, shares: 2, max_gpus: 8, max_pending_jobs: 50000}
//     bob: {group: nlp, max_priority: 80}
//
// Everything is optional; an empty file (or none) gives every user one share
// in the group "default", no quotas and no preemption. Parsing is pure: the
// daemon reads the file (again on SIGHUP) and keeps its old configuration
// when the new one is rejected.
#ifndef DCVLR_COORDINATOR_CLUSTER_CONFIG_H_
#define DCVLR_COORDINATOR_CLUSTER_CONFIG_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcvlr {

// The group of users the configuration does not place in one.
inline constexpr char kDefaultGroup[] = "default";

struct GroupConfig {
  double shares = 1;
  int max_gpus = 0;       // GPUs in use at once; 0: no quota
  int max_priority = -1;  // -1: the cluster's max_priority
};

struct UserConfig {
  std::string group = kDefaultGroup;
  double shares = 1;  // weight among the users of its group
  int max_gpus = 0;   // 0: no quota
  // Overrides submit_limits.max_pending_jobs for this user; -1: it does not.
  int64_t max_pending_jobs = -1;
  int max_priority = -1;  // -1: the group's, else the cluster's
};

struct ClusterConfig {
  std::map<std::string, GroupConfig> groups;
  std::map<std::string, UserConfig> users;
  bool preemption = false;
  double fair_share_half_life_s = 7 * 86400.0;
  double default_grace_s = 30;
  // A directory every node mounts; jobs without checkpoint_dir checkpoint to
  // <checkpoint_root>/<job id>, so attempts on any node resume alike. Empty:
  // each node's work dir (attempts resume only on the same node).
  std::string checkpoint_root;
  // Aging: a pending job gains points_per_hour priority points per hour it
  // has waited, up to max_points, so that nothing starves.
  double aging_points_per_hour = 1;
  double aging_max_points = 50;
  // Blocked jobs (in queue order) that hold a reservation; backfill must not
  // delay them. Jobs that preempted always hold one.
  int max_reservations = 4;
  // What one user may submit (0: no bound): jobs submitted and not yet
  // ended, and a token bucket of jobs (jobs_per_s refill, burst size).
  int64_t max_pending_jobs = 0;
  double submit_jobs_per_s = 0;
  double submit_burst = 0;  // 0 with a rate: 10 s worth of it
  // Who may change the cluster (drain, undrain, evict), read and cancel
  // every job, and ask any priority: user names, and "@group" for the
  // members of a Unix group. uid 0 always may.
  std::vector<std::string> admins;
  // The highest `priority:` a user's job may ask (admins' are not capped);
  // the default, 50, is the default priority: users may lower theirs only.
  int max_priority = 50;
  // Audit records older than this are deleted (hourly).
  double audit_retention_s = 180 * 86400.0;

  // The user's entry, or the defaults for a user the file does not name
  // (group "default", one share, no quota).
  const UserConfig& User(const std::string& name) const;
  // The group's entry, or the defaults.
  const GroupConfig& Group(const std::string& name) const;
  // The user's max_priority: theirs, else their group's, else the cluster's.
  int MaxPriority(const std::string& user) const;
  // Whether `user` (uid `uid`, -1 unknown, in Unix groups `groups`) is an
  // admin.
  bool IsAdmin(const std::string& user, int64_t uid,
               const std::vector<std::string>& groups) const;
};

// Parses the YAML text of a cluster configuration. Errors read
// "SOURCE:LINE:COL: KEY: what is wrong", one per line, all at once.
absl::StatusOr<ClusterConfig> ParseClusterConfig(absl::string_view source_name,
                                                 absl::string_view text);

// Reads and parses the file at `path` (kNotFound when it cannot be read).
absl::StatusOr<ClusterConfig> LoadClusterConfigFile(const std::string& path);

// "7d", "12h", "30m", "45s" or plain seconds ("3600", "1.5") → seconds.
absl::StatusOr<double> ParseDurationSeconds(absl::string_view text);

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_CLUSTER_CONFIG_H_
