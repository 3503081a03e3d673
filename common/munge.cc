#include "common/munge.h"

#include <munge.h>

#include <cstdlib>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dcvlr {
namespace {

struct CtxDeleter {
  void operator()(munge_ctx_t ctx) const { munge_ctx_destroy(ctx); }
};
using Ctx = std::unique_ptr<std::remove_pointer_t<munge_ctx_t>, CtxDeleter>;

absl::StatusOr<Ctx> MakeCtx(const std::string& socket) {
  Ctx ctx(munge_ctx_create());
  if (ctx == nullptr) return absl::ResourceExhaustedError("munge_ctx_create");
  if (!socket.empty() && munge_ctx_set(ctx.get(), MUNGE_OPT_SOCKET,
                                       socket.c_str()) != EMUNGE_SUCCESS) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MUNGE socket ", socket, ": ", munge_ctx_strerror(ctx.get())));
  }
  return ctx;
}

std::string SocketName(const std::string& socket) {
  return socket.empty() ? "the system's munged socket" : socket;
}

}  // namespace

absl::StatusOr<std::string> MungeEncode(const std::string& socket) {
  absl::StatusOr<Ctx> ctx = MakeCtx(socket);
  if (!ctx.ok()) return ctx.status();
  char* cred = nullptr;
  const munge_err_t err = munge_encode(&cred, ctx->get(), nullptr, 0);
  if (err != EMUNGE_SUCCESS) {
    return absl::UnavailableError(absl::StrCat(
        "cannot get a MUNGE credential from ", SocketName(socket), ": ",
        munge_ctx_strerror(ctx->get()),
        ". Is munged running on this host? Give its socket with "
        "--munge-socket or DCVLR_MUNGE_SOCKET, or use a user certificate "
        "(--tls-cert/--tls-key)"));
  }
  std::string out(cred);
  free(cred);
  return out;
}

absl::StatusOr<MungeIdentity> MungeDecode(const std::string& credential,
                                          const std::string& socket) {
  absl::StatusOr<Ctx> ctx = MakeCtx(socket);
  if (!ctx.ok()) return ctx.status();
  MungeIdentity id;
  void* payload = nullptr;
  int length = 0;
  const munge_err_t err = munge_decode(credential.c_str(), ctx->get(), &payload,
                                       &length, &id.uid, &id.gid);
  free(payload);
  switch (err) {
    case EMUNGE_SUCCESS:
      return id;
    case EMUNGE_SOCKET:
    case EMUNGE_TIMEOUT:
      return absl::UnavailableError(absl::StrCat(
          "the coordinator cannot reach munged at ", SocketName(socket), ": ",
          munge_ctx_strerror(ctx->get())));
    case EMUNGE_CRED_EXPIRED:
      return absl::UnauthenticatedError(
          "MUNGE credential expired: its time to live passed before the "
          "coordinator saw it (are this host's and the coordinator's clocks "
          "apart?); retry");
    case EMUNGE_CRED_REWOUND:
      return absl::UnauthenticatedError(
          "MUNGE credential from the future: this host's clock is ahead of "
          "the coordinator's");
    case EMUNGE_CRED_REPLAYED:
      return absl::UnauthenticatedError(
          "MUNGE credential replayed: each credential is good for one call");
    default:
      return absl::UnauthenticatedError(absl::StrCat(
          "MUNGE credential refused: ", munge_strerror(err),
          " (is this host's munged using the cluster's munge.key?)"));
  }
}

}  // namespace dcvlr
