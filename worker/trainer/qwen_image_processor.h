// Qwen2-VL's image processor (transformers' Qwen2VLImageProcessor): the
// image is resized to smart_resize's size (each side a multiple of
// patch_size * merge_size, the area within [min_pixels, max_pixels], the
// aspect ratio kept), resampled bicubically, scaled to [0, 1] and
// normalised with CLIP's mean and std, repeated temporal_patch_size times
// (a still image is a one-step video), and cut into patches flattened in
// transformers' order: merge group by merge group (row-major), each patch
// as [channel, time, row, column]. Torch-free.
#ifndef DCVLR_WORKER_TRAINER_QWEN_IMAGE_PROCESSOR_H_
#define DCVLR_WORKER_TRAINER_QWEN_IMAGE_PROCESSOR_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "worker/trainer/image.h"

namespace dcvlr::trainer {

struct QwenImageProcessorConfig {
  int64_t patch_size = 14;
  int64_t merge_size = 2;
  int64_t temporal_patch_size = 2;
  int64_t min_pixels = 56 * 56;
  int64_t max_pixels = 28 * 28 * 1280;
  double rescale_factor = 1.0 / 255;
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};

  int64_t factor() const { return patch_size * merge_size; }
  int64_t patch_dim() const {
    return 3 * temporal_patch_size * patch_size * patch_size;
  }
};

// Reads preprocessor_config.json (or a checkpoint directory holding one);
// keys it lacks keep their defaults. Errors name the file and key.
bool LoadQwenImageProcessorConfig(const std::string& path,
                                  QwenImageProcessorConfig* out,
                                  std::string* error);

// transformers' smart_resize: false (with why) for an aspect ratio above
// 200 or a non-positive side. Halves round to even, as Python's round().
bool SmartResize(int64_t height, int64_t width, int64_t factor,
                 int64_t min_pixels, int64_t max_pixels, int64_t* out_height,
                 int64_t* out_width, std::string* error);

struct ProcessedImage {
  std::vector<float> pixel_values;    // [patches, patch_dim], row-major
  std::array<int64_t, 3> grid_thw{};  // patches = t * h * w
  int64_t patches() const { return grid_thw[0] * grid_thw[1] * grid_thw[2]; }
  // The decoder tokens the image takes: patches / merge_size^2.
  int64_t tokens(int64_t merge_size) const {
    return patches() / (merge_size * merge_size);
  }
};

bool ProcessQwenImage(const Image& image,
                      const QwenImageProcessorConfig& config,
                      ProcessedImage* out, std::string* error);

// Bicubic resampling as PIL's Image.resize(BICUBIC) does it: the a = -0.5
// cubic kernel, widened by the scale when shrinking (antialiasing), one
// axis at a time with rounding to 8 bits in between.
Image ResizeBicubic(const Image& image, int width, int height);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_QWEN_IMAGE_PROCESSOR_H_
