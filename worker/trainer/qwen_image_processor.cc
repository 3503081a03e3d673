// Qwen2-VL image processor; see qwen_image_processor.h.
#include "worker/trainer/qwen_image_processor.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/trainer/hf_checkpoint.h"

namespace dcvlr::trainer {
namespace {

// Python's round(): halves to even (the default floating-point rounding
// mode does exactly that).
int64_t RoundHalfEven(double x) {
  return static_cast<int64_t>(std::nearbyint(x));
}

double Cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

struct Taps {
  std::vector<int> start;
  std::vector<std::vector<double>> weights;
};

// PIL's precompute_coeffs for one axis.
Taps Coefficients(int in, int out) {
  Taps taps;
  const double scale = static_cast<double>(in) / out;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  for (int x = 0; x < out; ++x) {
    const double center = (x + 0.5) * scale;
    int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    int hi = std::min(static_cast<int>(center + support + 0.5), in);
    std::vector<double> w;
    double sum = 0;
    for (int i = lo; i < hi; ++i) {
      double k = Cubic((i - center + 0.5) / filter_scale);
      w.push_back(k);
      sum += k;
    }
    if (sum != 0)
      for (double& k : w) k /= sum;
    taps.start.push_back(lo);
    taps.weights.push_back(std::move(w));
  }
  return taps;
}

uint8_t Clip8(double v) {
  return static_cast<uint8_t>(std::clamp(std::floor(v + 0.5), 0.0, 255.0));
}

}  // namespace

bool LoadQwenImageProcessorConfig(const std::string& path,
                                  QwenImageProcessorConfig* out,
                                  std::string* error) {
  std::string file, text;
  if (!ReadCheckpointFile(path, "preprocessor_config.json", 4 << 20, &file,
                          &text, error))
    return false;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    *error = file + ": not a JSON object";
    return false;
  }
  QwenImageProcessorConfig c;
  auto integer = [&](const char* key, int64_t* v) {
    if (!j.contains(key)) return true;
    if (!j[key].is_number_integer() || j[key].get<int64_t>() < 1) {
      *error = file + ": key '" + key + "': must be a positive integer";
      return false;
    }
    *v = j[key].get<int64_t>();
    return true;
  };
  auto triple = [&](const char* key, std::array<double, 3>* v) {
    if (!j.contains(key)) return true;
    const auto& a = j[key];
    if (!a.is_array() || a.size() != 3 || !a[0].is_number() ||
        !a[1].is_number() || !a[2].is_number()) {
      *error = file + ": key '" + key + "': want 3 numbers";
      return false;
    }
    for (int i = 0; i < 3; ++i) (*v)[i] = a[i].get<double>();
    return true;
  };
  // Newer files put the pixel bounds in size {shortest_edge, longest_edge}.
  if (j.contains("size") && j["size"].is_object()) {
    const auto& s = j["size"];
    if (s.contains("shortest_edge") && s["shortest_edge"].is_number_integer())
      c.min_pixels = s["shortest_edge"].get<int64_t>();
    if (s.contains("longest_edge") && s["longest_edge"].is_number_integer())
      c.max_pixels = s["longest_edge"].get<int64_t>();
  }
  if (!integer("patch_size", &c.patch_size) ||
      !integer("merge_size", &c.merge_size) ||
      !integer("temporal_patch_size", &c.temporal_patch_size) ||
      !integer("min_pixels", &c.min_pixels) ||
      !integer("max_pixels", &c.max_pixels) || !triple("image_mean", &c.mean) ||
      !triple("image_std", &c.std))
    return false;
  if (j.contains("rescale_factor") && j["rescale_factor"].is_number())
    c.rescale_factor = j["rescale_factor"].get<double>();
  for (double s : c.std)
    if (s <= 0) {
      *error = file + ": key 'image_std': must be positive";
      return false;
    }
  if (c.min_pixels > c.max_pixels) {
    *error = file + ": key 'min_pixels': larger than max_pixels";
    return false;
  }
  *out = c;
  return true;
}

