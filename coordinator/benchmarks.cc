#include "coordinator/benchmarks.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/yaml_checker.h"
#include "common/yaml_load.h"
#include "yaml-cpp/yaml.h"

namespace dcvlr {
namespace {

constexpr size_t kMaxFileBytes = 1 << 20;

class Parser : public YamlChecker {
 public:
  Parser(absl::string_view source, BenchmarkRegistry* out)
      : YamlChecker(std::string(source)), out_(out) {}

  void Parse(const YAML::Node& root) {
    if (!CheckMap(root, "(top level)", {"benchmarks"})) return;
    const YAML::Node list = root["benchmarks"];
    if (!list) return;
    if (!list.IsMap()) {
      Error(list, "benchmarks",
            absl::StrCat("expected a mapping of benchmark names, got ",
                         Describe(list)));
      return;
    }
    for (const auto& entry : list) {
      const std::string name = entry.first.Scalar();
      const std::string key = absl::StrCat("benchmarks.", name);
      if (!IsValidName(name)) {
        Error(entry.first, key,
              "not a valid benchmark name: 1-63 letters, digits, '-', '_' or "
              "'.'");
        continue;
      }
      const YAML::Node& value = entry.second;
      if (!CheckMap(value, key, {"path", "synthetic", "description"})) {
        continue;
      }
      if (value["path"] && value["synthetic"]) {
        Error(value, key, "give either path or synthetic, not both");
        continue;
      }
      nlohmann::json benchmark;
      if (YAML::Node n = value["path"]) {
        auto path = String(n, key + ".path");
        if (!path) continue;
        if (path->empty() || (*path)[0] != '/') {
          Error(n, key + ".path",
                absl::StrCat("must be an absolute path every node can read, "
                             "got '",
                             *path, "'"));
          continue;
        }
        benchmark["path"] = *path;
      } else if (YAML::Node n = value["synthetic"]) {
        if (!CheckMap(n, key + ".synthetic",
                      {"split", "num_samples", "seed"})) {
          continue;
        }
        nlohmann::json synthetic = {
            {"split", "test"}, {"num_samples", 400}, {"seed", 7}};
        if (YAML::Node s = n["split"]) {
          auto split = String(s, key + ".synthetic.split");
          if (split && *split != "train" && *split != "test") {
            Error(s, key + ".synthetic.split", "expected train or test");
            continue;
          }
          if (split) synthetic["split"] = *split;
        }
        if (YAML::Node s = n["num_samples"]) {
          if (auto v = Int(s, key + ".synthetic.num_samples", 1, 1000000)) {
            synthetic["num_samples"] = *v;
          }
        }
        if (YAML::Node s = n["seed"]) {
          if (auto v = Int(s, key + ".synthetic.seed", 0, INT32_MAX)) {
            synthetic["seed"] = *v;
          }
        }
        benchmark["synthetic"] = synthetic;
      } else {
        Error(value, key, "give path: (a VLMEvalKit TSV) or synthetic:");
        continue;
      }
      (*out_)[name] = benchmark;
    }
  }

 private:
  BenchmarkRegistry* out_;
};

}  // namespace

BenchmarkRegistry DefaultBenchmarks() {
  return {{"synthetic_shapes",
           {{"synthetic",
             {{"split", "test"}, {"num_samples", 400}, {"seed", 7}}}}}};
}

absl::StatusOr<BenchmarkRegistry> ParseBenchmarks(absl::string_view source,
                                                  absl::string_view text) {
  if (text.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": more than ", kMaxFileBytes, " bytes"));
  }
  BenchmarkRegistry registry = DefaultBenchmarks();
  absl::StatusOr<YAML::Node> loaded = LoadYamlDocument(source, text);
  if (!loaded.ok()) return loaded.status();
  const YAML::Node root = *std::move(loaded);
  if (root.IsNull()) return registry;
  Parser parser(source, &registry);
  try {
    parser.Parse(root);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
  if (!parser.errors().empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(parser.errors(), "\n"));
  }
  return registry;
}

absl::StatusOr<BenchmarkRegistry> LoadBenchmarksFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  std::ostringstream text;
  text << in.rdbuf();
  return ParseBenchmarks(path, text.str());
}

}  // namespace dcvlr
