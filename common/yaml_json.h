// Conversion of YAML values to JSON, for the sections of a job file that are
// handed to worker programs (dcvlr-train, dcvlr-eval) as their config.
#ifndef DCVLR_COMMON_YAML_JSON_H_
#define DCVLR_COMMON_YAML_JSON_H_

#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace dcvlr {

// Plain scalars that read as integers, numbers, booleans or null become
// those JSON types (YAML 1.2 core schema); quoted scalars stay strings.
nlohmann::json YamlToJson(const YAML::Node& node);

}  // namespace dcvlr

#endif  // DCVLR_COMMON_YAML_JSON_H_