bool SmartResize(int64_t height, int64_t width, int64_t factor,
                 int64_t min_pixels, int64_t max_pixels, int64_t* out_height,
                 int64_t* out_width, std::string* error) {
  if (height < 1 || width < 1) {
    *error = "image is " + std::to_string(width) + "x" +
             std::to_string(height) + "; both sides must be positive";
    return false;
  }
  double h = static_cast<double>(height), w = static_cast<double>(width);
  if (h < factor || w < factor) {
    const double scale = std::max(factor / h, factor / w);
    h = static_cast<double>(RoundHalfEven(h * scale));
    w = static_cast<double>(RoundHalfEven(w * scale));
  }
  if (std::max(h, w) / std::min(h, w) > 200) {
    *error = "image is " + std::to_string(width) + "x" +
             std::to_string(height) + "; the aspect ratio must be at most 200";
    return false;
  }
  int64_t hb = RoundHalfEven(h / factor) * factor;
  int64_t wb = RoundHalfEven(w / factor) * factor;
  if (static_cast<double>(hb) * wb > max_pixels) {
    const double beta = std::sqrt(h * w / max_pixels);
    hb = std::max<int64_t>(
        factor, static_cast<int64_t>(std::floor(h / beta / factor)) * factor);
    wb = std::max<int64_t>(
        factor, static_cast<int64_t>(std::floor(w / beta / factor)) * factor);
  } else if (static_cast<double>(hb) * wb < min_pixels) {
    const double beta = std::sqrt(min_pixels / (h * w));
    hb = static_cast<int64_t>(std::ceil(h * beta / factor)) * factor;
    wb = static_cast<int64_t>(std::ceil(w * beta / factor)) * factor;
  }
  *out_height = hb;
  *out_width = wb;
  return true;
}

Image ResizeBicubic(const Image& image, int width, int height) {
  if (image.width == width && image.height == height) return image;
  Image cur = image;
  if (cur.width != width) {
    const Taps t = Coefficients(cur.width, width);
    Image next;
    next.width = width;
    next.height = cur.height;
    next.rgb.resize(static_cast<size_t>(width) * cur.height * 3);
    for (int y = 0; y < cur.height; ++y)
      for (int x = 0; x < width; ++x)
        for (int c = 0; c < 3; ++c) {
          double v = 0;
          const auto& w = t.weights[x];
          for (size_t i = 0; i < w.size(); ++i)
            v += w[i] *
                 cur.rgb[(static_cast<size_t>(y) * cur.width + t.start[x] + i) *
                             3 +
                         c];
          next.rgb[(static_cast<size_t>(y) * width + x) * 3 + c] = Clip8(v);
        }
    cur = std::move(next);
  }
  if (cur.height != height) {
    const Taps t = Coefficients(cur.height, height);
    Image next;
    next.width = cur.width;
    next.height = height;
    next.rgb.resize(static_cast<size_t>(cur.width) * height * 3);
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < cur.width; ++x)
        for (int c = 0; c < 3; ++c) {
          double v = 0;
          const auto& w = t.weights[y];
          for (size_t i = 0; i < w.size(); ++i)
            v += w[i] * cur.rgb[((t.start[y] + i) * cur.width + x) * 3 + c];
          next.rgb[(static_cast<size_t>(y) * cur.width + x) * 3 + c] = Clip8(v);
        }
    cur = std::move(next);
  }
  return cur;
}

bool ProcessQwenImage(const Image& image,
                      const QwenImageProcessorConfig& config,
                      ProcessedImage* out, std::string* error) {
  if (image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3) {
    *error = "image data does not match its size";
    return false;
  }
  int64_t h = 0, w = 0;
  if (!SmartResize(image.height, image.width, config.factor(),
                   config.min_pixels, config.max_pixels, &h, &w, error))
    return false;
  const Image resized =
      ResizeBicubic(image, static_cast<int>(w), static_cast<int>(h));
  const int64_t p = config.patch_size, m = config.merge_size,
                tp = config.temporal_patch_size;
  const int64_t gh = h / p, gw = w / p;
  out->grid_thw = {1, gh, gw};
  out->pixel_values.assign(static_cast<size_t>(gh * gw * config.patch_dim()),
                           0.0f);
  // Normalised value of channel c at (y, x), in float32 steps as numpy's.
  auto value = [&](int64_t y, int64_t x, int c) {
    const float scaled = static_cast<float>(
        resized.rgb[(static_cast<size_t>(y) * w + x) * 3 + c] *
        config.rescale_factor);
    return static_cast<float>((scaled - config.mean[c]) / config.std[c]);
  };
  float* dst = out->pixel_values.data();
  for (int64_t bh = 0; bh < gh / m; ++bh)
    for (int64_t bw = 0; bw < gw / m; ++bw)
      for (int64_t mh = 0; mh < m; ++mh)
        for (int64_t mw = 0; mw < m; ++mw) {
          const int64_t y0 = (bh * m + mh) * p, x0 = (bw * m + mw) * p;
          for (int c = 0; c < 3; ++c)
            for (int64_t t = 0; t < tp; ++t)  // the image repeated in time
              for (int64_t py = 0; py < p; ++py)
                for (int64_t px = 0; px < p; ++px)
                  *dst++ = value(y0 + py, x0 + px, c);
        }
  return true;
}

}  // namespace dcvlr::trainer
