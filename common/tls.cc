#include "common/tls.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dcvlr {
namespace {

// Certificates and keys are a few KiB; a flag that names something else
// (a disk image, /dev/zero) is refused before it is read whole.
constexpr std::streamoff kMaxPemBytes = 1 << 20;

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct StoreDeleter {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxDeleter {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

// OpenSSL's queued errors as one string (and the queue emptied).
std::string OpenSslError() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

absl::StatusOr<std::string> ReadPem(const std::string& flag,
                                    const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": cannot be read"));
  }
  const std::streamoff size = in.tellg();
  if (size > kMaxPemBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": ", size,
                     " bytes is too big for a PEM certificate or key"));
  }
  in.seekg(0);
  std::ostringstream text;
  text << in.rdbuf();
  if (!absl::StrContains(text.str(), "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": not a PEM file"));
  }
  return text.str();
}

std::unique_ptr<BIO, BioDeleter> MemBio(const std::string& text) {
  return std::unique_ptr<BIO, BioDeleter>(
      BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// Every certificate in `pem`, in order.
std::vector<X509Ptr> ParseCerts(const std::string& pem) {
  std::vector<X509Ptr> certs;
  auto bio = MemBio(pem);
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certs.emplace_back(cert);
  }
  ERR_clear_error();  // the end of the input reads as an error
  return certs;
}

std::string NameEntry(X509* cert, int nid) {
  X509_NAME* name = X509_get_subject_name(cert);
  const int i = X509_NAME_get_index_by_NID(name, nid, -1);
  if (i < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

std::optional<CertRole> RoleOf(X509* cert) {
  const std::string ou = NameEntry(cert, NID_organizationalUnitName);
  for (CertRole role :
       {CertRole::kCoordinator, CertRole::kNode, CertRole::kUser}) {
    if (ou == CertRoleOu(role)) return role;
  }
  return std::nullopt;
}

std::string Time(const ASN1_TIME* time) {
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new(BIO_s_mem()));
  ASN1_TIME_print(bio.get(), time);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string Fingerprint(X509* cert) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(cert, EVP_sha256(), digest, &n);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<char*>(digest), n));
}

// Why `cert` does not chain to one of `cas` now; OK if it does.
absl::Status Verify(X509* cert, const std::vector<X509Ptr>& cas) {
  std::unique_ptr<X509_STORE, StoreDeleter> store(X509_STORE_new());
  for (const X509Ptr& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
  std::unique_ptr<X509_STORE_CTX, StoreCtxDeleter> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), cert, nullptr);
  if (X509_verify_cert(ctx.get()) == 1) return absl::OkStatus();
  const int error = X509_STORE_CTX_get_error(ctx.get());
  std::string why = X509_verify_cert_error_string(error);
  if (error == X509_V_ERR_CERT_HAS_EXPIRED) {
    why =
        absl::StrCat("certificate expired on ", Time(X509_get0_notAfter(cert)));
  } else if (error == X509_V_ERR_CERT_NOT_YET_VALID) {
    why = absl::StrCat("certificate not valid before ",
                       Time(X509_get0_notBefore(cert)));
  } else if (error == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
             error == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
             error == X509_V_ERR_CERT_SIGNATURE_FAILURE) {
    why = "not signed by the cluster CA given in --tls-ca";
  }
  ERR_clear_error();
  return absl::InvalidArgumentError(why);
}

}  // namespace

const char* CertRoleOu(CertRole role) {
  switch (role) {
    case CertRole::kCoordinator:
      return "dcvlr-coordinator";
    case CertRole::kNode:
      return "dcvlr-node";
    case CertRole::kUser:
      return "dcvlr-user";
  }
  return "";
}

const char* CertRoleName(CertRole role) {
  switch (role) {
    case CertRole::kCoordinator:
      return "coordinator";
    case CertRole::kNode:
      return "node";
    case CertRole::kUser:
      return "user";
  }
  return "";
}

absl::StatusOr<TlsMaterial> LoadTls(const TlsFlags& flags, CertRole role,
                                    bool cert_optional) {
  TlsMaterial out;
  if (flags.ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls-ca is required with --tls-cert/--tls-key: the cluster CA's "
        "certificate");
  }
  if (flags.cert.empty() != flags.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: give both or neither");
  }
  if (flags.cert.empty() && !cert_optional) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert and --tls-key are required: this program's ",
                     CertRoleName(role), " certificate and key"));
  }
  absl::StatusOr<std::string> ca = ReadPem("--tls-ca", flags.ca);
  if (!ca.ok()) return ca.status();
  std::vector<X509Ptr> cas = ParseCerts(*ca);
  if (cas.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-ca ", flags.ca, ": holds no certificate"));
  }
  out.ca_pem = *std::move(ca);
  if (flags.cert.empty()) return out;

  absl::StatusOr<std::string> cert_pem = ReadPem("--tls-cert", flags.cert);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadPem("--tls-key", flags.key);
  if (!key_pem.ok()) return key_pem.status();
  std::vector<X509Ptr> certs = ParseCerts(*cert_pem);
  if (certs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", flags.cert, ": holds no certificate"));
  }
  X509* cert = certs.front().get();
  auto key_bio = MemBio(*key_pem);
  std::unique_ptr<EVP_PKEY, KeyDeleter> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key ", flags.key, ": not an unencrypted PEM private key (",
        OpenSslError(), ")"));
  }
  if (X509_check_private_key(cert, key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key ", flags.key, ": is not the key of --tls-cert ",
                     flags.cert));
  }
  if (absl::Status s = Verify(cert, cas); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", flags.cert, ": ", s.message()));
  }
  const std::optional<CertRole> found = RoleOf(cert);
  if (found != role) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-cert ", flags.cert, ": a ",
        found ? CertRoleName(*found) : "foreign",
        " certificate (OU=", NameEntry(cert, NID_organizationalUnitName),
        ") where a ", CertRoleName(role), " certificate (OU=", CertRoleOu(role),
        ") is needed"));
  }
  out.common_name = NameEntry(cert, NID_commonName);
  if (out.common_name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", flags.cert, ": its subject has no CN"));
  }
  out.cert_pem = *std::move(cert_pem);
  out.key_pem = *std::move(key_pem);
  return out;
}

std::shared_ptr<grpc::ServerCredentials> TlsServerCredentials(
    const TlsMaterial& tls) {
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = tls.ca_pem;
  options.pem_key_cert_pairs.push_back({tls.key_pem, tls.cert_pem});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> TlsChannelCredentials(
    const TlsMaterial& tls) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca_pem;
  options.pem_private_key = tls.key_pem;
  options.pem_cert_chain = tls.cert_pem;
  return grpc::SslCredentials(options);
}

std::optional<PeerCertificate> PeerCertificateOf(
    const grpc::AuthContext& context) {
  if (!context.IsPeerAuthenticated()) return std::nullopt;
  std::vector<grpc::string_ref> pems =
      context.FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pems.empty()) return std::nullopt;
  std::vector<X509Ptr> certs =
      ParseCerts(std::string(pems.front().data(), pems.front().size()));
  if (certs.empty()) return std::nullopt;
  PeerCertificate peer;
  peer.common_name = NameEntry(certs.front().get(), NID_commonName);
  peer.role = RoleOf(certs.front().get());
  peer.fingerprint = Fingerprint(certs.front().get());
  return peer;
}

}  // namespace dcvlr
