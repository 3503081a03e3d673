// Blocking HTTP GET for tests (libcurl), and Prometheus' query API on top.
#ifndef DCVLR_TESTS_HTTP_H_
#define DCVLR_TESTS_HTTP_H_

#include <optional>
#include <string>

#include "nlohmann/json.hpp"

namespace dcvlr::testing {

// The body of a 200 answer; nullopt on any failure or other status.
std::optional<std::string> HttpGet(const std::string& url);

// Runs an instant PromQL query against the Prometheus at `address`
// (HOST:PORT) and returns data.result; null when the query failed.
nlohmann::json PromQuery(const std::string& address, const std::string& expr);

// Reads an address file (HOST:PORT and a newline); empty if absent.
std::string ReadAddress(const std::string& path);

// A TCP port that was free a moment ago on 127.0.0.1.
int FreePort();

}  // namespace dcvlr::testing

#endif  // DCVLR_TESTS_HTTP_H_
