#include "common/job_file.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/launch.h"
#include "common/process_contract.h"
#include "common/yaml_checker.h"
#include "common/yaml_json.h"
#include "common/yaml_load.h"
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
      "model", "data",       "training",         "peft",
      "fsdp",  "deepspeed",  "evaluation",       "generation",
      "tasks", "benchmarks", "inference_engine", "eval"};
  return *sections;
}

const std::set<std::string>& TopLevelKeys() {
  static const auto* keys = new std::set<std::string>{
      "name",    "kind",  "priority",       "resources",
      "retry",   "after", "checkpoint_dir", "env",
      "command", "run",   "grace_s",        "time_limit_s"};
  return *keys;
}

// The sections of Oumi's TrainingConfig: what `oumi train -c` reads.
const std::set<std::string>& OumiTrainingSections() {
  static const auto* sections = new std::set<std::string>{
      "model", "data", "training", "peft", "fsdp", "deepspeed"};
  return *sections;
}

// The keys of an Oumi launcher job (oumi launch up -c FILE).
const std::vector<std::string>& LauncherKeys() {
  static const auto* keys = new std::vector<std::string>{
      "name",      "user", "working_dir", "num_nodes",
      "resources", "envs", "file_mounts", "storage_mounts",
      "setup",     "run",  "dcvlr"};
  return *keys;
}

// A launcher job has no `kind` and at least one key only launcher jobs have.
bool IsLauncherJob(const YAML::Node& root) {
  if (root["kind"] || root["training"]) return false;
  for (const char* key : {"num_nodes", "envs", "setup", "working_dir",
                          "file_mounts", "storage_mounts"}) {
    if (root[key]) return true;
  }
  const YAML::Node resources = root["resources"];
  return resources && resources.IsMap() && resources["accelerators"];
}

// Writes `node` back as YAML that reads as the source did: yaml-cpp keeps
// no scalar style, but marks quoted scalars with the tag "!", and those stay
// quoted ("1" must not come back as the number 1).
void EmitAsRead(YAML::Emitter& out, const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      if (node.Tag() == "!") {
        out << YAML::DoubleQuoted << node.Scalar();
      } else {
        out << node.Scalar();
      }
      break;
    case YAML::NodeType::Sequence:
      out << YAML::BeginSeq;
      for (const auto& item : node) EmitAsRead(out, item);
      out << YAML::EndSeq;
      break;
    case YAML::NodeType::Map:
      out << YAML::BeginMap;
      for (const auto& entry : node) {
        out << YAML::Key;
        EmitAsRead(out, entry.first);
        out << YAML::Value;
        EmitAsRead(out, entry.second);
      }
      out << YAML::EndMap;
      break;
    default:
      out << YAML::Null;
  }
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
      if ((c & 0xE0) == 0xC0 && c >= 0xC2)
        length = 2;
      else if ((c & 0xF0) == 0xE0)
        length = 3;
      else if ((c & 0xF8) == 0xF0 && c <= 0xF4)
        length = 4;
      else
        bad = true;
      for (size_t k = 1; !bad && k < length; ++k) {
        bad = i + k >= text.size() ||
              (static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80;
      }
    }
    if (bad) {
      char hex[8];
      snprintf(hex, sizeof(hex), "0x%02X", c);
      return std::make_pair(SourcePos{line, column},
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
  Parser(ParsedJobFile* out, JobFileOptions options)
      : YamlChecker(out->source_name, &out->positions),
        out_(out),
        options_(std::move(options)) {}

  void Parse(const YAML::Node& root);

 private:
  void ParseJob(const YAML::Node& file_root);
  void ParseLauncherJob(const YAML::Node& root);
  void ParseTrain(const YAML::Node& root);
  void ParseEval(const YAML::Node& root);
  void ParseEnvMap(const YAML::Node& node, const std::string& key);
  void ParseSchedulingKeys(const YAML::Node& map, const std::string& prefix);
  void ApplyOptions();
  void Warn(const YAML::Node& at, const std::string& key,
            const std::string& message);
  void ParseKind(const YAML::Node& root, bool has_worker_sections);
  void ParseName(const YAML::Node& root);
  void ParseResources(const YAML::Node& node);
  void ParseRetry(const YAML::Node& node);
  void ParseEnv(const YAML::Node& node);
  void ParseProgram(const YAML::Node& root);

  ParsedJobFile* const out_;
  const JobFileOptions options_;
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
      Error(
          kind, "kind",
          absl::StrCat("expected train, eval or command, got '", *value, "'"));
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
          has_worker_sections ? "missing; say train or eval"
                              : "missing; expected train, eval or command");
  }
}

