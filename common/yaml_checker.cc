#include "common/yaml_checker.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dcvlr {
namespace {

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string SuggestKey(const std::string& key,
                       const std::vector<std::string>& known) {
  std::string best;
  size_t best_distance = 3;
  for (const std::string& candidate : known) {
    size_t d = EditDistance(key, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best.empty() ? "" : absl::StrCat(" (did you mean '", best, "'?)");
}

bool IsValidName(const std::string& name) {
  if (name.empty() || name.size() > 63 ||
      !absl::ascii_isalnum(static_cast<unsigned char>(name[0]))) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' ||
           c == '_' || c == '.';
  });
}

void YamlChecker::Error(const YAML::Node& at, const std::string& key,
                        const std::string& message) {
  const YAML::Mark mark = at.Mark();
  if (mark.line < 0) {  // not from the file (a flag, a default)
    errors_.push_back(absl::StrCat(source_name_, ": ", key, ": ", message));
    return;
  }
  errors_.push_back(absl::StrCat(source_name_, ":", mark.line + 1, ":",
                                 mark.column + 1, ": ", key, ": ", message));
}

void YamlChecker::Record(const std::string& key, const YAML::Node& node) {
  if (positions_ == nullptr) return;
  const YAML::Mark mark = node.Mark();
  if (mark.line < 0) return;
  (*positions_)[key] = SourcePos{mark.line + 1, mark.column + 1};
}

std::string YamlChecker::Describe(const YAML::Node& node) {
  if (node.IsNull()) return "nothing";
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  std::string value = node.Scalar();
  if (value.size() > 40) value = value.substr(0, 37) + "...";
  return absl::StrCat("'", value, "'");
}

bool YamlChecker::CheckMap(const YAML::Node& node, const std::string& key,
                           const std::vector<std::string>& known) {
  if (!node.IsMap()) {
    Error(node, key, absl::StrCat("expected a mapping, got ", Describe(node)));
    return false;
  }
  for (const auto& entry : node) {
    if (!entry.first.IsScalar()) {
      Error(entry.first, key, "keys must be plain names");
      continue;
    }
    const std::string& name = entry.first.Scalar();
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      Error(entry.first, key.empty() ? name : absl::StrCat(key, ".", name),
            absl::StrCat("unknown key", SuggestKey(name, known),
                         "; known: ", absl::StrJoin(known, ", ")));
    }
  }
  return true;
}

std::optional<std::string> YamlChecker::String(const YAML::Node& node,
                                               const std::string& key) {
  Record(key, node);
  if (!node.IsScalar()) {
    Error(node, key, absl::StrCat("expected a string, got ", Describe(node)));
    return std::nullopt;
  }
  return node.Scalar();
}

std::optional<int64_t> YamlChecker::Int(const YAML::Node& node,
                                        const std::string& key, int64_t min,
                                        int64_t max) {
  Record(key, node);
  int64_t value = 0;
  if (!node.IsScalar() || node.Tag() == "!" ||
      !absl::SimpleAtoi(node.Scalar(), &value)) {
    Error(node, key, absl::StrCat("expected an integer, got ", Describe(node)));
    return std::nullopt;
  }
  if (value < min || value > max) {
    Error(node, key,
          absl::StrCat("must be from ", min, " to ", max, ", got ", value));
    return std::nullopt;
  }
  return value;
}

std::optional<double> YamlChecker::Number(const YAML::Node& node,
                                          const std::string& key, double min,
                                          double max) {
  Record(key, node);
  double value = 0;
  if (!node.IsScalar() || node.Tag() == "!" ||
      !absl::SimpleAtod(node.Scalar(), &value) || !std::isfinite(value)) {
    Error(node, key, absl::StrCat("expected a number, got ", Describe(node)));
    return std::nullopt;
  }
  if (value < min || value > max) {
    Error(node, key,
          absl::StrCat("must be from ", min, " to ", max, ", got ", value));
    return std::nullopt;
  }
  return value;
}

std::optional<bool> YamlChecker::Bool(const YAML::Node& node,
                                      const std::string& key) {
  Record(key, node);
  if (node.IsScalar() && node.Tag() != "!") {
    const std::string v = absl::AsciiStrToLower(node.Scalar());
    if (v == "true" || v == "yes" || v == "on") return true;
    if (v == "false" || v == "no" || v == "off") return false;
  }
  Error(node, key,
        absl::StrCat("expected true or false, got ", Describe(node)));
  return std::nullopt;
}

std::vector<std::string> YamlChecker::StringList(const YAML::Node& node,
                                                 const std::string& key,
                                                 bool allow_single) {
  Record(key, node);
  std::vector<std::string> values;
  if (allow_single && node.IsScalar()) {
    Record(absl::StrCat(key, "[0]"), node);
    values.push_back(node.Scalar());
    return values;
  }
  if (!node.IsSequence()) {
    Error(node, key,
          absl::StrCat("expected a list of strings, got ", Describe(node)));
    return values;
  }
  for (size_t i = 0; i < node.size(); ++i) {
    std::string item_key = absl::StrCat(key, "[", i, "]");
    if (auto value = String(node[i], item_key)) values.push_back(*value);
  }
  return values;
}

}  // namespace dcvlr
