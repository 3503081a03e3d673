// JPEG decoding for benchmark images (what VLMEvalKit's TSVs carry), through
// libjpeg when the build found it (DCVLR_WITH_JPEG); otherwise every call
// fails with "built without JPEG support".
#ifndef DCVLR_WORKER_EVAL_JPEG_H_
#define DCVLR_WORKER_EVAL_JPEG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "worker/trainer/image.h"

namespace dcvlr::eval {

// Decodes a baseline or progressive JPEG (greyscale, RGB, YCbCr, CMYK) to
// RGB. False with a reason on failure.
bool DecodeJpeg(const std::vector<uint8_t>& bytes, trainer::Image* out,
                std::string* error);

// Whether this build decodes JPEG.
bool JpegSupported();

}  // namespace dcvlr::eval

#endif  // DCVLR_WORKER_EVAL_JPEG_H_
