// YAML that would cost unbounded time, memory or stack once walked is
// refused at load, naming where; ordinary anchors and aliases still work.
#include "common/yaml_load.h"

#include <string>

#include "common/job_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::HasSubstr;

// An alias bomb: `levels` anchors, each a list of `copies` aliases of the
// one before; it expands to copies^levels leaves.
std::string AliasBomb(int levels, int copies) {
  std::string text = "a0: &a0 [x]\n";
  for (int level = 1; level <= levels; ++level) {
    text += "a" + std::to_string(level) + ": &a" + std::to_string(level) + " [";
    for (int c = 0; c < copies; ++c) {
      text += (c ? ", *a" : "*a") + std::to_string(level - 1);
    }
    text += "]\n";
  }
  return text;
}

TEST(YamlLoadTest, AnAliasThatContainsItselfIsRefusedNamingWhere) {
  auto docs = LoadYamlDocuments("job.yaml", "name: x\ntraining: &a [*a]\n");
  ASSERT_FALSE(docs.ok());
  EXPECT_THAT(
      docs.status().message(),
      HasSubstr("job.yaml:2:11: an alias makes this node contain itself"));
  auto map = LoadYamlDocuments("job.yaml", "env: &e {k: *e}\n");
  ASSERT_FALSE(map.ok());
  EXPECT_THAT(map.status().message(), HasSubstr("contain itself"));
}

TEST(YamlLoadTest, AnAliasBombIsRefusedAfterABoundedWalk) {
  // 10 levels of 10 copies: 10^10 leaves in about 600 bytes.
  const std::string bomb = AliasBomb(10, 10);
  ASSERT_LT(bomb.size(), 700u);
  auto docs = LoadYamlDocuments("bomb.yaml", bomb);
  ASSERT_FALSE(docs.ok());
  EXPECT_THAT(docs.status().message(),
              HasSubstr("expands to more than 200000 nodes"));
  EXPECT_THAT(docs.status().message(), HasSubstr("bomb.yaml:"));
}

TEST(YamlLoadTest, DeepNestingIsRefused) {
  std::string deep =
      "x: " + std::string(100, '[') + std::string(100, ']') + "\n";
  auto docs = LoadYamlDocuments("deep.yaml", deep);
  ASSERT_FALSE(docs.ok());
  EXPECT_THAT(docs.status().message(), HasSubstr("nested deeper than 64"));
  // Deeper than yaml-cpp's own limit: its error, said plainly.
  std::string deeper =
      "x: " + std::string(5000, '[') + std::string(5000, ']') + "\n";
  auto again = LoadYamlDocuments("deep.yaml", deeper);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(again.status().message(), HasSubstr("nested too deeply"));
}

TEST(YamlLoadTest, OrdinaryAnchorsAndSmallBombsLoad) {
  auto docs = LoadYamlDocuments(
      "ok.yaml",
      "common: &c {lr: 1.0e-4, steps: 10}\na: *c\nb: *c\nlist: [*c, *c]\n");
  ASSERT_TRUE(docs.ok()) << docs.status();
  ASSERT_EQ(docs->size(), 1u);
  EXPECT_EQ((*docs)[0]["b"]["steps"].as<int>(), 10);
  // 4^7 = 16,384 leaves (about 51,000 nodes in all): within the bound.
  EXPECT_TRUE(LoadYamlDocuments("four.yaml", AliasBomb(7, 4)).ok());
}

TEST(YamlLoadTest, JobFilesGoThroughTheBounds) {
  auto jobs = ParseJobFiles("self.yaml",
                            "kind: command\nrun: x\ntraining: &a [*a]\n", {});
  ASSERT_FALSE(jobs.ok());
  EXPECT_THAT(jobs.status().message(), HasSubstr("self.yaml:3:"));
  auto bomb = ParseJobFiles("bomb.yaml",
                            "kind: command\nrun: x\n" + AliasBomb(10, 10), {});
  ASSERT_FALSE(bomb.ok());
  EXPECT_THAT(bomb.status().message(), HasSubstr("expands to more than"));
}

}  // namespace
}  // namespace dcvlr
