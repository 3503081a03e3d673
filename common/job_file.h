// Parsing and validation of job files, the YAML that `dcvlrctl submit` takes.
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
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "common/yaml_checker.h"
#include "dcvlr/v1/job.pb.h"

namespace dcvlr {

struct ParsedJobFile {
  std::string source_name;
  dcvlr::v1::JobSpec spec;
  // Where each key (by dotted path, e.g. "resources.gpus_per_node" or
  // "after[1]") appears in the file.
  std::map<std::string, SourcePos> positions;

  // "FILE:LINE:COL: KEY" for a key of the file; "FILE: KEY" when the key has
  // no position (a default).
  std::string Where(const std::string& key) const;
};

// Limits a job file is checked against; absurd values are rejected at once.
inline constexpr int kMaxNodes = 1024;
inline constexpr int kMaxGpusPerNode = 64;
inline constexpr int kMaxProcsPerNode = 512;
inline constexpr int kMaxAttempts = 100;
inline constexpr double kMaxGraceS = 3600;

// Parses and validates one job file. On error the status is
// kInvalidArgument and its message holds one line per problem, each
// "FILE:LINE:COL: KEY: what is wrong".
absl::StatusOr<ParsedJobFile> ParseJobFile(absl::string_view source_name,
                                           absl::string_view text);

}  // namespace dcvlr

#endif  // DCVLR_COMMON_JOB_FILE_H_
