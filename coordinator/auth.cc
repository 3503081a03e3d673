#include "coordinator/auth.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/munge.h"
#include "common/tls.h"

namespace dcvlr {
namespace {

// getpw*_r and getgr*_r buffers: their sysconf hint, grown on ERANGE.
std::vector<char> Buffer(int which) {
  const long hint = sysconf(which);
  return std::vector<char>(hint > 0 ? static_cast<size_t>(hint) : 16384);
}

// Runs `call(buffer, size)` (a getpw*_r or getgr*_r), doubling `buf` while
// it says ERANGE; true if it succeeded.
template <typename Call>
bool WithBuffer(std::vector<char>& buf, Call call) {
  int err;
  while ((err = call(buf.data(), buf.size())) == ERANGE &&
         buf.size() < (1u << 24)) {
    buf.resize(buf.size() * 2);
  }
  return err == 0;
}

std::vector<std::string> GroupNames(const char* user, gid_t primary) {
  int count = 64;
  std::vector<gid_t> gids(count);
  while (getgrouplist(user, primary, gids.data(), &count) < 0) {
    if (count > 65536) break;
    gids.resize(static_cast<size_t>(count) * 2);
    count = static_cast<int>(gids.size());
  }
  gids.resize(static_cast<size_t>(std::max(count, 0)));
  std::vector<std::string> names;
  std::vector<char> buf = Buffer(_SC_GETGR_R_SIZE_MAX);
  for (gid_t gid : gids) {
    group entry;
    group* found = nullptr;
    if (WithBuffer(buf,
                   [&](char* b, size_t n) {
                     return getgrgid_r(gid, &entry, b, n, &found);
                   }) &&
        found != nullptr) {
      names.emplace_back(found->gr_name);
    }
  }
  return names;
}

Principal FromPasswd(const passwd& pw) {
  Principal p;
  p.user = pw.pw_name;
  p.uid = pw.pw_uid;
  p.groups = GroupNames(pw.pw_name, pw.pw_gid);
  return p;
}

}  // namespace

absl::StatusOr<Principal> LookupUid(int64_t uid) {
  std::vector<char> buf = Buffer(_SC_GETPW_R_SIZE_MAX);
  passwd entry;
  passwd* found = nullptr;
  if (!WithBuffer(buf,
                  [&](char* b, size_t n) {
                    return getpwuid_r(static_cast<uid_t>(uid), &entry, b, n,
                                      &found);
                  }) ||
      found == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("uid ", uid, " has no account on the coordinator's host"));
  }
  return FromPasswd(entry);
}

Principal LookupUser(const std::string& user) {
  std::vector<char> buf = Buffer(_SC_GETPW_R_SIZE_MAX);
  passwd entry;
  passwd* found = nullptr;
  if (!WithBuffer(buf,
                  [&](char* b, size_t n) {
                    return getpwnam_r(user.c_str(), &entry, b, n, &found);
                  }) ||
      found == nullptr) {
    Principal p;
    p.user = user;
    return p;
  }
  return FromPasswd(entry);
}

absl::StatusOr<Principal> Authenticator::CachedUid(int64_t uid) const {
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&cache_mu_);
    auto it = by_uid_.find(uid);
    if (it != by_uid_.end() && it->second.until > now) {
      return it->second.principal;
    }
  }
  absl::StatusOr<Principal> found = LookupUid(uid);
  if (found.ok()) {
    absl::MutexLock lock(&cache_mu_);
    // Bounded: a lab has far fewer users than this.
    if (by_uid_.size() > 100000) by_uid_.clear();
    by_uid_[uid] = Cached{*found, now + absl::Minutes(1)};
  }
  return found;
}

absl::StatusOr<Principal> Authenticator::Authenticate(
    const grpc::ServerContext& context, const std::string& claimed_user) const {
  absl::StatusOr<Principal> who;
  const std::optional<PeerCertificate> cert =
      PeerCertificateOf(*context.auth_context());
  if (cert.has_value()) {
    if (cert->role != CertRole::kUser) {
      return absl::UnauthenticatedError(absl::StrCat(
          "the client certificate of CN=", cert->common_name, " is a ",
          cert->role ? CertRoleName(*cert->role) : "foreign",
          " certificate, not a user's (OU=dcvlr-user): it cannot make client "
          "calls"));
    }
    who = LookupUser(cert->common_name);
    who->method = "certificate";
  } else {
    const auto& metadata = context.client_metadata();
    auto it = metadata.find(kMungeMetadataKey);
    if (it != metadata.end() && options_.munge) {
      absl::StatusOr<MungeIdentity> id =
          MungeDecode(std::string(it->second.data(), it->second.size()),
                      options_.munge_socket);
      if (!id.ok()) return id.status();
      who = CachedUid(id->uid);
      if (!who.ok()) {
        return absl::UnauthenticatedError(std::string(who.status().message()));
      }
      who->method = "munge";
    } else if (options_.insecure) {
      // No authentication, so no authorization either: the caller is who
      // it claims (the request's user, else dcvlrctl's metadata) and may
      // do anything.
      std::string claim = claimed_user;
      if (auto u = metadata.find(kUserMetadataKey);
          claim.empty() && u != metadata.end()) {
        claim.assign(u->second.data(), u->second.size());
      }
      who = LookupUser(claim);
      who->method = "claimed";
      who->admin = true;
      who->peer = context.peer();
      return who;
    } else {
      return absl::UnauthenticatedError(
          "no credential came with the call: run dcvlrctl on a host whose "
          "munged shares the cluster's key (or give its socket with "
          "--munge-socket), or present a user certificate with "
          "--tls-cert/--tls-key");
    }
  }
  if (!claimed_user.empty() && claimed_user != who->user) {
    return absl::PermissionDeniedError(
        absl::StrCat("you are ", who->user, " (", who->method, "); --user ",
                     claimed_user, " cannot make you someone else"));
  }
  who->peer = context.peer();
  return who;
}

}  // namespace dcvlr
