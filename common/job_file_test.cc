#include "common/job_file.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

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
  auto parsed =
      ParseJobFile("oumi.yaml",
                   "model: {model_name: Qwen/Qwen2.5-VL-7B-Instruct}\n"
                   "training: {max_steps: 10}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->spec.kind(), v1::JOB_KIND_TRAIN);
}

TEST(JobFileTest, OumiConfigForANativeModelRunsNatively) {
  auto parsed =
      ParseJobFile("oumi.yaml",
                   "dcvlr: {name: tiny, resources: {gpus_per_node: 2}}\n"
                   "model: {model_name: tiny-vlm}\n"
                   "training: {max_steps: 10}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->spec.name(), "tiny");
  EXPECT_EQ(parsed->spec.launcher(), v1::LAUNCHER_DIRECT);
  EXPECT_EQ(parsed->spec.resources().procs_per_node(), 2);
  auto config = nlohmann::json::parse(parsed->spec.worker_config_json());
  EXPECT_EQ(config["training"]["max_steps"], 10);
  EXPECT_FALSE(config.contains("dcvlr"));
}

TEST(JobFileTest, OumiConfigForAnyOtherModelRunsUnderTorchrun) {
  const std::string text =
      "# starter kit\n"
      "model:\n"
      "  model_name: \"Qwen/Qwen2.5-VL-7B-Instruct\"\n"
      "  revision: \"1\"\n"
      "data: {train: {datasets: [{dataset_name: hf_vision}]}}\n"
      "training:\n"
      "  learning_rate: 1e-5\n"
      "  output_dir: /shared/out/qwen\n"
      "  save_steps: 0\n";
  JobFileOptions options;
  options.nodes = 2;
  options.gpus_per_node = 8;
  auto parsed = ParseJobFile("qwen.yaml", text, options);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& spec = parsed->spec;
  EXPECT_EQ(spec.kind(), v1::JOB_KIND_TRAIN);
  EXPECT_EQ(spec.launcher(), v1::LAUNCHER_TORCHRUN_OUMI);
  EXPECT_EQ(spec.name(), "qwen");
  EXPECT_EQ(spec.resources().nodes(), 2);
  EXPECT_EQ(spec.resources().gpus_per_node(), 8);
  EXPECT_EQ(spec.resources().procs_per_node(), 8);
  // An absolute output_dir is where every attempt checkpoints.
  EXPECT_EQ(spec.checkpoint_dir(), "/shared/out/qwen");
  EXPECT_EQ(spec.attached_file_name(), kOumiConfigFileName);
  // The config Oumi reads is the file's, and reads the same: quoted values
  // stay strings.
  YAML::Node written = YAML::Load(spec.attached_file());
  YAML::Node original = YAML::Load(text);
  EXPECT_EQ(written["model"]["model_name"].as<std::string>(),
            "Qwen/Qwen2.5-VL-7B-Instruct");
  EXPECT_EQ(written["model"]["revision"].Tag(), "!");
  EXPECT_EQ(written["training"]["learning_rate"].Scalar(), "1e-5");
  EXPECT_EQ(written["data"]["train"]["datasets"][0]["dataset_name"].Scalar(),
            original["data"]["train"]["datasets"][0]["dataset_name"].Scalar());
  // save_steps: 0 cannot resume; neither can a config without the resume key.
  ASSERT_EQ(parsed->warnings.size(), 2u);
  EXPECT_THAT(parsed->warnings[0],
              HasSubstr("qwen.yaml:9:15: training.save_steps: 0 saves no "
                        "checkpoint"));
  EXPECT_THAT(parsed->warnings[1],
              HasSubstr("try_resume_from_last_checkpoint is not true"));
}

TEST(JobFileTest, DcvlrSectionIsCheckedLikeTopLevelKeys) {
  EXPECT_THAT(ErrorOf("dcvlr: {resources: {nodes: 0}}\n"
                      "training: {max_steps: 1}\n"),
              HasSubstr("job.yaml:1:28: resources.nodes: must be from 1 to "
                        "1024, got 0"));
  EXPECT_THAT(ErrorOf("dcvlr: {prio: 3}\ntraining: {max_steps: 1}\n"),
              HasSubstr("dcvlr.prio: unknown key"));
  EXPECT_THAT(
      ErrorOf("kind: train\ndcvlr: {priority: 3}\n"),
      HasSubstr("job.yaml:2:8: dcvlr: only in an Oumi training config"));
  EXPECT_THAT(ErrorOf("name: a\ndcvlr: {name: b}\ntraining: {}\n"),
              HasSubstr("dcvlr.name: also given at the top level (line 1)"));
}

TEST(JobFileTest, OumiLauncherJobRunsSetupThenRunOnEveryNode) {
  JobFileOptions options;
  options.submit_dir = "/home/ada/dcvlr";
  auto parsed =
      ParseJobFile("launch.yaml",
                   "name: sky-train\n"
                   "num_nodes: 2\n"
                   "resources: {cloud: gcp, accelerators: \"A100:8\"}\n"
                   "working_dir: .\n"
                   "envs: {WANDB_MODE: offline}\n"
                   "setup: pip install oumi\n"
                   "run: oumi train -c x.yaml\n",
                   options);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& spec = parsed->spec;
  EXPECT_EQ(spec.kind(), v1::JOB_KIND_COMMAND);
  EXPECT_EQ(spec.name(), "sky-train");
  EXPECT_EQ(spec.resources().nodes(), 2);
  EXPECT_EQ(spec.resources().gpus_per_node(), 8);
  EXPECT_EQ(spec.resources().procs_per_node(), 1);
  EXPECT_EQ(spec.env().at("WANDB_MODE"), "offline");
  EXPECT_EQ(spec.run(),
            "# An Oumi launcher job: setup, then run.\n"
            "cd '/home/ada/dcvlr' || exit 1\n"
            "(\npip install oumi\n) || { status=$?; echo \"dcvlr: setup failed "
            "with exit code $status\" >&2; exit $status; }\n"
            "oumi train -c x.yaml\n");
  ASSERT_EQ(parsed->warnings.size(), 1u);
  EXPECT_THAT(parsed->warnings[0],
              HasSubstr("launch.yaml:3:13: resources.cloud: ignored"));

  auto scheduled = ParseJobFile(
      "launch.yaml",
      "num_nodes: 1\nrun: x\n"
      "dcvlr: {priority: 80, after: [prep], grace_s: 90, time_limit_s: 60}\n");
  ASSERT_TRUE(scheduled.ok()) << scheduled.status();
  EXPECT_EQ(scheduled->spec.priority(), 80);
  EXPECT_THAT(scheduled->spec.after(), ::testing::ElementsAre("prep"));
  EXPECT_DOUBLE_EQ(scheduled->spec.grace_s(), 90);
  EXPECT_DOUBLE_EQ(scheduled->spec.time_limit_s(), 60);
  EXPECT_THAT(ErrorOf("num_nodes: 1\nrun: x\ndcvlr: {checkpoint_dir: ckpt}\n"),
              HasSubstr("job.yaml:3:25: dcvlr.checkpoint_dir: must be an "
                        "absolute path"));

  EXPECT_THAT(ErrorOf("num_nodes: 1\nresources: {accelerators: \"A100:lots\"}\n"
                      "run: x\n"),
              HasSubstr("job.yaml:2:27: resources.accelerators: expected "
                        "TYPE:COUNT"));
  EXPECT_THAT(ErrorOf("num_nodes: 1\nsetup: x\n"), HasSubstr("run: missing"));
  EXPECT_THAT(ErrorOf("num_nodes: 1\nrun: x\nenvs: {RANK: 3}\n"),
              HasSubstr("envs.RANK: set by dcvlr"));
  EXPECT_THAT(ErrorOf("num_nodes: 1\nrun: x\nnum_node: 2\n"),
              HasSubstr("job.yaml:3:1: num_node: unknown key of an Oumi "
                        "launcher job (did you mean 'num_nodes'?)"));
}

TEST(JobFileTest, EvalJobs) {
  auto parsed =
      ParseJobFile("eval.yaml",
                   "kind: eval\n"
                   "model: {from: tiny-vlm-demo}\n"
                   "benchmarks: [synthetic_shapes, /data/VMCBench_DEV.tsv, "
                   "{name: mine, path: /x/m.tsv}]\n"
                   "eval: {batch_size: 16}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto config = nlohmann::json::parse(parsed->spec.worker_config_json());
  EXPECT_EQ(config["model"]["from"], "tiny-vlm-demo");
  EXPECT_EQ(config["benchmarks"][0],
            nlohmann::json({{"name", "synthetic_shapes"}}));
  EXPECT_EQ(config["benchmarks"][1],
            nlohmann::json({{"name", "VMCBench_DEV"},
                            {"path", "/data/VMCBench_DEV.tsv"}}));
  EXPECT_EQ(config["benchmarks"][2]["path"], "/x/m.tsv");
  EXPECT_EQ(config["batch_size"], 16);
  EXPECT_EQ(parsed->spec.resources().gpus_per_node(), 1);

  auto path =
      ParseJobFile("e.yaml", "kind: eval\nmodel: /ckpt/run1\nbenchmarks: x\n");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(nlohmann::json::parse(
                path->spec.worker_config_json())["model"]["checkpoint"],
            "/ckpt/run1");

  EXPECT_THAT(ErrorOf("kind: eval\nbenchmarks: [a]\n"),
              HasSubstr("job.yaml:1:1: model: missing"));
  EXPECT_THAT(ErrorOf("kind: eval\nmodel: rel/path\nbenchmarks: [a]\n"),
              HasSubstr("job.yaml:2:8: model: a checkpoint path must be "
                        "absolute"));
  EXPECT_THAT(ErrorOf("kind: eval\nmodel: {from: a}\nbenchmarks: []\n"),
              HasSubstr("benchmarks: must not be empty"));
  EXPECT_THAT(ErrorOf("kind: eval\nmodel: {from: a}\nbenchmarks: [b, b]\n"),
              HasSubstr("benchmarks[1]: benchmark 'b' listed twice"));
  EXPECT_THAT(ErrorOf("kind: eval\nmodel: {from: a}\nbenchmarks: [b]\n"
                      "training: {max_steps: 3}\n"),
              HasSubstr("job.yaml:4:1: training: only for kind: train"));
}

TEST(JobFileTest, SeveralDocumentsAreSeveralJobs) {
  auto jobs = ParseJobFiles("p.yaml",
                            "name: train\nkind: train\n"
                            "---\n"
                            "name: score\nkind: eval\nmodel: {from: train}\n"
                            "benchmarks: [synthetic_shapes]\n"
                            "---\n");
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].spec.name(), "train");
  EXPECT_EQ((*jobs)[1].spec.name(), "score");
  EXPECT_EQ((*jobs)[1].document, 2);
  // Positions count lines of the whole file.
  EXPECT_EQ((*jobs)[1].Where("model"), "p.yaml:6:1: model");

  auto twice = ParseJobFiles("p.yaml",
                             "name: a\nkind: train\n---\n"
                             "name: a\nkind: train\n");
  ASSERT_FALSE(twice.ok());
  EXPECT_THAT(std::string(twice.status().message()),
              HasSubstr("p.yaml:4:7: name: 'a' names an earlier job"));
  // Every document's errors at once.
  auto bad =
      ParseJobFiles("p.yaml", "kind: x\n---\nkind: train\npriority: -1\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("p.yaml:1:7: kind"));
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("p.yaml:4:11: priority"));
}

