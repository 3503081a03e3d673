// Coordinator addresses as users give them: HOST:PORT, or the path of a file
// holding one (the coordinator writes <state-dir>/coordinator.addr).
#ifndef DCVLR_COMMON_ADDRESS_H_
#define DCVLR_COMMON_ADDRESS_H_

#include <string>

namespace dcvlr {

// Reads the address from `value` if it names a file; else returns `value`.
// Reading it each time follows a coordinator that restarted on a new port.
std::string ResolveAddress(const std::string& value);

// Whether HOST:PORT's host is this machine's loopback (127.0.0.0/8, ::1,
// localhost): only such addresses may be served without TLS.
bool IsLoopbackAddress(const std::string& host_port);

}  // namespace dcvlr

#endif  // DCVLR_COMMON_ADDRESS_H_
