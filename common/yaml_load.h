// Loading YAML from people: the one way dcvlr turns YAML text (job files,
// the cluster config, the benchmark list) into yaml-cpp documents, with
// what a document may cost bounded before anything walks it.
//
// yaml-cpp resolves an alias by linking to the anchored node. A document
// can therefore hold a cycle (`training: &a [*a]`), which every recursive
// walk follows until the stack overflows, or a few hundred bytes whose
// aliases, expanded by the walks that read them (the job-file parser,
// YAML -> JSON), become billions of nodes. Each document is walked once
// here, as those readers would walk it, and refused when it is cyclic, nests
// deeper than kMaxYamlDepth or expands to more than kMaxYamlNodes nodes.
// yaml-cpp itself refuses flow nesting deeper than about a thousand levels.
#ifndef DCVLR_COMMON_YAML_LOAD_H_
#define DCVLR_COMMON_YAML_LOAD_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "yaml-cpp/yaml.h"

namespace dcvlr {

// Levels of sequences and mappings, the outermost included.
inline constexpr int kMaxYamlDepth = 64;
// Nodes of one document with every alias counted as a copy of what it
// names: real job files and configs have hundreds; a walk of this many takes
// milliseconds and a few tens of MB once converted.
inline constexpr int64_t kMaxYamlNodes = 200000;

// Every document of `text`, or an error "SOURCE:LINE:COL: ..." naming the
// problem: invalid YAML, a node that contains itself through an alias, too
// deep, or too many nodes once aliases are expanded.
absl::StatusOr<std::vector<YAML::Node>> LoadYamlDocuments(
    absl::string_view source_name, absl::string_view text);

// The first document, as YAML::Load (an empty file gives a null node);
// every document is checked.
absl::StatusOr<YAML::Node> LoadYamlDocument(absl::string_view source_name,
                                            absl::string_view text);

}  // namespace dcvlr

#endif  // DCVLR_COMMON_YAML_LOAD_H_
