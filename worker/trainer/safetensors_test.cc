// The safetensors writer, checked by a parser written from the spec.
#include "worker/trainer/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "worker/trainer/safetensors_spec_parser.h"

namespace dcvlr::trainer {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          (name + "." + std::to_string(::getpid())))
      .string();
}

TEST(SafetensorsTest, WriterOutputParsesBySpec) {
  std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 1e-7f, 42.0f};
  std::vector<int64_t> ids = {7, -9, 1LL << 40};
  std::vector<uint8_t> img = {1, 2, 3};  // odd size: forces padding logic
  std::string path = TempPath("st_test.safetensors");
  std::string error;
  ASSERT_TRUE(
      WriteSafetensors(path,
                       {{"layer.weight", "F32", {2, 3}, w.data(), w.size() * 4},
                        {"ids", "I64", {3}, ids.data(), ids.size() * 8},
                        {"img", "U8", {1, 3}, img.data(), img.size()}},
                       {{"format", "pt"}, {"note", "x"}}, &error))
      << error;
  testing::SpecFile f;
  ASSERT_EQ(testing::ParseSafetensorsBySpec(path, &f), "");
  EXPECT_EQ((8 + f.header_size) % 8, 0u) << "data should start 8-byte aligned";
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  EXPECT_EQ(f.metadata.at("note"), "x");
  const auto& t = f.tensors.at("layer.weight");
  EXPECT_EQ(t.dtype, "F32");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(t.bytes.size(), 24u);
  EXPECT_EQ(std::memcmp(t.bytes.data(), w.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.tensors.at("ids").bytes.data(), ids.data(), 24), 0);
  EXPECT_EQ(f.tensors.at("img").bytes, std::string("\x01\x02\x03", 3));
  std::filesystem::remove(path);
}

TEST(SafetensorsTest, ReaderRoundTripsWriter) {
  std::vector<float> w = {1, 2, 3, 4};
  std::string path = TempPath("st_rt.safetensors");
  std::string error;
  ASSERT_TRUE(WriteSafetensors(path, {{"a", "F32", {4}, w.data(), 16}},
                               {{"step", "12"}}, &error));
  SafetensorsFile f;
  ASSERT_TRUE(ReadSafetensors(path, &f, &error)) << error;
  ASSERT_EQ(f.tensors.count("a"), 1u);
  EXPECT_EQ(f.metadata["step"], "12");
  EXPECT_EQ(std::memcmp(f.tensors["a"].data, w.data(), 16), 0);
  std::filesystem::remove(path);
}

TEST(SafetensorsTest, SpecParserRejectsHoles) {
  // A hand-made file whose one tensor starts at offset 4: a hole.
  std::string header =
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = char((header.size() >> (8 * i)) & 0xff);
  file += header + std::string(8, 'x');
  std::string path = TempPath("st_hole.safetensors");
  { std::ofstream(path, std::ios::binary) << file; }
  testing::SpecFile f;
  EXPECT_NE(testing::ParseSafetensorsBySpec(path, &f), "");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace dcvlr::trainer
