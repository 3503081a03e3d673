#include "coordinator/cluster_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/yaml_checker.h"
#include "common/yaml_load.h"
#include "yaml-cpp/yaml.h"

namespace dcvlr {
namespace {

constexpr size_t kMaxFileBytes = 1 << 20;
constexpr int kMaxGpus = 1 << 20;
constexpr double kMaxShares = 1e6;
constexpr int kMaxJobs = 1 << 30;
constexpr int kMaxPriority = 100;  // what a job file may ask

class Parser : public YamlChecker {
 public:
  Parser(absl::string_view source, ClusterConfig* out)
      : YamlChecker(std::string(source)), out_(out) {}

  void Parse(const YAML::Node& root);

 private:
  void ParseGroups(const YAML::Node& node);
  void ParseUsers(const YAML::Node& node);
  void ParseAging(const YAML::Node& node);
  void ParseBackfill(const YAML::Node& node);
  void ParseSubmitLimits(const YAML::Node& node);
  void ParseAdmins(const YAML::Node& node);
  // A duration in seconds ("7d", "12h", "3600"); an error at `key`, giving
  // `example`, if it is not one.
  std::optional<double> Duration(const YAML::Node& node, const std::string& key,
                                 const std::string& example);

  ClusterConfig* out_;
};

void Parser::ParseGroups(const YAML::Node& node) {
  if (!node.IsMap()) {
    Error(node, "groups",
          absl::StrCat("expected a mapping of group names, got ",
                       Describe(node)));
    return;
  }
  for (const auto& entry : node) {
    const std::string name = entry.first.Scalar();
    const std::string key = absl::StrCat("groups.", name);
    if (!IsValidName(name)) {
      Error(entry.first, key,
            "not a valid group name: 1-63 letters, digits, '-', '_' or '.'");
      continue;
    }
    GroupConfig group;
    if (!entry.second.IsNull() &&
        CheckMap(entry.second, key, {"shares", "max_gpus", "max_priority"})) {
      if (YAML::Node n = entry.second["shares"]) {
        if (auto v = Number(n, key + ".shares", 0, kMaxShares)) {
          group.shares = *v;
        }
      }
      if (YAML::Node n = entry.second["max_gpus"]) {
        if (auto v = Int(n, key + ".max_gpus", 0, kMaxGpus))
          group.max_gpus = *v;
      }
      if (YAML::Node n = entry.second["max_priority"]) {
        if (auto v = Int(n, key + ".max_priority", 0, kMaxPriority)) {
          group.max_priority = *v;
        }
      }
    }
    out_->groups[name] = group;
  }
}

void Parser::ParseUsers(const YAML::Node& node) {
  if (!node.IsMap()) {
    Error(
        node, "users",
        absl::StrCat("expected a mapping of user names, got ", Describe(node)));
    return;
  }
  std::vector<std::string> groups = {kDefaultGroup};
  for (const auto& [name, group] : out_->groups) groups.push_back(name);
  for (const auto& entry : node) {
    const std::string name = entry.first.Scalar();
    const std::string key = absl::StrCat("users.", name);
    if (!IsValidName(name)) {
      Error(entry.first, key,
            "not a valid user name: 1-63 letters, digits, '-', '_' or '.'");
      continue;
    }
    UserConfig user;
    if (!entry.second.IsNull() &&
        CheckMap(entry.second, key,
                 {"group", "shares", "max_gpus", "max_pending_jobs",
                  "max_priority"})) {
      if (YAML::Node n = entry.second["group"]) {
        if (!n.IsScalar()) {
          Error(n, key + ".group",
                absl::StrCat("expected a group name, got ", Describe(n)));
        } else if (std::find(groups.begin(), groups.end(), n.Scalar()) ==
                   groups.end()) {
          Error(n, key + ".group",
                absl::StrCat("unknown group '", n.Scalar(), "'",
                             SuggestKey(n.Scalar(), groups),
                             "; declare it under groups"));
        } else {
          user.group = n.Scalar();
        }
      }
      if (YAML::Node n = entry.second["shares"]) {
        if (auto v = Number(n, key + ".shares", 0, kMaxShares)) {
          user.shares = *v;
        }
      }
      if (YAML::Node n = entry.second["max_gpus"]) {
        if (auto v = Int(n, key + ".max_gpus", 0, kMaxGpus)) user.max_gpus = *v;
      }
      if (YAML::Node n = entry.second["max_pending_jobs"]) {
        if (auto v = Int(n, key + ".max_pending_jobs", 0, kMaxJobs)) {
          user.max_pending_jobs = *v;
        }
      }
      if (YAML::Node n = entry.second["max_priority"]) {
        if (auto v = Int(n, key + ".max_priority", 0, kMaxPriority)) {
          user.max_priority = *v;
        }
      }
    }
    out_->users[name] = user;
  }
}

void Parser::ParseAging(const YAML::Node& node) {
  if (!CheckMap(node, "aging", {"points_per_hour", "max_points"})) return;
  if (YAML::Node n = node["points_per_hour"]) {
    if (auto v = Number(n, "aging.points_per_hour", 0, 100)) {
      out_->aging_points_per_hour = *v;
    }
  }
  if (YAML::Node n = node["max_points"]) {
    if (auto v = Number(n, "aging.max_points", 0, 100)) {
      out_->aging_max_points = *v;
    }
  }
}

void Parser::ParseBackfill(const YAML::Node& node) {
  if (!CheckMap(node, "backfill", {"max_reservations"})) return;
  if (YAML::Node n = node["max_reservations"]) {
    if (auto v = Int(n, "backfill.max_reservations", 0, 1000)) {
      out_->max_reservations = *v;
    }
  }
}

void Parser::ParseSubmitLimits(const YAML::Node& node) {
  if (!CheckMap(node, "submit_limits",
                {"max_pending_jobs", "jobs_per_s", "burst"})) {
    return;
  }
  if (YAML::Node n = node["max_pending_jobs"]) {
    if (auto v = Int(n, "submit_limits.max_pending_jobs", 0, kMaxJobs)) {
      out_->max_pending_jobs = *v;
    }
  }
  if (YAML::Node n = node["jobs_per_s"]) {
    if (auto v = Number(n, "submit_limits.jobs_per_s", 0, 1e6)) {
      out_->submit_jobs_per_s = *v;
    }
  }
  if (YAML::Node n = node["burst"]) {
    if (auto v = Number(n, "submit_limits.burst", 0, 1e9)) {
      out_->submit_burst = *v;
    }
  }
}

std::optional<double> Parser::Duration(const YAML::Node& node,
                                       const std::string& key,
                                       const std::string& example) {
  absl::StatusOr<double> v = node.IsScalar()
                                 ? ParseDurationSeconds(node.Scalar())
                                 : absl::InvalidArgumentError(absl::StrCat(
                                       "expected a duration such as ", example,
                                       ", got ", Describe(node)));
  if (!v.ok()) {
    Error(node, key, std::string(v.status().message()));
    return std::nullopt;
  }
  return *v;
}

void Parser::ParseAdmins(const YAML::Node& node) {
  if (!node.IsSequence()) {
    Error(node, "admins",
          absl::StrCat("expected a list of user names and @groups, got ",
                       Describe(node)));
    return;
  }
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node& n = node[i];
    const std::string key = absl::StrCat("admins[", i, "]");
    if (!n.IsScalar()) {
      Error(n, key,
            absl::StrCat("expected a user name or @group, got ", Describe(n)));
      continue;
    }
    const std::string& entry = n.Scalar();
    const bool group = !entry.empty() && entry[0] == '@';
    if (!IsValidName(group ? entry.substr(1) : entry)) {
      Error(n, key,
            absl::StrCat("'", entry,
                         "' is not a user name or @group: 1-63 letters, "
                         "digits, '-', '_' or '.'"));
      continue;
    }
    out_->admins.push_back(entry);
  }
}

void Parser::Parse(const YAML::Node& root) {
  if (!CheckMap(
          root, "",
          {"preemption", "fair_share_half_life", "default_grace_s",
           "checkpoint_root", "aging", "backfill", "submit_limits", "admins",
           "max_priority", "audit_retention", "groups", "users"})) {
    return;
  }
  if (YAML::Node n = root["preemption"]) {
    if (auto v = Bool(n, "preemption")) out_->preemption = *v;
  }
  if (YAML::Node n = root["fair_share_half_life"]) {
    std::optional<double> v =
        Duration(n, "fair_share_half_life", "7d, 12h or 3600");
    if (v && (*v <= 0 || *v > 3650 * 86400.0)) {
      Error(n, "fair_share_half_life", "must be more than 0 and at most 3650d");
    } else if (v) {
      out_->fair_share_half_life_s = *v;
    }
  }
  if (YAML::Node n = root["audit_retention"]) {
    std::optional<double> v = Duration(n, "audit_retention", "180d");
    if (v && (*v < 3600 || *v > 36500 * 86400.0)) {
      Error(n, "audit_retention", "must be from 1h to 36500d");
    } else if (v) {
      out_->audit_retention_s = *v;
    }
  }
  if (YAML::Node n = root["checkpoint_root"]) {
    if (auto v = String(n, "checkpoint_root")) {
      if (v->empty() || (*v)[0] != '/') {
        Error(n, "checkpoint_root",
              absl::StrCat("must be an absolute path, got '", *v, "'"));
      } else {
        out_->checkpoint_root = *v;
      }
    }
  }
  if (YAML::Node n = root["default_grace_s"]) {
    if (auto v = Number(n, "default_grace_s", 0, 3600)) {
      out_->default_grace_s = *v;
    }
  }
  if (YAML::Node n = root["aging"]) ParseAging(n);
  if (YAML::Node n = root["backfill"]) ParseBackfill(n);
  if (YAML::Node n = root["submit_limits"]) ParseSubmitLimits(n);
  if (YAML::Node n = root["admins"]) ParseAdmins(n);
  if (YAML::Node n = root["max_priority"]) {
    if (auto v = Int(n, "max_priority", 0, kMaxPriority)) {
      out_->max_priority = *v;
    }
  }
  // Groups before users: a user names its group.
  if (YAML::Node n = root["groups"]) ParseGroups(n);
  if (YAML::Node n = root["users"]) ParseUsers(n);
}

}  // namespace

