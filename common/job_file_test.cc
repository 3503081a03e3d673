#include "common/job_file.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dcvlr {
namespace {

using ::testing::HasSubstr;

std::string ErrorOf(const std::string& text) {
  auto parsed = ParseJobFile("job.yaml", text);
  EXPECT_FALSE(parsed.ok()) << "accepted:\n" << text;
  return parsed.ok() ? "" : std::string(parsed.status().message());
}

TEST(JobFileTest, ParsesCommandJobWithDefaults) {
  auto parsed = ParseJobFile("hello.yaml",
                             "kind: command\n"
                             "command: [\"echo\", \"hi\"]\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& spec = parsed->spec;
  EXPECT_EQ(spec.name(), "hello");
  EXPECT_EQ(spec.kind(), v1::JOB_KIND_COMMAND);
  EXPECT_EQ(spec.priority(), 50);
  EXPECT_EQ(spec.resources().nodes(), 1);
  EXPECT_EQ(spec.resources().gpus_per_node(), 0);
  EXPECT_EQ(spec.resources().procs_per_node(), 1);
  EXPECT_EQ(spec.retry().max_attempts(), 5);
  EXPECT_EQ(spec.retry().on_failure(), 0);
  EXPECT_THAT(spec.command(), ::testing::ElementsAre("echo", "hi"));
}

TEST(JobFileTest, ParsesEveryKey) {
  auto parsed = ParseJobFile("x.yaml",
                             "name: big-run\n"
                             "kind: command\n"
                             "priority: 90\n"
                             "resources: {nodes: 2, gpus_per_node: 8, "
                             "procs_per_node: gpu}\n"
                             "retry: {max_attempts: 3, on_failure: 1, "
                             "backoff_s: 0.5}\n"
                             "after: [j-1, prep]\n"
                             "checkpoint_dir: /shared/ckpt\n"
                             "env: {A: 1, B: two}\n"
                             "grace_s: 10\n"
                             "time_limit_s: 3600\n"
                             "run: |\n  echo $RANK\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& spec = parsed->spec;
  EXPECT_EQ(spec.name(), "big-run");
  EXPECT_EQ(spec.priority(), 90);
  EXPECT_EQ(spec.resources().nodes(), 2);
  EXPECT_EQ(spec.resources().procs_per_node(), 8);
  EXPECT_EQ(spec.retry().on_failure(), 1);
  EXPECT_DOUBLE_EQ(spec.retry().backoff_s(), 0.5);
  EXPECT_THAT(spec.after(), ::testing::ElementsAre("j-1", "prep"));
  EXPECT_EQ(spec.env().at("A"), "1");
  EXPECT_EQ(spec.run(), "echo $RANK\n");
  EXPECT_DOUBLE_EQ(spec.time_limit_s(), 3600);
  EXPECT_EQ(parsed->Where("after[1]"), "x.yaml:6:14: after[1]");
}

TEST(JobFileTest, TrainSectionsBecomeJson) {
  auto parsed = ParseJobFile("t.yaml",
                             "kind: train\n"
                             "model: {model_name: tiny-vlm}\n"
                             "training: {learning_rate: 3e-4, max_steps: 30, "
                             "bf16: true, output_dir: \"7\"}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto config = nlohmann::json::parse(parsed->spec.worker_config_json());
  EXPECT_EQ(config["model"]["model_name"], "tiny-vlm");
  EXPECT_DOUBLE_EQ(config["training"]["learning_rate"].get<double>(), 3e-4);
  EXPECT_EQ(config["training"]["max_steps"], 30);
  EXPECT_EQ(config["training"]["bf16"], true);
  EXPECT_EQ(config["training"]["output_dir"], "7");  // quoted stays a string
  // A train job runs one process per GPU, one GPU by default.
  EXPECT_EQ(parsed->spec.resources().gpus_per_node(), 1);
  EXPECT_EQ(parsed->spec.resources().procs_per_node(), 1);
}

TEST(JobFileTest, OumiTrainingConfigWithoutKindIsTrain) {
  auto parsed = ParseJobFile("oumi.yaml",
                             "model: {model_name: Qwen/Qwen2.5-VL-7B-Instruct}\n"
                             "training: {max_steps: 10}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->spec.kind(), v1::JOB_KIND_TRAIN);
}

TEST(JobFileTest, MalformedYamlNamesLineAndColumn) {
  EXPECT_THAT(ErrorOf("kind: command\ncommand: [echo, hi\n"),
              HasSubstr("job.yaml:3:1: invalid YAML"));
  EXPECT_THAT(ErrorOf("kind: command\n  bad: indent\n: x\n"),
              HasSubstr("job.yaml:2:"));
}

TEST(JobFileTest, BinaryGarbageIsRejectedWithPosition) {
  std::string garbage = "kind: command\nname: a\x01\x02\xff\n";
  EXPECT_THAT(ErrorOf(garbage), HasSubstr("job.yaml:2:8: byte 0x01"));
  EXPECT_THAT(ErrorOf(std::string("\0\0\0\x7f", 4)),
              HasSubstr("job.yaml:1:1: byte 0x00"));
  EXPECT_THAT(ErrorOf("kind: command\ncommand: [\xc3\x28]\n"),
              HasSubstr("job.yaml:2:11: byte 0xC3"));
}

TEST(JobFileTest, EmptyAndNonMappingFiles) {
  EXPECT_THAT(ErrorOf(""), HasSubstr("job.yaml:1:1: empty job file"));
  EXPECT_THAT(ErrorOf("- a\n- b\n"), HasSubstr("job.yaml:1:1: (top level)"));
  EXPECT_THAT(ErrorOf("just words\n"), HasSubstr("expected a mapping"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\n---\nkind: command\n"),
              HasSubstr("job.yaml:4:1: a second YAML document"));
}

TEST(JobFileTest, UnknownKeysAreNamedWithSuggestion) {
  std::string error = ErrorOf("kind: command\nrun: x\nresource: {nodes: 1}\n");
  EXPECT_THAT(error, HasSubstr("job.yaml:3:1: resource: unknown key"));
  EXPECT_THAT(error, HasSubstr("did you mean 'resources'"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nresources: {gpu: 1}\n"),
              HasSubstr("job.yaml:3:13: resources.gpu: unknown key"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nretry: {max_attempt: 1}\n"),
              HasSubstr("retry.max_attempt: unknown key (did you mean "
                        "'max_attempts'?)"));
}

TEST(JobFileTest, WrongTypesNameTheKey) {
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\npriority: high\n"),
              HasSubstr("job.yaml:3:11: priority: expected an integer, got "
                        "'high'"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nresources: [1, 2]\n"),
              HasSubstr("job.yaml:3:12: resources: expected a mapping, got a "
                        "list"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nresources: {nodes: \"2\"}\n"),
              HasSubstr("resources.nodes: expected an integer"));
  EXPECT_THAT(ErrorOf("kind: command\ncommand: echo hi\n"),
              HasSubstr("job.yaml:2:10: command: expected a list"));
  EXPECT_THAT(ErrorOf("kind: command\ncommand: [echo, {a: b}]\n"),
              HasSubstr("command[1]: expected a string, got a mapping"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nenv: [A]\n"),
              HasSubstr("env: expected a mapping"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nretry: {backoff_s: soon}\n"),
              HasSubstr("retry.backoff_s: expected a number"));
  EXPECT_THAT(ErrorOf("kind: cmd\nrun: x\n"),
              HasSubstr("job.yaml:1:7: kind: expected train, eval or command"));
}

TEST(JobFileTest, ZeroNegativeAndAbsurdResources) {
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nresources: {nodes: 0}\n"),
              HasSubstr("job.yaml:3:20: resources.nodes: must be from 1 to "
                        "1024, got 0"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nresources: {gpus_per_node: -1}\n"),
              HasSubstr("resources.gpus_per_node: must be from 0 to 64, got -1"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nresources: {nodes: 1000000}\n"),
              HasSubstr("resources.nodes: must be from 1 to 1024"));
  EXPECT_THAT(
      ErrorOf("kind: command\nrun: x\nresources: {gpus_per_node: "
              "99999999999999999999999}\n"),
      HasSubstr("resources.gpus_per_node: expected an integer"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\npriority: 101\n"),
              HasSubstr("priority: must be from 0 to 100"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nresources: {procs_per_node: gpu}\n"),
              HasSubstr("resources.procs_per_node: 'gpu' (one process per GPU) "
                        "needs gpus_per_node >= 1"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nretry: {max_attempts: 0}\n"),
              HasSubstr("retry.max_attempts: must be from 1 to 100"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\ngrace_s: .nan\n"),
              HasSubstr("grace_s: expected a number"));
}

TEST(JobFileTest, ProgramRules) {
  EXPECT_THAT(ErrorOf("kind: command\n"),
              HasSubstr("command: missing; kind: command needs command: or "
                        "run:"));
  EXPECT_THAT(ErrorOf("kind: command\ncommand: [a]\nrun: b\n"),
              HasSubstr("job.yaml:3:6: run: give either"));
  EXPECT_THAT(ErrorOf("kind: command\ncommand: []\n"),
              HasSubstr("command: must not be empty"));
  EXPECT_THAT(ErrorOf("kind: train\nrun: x\n"),
              HasSubstr("job.yaml:2:6: run: only for kind: command"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nmodel: {model_name: m}\n"),
              HasSubstr("job.yaml:3:1: model: only for kind: train or eval"));
}

TEST(JobFileTest, NamesEnvAndPathsAreChecked) {
  EXPECT_THAT(ErrorOf("name: \"a b\"\nkind: command\nrun: x\n"),
              HasSubstr("job.yaml:1:7: name: 'a b' is not a valid job name"));
  EXPECT_THAT(ErrorOf("name: j-12\nkind: command\nrun: x\n"),
              HasSubstr("has the form of a job id"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nenv: {RANK: 3}\n"),
              HasSubstr("job.yaml:3:7: env.RANK: set by dcvlr"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nenv: {1X: 3}\n"),
              HasSubstr("env.1X: not a valid environment variable name"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\ncheckpoint_dir: rel/dir\n"),
              HasSubstr("checkpoint_dir: must be an absolute path"));
}

TEST(JobFileTest, ReportsEveryProblemAtOnce) {
  std::string error =
      ErrorOf("kind: command\nrun: x\npriority: -3\nresources: {nodes: 0}\n");
  EXPECT_THAT(error, HasSubstr("job.yaml:3:11: priority"));
  EXPECT_THAT(error, HasSubstr("job.yaml:4:20: resources.nodes"));
}

TEST(JobFileTest, DeepNestingDoesNotCrash) {
  std::string deep(100000, '[');
  EXPECT_FALSE(ParseJobFile("deep.yaml", deep).ok());
  std::string deep_map;
  for (int i = 0; i < 5000; ++i) deep_map += "{a: ";
  EXPECT_FALSE(ParseJobFile("deep.yaml", deep_map).ok());
}

}  // namespace
}  // namespace dcvlr