void Parser::ParseName(const YAML::Node& root) {
  std::string name;
  if (YAML::Node node = root["name"]) {
    if (auto value = String(node, "name"))
      name = *value;
    else
      return;
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
                       std::all_of(name.begin() + 2, name.end(), [](char c) {
                         return absl::ascii_isdigit(c);
                       });
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
  if (!CheckMap(node, "resources",
                {"nodes", "gpus_per_node", "procs_per_node"})) {
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
    } else if (auto v =
                   Int(n, "resources.procs_per_node", 1, kMaxProcsPerNode)) {
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

void Parser::ParseEnv(const YAML::Node& node) { ParseEnvMap(node, "env"); }

void Parser::ParseEnvMap(const YAML::Node& node, const std::string& env_key) {
  Record(env_key, node);
  if (!node.IsMap()) {
    Error(node, env_key,
          absl::StrCat("expected a mapping of NAME: value, got ",
                       Describe(node)));
    return;
  }
  for (const auto& entry : node) {
    const std::string name = entry.first.Scalar();
    const std::string key = absl::StrCat(env_key, ".", name);
    bool valid = !name.empty() && !absl::ascii_isdigit(name[0]);
    for (char c : name) {
      valid = valid &&
              (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_');
    }
    if (!valid) {
      Error(entry.first, key, "not a valid environment variable name");
    } else if (contract::IsContractVariable(name)) {
      Error(entry.first, key,
            "set by dcvlr for every process (the process contract); "
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

void Parser::Warn(const YAML::Node& at, const std::string& key,
                  const std::string& message) {
  const YAML::Mark mark = at.Mark();
  if (mark.line >= 0) {
    out_->warnings.push_back(absl::StrCat(source_name(), ":", mark.line + 1,
                                          ":", mark.column + 1, ": ", key, ": ",
                                          message));
  } else {
    out_->warnings.push_back(
        absl::StrCat(source_name(), ": ", key, ": ", message));
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
  if (IsLauncherJob(root)) {
    ParseLauncherJob(root);
  } else {
    ParseJob(root);
  }
}

void Parser::ApplyOptions() {
  auto* resources = spec().mutable_resources();
  if (options_.nodes > 0) {
    if (options_.nodes > kMaxNodes) {
      Error(YAML::Node(), "--nodes",
            absl::StrCat(options_.nodes, " is more than ", kMaxNodes));
    }
    resources->set_nodes(options_.nodes);
  }
  if (options_.gpus_per_node > 0) {
    if (options_.gpus_per_node > kMaxGpusPerNode) {
      Error(YAML::Node(), "--gpus-per-node",
            absl::StrCat(options_.gpus_per_node, " is more than ",
                         kMaxGpusPerNode));
    }
    resources->set_gpus_per_node(options_.gpus_per_node);
  }
}

// The keys that say how a job is scheduled and retried, in `map` (the file's
// top level, or a launcher job's `dcvlr:` section, whose keys are named with
// `prefix`).
void Parser::ParseSchedulingKeys(const YAML::Node& map,
                                 const std::string& prefix) {
  if (YAML::Node n = map["priority"]) {
    if (auto v = Int(n, prefix + "priority", 0, 100)) spec().set_priority(*v);
  }
  if (YAML::Node n = map["retry"]) ParseRetry(n);
  if (YAML::Node n = map["after"]) {
    for (const std::string& ref : StringList(n, prefix + "after", true)) {
      spec().add_after(ref);
    }
  }
  if (YAML::Node n = map["checkpoint_dir"]) {
    if (auto dir = String(n, prefix + "checkpoint_dir")) {
      if (dir->empty() || (*dir)[0] != '/') {
        Error(n, prefix + "checkpoint_dir",
              absl::StrCat("must be an absolute path, got '", *dir, "'"));
      }
      spec().set_checkpoint_dir(*dir);
    }
  }
  if (YAML::Node n = map["grace_s"]) {
    if (auto v = Number(n, prefix + "grace_s", 0, kMaxGraceS)) {
      spec().set_grace_s(*v);
    }
  }
  if (YAML::Node n = map["time_limit_s"]) {
    if (auto v = Number(n, prefix + "time_limit_s", 0, 30 * 86400.0)) {
      spec().set_time_limit_s(*v);
    }
  }
}

void Parser::ParseJob(const YAML::Node& file_root) {
  // An Oumi training config may carry dcvlr's keys in a `dcvlr:` section;
  // they are read as if they stood at the top level. (yaml-cpp's Node
  // assignment rebinds the referenced node, so the merged mapping is a node
  // of its own.)
  YAML::Node merged(YAML::NodeType::Map);
  const YAML::Node section = file_root["dcvlr"];
  std::vector<std::string> known(TopLevelKeys().begin(), TopLevelKeys().end());
  known.insert(known.end(), WorkerSections().begin(), WorkerSections().end());
  known.push_back("dcvlr");
  bool has_worker_sections = false;
  for (const auto& entry : file_root) {
    if (!entry.first.IsScalar()) {
      Error(entry.first, "(top level)", "keys must be plain names");
      continue;
    }
    const std::string& name = entry.first.Scalar();
    Record(name, entry.first);
    if (WorkerSections().count(name)) {
      has_worker_sections = true;
    } else if (name != "dcvlr" && !TopLevelKeys().count(name)) {
      Error(entry.first, name,
            absl::StrCat("unknown key", SuggestKey(name, known)));
    }
  }
  if (section) {
    std::set<std::string> allowed = TopLevelKeys();
    allowed.erase("kind");
    allowed.erase("command");
    allowed.erase("run");
    if (file_root["kind"]) {
      Error(section, "dcvlr",
            "only in an Oumi training config (a file without kind); put "
            "these keys at the top level");
      return;
    }
    if (!CheckMap(section, "dcvlr",
                  std::vector<std::string>(allowed.begin(), allowed.end()))) {
      return;
    }
    // A new mapping holding the file's sections and the dcvlr keys; the
    // value nodes keep their positions.
    for (const auto& entry : file_root) {
      const std::string& name = entry.first.Scalar();
      if (name == "dcvlr") continue;
      if (section[name]) {
        Error(section[name], absl::StrCat("dcvlr.", name),
              absl::StrCat("also given at the top level (line ",
                           entry.first.Mark().line + 1, ")"));
      }
      merged[name] = entry.second;
    }
    for (const auto& entry : section) {
      const std::string& name = entry.first.Scalar();
      Record(name, entry.first);
      merged[name] = entry.second;
    }
  }
  const YAML::Node& root = section ? merged : file_root;

  ParseKind(root, has_worker_sections);
  ParseName(root);

  // Defaults depend on the kind: workers use a GPU per process.
  const bool is_worker =
      spec().kind() == v1::JOB_KIND_TRAIN || spec().kind() == v1::JOB_KIND_EVAL;
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

  if (YAML::Node n = root["resources"]) ParseResources(n);
  ApplyOptions();
  if (procs_per_gpu_) {
    if (resources->gpus_per_node() == 0) {
      Error(procs_node_ ? procs_node_ : root, "resources.procs_per_node",
            "'gpu' (one process per GPU) needs gpus_per_node >= 1");
    }
    resources->set_procs_per_node(std::max(1, resources->gpus_per_node()));
  } else if (resources->procs_per_node() == 0) {
    resources->set_procs_per_node(1);
  }
  ParseSchedulingKeys(root, "");
  if (YAML::Node n = root["env"]) ParseEnv(n);
  ParseProgram(root);

  if (spec().kind() == v1::JOB_KIND_TRAIN) {
    ParseTrain(root);
  } else if (spec().kind() == v1::JOB_KIND_EVAL) {
    ParseEval(root);
  } else if (spec().kind() == v1::JOB_KIND_COMMAND) {
    for (const auto& entry : root) {
      const std::string& name = entry.first.Scalar();
      if (WorkerSections().count(name)) {
        Error(entry.first, name, "only for kind: train or eval");
      }
    }
  }
}

void Parser::ParseTrain(const YAML::Node& root) {
  std::string model_name = "tiny-vlm";  // dcvlr-train's default
  if (YAML::Node model = root["model"]; model && model.IsMap()) {
    if (YAML::Node n = model["model_name"]) {
      if (auto v = String(n, "model.model_name")) model_name = *v;
    }
  }
  for (const auto& entry : root) {
    const std::string& name = entry.first.Scalar();
    if (WorkerSections().count(name) && !OumiTrainingSections().count(name)) {
      Error(entry.first, name, "only for kind: eval");
    }
  }
  // Models dcvlr-train has presets for run natively; any other under
  // torchrun with Oumi.
  if (contract::IsNativeModel(model_name)) {
    // The trainer's sections travel as one JSON object.
    nlohmann::json config = nlohmann::json::object();
    for (const auto& entry : root) {
      const std::string& name = entry.first.Scalar();
      if (WorkerSections().count(name)) config[name] = YamlToJson(entry.second);
    }
    spec().set_worker_config_json(config.dump());
    return;
  }

  // Any other model: Oumi's trainer under torchrun, given the config as it
  // was submitted (less dcvlr's own keys).
  spec().set_launcher(v1::LAUNCHER_TORCHRUN_OUMI);
  YAML::Emitter emitter;
  emitter << YAML::BeginMap;
  for (const auto& entry : root) {
    const std::string& name = entry.first.Scalar();
    if (!OumiTrainingSections().count(name)) continue;
    emitter << YAML::Key << name << YAML::Value;
    EmitAsRead(emitter, entry.second);
  }
  emitter << YAML::EndMap;
  spec().set_attached_file_name(kOumiConfigFileName);
  spec().set_attached_file(std::string(emitter.c_str()) + "\n");

  const YAML::Node training = root["training"];
  const bool has_training = training && training.IsMap();
  // Oumi writes checkpoints to training.output_dir; dcvlr points it at the
  // job's checkpoint dir so every attempt finds the last one. An absolute
  // output_dir is taken as that dir.
  if (has_training && training["output_dir"]) {
    if (auto dir = String(training["output_dir"], "training.output_dir")) {
      if (!dir->empty() && (*dir)[0] == '/' &&
          spec().checkpoint_dir().empty()) {
        spec().set_checkpoint_dir(*dir);
      }
    }
  }
  if (has_training && training["save_steps"] &&
      training["save_steps"].IsScalar() &&
      training["save_steps"].Scalar() == "0") {
    Warn(training["save_steps"], "training.save_steps",
         "0 saves no checkpoint while training, so a preempted or node-lost "
         "run starts over from step 0; set it (e.g. 200) to resume");
  }
  bool resumes = false;
  if (has_training && training["try_resume_from_last_checkpoint"]) {
    if (auto v = Bool(training["try_resume_from_last_checkpoint"],
                      "training.try_resume_from_last_checkpoint")) {
      resumes = *v;
    }
  }
  if (!resumes) {
    Warn(has_training ? training : root, "training",
         "try_resume_from_last_checkpoint is not true, so a requeued attempt "
         "starts over instead of resuming from its checkpoint dir");
  }
}

void Parser::ParseEval(const YAML::Node& root) {
  nlohmann::json config = nlohmann::json::object();
  for (const auto& entry : root) {
    const std::string& name = entry.first.Scalar();
    if (WorkerSections().count(name) && name != "model" &&
        name != "benchmarks" && name != "eval" && name != "generation") {
      Error(entry.first, name, "only for kind: train");
    }
  }
  // model: a checkpoint path, or {from: JOB} / {checkpoint: PATH}.
  const YAML::Node model = root["model"];
  if (!model) {
    Error(root, "model",
          "missing; give a checkpoint path or {from: <train job id or name>}");
  } else if (model.IsScalar()) {
    if (auto path = String(model, "model")) {
      if (path->empty() || (*path)[0] != '/') {
        Error(model, "model",
              absl::StrCat("a checkpoint path must be absolute, got '", *path,
                           "'; or give {from: <train job>}"));
      }
      config["model"] = {{"checkpoint", *path}};
    }
  } else if (CheckMap(model, "model", {"from", "checkpoint"})) {
    if (model["from"] && model["checkpoint"]) {
      Error(model, "model", "give either from or checkpoint, not both");
    } else if (YAML::Node n = model["from"]) {
      if (auto ref = String(n, "model.from")) {
        config["model"] = {{"from", *ref}};
      }
    } else if (YAML::Node n = model["checkpoint"]) {
      if (auto path = String(n, "model.checkpoint")) {
        if (path->empty() || (*path)[0] != '/') {
          Error(n, "model.checkpoint",
                absl::StrCat("must be an absolute path, got '", *path, "'"));
        }
        config["model"] = {{"checkpoint", *path}};
      }
    } else {
      Error(model, "model", "give from: <train job> or checkpoint: <path>");
    }
  }
  // benchmarks: names (defined in the coordinator's benchmark list), TSV
  // paths, or {name, path}.
  const YAML::Node benchmarks = root["benchmarks"];
  nlohmann::json list = nlohmann::json::array();
  if (!benchmarks) {
    Error(root, "benchmarks", "missing; give benchmark names or TSV paths");
  } else if (!benchmarks.IsSequence() && !benchmarks.IsScalar()) {
    Error(benchmarks, "benchmarks",
          absl::StrCat("expected a list, got ", Describe(benchmarks)));
  } else {
    std::vector<YAML::Node> items;
    if (benchmarks.IsScalar()) items.push_back(benchmarks);
    for (const auto& item : benchmarks) items.push_back(item);
    if (items.empty()) Error(benchmarks, "benchmarks", "must not be empty");
    std::set<std::string> names;
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string key = absl::StrCat("benchmarks[", i, "]");
      Record(key, items[i]);
      nlohmann::json entry;
      if (items[i].IsScalar()) {
        const std::string value = items[i].Scalar();
        if (value.find('/') != std::string::npos ||
            absl::EndsWith(value, ".tsv")) {
          if (value[0] != '/') {
            Error(
                items[i], key,
                absl::StrCat("a TSV path must be absolute, got '", value, "'"));
            continue;
          }
          std::string name = value.substr(value.rfind('/') + 1);
          if (size_t dot = name.rfind('.'); dot != std::string::npos && dot) {
            name = name.substr(0, dot);
          }
          entry = {{"name", name}, {"path", value}};
        } else if (IsValidName(value)) {
          entry = {{"name", value}};
        } else {
          Error(items[i], key,
                absl::StrCat("'", value,
                             "' is neither a benchmark name nor a TSV path"));
          continue;
        }
      } else if (CheckMap(items[i], key, {"name", "path"})) {
        auto name = items[i]["name"] ? String(items[i]["name"], key + ".name")
                                     : std::nullopt;
        auto path = items[i]["path"] ? String(items[i]["path"], key + ".path")
                                     : std::nullopt;
        if (!name || !IsValidName(*name)) {
          Error(items[i], key + ".name", "a valid benchmark name is needed");
          continue;
        }
        entry = {{"name", *name}};
        if (path) {
          if (path->empty() || (*path)[0] != '/') {
            Error(items[i]["path"], key + ".path",
                  absl::StrCat("must be an absolute path, got '", *path, "'"));
            continue;
          }
          entry["path"] = *path;
        }
      } else {
        continue;
      }
      if (!names.insert(entry["name"].get<std::string>()).second) {
        Error(items[i], key,
              absl::StrCat("benchmark '", entry["name"].get<std::string>(),
                           "' listed twice"));
        continue;
      }
      list.push_back(entry);
    }
  }
  config["benchmarks"] = list;
  // eval: how dcvlr-eval decodes.
  if (YAML::Node eval = root["eval"]) {
    if (CheckMap(eval, "eval", {"batch_size", "max_new_tokens", "seed"})) {
      if (YAML::Node n = eval["batch_size"]) {
        if (auto v = Int(n, "eval.batch_size", 1, 4096)) {
          config["batch_size"] = *v;
        }
      }
      if (YAML::Node n = eval["max_new_tokens"]) {
        if (auto v = Int(n, "eval.max_new_tokens", 1, 4096)) {
          config["max_new_tokens"] = *v;
        }
      }
      if (YAML::Node n = eval["seed"]) {
        if (auto v = Int(n, "eval.seed", 0, INT32_MAX)) config["seed"] = *v;
      }
    }
  }
  spec().set_worker_config_json(config.dump());
}

// An Oumi launcher job: `setup` then `run` (bash) on every node, in
// working_dir, with `envs` and the torchrun variables.
void Parser::ParseLauncherJob(const YAML::Node& root) {
  for (const auto& entry : root) {
    if (!entry.first.IsScalar()) {
      Error(entry.first, "(top level)", "keys must be plain names");
      continue;
    }
    const std::string& name = entry.first.Scalar();
    Record(name, entry.first);
    if (std::find(LauncherKeys().begin(), LauncherKeys().end(), name) ==
        LauncherKeys().end()) {
      Error(entry.first, name,
            absl::StrCat("unknown key of an Oumi launcher job",
                         SuggestKey(name, LauncherKeys())));
    }
  }
  spec().set_kind(v1::JOB_KIND_COMMAND);
  ParseName(root);
  spec().set_priority(50);
  auto* resources = spec().mutable_resources();
  resources->set_nodes(1);
  resources->set_gpus_per_node(0);
  resources->set_procs_per_node(1);  // `run` starts its own per-GPU workers
  auto* retry = spec().mutable_retry();
  retry->set_max_attempts(5);
  retry->set_on_failure(0);
  retry->set_backoff_s(5);
  spec().set_grace_s(30);

  if (YAML::Node n = root["num_nodes"]) {
    if (auto v = Int(n, "num_nodes", 1, kMaxNodes)) {
      resources->set_nodes(static_cast<int>(*v));
    }
  }
  if (YAML::Node r = root["resources"]) {
    if (r.IsMap()) {
      for (const auto& entry : r) {
        const std::string name = entry.first.Scalar();
        const std::string key = absl::StrCat("resources.", name);
        Record(key, entry.first);
        if (name == "accelerators") {
          // "A100:8", "A100" (one), or {A100: 8}.
          std::string type;
          int64_t count = 1;
          const YAML::Node& value = entry.second;
          if (value.IsScalar()) {
            type = value.Scalar();
            if (size_t colon = type.find(':'); colon != std::string::npos) {
              if (!absl::SimpleAtoi(type.substr(colon + 1), &count)) count = -1;
              type = type.substr(0, colon);
            }
          } else if (value.IsMap() && value.size() == 1) {
            type = value.begin()->first.Scalar();
            if (!absl::SimpleAtoi(value.begin()->second.Scalar(), &count)) {
              count = -1;
            }
          } else {
            count = -1;
          }
          if (count < 1 || count > kMaxGpusPerNode || type.empty()) {
            Error(
                value, key,
                absl::StrCat("expected TYPE:COUNT such as \"A100:8\" with 1 "
                             "to ",
                             kMaxGpusPerNode, " GPUs, got ", Describe(value)));
          } else {
            resources->set_gpus_per_node(static_cast<int>(count));
          }
        } else {
          Warn(entry.first, key,
               "ignored: dcvlr runs on the lab's own nodes, not a cloud's");
        }
      }
    } else {
      Error(r, "resources",
            absl::StrCat("expected a mapping, got ", Describe(r)));
    }
  }
  ApplyOptions();
  if (YAML::Node n = root["envs"]) ParseEnvMap(n, "envs");
  for (const char* key : {"file_mounts", "storage_mounts"}) {
    if (YAML::Node n = root[key]) {
      Warn(n, key,
           "ignored: dcvlr mounts nothing; the paths must exist on every node");
    }
  }
  if (YAML::Node n = root["user"]) {
    Warn(n, "user", "ignored: jobs run as the user who submits them");
  }
  if (YAML::Node section = root["dcvlr"]) {
    if (CheckMap(section, "dcvlr",
                 {"priority", "retry", "after", "checkpoint_dir", "grace_s",
                  "time_limit_s"})) {
      ParseSchedulingKeys(section, "dcvlr.");
    }
  }

  std::string script = "# An Oumi launcher job: setup, then run.\n";
  if (YAML::Node n = root["working_dir"]) {
    if (auto dir = String(n, "working_dir")) {
      std::string path = *dir;
      if (!path.empty() && path[0] != '/') {
        if (options_.submit_dir.empty()) {
          Error(n, "working_dir",
                absl::StrCat("'", path,
                             "' is relative and the submitter's directory is "
                             "unknown; give an absolute path"));
        } else {
          path = (std::filesystem::path(options_.submit_dir) / path)
                     .lexically_normal()
                     .string();
          if (path.size() > 1 && path.back() == '/') path.pop_back();
        }
      }
      absl::StrAppend(&script, "cd ", ShellQuote(path), " || exit 1\n");
    }
  }
  if (YAML::Node n = root["setup"]) {
    if (auto setup = String(n, "setup")) {
      // A subshell, as a separate setup script would be: its failure stops
      // the job with its exit code.
      absl::StrAppend(&script, "(\n", *setup,
                      "\n) || { status=$?; echo \"dcvlr: setup failed with "
                      "exit code $status\" >&2; exit $status; }\n");
    }
  }
  if (YAML::Node n = root["run"]) {
    if (auto run = String(n, "run")) {
      if (absl::StripAsciiWhitespace(*run).empty()) {
        Error(n, "run", "must not be empty");
      }
      absl::StrAppend(&script, *run, "\n");
    }
  } else {
    Error(root, "run", "missing; an Oumi launcher job needs run:");
  }
  spec().set_run(script);
}

}  // namespace

std::string ParsedJobFile::Where(const std::string& key) const {
  auto it = positions.find(key);
  if (it == positions.end()) return absl::StrCat(source_name, ": ", key);
  return absl::StrCat(source_name, ":", it->second.line, ":", it->second.column,
                      ": ", key);
}

absl::StatusOr<std::vector<ParsedJobFile>> ParseJobFiles(
    absl::string_view source_name, absl::string_view text,
    const JobFileOptions& options) {
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
  absl::StatusOr<std::vector<YAML::Node>> loaded =
      LoadYamlDocuments(source_name, text);
  if (!loaded.ok()) return loaded.status();
  const std::vector<YAML::Node>& documents = *loaded;
  std::vector<ParsedJobFile> jobs;
  std::vector<std::string> errors;
  std::set<std::string> names;
  int number = 0;
  for (const YAML::Node& document : documents) {
    ++number;
    if (document.IsNull()) continue;  // e.g. a trailing `---`
    ParsedJobFile out;
    out.source_name = std::string(source_name);
    out.document = number;
    Parser parser(&out, options);
    try {
      parser.Parse(document);
    } catch (const YAML::Exception& e) {
      // yaml-cpp reports structural surprises (e.g. aliases it cannot
      // follow) by exception; they are errors of the file, not of dcvlr.
      errors.push_back(absl::StrCat(source_name, ":", e.mark.line + 1, ":",
                                    e.mark.column + 1, ": ", e.msg));
      continue;
    }
    errors.insert(errors.end(), parser.errors().begin(), parser.errors().end());
    if (parser.errors().empty() && !names.insert(out.spec.name()).second) {
      errors.push_back(absl::StrCat(
          out.Where("name"), ": '", out.spec.name(),
          "' names an earlier job of this file too; give each its own name"));
    }
    jobs.push_back(std::move(out));
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  }
  if (jobs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name,
                     ":1:1: empty job file; expected keys such as name, kind, "
                     "resources"));
  }
  return jobs;
}

absl::StatusOr<ParsedJobFile> ParseJobFile(absl::string_view source_name,
                                           absl::string_view text,
                                           const JobFileOptions& options) {
  auto jobs = ParseJobFiles(source_name, text, options);
  if (!jobs.ok()) return jobs.status();
  if (jobs->size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": ", jobs->size(),
                     " YAML documents; one job was expected here"));
  }
  return std::move(jobs->front());
}

}  // namespace dcvlr
