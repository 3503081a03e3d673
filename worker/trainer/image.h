// RGB images for the trainer: decode what hf_vision rows carry (PNG, binary
// PPM), encode PNG for the synthetic generator, and resize to a model's input.
//
// There is no image library dependency on purpose (the trainer links libtorch
// and nlohmann-json only), so the PNG codec here is small: the encoder writes
// uncompressed deflate blocks, the decoder handles every deflate block type,
// 8-bit greyscale/RGB/RGBA/palette images and all five filters, but not
// interlacing or 16-bit depth. JPEG is not supported.
#ifndef DCVLR_WORKER_TRAINER_IMAGE_H_
#define DCVLR_WORKER_TRAINER_IMAGE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace dcvlr::trainer {

// Row-major interleaved 8-bit RGB.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // width * height * 3 bytes
};

std::vector<uint8_t> EncodePng(const Image& image);

// Decodes PNG, JPEG (when built with libjpeg; jpeg.h) or binary PPM (P6).
// On failure returns false and says why.
bool DecodeImage(const std::vector<uint8_t>& bytes, Image* out,
                 std::string* error);

// Bilinear resize (area-averaged when shrinking by an integer factor).
Image Resize(const Image& image, int width, int height);

// zlib-format inflate, exposed for tests.
bool ZlibInflate(const uint8_t* data, size_t size, std::vector<uint8_t>* out,
                 std::string* error);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_IMAGE_H_
