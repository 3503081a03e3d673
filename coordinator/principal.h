// Who made a client call, as the coordinator's authentication established
// it (coordinator/auth.h), and what that lets them do to a job.
#ifndef DCVLR_COORDINATOR_PRINCIPAL_H_
#define DCVLR_COORDINATOR_PRINCIPAL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace dcvlr {

struct Principal {
  std::string user;
  // The uid of `user` on the coordinator's host; -1 when it has none (a
  // certificate's user without an account here).
  int64_t uid = -1;
  std::vector<std::string> groups;  // Unix groups, by name
  bool admin = false;               // the cluster config's admins, or uid 0
  // How the identity was established: "munge", "certificate" or, with
  // --insecure, "claimed".
  std::string method;
  std::string peer;  // the client's address

  // A principal for in-process callers and tests.
  static Principal User(std::string name, bool admin = false) {
    Principal p;
    p.user = std::move(name);
    p.admin = admin;
    p.method = "local";
    return p;
  }
  // May read everything of, and cancel, a job of `owner`.
  bool Owns(const std::string& owner) const { return admin || owner == user; }
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_PRINCIPAL_H_