TEST(JobFileTest, FlagsWinOverTheFile) {
  JobFileOptions options;
  options.nodes = 3;
  auto parsed = ParseJobFile(
      "t.yaml", "kind: train\nresources: {nodes: 1, gpus_per_node: 4}\n",
      options);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->spec.resources().nodes(), 3);
  EXPECT_EQ(parsed->spec.resources().gpus_per_node(), 4);
  options.nodes = 5000;
  EXPECT_THAT(
      std::string(
          ParseJobFile("t.yaml", "kind: train\n", options).status().message()),
      HasSubstr("t.yaml: --nodes: 5000 is more than 1024"));
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
  // ParseJobFile wants one job; ParseJobFiles takes several.
  EXPECT_THAT(ErrorOf("name: a\nkind: command\nrun: x\n---\nname: b\n"
                      "kind: command\nrun: y\n"),
              HasSubstr("job.yaml: 2 YAML documents; one job was expected"));
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
  EXPECT_THAT(
      ErrorOf("kind: command\nrun: x\nresources: {gpus_per_node: -1}\n"),
      HasSubstr("resources.gpus_per_node: must be from 0 to 64, got -1"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nresources: {nodes: 1000000}\n"),
              HasSubstr("resources.nodes: must be from 1 to 1024"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\nresources: {gpus_per_node: "
                      "99999999999999999999999}\n"),
              HasSubstr("resources.gpus_per_node: expected an integer"));
  EXPECT_THAT(ErrorOf("kind: command\nrun: x\npriority: 101\n"),
              HasSubstr("priority: must be from 0 to 100"));
  EXPECT_THAT(
      ErrorOf("kind: command\nrun: x\nresources: {procs_per_node: gpu}\n"),
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
