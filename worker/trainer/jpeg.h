// JPEG decoding (what Hugging Face datasets and VLMEvalKit's TSVs mostly
// carry), through libjpeg when the build found it (DCVLR_WITH_JPEG);
// otherwise every call fails with "built without JPEG support".
// DecodeImage() calls it for JPEG bytes.
#ifndef DCVLR_WORKER_TRAINER_JPEG_H_
#define DCVLR_WORKER_TRAINER_JPEG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "worker/trainer/image.h"

namespace dcvlr::trainer {

// Decodes a baseline or progressive JPEG (greyscale, RGB, YCbCr, CMYK) to
// RGB. False with a reason on failure.
bool DecodeJpeg(const std::vector<uint8_t>& bytes, Image* out,
                std::string* error);

// Whether this build decodes JPEG.
bool JpegSupported();

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_JPEG_H_
