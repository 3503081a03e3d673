// Small helpers shared by the worker programs' tests (dcvlr-train,
// dcvlr-eval). Header-only; for tests only.
#ifndef DCVLR_WORKER_TRAINER_TEST_UTIL_H_
#define DCVLR_WORKER_TRAINER_TEST_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace dcvlr::trainer::testing {

// A file's bytes; empty if it cannot be read.
inline std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A loopback port that was free a moment ago (for MASTER_PORT).
inline int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace dcvlr::trainer::testing

#endif  // DCVLR_WORKER_TRAINER_TEST_UTIL_H_
