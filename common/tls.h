// TLS for dcvlr's gRPC connections: certificates checked when a program
// starts, credentials for servers and channels, and the identity of the
// peer of a call.
//
// One cluster CA signs every certificate. A certificate's role is its
// subject's OU (deploy/dcvlr-certs.sh makes all of them):
//   OU=dcvlr-coordinator  the coordinator's server certificate; its host
//                         names and addresses in subjectAltName
//   OU=dcvlr-node         an agent's; CN is the node's name
//   OU=dcvlr-user         a person's client certificate; CN is the user name
// so that a node's certificate never passes for a user's, or the reverse.
#ifndef DCVLR_COMMON_TLS_H_
#define DCVLR_COMMON_TLS_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace dcvlr {

enum class CertRole { kCoordinator, kNode, kUser };

// "dcvlr-coordinator", "dcvlr-node", "dcvlr-user": the OU of each role.
const char* CertRoleOu(CertRole role);
// "coordinator", "node", "user": for messages.
const char* CertRoleName(CertRole role);

// The --tls-cert, --tls-key and --tls-ca flags of a program.
struct TlsFlags {
  std::string cert;
  std::string key;
  std::string ca;
  bool any() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// Checked PEM text of a program's certificate, key and CA.
struct TlsMaterial {
  std::string cert_pem;  // empty: no certificate of its own (a client)
  std::string key_pem;
  std::string ca_pem;
  std::string common_name;  // the certificate's CN
};

// Reads and checks the files: each readable and PEM; the key the
// certificate's; the certificate signed by the CA, valid now and of `role`.
// A client may give only the CA (`cert_optional`). Errors name the flag,
// the file and the reason ("--tls-cert node1.pem: certificate expired on
// ...").
absl::StatusOr<TlsMaterial> LoadTls(const TlsFlags& flags, CertRole role,
                                    bool cert_optional = false);

// A server that asks every client for a certificate and verifies any it
// is given against the CA; clients without one are let through (they
// authenticate per call).
std::shared_ptr<grpc::ServerCredentials> TlsServerCredentials(
    const TlsMaterial& tls);
// A channel that verifies the server's certificate against the CA (and
// its name against the address dialled), presenting ours if we have one.
std::shared_ptr<grpc::ChannelCredentials> TlsChannelCredentials(
    const TlsMaterial& tls);

// What a call's peer presented: the CN of a verified certificate and its
// role (nullopt: an OU that is none of ours).
struct PeerCertificate {
  std::string common_name;
  std::optional<CertRole> role;
  std::string fingerprint;  // SHA-256 of the DER, hex
};
// Null if the peer presented no certificate (or the call is not TLS).
std::optional<PeerCertificate> PeerCertificateOf(
    const grpc::AuthContext& context);

}  // namespace dcvlr

#endif  // DCVLR_COMMON_TLS_H_
