// Config parsing: Oumi vocabulary, numeric strings, unknown keys, errors.
#include "worker/trainer/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/process_contract.h"
#include "worker/trainer/presets.h"

namespace dcvlr::trainer {
namespace {

using nlohmann::json;

json Minimal() {
  return json::parse(R"({
    "model": {"model_name": "tiny-vlm"},
    "data": {"train": {"datasets": [{"dataset_name": "synthetic_shapes",
                                      "dataset_kwargs": {"split": "train", "num_samples": 64}}]}},
    "training": {"max_steps": 5}
  })");
}

TEST(ConfigTest, ParsesOumiKeysAndNumericStrings) {
  json doc = Minimal();
  doc["training"] = {{"learning_rate", "3e-4"},
                     {"max_steps", "300"},
                     {"per_device_train_batch_size", 8},
                     {"gradient_accumulation_steps", 2},
                     {"warmup_ratio", 0.1},
                     {"max_grad_norm", "0.5"},
                     {"seed", 7},
                     {"lr_scheduler_type", "linear"},
                     {"save_total_limit", 2},
                     {"output_dir", "out"}};
  TrainerConfig c;
  std::string error;
  std::vector<std::string> warnings;
  ASSERT_TRUE(ParseConfig(doc, "/base", &c, &error, &warnings)) << error;
  EXPECT_DOUBLE_EQ(c.training.learning_rate, 3e-4);
  EXPECT_EQ(c.training.max_steps, 300);
  EXPECT_EQ(c.training.gradient_accumulation_steps, 2);
  EXPECT_DOUBLE_EQ(c.training.max_grad_norm, 0.5);
  EXPECT_EQ(c.training.lr_scheduler_type, "linear");
  EXPECT_EQ(c.training.output_dir, "/base/out");
  EXPECT_EQ(c.training.per_device_eval_batch_size, 8);
  EXPECT_EQ(c.model.name, "tiny-vlm");
  EXPECT_TRUE(warnings.empty());
}

TEST(ConfigTest, WrongTypeNamesKeyPath) {
  json doc = Minimal();
  doc["training"]["max_steps"] = "abc";
  TrainerConfig c;
  std::string error;
  std::vector<std::string> warnings;
  EXPECT_FALSE(ParseConfig(doc, "", &c, &error, &warnings));
  EXPECT_EQ(error, R"(training.max_steps: expected an integer, got "abc")");
}

TEST(ConfigTest, UnknownKeysWarnButPass) {
  json doc = Minimal();
  doc["training"]["fancy_new_knob"] = 1;
  doc["training"]["enable_wandb"] = true;  // an Oumi key we ignore quietly
  doc["model"]["mystery"] = "x";
  TrainerConfig c;
  std::string error;
  std::vector<std::string> warnings;
  ASSERT_TRUE(ParseConfig(doc, "", &c, &error, &warnings)) << error;
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("mystery"), std::string::npos);
  EXPECT_NE(warnings[1].find("training.fancy_new_knob"), std::string::npos);
}

TEST(ConfigTest, PresetsAreDataAndOverridable) {
  json doc = Minimal();
  doc["model"] = {{"model_name", "qwen2-vl-0.5b"},
                  {"model_config", {{"layers", 2}}}};
  TrainerConfig c;
  std::string error;
  std::vector<std::string> warnings;
  ASSERT_TRUE(ParseConfig(doc, "", &c, &error, &warnings)) << error;
  EXPECT_EQ(c.model.hidden, 896);
  EXPECT_EQ(c.model.layers, 2);
  doc["model"] = {{"model_name", "gpt-17"}};
  EXPECT_FALSE(ParseConfig(doc, "", &c, &error, &warnings));
  EXPECT_NE(error.find("model.model_name"), std::string::npos);
}

// The coordinator runs a model natively exactly when the contract lists it
// as native; each of those must be a preset here, and no preset is missing
// from the list.
TEST(ConfigTest, EveryNativeModelOfTheContractIsAPreset) {
  for (std::string_view name : contract::kNativeModels) {
    ModelPreset p;
    EXPECT_TRUE(FindPreset(std::string(name), &p)) << name;
    EXPECT_EQ(p.name, name);
  }
  EXPECT_EQ(PresetNames().size(), contract::kNativeModels.size());
  ModelPreset p;
  EXPECT_FALSE(FindPreset("Qwen/Qwen2.5-VL-7B-Instruct", &p));
  EXPECT_FALSE(contract::IsNativeModel("Qwen/Qwen2.5-VL-7B-Instruct"));
}