const UserConfig& ClusterConfig::User(const std::string& name) const {
  static const UserConfig* const kDefault = new UserConfig();
  auto it = users.find(name);
  return it == users.end() ? *kDefault : it->second;
}

const GroupConfig& ClusterConfig::Group(const std::string& name) const {
  static const GroupConfig* const kDefault = new GroupConfig();
  auto it = groups.find(name);
  return it == groups.end() ? *kDefault : it->second;
}

int ClusterConfig::MaxPriority(const std::string& user) const {
  const UserConfig& u = User(user);
  if (u.max_priority >= 0) return u.max_priority;
  const GroupConfig& g = Group(u.group);
  return g.max_priority >= 0 ? g.max_priority : max_priority;
}

bool ClusterConfig::IsAdmin(const std::string& user, int64_t uid,
                            const std::vector<std::string>& unix_groups) const {
  if (uid == 0) return true;
  for (const std::string& entry : admins) {
    if (entry == user) return true;
    if (entry[0] == '@' && std::find(unix_groups.begin(), unix_groups.end(),
                                     entry.substr(1)) != unix_groups.end()) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<double> ParseDurationSeconds(absl::string_view text) {
  std::string s(absl::StripAsciiWhitespace(text));
  double unit = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 's':
        unit = 1;
        s.pop_back();
        break;
      case 'm':
        unit = 60;
        s.pop_back();
        break;
      case 'h':
        unit = 3600;
        s.pop_back();
        break;
      case 'd':
        unit = 86400;
        s.pop_back();
        break;
      default:
        break;
    }
  }
  double value = 0;
  if (s.empty() || !absl::SimpleAtod(s, &value) || !std::isfinite(value) ||
      value < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected a duration such as 7d, 12h, 30m, 45s or 3600, got '", text,
        "'"));
  }
  return value * unit;
}

absl::StatusOr<ClusterConfig> ParseClusterConfig(absl::string_view source_name,
                                                 absl::string_view text) {
  if (text.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        source_name, ": ", text.size(),
        " bytes; a cluster config may have at most ", kMaxFileBytes));
  }
  ClusterConfig config;
  absl::StatusOr<YAML::Node> loaded = LoadYamlDocument(source_name, text);
  if (!loaded.ok()) return loaded.status();
  const YAML::Node root = *std::move(loaded);
  if (root.IsNull()) return config;  // an empty file: all defaults
  Parser parser(source_name, &config);
  try {
    parser.Parse(root);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ":", e.mark.line + 1, ":", e.mark.column + 1,
                     ": ", e.msg));
  }
  if (!parser.errors().empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(parser.errors(), "\n"));
  }
  return config;
}

absl::StatusOr<ClusterConfig> LoadClusterConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return ParseClusterConfig(path, text.str());
}

}  // namespace dcvlr
