// MUNGE credentials (what Slurm clusters run for user identity): a client
// asks its host's munged for a credential that carries its uid and gid; a
// server asks its own munged, which shares the cluster's key, to decode it.
// munged refuses a credential it decoded before (replay) or whose time to
// live has passed.
#ifndef DCVLR_COMMON_MUNGE_H_
#define DCVLR_COMMON_MUNGE_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace dcvlr {

// The gRPC metadata key a client's credential travels in.
inline constexpr char kMungeMetadataKey[] = "x-dcvlr-munge";
// The user dcvlrctl claims to be, sent on every call beside the credential;
// only an --insecure coordinator believes it.
inline constexpr char kUserMetadataKey[] = "x-dcvlr-user";

// A fresh credential for the calling process's uid and gid from the munged
// at `socket` (empty: the system's). UNAVAILABLE, saying what to do, when
// munged cannot be reached.
absl::StatusOr<std::string> MungeEncode(const std::string& socket);

struct MungeIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
};

// The uid and gid a credential carries, checked by the munged at `socket`.
// UNAUTHENTICATED for an expired, replayed, rewound or invalid credential;
// UNAVAILABLE when munged cannot be reached.
absl::StatusOr<MungeIdentity> MungeDecode(const std::string& credential,
                                          const std::string& socket);

}  // namespace dcvlr

#endif  // DCVLR_COMMON_MUNGE_H_
