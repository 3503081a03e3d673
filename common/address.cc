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

}  // namespace dcvlr
