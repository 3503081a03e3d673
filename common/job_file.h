// Parsing and validation of job files, the YAML that `dcvlrctl submit` takes.
//
// Three shapes of file are accepted:
//   - dcvlr's own job file (docs/architecture.md "Job files"): `kind: train |
//     eval | command` and the keys below;
//   - an Oumi training config as it is (top-level model / data / training /
//     peft / fsdp / deepspeed, no `kind`), with dcvlr's keys either in an
//     optional `dcvlr:` section or given as flags (JobFileOptions). A model
//     the native trainer has a preset for runs natively; any other runs as
//     `torchrun ... -m oumi train -c FILE` on every node;
//   - an Oumi launcher job (name, resources.accelerators "A100:8", num_nodes,
//     envs, setup, run, working_dir): `setup` then `run` on every node.
// A file may hold several YAML documents, one job each.
//
// A job file is checked in two steps. ParseJobFile() checks everything that
// the file alone decides: YAML syntax, known keys, types and ranges. The
// coordinator then checks what depends on the cluster (the jobs named in
// `after:`, whether any node has the GPUs asked for) and reports those errors
// through ParsedJobFile::Where() so that they too name file, line and column.
#ifndef DCVLR_COMMON_JOB_FILE_H_
#define DCVLR_COMMON_JOB_FILE_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/yaml_checker.h"
#include "dcvlr/v1/job.pb.h"

namespace dcvlr {

struct ParsedJobFile {
  std::string source_name;
  // 1-based position of the document in its file.
  int document = 1;
  dcvlr::v1::JobSpec spec;
  // Where each key (by dotted path, e.g. "resources.gpus_per_node" or
  // "after[1]") appears in the file.
  std::map<std::string, SourcePos> positions;

  // "FILE:LINE:COL: KEY" for a key of the file; "FILE: KEY" when the key has
  // no position (a default).
  std::string Where(const std::string& key) const;

  // What works but may not do what was meant, each "FILE:LINE:COL: KEY:
  // ..." (e.g. an Oumi config that saves no checkpoints).
  std::vector<std::string> warnings;
};

// What the submitter adds to the file.
struct JobFileOptions {
  // `--nodes` / `--gpus-per-node`; 0 = as the file says. They win over the
  // file's resources.
  int nodes = 0;
  int gpus_per_node = 0;
  // The directory the submitter works in (absolute): relative paths of the
  // file (a launcher job's working_dir) resolve against it, as they do for
  // `oumi launch`.
  std::string submit_dir;
};

// Name of the Oumi config file written into each attempt's directory for
// LAUNCHER_TORCHRUN_OUMI jobs.
inline constexpr char kOumiConfigFileName[] = "oumi_config.yaml";

// Limits a job file is checked against; absurd values are rejected at once.
inline constexpr int kMaxNodes = 1024;
inline constexpr int kMaxGpusPerNode = 64;
inline constexpr int kMaxProcsPerNode = 512;
inline constexpr int kMaxAttempts = 100;
inline constexpr double kMaxGraceS = 3600;

// Parses and validates one job file. On error the status is
// kInvalidArgument and its message holds one line per problem, each
// "FILE:LINE:COL: KEY: what is wrong".
absl::StatusOr<std::vector<ParsedJobFile>> ParseJobFiles(
    absl::string_view source_name, absl::string_view text,
    const JobFileOptions& options = {});

// ParseJobFiles for a file that must hold exactly one job.
absl::StatusOr<ParsedJobFile> ParseJobFile(absl::string_view source_name,
                                           absl::string_view text,
                                           const JobFileOptions& options = {});

}  // namespace dcvlr

#endif  // DCVLR_COMMON_JOB_FILE_H_
