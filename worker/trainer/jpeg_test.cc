// JPEG decoding: an image encoded here with libjpeg decodes back to its
// colours; in a build without libjpeg the error says so.
#include "worker/trainer/jpeg.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "worker/trainer/image.h"

#ifdef DCVLR_WITH_JPEG
#include <jpeglib.h>
#endif

namespace dcvlr::trainer {
namespace {

#ifdef DCVLR_WITH_JPEG
// Left half red, right half blue, 16x8, as a baseline JPEG.
std::vector<uint8_t> EncodeTestJpeg(bool greyscale) {
  const int w = 16, h = 8;
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = w;
  cinfo.image_height = h;
  cinfo.input_components = greyscale ? 1 : 3;
  cinfo.in_color_space = greyscale ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 95, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<uint8_t> row(size_t(w) * cinfo.input_components);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      if (greyscale) {
        row[x] = x < w / 2 ? 40 : 200;
      } else {
        const uint8_t red[3] = {220, 20, 20}, blue[3] = {20, 20, 220};
        for (int c = 0; c < 3; ++c)
          row[x * 3 + c] = (x < w / 2 ? red : blue)[c];
      }
    }
    JSAMPROW rows[1] = {row.data()};
    jpeg_write_scanlines(&cinfo, rows, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::vector<uint8_t> out(buf, buf + size);
  std::free(buf);
  return out;
}

TEST(JpegTest, DecodesRgbAndGreyscale) {
  ASSERT_TRUE(JpegSupported());
  Image img;
  std::string error;
  ASSERT_TRUE(DecodeImage(EncodeTestJpeg(false), &img, &error)) << error;
  ASSERT_EQ(img.width, 16);
  ASSERT_EQ(img.height, 8);
  auto px = [&](int x, int y, int c) {
    return int(img.rgb[(size_t(y) * img.width + x) * 3 + c]);
  };
  EXPECT_NEAR(px(2, 4, 0), 220, 12);
  EXPECT_NEAR(px(2, 4, 2), 20, 12);
  EXPECT_NEAR(px(13, 4, 0), 20, 12);
  EXPECT_NEAR(px(13, 4, 2), 220, 12);
  ASSERT_TRUE(DecodeImage(EncodeTestJpeg(true), &img, &error)) << error;
  EXPECT_NEAR(px(2, 2, 0), 40, 8);
  EXPECT_EQ(px(2, 2, 0), px(2, 2, 1));
  EXPECT_NEAR(px(13, 2, 2), 200, 8);
}

TEST(JpegTest, TruncatedJpegIsAnError) {
  std::vector<uint8_t> bytes = EncodeTestJpeg(false);
  bytes.resize(20);
  Image img;
  std::string error;
  EXPECT_FALSE(DecodeImage(bytes, &img, &error));
  EXPECT_EQ(error.rfind("JPEG: ", 0), 0u) << error;
}
#else
TEST(JpegTest, BuildWithoutLibjpegSaysSo) {
  EXPECT_FALSE(JpegSupported());
  Image img;
  std::string error;
  EXPECT_FALSE(DecodeImage({0xFF, 0xD8, 0xFF, 0xE0, 0, 0}, &img, &error));
  EXPECT_NE(error.find("built without JPEG support"), std::string::npos);
}
#endif

}  // namespace
}  // namespace dcvlr::trainer
