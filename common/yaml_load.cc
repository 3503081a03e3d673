#include "common/yaml_load.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dcvlr {
namespace {

std::string Where(absl::string_view source_name, const YAML::Mark& mark) {
  return absl::StrCat(source_name, ":", mark.line + 1, ":", mark.column + 1);
}

// Walks `node` as the readers will (aliases expanded), keeping the chain of
// containers above it in `path`.
class BoundsWalk {
 public:
  explicit BoundsWalk(absl::string_view source_name)
      : source_name_(source_name) {}

  absl::Status Walk(const YAML::Node& node) {
    if (++nodes_ > kMaxYamlNodes) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(source_name_, node.Mark()),
                       ": the document expands to more than ", kMaxYamlNodes,
                       " nodes once its aliases are expanded"));
    }
    if (!node.IsSequence() && !node.IsMap()) return absl::OkStatus();
    for (const YAML::Node& above : path_) {
      if (above.is(node)) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(source_name_, node.Mark()),
                         ": an alias makes this node contain itself"));
      }
    }
    if (path_.size() >= static_cast<size_t>(kMaxYamlDepth)) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(source_name_, node.Mark()),
                       ": nested deeper than ", kMaxYamlDepth, " levels"));
    }
    path_.push_back(node);
    absl::Status status;
    if (node.IsMap()) {
      for (auto it = node.begin(); it != node.end() && status.ok(); ++it) {
        status = Walk(it->first);
        if (status.ok()) status = Walk(it->second);
      }
    } else {
      for (auto it = node.begin(); it != node.end() && status.ok(); ++it) {
        status = Walk(*it);
      }
    }
    path_.pop_back();
    return status;
  }

 private:
  const absl::string_view source_name_;
  std::vector<YAML::Node> path_;
  int64_t nodes_ = 0;
};

}  // namespace

absl::StatusOr<std::vector<YAML::Node>> LoadYamlDocuments(
    absl::string_view source_name, absl::string_view text) {
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    // yaml-cpp's message for nesting past its own limit is "bad file".
    return absl::InvalidArgumentError(absl::StrCat(
        Where(source_name, e.mark),
        ": invalid YAML: ", e.msg == "bad file" ? "nested too deeply" : e.msg));
  }
  for (const YAML::Node& document : documents) {
    BoundsWalk walk(source_name);
    if (absl::Status s = walk.Walk(document); !s.ok()) return s;
  }
  return documents;
}

absl::StatusOr<YAML::Node> LoadYamlDocument(absl::string_view source_name,
                                            absl::string_view text) {
  absl::StatusOr<std::vector<YAML::Node>> documents =
      LoadYamlDocuments(source_name, text);
  if (!documents.ok()) return documents.status();
  // As YAML::Load: the first document.
  if (documents->empty()) return YAML::Node();
  return documents->front();
}

}  // namespace dcvlr
