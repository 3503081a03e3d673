#include "common/yaml_json.h"

#include <cmath>

#include "absl/strings/numbers.h"

namespace dcvlr {
namespace {

nlohmann::json ScalarToJson(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;  // quoted: always a string
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  if (text == "null" || text == "~" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  int64_t integer;
  if (absl::SimpleAtoi(text, &integer)) return integer;
  double number;
  // SimpleAtod also takes "inf" and "nan", which JSON cannot hold.
  if (absl::SimpleAtod(text, &number) && std::isfinite(number) &&
      text.find_first_of("0123456789") != std::string::npos) {
    return number;
  }
  return text;
}

}  // namespace

nlohmann::json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return ScalarToJson(node);
    case YAML::NodeType::Sequence: {
      nlohmann::json array = nlohmann::json::array();
      for (const auto& item : node) array.push_back(YamlToJson(item));
      return array;
    }
    case YAML::NodeType::Map: {
      nlohmann::json object = nlohmann::json::object();
      for (const auto& entry : node) {
        object[entry.first.Scalar()] = YamlToJson(entry.second);
      }
      return object;
    }
  }
  return nullptr;
}

}  // namespace dcvlr
