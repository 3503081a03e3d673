#include "common/job_file.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/yaml_checker.h"
#include "common/yaml_json.h"
#include "yaml-cpp/yaml.h"

namespace dcvlr {
namespace {

using dcvlr::v1::JobKind;
using dcvlr::v1::JobSpec;

constexpr size_t kMaxFileBytes = 1 << 20;

// Keys of the trainer's own sections (Oumi's vocabulary), carried to the
// worker program as JSON for kind train and eval.
const std::set<std::string>& WorkerSections() {
  static const auto* sections = new std::set<std::string>{
      "model",      "data",       "training",         "peft",
      "fsdp",       "deepspeed",  "evaluation",       "generation",
      "tasks",      "benchmarks", "inference_engine", "eval"};
  return *sections;
}

const std::set<std::string>& TopLevelKeys() {
  static const auto* keys = new std::set<std::string>{
      "name",   "kind",           "priority", "resources", "retry",
      "after",  "checkpoint_dir", "env",      "command",   "run",
      "grace_s", "time_limit_s"};
  return *keys;
}

// Variables that the agent sets for every process (DESIGN.md "Process
// contract"); a job file may not override them.
bool IsReservedEnv(const std::string& name) {
  static const auto* reserved = new std::set<std::string>{
      "RANK",        "LOCAL_RANK",  "WORLD_SIZE", "LOCAL_WORLD_SIZE",
      "NODE_RANK",   "GROUP_RANK",  "MASTER_ADDR", "MASTER_PORT",
      "CUDA_VISIBLE_DEVICES"};
  return reserved->count(name) > 0 || name.rfind("DCVLR_", 0) == 0;
}

// Finds the first byte that makes the text unfit to be a job file (a NUL,
// another control character, or invalid UTF-8), with its position.
std::optional<std::pair<SourcePos, std::string>> FindBinary(
    absl::string_view text) {
  int line = 1, column = 1;
  for (size_t i = 0; i < text.size();) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    size_t length = 1;
    bool bad = false;
    if (c < 0x20 && c != '\n' && c != '\r' && c != '\t') {
      bad = true;
    } else if (c >= 0x80) {
      if ((c & 0xE0) == 0xC0 && c >= 0xC2) length = 2;
      else if ((c & 0xF0) == 0xE0) length = 3;
      else if ((c & 0xF8) == 0xF0 && c <= 0xF4) length = 4;
      else bad = true;
      for (size_t k = 1; !bad && k < length; ++k) {
        bad = i + k >= text.size() ||
              (static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80;
      }
    }
    if (bad) {
      char hex[8];
      snprintf(hex, sizeof(hex), "0x%02X", c);
      return std::make_pair(
          SourcePos{line, column},
          absl::StrCat("byte ", hex, " at offset ", i,
                       ": a job file must be UTF-8 text"));
    }
    if (c == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
    i += length;
  }
  return std::nullopt;
}

class Parser : public YamlChecker {
 public:
  explicit Parser(ParsedJobFile* out)
      : YamlChecker(out->source_name, &out->positions), out_(out) {}

  void Parse(const YAML::Node& root);

 private:
  void ParseKind(const YAML::Node& root, bool has_worker_sections);
  void ParseName(const YAML::Node& root);
  void ParseResources(const YAML::Node& node);
  void ParseRetry(const YAML::Node& node);
  void ParseEnv(const YAML::Node& node);
  void ParseProgram(const YAML::Node& root);

  ParsedJobFile* out_;
  JobSpec& spec() { return out_->spec; }
  // procs_per_node: gpu, resolved once gpus_per_node is known.
  bool procs_per_gpu_ = false;
  YAML::Node procs_node_;
};

void Parser::ParseKind(const YAML::Node& root, bool has_worker_sections) {
  if (YAML::Node kind = root["kind"]) {
    std::optional<std::string> value = String(kind, "kind");
    if (!value) return;
    if (*value == "command") {
      spec().set_kind(v1::JOB_KIND_COMMAND);
    } else if (*value == "train") {
      spec().set_kind(v1::JOB_KIND_TRAIN);
    } else if (*value == "eval") {
      spec().set_kind(v1::JOB_KIND_EVAL);
    } else {
      Error(kind, "kind",
            absl::StrCat("expected train, eval or command, got '", *value,
                         "'"));
    }
    return;
  }
  // Without `kind`, an Oumi training config is a train job and a file with a
  // command is a command job.
  if (root["training"]) {
    spec().set_kind(v1::JOB_KIND_TRAIN);
  } else if (root["command"] || root["run"]) {
    spec().set_kind(v1::JOB_KIND_COMMAND);
  } else {
    Error(root, "kind",
          has_worker_sections
              ? "missing; say train or eval"
              : "missing; expected train, eval or command");
  }
}

void Parser::ParseName(const YAML::Node& root) {
  std::string name;
  if (YAML::Node node = root["name"]) {
    if (auto value = String(node, "name")) name = *value;
    else return;
  } else {
    // Default: the file's base name without its extension.
    name = out_->source_name;
    if (size_t slash = name.rfind('/'); slash != std::string::npos) {
      name = name.substr(slash + 1);
    }
    if (size_t dot = name.find('.'); dot != std::string::npos && dot > 0) {
      name = name.substr(0, dot);
    }
  }
  const bool valid = IsValidName(name);
  bool looks_like_id = name.size() > 2 && name.rfind("j-", 0) == 0 &&
                       std::all_of(name.begin() + 2, name.end(),
                                   [](char c) { return absl::ascii_isdigit(c); });
  const YAML::Node at = root["name"] ? root["name"] : root;
  if (!valid) {
    Error(at, "name",
          absl::StrCat("'", name,
                       "' is not a valid job name: 1-63 letters, digits, "
                       "'-', '_' or '.', starting with a letter or digit"));
  } else if (looks_like_id) {
    Error(at, "name",
          absl::StrCat("'", name, "' has the form of a job id; pick another"));
  }
  spec().set_name(name);
}

void Parser::ParseResources(const YAML::Node& node) {
  if (!CheckMap(node, "resources", {"nodes", "gpus_per_node",
                                    "procs_per_node"})) {
    return;
  }
  auto* resources = spec().mutable_resources();
  if (YAML::Node n = node["nodes"]) {
    if (auto v = Int(n, "resources.nodes", 1, kMaxNodes)) {
      resources->set_nodes(static_cast<int>(*v));
    }
  }
  if (YAML::Node n = node["gpus_per_node"]) {
    if (auto v = Int(n, "resources.gpus_per_node", 0, kMaxGpusPerNode)) {
      resources->set_gpus_per_node(static_cast<int>(*v));
    }
  }
  if (YAML::Node n = node["procs_per_node"]) {
    Record("resources.procs_per_node", n);
    if (n.IsScalar() && n.Scalar() == "gpu") {
      procs_per_gpu_ = true;
      procs_node_ = n;
    } else if (auto v = Int(n, "resources.procs_per_node", 1,
                            kMaxProcsPerNode)) {
      resources->set_procs_per_node(static_cast<int>(*v));
    }
  }
}

void Parser::ParseRetry(const YAML::Node& node) {
  if (!CheckMap(node, "retry", {"max_attempts", "on_failure", "backoff_s"})) {
    return;
  }
  auto* retry = spec().mutable_retry();
  if (YAML::Node n = node["max_attempts"]) {
    if (auto v = Int(n, "retry.max_attempts", 1, kMaxAttempts)) {
      retry->set_max_attempts(static_cast<int>(*v));
    }
  }
  if (YAML::Node n = node["on_failure"]) {
    if (auto v = Int(n, "retry.on_failure", 0, kMaxAttempts)) {
      retry->set_on_failure(static_cast<int>(*v));
    }
  }
  if (YAML::Node n = node["backoff_s"]) {
    if (auto v = Number(n, "retry.backoff_s", 0, 86400)) {
      retry->set_backoff_s(*v);
    }
  }
}

void Parser::ParseEnv(const YAML::Node& node) {
  Record("env", node);
  if (!node.IsMap()) {
    Error(node, "env", absl::StrCat("expected a mapping of NAME: value, got ",
                                    Describe(node)));
    return;
  }
  for (const auto& entry : node) {
    const std::string name = entry.first.Scalar();
    const std::string key = absl::StrCat("env.", name);
    bool valid = !name.empty() && !absl::ascii_isdigit(name[0]);
    for (char c : name) {
      valid = valid && (absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
                        c == '_');
    }
    if (!valid) {
      Error(entry.first, key, "not a valid environment variable name");
    } else if (IsReservedEnv(name)) {
      Error(entry.first, key,
            "set by dcvlr for every process (DESIGN.md process contract); "
            "it cannot be overridden");
    } else if (!entry.second.IsScalar()) {
      Error(entry.second, key,
            absl::StrCat("expected a string, got ", Describe(entry.second)));
    } else {
      (*spec().mutable_env())[name] = entry.second.Scalar();
    }
  }
}

void Parser::ParseProgram(const YAML::Node& root) {
  YAML::Node command = root["command"];
  YAML::Node run = root["run"];
  const bool is_command = spec().kind() == v1::JOB_KIND_COMMAND;
  if (!is_command) {
    if (command) Error(command, "command", "only for kind: command");
    if (run) Error(run, "run", "only for kind: command");
    return;
  }
  if (command && run) {
    Error(run, "run", "give either command (argv) or run (a script), not both");
    return;
  }
  if (command) {
    if (command.IsScalar()) {
      Error(command, "command",
            "expected a list (argv, run without a shell), e.g. "
            "[\"python3\", \"x.py\"]; use run: for a shell script");
      return;
    }
    for (const std::string& arg : StringList(command, "command", false)) {
      spec().add_command(arg);
    }
    if (command.IsSequence() && command.size() == 0) {
      Error(command, "command", "must not be empty");
    }
  } else if (run) {
    if (auto script = String(run, "run")) {
      if (absl::StripAsciiWhitespace(*script).empty()) {
        Error(run, "run", "must not be empty");
      }
      spec().set_run(*script);
    }
  } else {
    Error(root, "command", "missing; kind: command needs command: or run:");
  }
}

void Parser::Parse(const YAML::Node& root) {
  if (!root.IsMap()) {
    Error(root, "(top level)",
          absl::StrCat("expected a mapping of keys such as name, kind and "
                       "resources, got ",
                       Describe(root)));
    return;
  }
  std::vector<std::string> known(TopLevelKeys().begin(), TopLevelKeys().end());
  known.insert(known.end(), WorkerSections().begin(), WorkerSections().end());
  bool has_worker_sections = false;
  for (const auto& entry : root) {
    if (!entry.first.IsScalar()) {
      Error(entry.first, "(top level)", "keys must be plain names");
      continue;
    }
    const std::string& name = entry.first.Scalar();
    Record(name, entry.first);
    if (WorkerSections().count(name)) {
      has_worker_sections = true;
    } else if (!TopLevelKeys().count(name)) {
      Error(entry.first, name,
            absl::StrCat("unknown key", SuggestKey(name, known)));
    }
  }

  ParseKind(root, has_worker_sections);
  ParseName(root);

  // Defaults depend on the kind: workers use a GPU per process.
  const bool is_worker = spec().kind() == v1::JOB_KIND_TRAIN ||
                         spec().kind() == v1::JOB_KIND_EVAL;
  spec().set_priority(50);
  auto* resources = spec().mutable_resources();
  resources->set_nodes(1);
  resources->set_gpus_per_node(is_worker ? 1 : 0);
  procs_per_gpu_ = is_worker;
  auto* retry = spec().mutable_retry();
  retry->set_max_attempts(5);
  retry->set_on_failure(0);
  retry->set_backoff_s(5);
  spec().set_grace_s(30);

  if (YAML::Node n = root["priority"]) {
    if (auto v = Int(n, "priority", 0, 100)) spec().set_priority(*v);
  }
  if (YAML::Node n = root["resources"]) ParseResources(n);
  if (procs_per_gpu_) {
    if (resources->gpus_per_node() == 0) {
      Error(procs_node_ ? procs_node_ : root, "resources.procs_per_node",
            "'gpu' (one process per GPU) needs gpus_per_node >= 1");
    }
    resources->set_procs_per_node(std::max(1, resources->gpus_per_node()));
  } else if (resources->procs_per_node() == 0) {
    resources->set_procs_per_node(1);
  }
  if (YAML::Node n = root["retry"]) ParseRetry(n);
  if (YAML::Node n = root["after"]) {
    for (const std::string& ref : StringList(n, "after", true)) {
      spec().add_after(ref);
    }
  }
  if (YAML::Node n = root["checkpoint_dir"]) {
    if (auto dir = String(n, "checkpoint_dir")) {
      if (dir->empty() || (*dir)[0] != '/') {
        Error(n, "checkpoint_dir",
              absl::StrCat("must be an absolute path, got '", *dir, "'"));
      }
      spec().set_checkpoint_dir(*dir);
    }
  }
  if (YAML::Node n = root["env"]) ParseEnv(n);
  if (YAML::Node n = root["grace_s"]) {
    if (auto v = Number(n, "grace_s", 0, kMaxGraceS)) spec().set_grace_s(*v);
  }
  if (YAML::Node n = root["time_limit_s"]) {
    if (auto v = Number(n, "time_limit_s", 0, 30 * 86400.0)) {
      spec().set_time_limit_s(*v);
    }
  }
  ParseProgram(root);

  // The trainer's sections travel as one JSON object.
  if (is_worker) {
    nlohmann::json config = nlohmann::json::object();
    for (const auto& entry : root) {
      const std::string& name = entry.first.Scalar();
      if (WorkerSections().count(name)) config[name] = YamlToJson(entry.second);
    }
    spec().set_worker_config_json(config.dump());
  } else if (spec().kind() == v1::JOB_KIND_COMMAND) {
    for (const auto& entry : root) {
      const std::string& name = entry.first.Scalar();
      if (WorkerSections().count(name)) {
        Error(entry.first, name, "only for kind: train or eval");
      }
    }
  }
}

}  // namespace

std::string ParsedJobFile::Where(const std::string& key) const {
  auto it = positions.find(key);
  if (it == positions.end()) return absl::StrCat(source_name, ": ", key);
  return absl::StrCat(source_name, ":", it->second.line, ":",
                      it->second.column, ": ", key);
}

absl::StatusOr<ParsedJobFile> ParseJobFile(absl::string_view source_name,
                                           absl::string_view text) {
  ParsedJobFile out;
  out.source_name = std::string(source_name);
  if (text.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": ", text.size(),
                     " bytes; a job file may have at most ", kMaxFileBytes));
  }
  if (auto binary = FindBinary(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ":", binary->first.line, ":",
                     binary->first.column, ": ", binary->second));
  }
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ":", e.mark.line + 1, ":",
                     e.mark.column + 1, ": invalid YAML: ", e.msg));
  }
  if (documents.empty() || documents[0].IsNull()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source_name, ":1:1: empty job file; expected keys such as name, kind, "
                     "resources"));
  }
  if (documents.size() > 1) {
    YAML::Mark mark = documents[1].Mark();
    return absl::InvalidArgumentError(absl::StrCat(
        source_name, ":", mark.line + 1, ":", mark.column + 1,
        ": a second YAML document; submit one job per file"));
  }
  Parser parser(&out);
  try {
    parser.Parse(documents[0]);
  } catch (const YAML::Exception& e) {
    // yaml-cpp reports structural surprises (e.g. aliases it cannot follow)
    // by exception; they are errors of the file, not of dcvlr.
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ":", e.mark.line + 1, ":",
                     e.mark.column + 1, ": ", e.msg));
  }
  if (!parser.errors().empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(parser.errors(), "\n"));
  }
  return out;
}

}  // namespace dcvlr
