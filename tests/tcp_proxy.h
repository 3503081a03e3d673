// A loopback TCP proxy that a test can cut: while cut, it forwards nothing
// and answers nothing, in either direction, on old connections or new ones,
// so the peers see a network partition (silence), not a closed socket.
#ifndef DCVLR_TESTS_TCP_PROXY_H_
#define DCVLR_TESTS_TCP_PROXY_H_

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dcvlr::testing {

class TcpProxy {
 public:
  // Forwards 127.0.0.1:port() to `target` (HOST:PORT).
  explicit TcpProxy(std::string target);
  ~TcpProxy();

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  void Cut() { cut_ = true; }
  void Heal() { cut_ = false; }

 private:
  void AcceptLoop();
  void Pump(int from, int to);

  const std::string target_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> cut_{false};
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace dcvlr::testing

#endif  // DCVLR_TESTS_TCP_PROXY_H_
