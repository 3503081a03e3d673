// Config parsing: defaults, prompt resolution, errors naming keys.
#include "worker/eval/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace dcvlr::eval {
namespace {

using nlohmann::json;

TEST(EvalConfigTest, ParsesAndResolvesPaths) {
  json j = {{"model", {{"checkpoint", "ckpt"}}},
            {"benchmarks",
             {{{"name", "synthetic_shapes"}, {"path", "/data/s.tsv"}},
              {{"name", "MMStar"}, {"path", "mmstar.tsv"}}}},
            {"batch_size", "8"},
            {"max_new_tokens", 4},
            {"extra", 1}};
  EvalConfig c;
  std::string error;
  std::vector<std::string> warnings;
  ASSERT_TRUE(ParseEvalConfig(j, "/cfg", &c, &error, &warnings)) << error;
  EXPECT_EQ(c.checkpoint, "/cfg/ckpt");
  ASSERT_EQ(c.benchmarks.size(), 2u);
  EXPECT_EQ(c.benchmarks[0].path, "/data/s.tsv");
  EXPECT_EQ(c.benchmarks[1].path, "/cfg/mmstar.tsv");
  // auto: the trainer's synthetic benchmark inline, others VLMEvalKit's.
  EXPECT_EQ(c.benchmarks[0].prompt, PromptStyle::kInline);
  EXPECT_EQ(c.benchmarks[1].prompt, PromptStyle::kVlmEvalKit);
  EXPECT_EQ(c.batch_size, 8);
  EXPECT_EQ(c.max_new_tokens, 4);
  EXPECT_EQ(c.seed, 0);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "extra: unknown key, ignored");
}

TEST(EvalConfigTest, ErrorsNameTheKey) {
  auto error_of = [](const json& j) {
    EvalConfig c;
    std::string error;
    std::vector<std::string> warnings;
    EXPECT_FALSE(ParseEvalConfig(j, "", &c, &error, &warnings));
    return error;
  };
  json base = {{"model", {{"checkpoint", "c"}}},
               {"benchmarks", {{{"name", "a"}, {"path", "a.tsv"}}}}};
  json j = base;
  j["benchmarks"][0]["path"] = 3;
  EXPECT_EQ(error_of(j), "benchmarks[0].path: expected a string, got 3");
  j = base;
  j["batch_size"] = 0;
  EXPECT_EQ(error_of(j), "batch_size: must be at least 1, got 0");
  j = base;
  j["benchmarks"].push_back({{"name", "a"}, {"path", "b.tsv"}});
  EXPECT_EQ(error_of(j), "benchmarks[1].name: \"a\" is used twice");
  j = base;
  j["benchmarks"][0]["prompt"] = "chatty";
  EXPECT_EQ(error_of(j),
            "benchmarks[0].prompt: expected auto, vlmevalkit or inline, got "
            "\"chatty\"");
  j = base;
  j.erase("model");
  EXPECT_EQ(error_of(j), "model.checkpoint: required");
  j = base;
  j["benchmarks"][0]["name"] = "../x";
  EXPECT_NE(error_of(j).find("benchmarks[0].name:"), std::string::npos);
}

TEST(EvalConfigTest, SyntheticBenchmarks) {
  EvalConfig c;
  std::string error;
  std::vector<std::string> warnings;
  nlohmann::json j = {
      {"model", {{"checkpoint", "/c"}, {"from_job", "j-3"}}},
      {"benchmarks",
       {{{"name", "synthetic_shapes"},
         {"synthetic",
          {{"split", "test"}, {"num_samples", 40}, {"seed", 9}}}}}}};
  ASSERT_TRUE(ParseEvalConfig(j, "/base", &c, &error, &warnings)) << error;
  EXPECT_TRUE(warnings.empty());  // from_job is known
  ASSERT_EQ(c.benchmarks.size(), 1u);
  EXPECT_TRUE(c.benchmarks[0].synthetic);
  EXPECT_EQ(c.benchmarks[0].source.num_samples, 40);
  EXPECT_EQ(c.benchmarks[0].source.seed, 9);
  EXPECT_EQ(c.benchmarks[0].prompt, PromptStyle::kInline);

  j["benchmarks"][0]["synthetic"]["split"] = "dev";
  EXPECT_FALSE(ParseEvalConfig(j, "/base", &c, &error, &warnings));
  EXPECT_EQ(
      error,
      "benchmarks[0].synthetic.split: expected train or test, got \"dev\"");
  j["benchmarks"][0]["synthetic"]["split"] = "test";
  j["benchmarks"][0]["path"] = "/x.tsv";
  EXPECT_FALSE(ParseEvalConfig(j, "/base", &c, &error, &warnings));
  EXPECT_EQ(error, "benchmarks[0]: give either path or synthetic, not both");
}

TEST(EvalConfigTest, JsonSyntaxErrorNamesLineAndColumn) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("dcvlr_eval_cfg." + std::to_string(::getpid()) + ".json");
  std::ofstream(path)
      << "{\n  \"model\": {\"checkpoint\": \"c\"},\n  oops\n}\n";
  EvalConfig c;
  std::string error;
  std::vector<std::string> warnings;
  EXPECT_FALSE(LoadEvalConfigFile(path.string(), &c, &error, &warnings));
  std::filesystem::remove(path);
  EXPECT_EQ(error.rfind(path.string() + ":3:3: invalid JSON", 0), 0u) << error;
}

}  // namespace
}  // namespace dcvlr::eval
