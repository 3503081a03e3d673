// The Qwen2-VL image processor against transformers.js'
// Qwen2VLImageProcessor (testdata/qwen_image, made by make_golden.mjs).
#include "worker/trainer/qwen_image_processor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/trainer/safetensors.h"

namespace dcvlr::trainer {
namespace {

const std::string kDir = std::string(DCVLR_TESTDATA) + "/qwen_image";

TEST(QwenImageProcessor, SmartResizeMatchesTransformersJs) {
  std::ifstream in(kDir + "/smart_resize.json");
  auto cases = nlohmann::json::parse(in);
  int compared = 0, errors = 0;
  for (const auto& c : cases) {
    const int64_t h = c[0], w = c[1], min = c[2], max = c[3];
    int64_t oh = 0, ow = 0;
    std::string error;
    const bool ok = SmartResize(h, w, 28, min, max, &oh, &ow, &error);
    if (c[4] == "error") {
      EXPECT_FALSE(ok) << h << "x" << w;
      EXPECT_NE(error.find("aspect ratio"), std::string::npos) << error;
      ++errors;
      continue;
    }
    // JavaScript rounds halves up, Python (and this) to even; sides that
    // are an odd multiple of 14 may differ, and follow Python here.
    if (h % 28 == 14 || w % 28 == 14) continue;
    ASSERT_TRUE(ok) << h << "x" << w << ": " << error;
    EXPECT_EQ(ow, c[4][0].get<int64_t>())
        << h << "x" << w << " " << min << " " << max;
    EXPECT_EQ(oh, c[4][1].get<int64_t>())
        << h << "x" << w << " " << min << " " << max;
    ++compared;
  }
  EXPECT_GE(compared, 100);
  EXPECT_GE(errors, 3);
}

TEST(QwenImageProcessor, SmartResizeRoundsHalvesToEvenAsPython) {
  int64_t h = 0, w = 0;
  std::string error;
  // 70 / 28 = 2.5 and 98 / 28 = 3.5: Python's round gives 2 and 4.
  ASSERT_TRUE(SmartResize(70, 98, 28, 3136, 12845056, &h, &w, &error));
  EXPECT_EQ(h, 56);
  EXPECT_EQ(w, 112);
  EXPECT_FALSE(SmartResize(0, 5, 28, 3136, 12845056, &h, &w, &error));
}

TEST(QwenImageProcessor, PixelValuesAndGridsMatchTransformersJs) {
  SafetensorsFile golden;
  std::string error;
  ASSERT_TRUE(ReadSafetensors(kDir + "/golden.safetensors", &golden, &error))
      << error;
  QwenImageProcessorConfig config;
  ASSERT_TRUE(LoadQwenImageProcessorConfig(kDir, &config, &error)) << error;
  EXPECT_EQ(config.min_pixels, 3136);
  EXPECT_EQ(config.max_pixels, 12845056);
  int images = 0;
  for (int i = 0; golden.tensors.count("image_" + std::to_string(i)); ++i) {
    const TensorView& img = golden.tensors.at("image_" + std::to_string(i));
    const TensorView& px =
        golden.tensors.at("pixel_values_" + std::to_string(i));
    const TensorView& grid = golden.tensors.at("grid_" + std::to_string(i));
    Image image;
    image.height = static_cast<int>(img.shape[0]);
    image.width = static_cast<int>(img.shape[1]);
    const uint8_t* bytes = static_cast<const uint8_t*>(img.data);
    image.rgb.assign(bytes, bytes + img.nbytes);
    ProcessedImage out;
    ASSERT_TRUE(ProcessQwenImage(image, config, &out, &error)) << error;
    const int64_t* g = static_cast<const int64_t*>(grid.data);
    EXPECT_EQ(out.grid_thw, (std::array<int64_t, 3>{g[0], g[1], g[2]}));
    ASSERT_EQ(px.shape,
              (std::vector<int64_t>{out.patches(), config.patch_dim()}));
    const float* want = static_cast<const float*>(px.data);
    double worst = 0;
    for (size_t k = 0; k < out.pixel_values.size(); ++k)
      worst = std::max(worst, std::fabs(double(out.pixel_values[k]) - want[k]));
    EXPECT_LT(worst, 1e-6) << "image " << i;
    EXPECT_EQ(out.tokens(config.merge_size), out.patches() / 4);
    ++images;
  }
  EXPECT_EQ(images, 4);
}

TEST(QwenImageProcessor, BicubicKeepsConstantsAndSizes) {
  Image flat;
  flat.width = 37;
  flat.height = 23;
  flat.rgb.assign(37 * 23 * 3, 0);
  for (size_t i = 0; i < flat.rgb.size(); ++i) flat.rgb[i] = 50 + i % 3 * 60;
  for (auto [w, h] : {std::pair{56, 28}, {12, 9}, {37, 23}, {200, 100}}) {
    Image r = ResizeBicubic(flat, w, h);
    ASSERT_EQ(r.width, w);
    ASSERT_EQ(r.height, h);
    for (size_t i = 0; i < r.rgb.size(); ++i)
      ASSERT_EQ(r.rgb[i], 50 + i % 3 * 60) << w << "x" << h;
  }
  // A horizontal ramp stays non-decreasing when shrunk (antialiased).
  Image ramp;
  ramp.width = 256;
  ramp.height = 4;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 256; ++x)
      for (int c = 0; c < 3; ++c) ramp.rgb.push_back(static_cast<uint8_t>(x));
  Image small = ResizeBicubic(ramp, 28, 4);
  for (int x = 1; x < 28; ++x)
    EXPECT_GE(small.rgb[x * 3], small.rgb[(x - 1) * 3]);
}

TEST(QwenImageProcessor, ConfigErrorsNameTheKey) {
  char tmpl[] = "/tmp/qwen_image_test.XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::ofstream(dir + "/preprocessor_config.json")
      << R"({"image_std": [1, 2]})";
  QwenImageProcessorConfig config;
  std::string error;
  EXPECT_FALSE(LoadQwenImageProcessorConfig(dir, &config, &error));
  EXPECT_NE(error.find("key 'image_std'"), std::string::npos) << error;
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace dcvlr::trainer
