#include "common/address.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"

namespace dcvlr {

std::string ResolveAddress(const std::string& value) {
  std::error_code ec;
  if (value.empty() || !std::filesystem::is_regular_file(value, ec)) {
    return value;
  }
  std::ifstream in(value);
  std::string address;
  std::getline(in, address);
  return std::string(absl::StripAsciiWhitespace(address));
}

bool IsLoopbackAddress(const std::string& host_port) {
  std::string host = host_port.substr(0, host_port.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace dcvlr
