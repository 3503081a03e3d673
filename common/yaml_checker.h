// Checking YAML documents against what a config file expects (the job file,
// the cluster config), with errors that a person can act on: each names the
// file, line, column and key, says what was expected, and suggests the key
// that was probably meant.
#ifndef DCVLR_COMMON_YAML_CHECKER_H_
#define DCVLR_COMMON_YAML_CHECKER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "yaml-cpp/yaml.h"

namespace dcvlr {

// A 1-based position in a file.
struct SourcePos {
  int line = 0;
  int column = 0;
};

// " (did you mean 'resources'?)" when a known key is within two edits of
// `key`; empty otherwise.
std::string SuggestKey(const std::string& key,
                       const std::vector<std::string>& known);

// A name of 1-63 letters, digits, '-', '_' or '.', starting with a letter or
// digit (job, user and group names).
bool IsValidName(const std::string& name);

// Collects every problem of a document rather than stopping at the first.
// Not thread-safe.
class YamlChecker {
 public:
  // With `positions`, the position of every key read is recorded there.
  explicit YamlChecker(std::string source_name,
                       std::map<std::string, SourcePos>* positions = nullptr)
      : source_name_(std::move(source_name)), positions_(positions) {}

  const std::string& source_name() const { return source_name_; }
  const std::vector<std::string>& errors() const { return errors_; }

  // Adds "FILE:LINE:COL: KEY: message" at `at`'s position.
  void Error(const YAML::Node& at, const std::string& key,
             const std::string& message);
  void Record(const std::string& key, const YAML::Node& node);

  // "a mapping", "a list", "nothing", or the scalar quoted (shortened).
  static std::string Describe(const YAML::Node& node);

  // Checks that `node` is a mapping whose keys are all in `known`.
  bool CheckMap(const YAML::Node& node, const std::string& key,
                const std::vector<std::string>& known);

  // Each returns nullopt (and records an error) when the value does not fit.
  std::optional<std::string> String(const YAML::Node& node,
                                    const std::string& key);
  std::optional<int64_t> Int(const YAML::Node& node, const std::string& key,
                             int64_t min, int64_t max);
  std::optional<double> Number(const YAML::Node& node, const std::string& key,
                               double min, double max);
  std::optional<bool> Bool(const YAML::Node& node, const std::string& key);
  // A list of strings; with `allow_single`, a lone string is a list of one.
  std::vector<std::string> StringList(const YAML::Node& node,
                                      const std::string& key,
                                      bool allow_single);

 private:
  const std::string source_name_;
  std::map<std::string, SourcePos>* const positions_;
  std::vector<std::string> errors_;
};

}  // namespace dcvlr

#endif  // DCVLR_COMMON_YAML_CHECKER_H_