TEST(ConfigTest, TinyVlmMatchesDesign) {
  ModelPreset p;
  ASSERT_TRUE(FindPreset("tiny-vlm", &p));
  EXPECT_EQ(p.num_patches(), 64);
  EXPECT_EQ(p.image_tokens(), 16);
  EXPECT_EQ(p.head_dim(), 32);
  EXPECT_EQ(p.vocab_size, 320);
  EXPECT_EQ(p.kv_heads, 2);
  EXPECT_EQ(p.intermediate, 704);
  EXPECT_FALSE(p.tie_embeddings);
  EXPECT_EQ(p.ParamCount(), 3593472);
}

TEST(ConfigTest, HfVisionPathsResolveAgainstConfigDir) {
  json doc = Minimal();
  doc["data"]["train"]["datasets"] = json::parse(
      R"([{"dataset_name": "hf_vision", "dataset_kwargs": {"hf_dataset_path": "d/a.jsonl",
           "data_files": ["/abs/b.jsonl"]}}])");
  TrainerConfig c;
  std::string error;
  std::vector<std::string> warnings;
  ASSERT_TRUE(ParseConfig(doc, "/cfg", &c, &error, &warnings)) << error;
  EXPECT_EQ(c.train[0].files,
            (std::vector<std::string>{"/cfg/d/a.jsonl", "/abs/b.jsonl"}));
  doc["data"]["train"]["datasets"][0]["dataset_kwargs"] = json::object();
  EXPECT_FALSE(ParseConfig(doc, "/cfg", &c, &error, &warnings));
}

TEST(ConfigTest, OumiHfVisionColumnsAndSystemPrompt) {
  json doc = Minimal();
  doc["data"]["train"]["datasets"] = json::parse(
      R"([{"dataset_name": "hf_vision", "dataset_kwargs": {"hf_dataset_path": "a.jsonl",
           "image_column": "image", "question_column": "problem",
           "answer_column": "solution", "system_prompt": "Think."}}])");
  TrainerConfig c;
  std::string error;
  std::vector<std::string> warnings;
  ASSERT_TRUE(ParseConfig(doc, "/cfg", &c, &error, &warnings)) << error;
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  EXPECT_EQ(c.train[0].question_column, "problem");
  EXPECT_EQ(c.train[0].answer_column, "solution");
  EXPECT_EQ(c.train[0].system_prompt, "Think.");
  doc["data"]["train"]["datasets"][0]["dataset_kwargs"]
     ["system_prompt_column"] = "sys";
  EXPECT_FALSE(ParseConfig(doc, "/cfg", &c, &error, &warnings));
  EXPECT_NE(
      error.find("dataset_kwargs.system_prompt_column: expected only one of"),
      std::string::npos)
      << error;
}

// Counts the usage texts a parse prints, by stream.
int usage_to_stdout = 0, usage_to_stderr = 0;
void CountingUsage(FILE* out) {
  ++(out == stdout ? usage_to_stdout : usage_to_stderr);
}

ConfigArgs Parse(std::vector<std::string> args, std::string* path) {
  args.insert(args.begin(), "dcvlr-train");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseConfigArgs(static_cast<int>(argv.size()), argv.data(),
                         "dcvlr-train", CountingUsage, path);
}

TEST(ConfigArgsTest, ReadsConfigInBothSpellingsAndRefusesTheRest) {
  usage_to_stdout = usage_to_stderr = 0;
  std::string path;
  EXPECT_EQ(Parse({"--config", "a.json"}, &path), ConfigArgs::kRun);
  EXPECT_EQ(path, "a.json");
  EXPECT_EQ(Parse({"--config=b.json"}, &path), ConfigArgs::kRun);
  EXPECT_EQ(path, "b.json");
  EXPECT_EQ(usage_to_stdout + usage_to_stderr, 0);

  EXPECT_EQ(Parse({"--help"}, &path), ConfigArgs::kHelpShown);
  EXPECT_EQ(usage_to_stdout, 1);
  EXPECT_EQ(Parse({}, &path), ConfigArgs::kBad);            // no --config
  EXPECT_EQ(Parse({"--config"}, &path), ConfigArgs::kBad);  // no file
  EXPECT_EQ(Parse({"--config=c.json", "--steps=3"}, &path), ConfigArgs::kBad);
  EXPECT_EQ(usage_to_stderr, 3);
}

}  // namespace
}  // namespace dcvlr::trainer
