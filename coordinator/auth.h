// Who is calling: the coordinator's authentication of client calls.
//
// A call is made by the user a credential says, never by a request field:
//   - a user certificate (OU=dcvlr-user, signed by the cluster CA) presented
//     on the TLS connection: the user is its CN;
//   - else a MUNGE credential in the call's metadata (kMungeMetadataKey),
//     decoded by the coordinator's munged: the user is its uid's name in
//     this host's user database.
// With --insecure (development, loopback only) a call with neither is
// taken to be who its request (or kUserMetadataKey) says, and may do
// anything: no authentication means no authorization either.
#ifndef DCVLR_COORDINATOR_AUTH_H_
#define DCVLR_COORDINATOR_AUTH_H_

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/munge.h"
#include "coordinator/principal.h"
#include "grpcpp/server_context.h"

namespace dcvlr {

struct AuthOptions {
  // Accept a claimed user when no credential comes (--insecure).
  bool insecure = false;
  // Decode MUNGE credentials with the munged at munge_socket (empty: the
  // system's); false: only certificates.
  bool munge = true;
  std::string munge_socket;
};

class Authenticator {
 public:
  explicit Authenticator(AuthOptions options) : options_(std::move(options)) {}

  // The caller of `context`, its uid and Unix groups looked up on this host
  // (admin is left to the caller, who holds the cluster config).
  // `claimed_user` is the request's user field: with a credential it must
  // be empty or the credential's user; without one it counts only with
  // --insecure. UNAUTHENTICATED, saying what to do, when no credential is
  // good; PERMISSION_DENIED for a claim that is not the credential's user.
  absl::StatusOr<Principal> Authenticate(const grpc::ServerContext& context,
                                         const std::string& claimed_user) const;

  const AuthOptions& options() const { return options_; }

 private:
  // LookupUid, remembered for a minute: every MUNGE call names its uid, and
  // on a lab's hosts the user database is often a network service (LDAP,
  // sssd). munged itself refreshes group membership far more rarely.
  absl::StatusOr<Principal> CachedUid(int64_t uid) const;

  const AuthOptions options_;
  struct Cached {
    Principal principal;
    absl::Time until;
  };
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<int64_t, Cached> by_uid_
      ABSL_GUARDED_BY(cache_mu_);
};

// The account of `uid` on this host: its name and the names of its groups
// (primary first). NOT_FOUND if there is none.
absl::StatusOr<Principal> LookupUid(int64_t uid);
// The account of `user`, if this host has one; else just the name.
Principal LookupUser(const std::string& user);

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_AUTH_H_
