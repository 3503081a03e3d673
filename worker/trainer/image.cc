// PNG/PPM codec (JPEG through jpeg.h) and resize; see image.h. The inflate
// follows RFC 1951 in the manner of zlib's reference decoder "puff": canonical
// Huffman tables decoded one bit at a time, which is slow but small, and images
// here are small.
#include "worker/trainer/image.h"

#include <array>
#include <cstring>

#include "worker/trainer/jpeg.h"

namespace dcvlr::trainer {
namespace {

uint32_t Crc32(const uint8_t* data, size_t size, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i)
    crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void PutBe32(std::vector<uint8_t>* out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out->push_back((v >> s) & 0xff);
}

uint32_t GetBe32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}

void PutChunk(std::vector<uint8_t>* out, const char* type,
              const std::vector<uint8_t>& data) {
  PutBe32(out, data.size());
  size_t start = out->size();
  out->insert(out->end(), type, type + 4);
  out->insert(out->end(), data.begin(), data.end());
  PutBe32(out, Crc32(out->data() + start, out->size() - start));
}

// --- inflate ---------------------------------------------------------------

struct Huffman {
  std::array<uint16_t, 16> count{};
  std::vector<uint16_t> symbol;
};

class Inflater {
 public:
  Inflater(const uint8_t* in, size_t size, std::vector<uint8_t>* out)
      : in_(in), size_(size), out_(out) {}

  bool Run(std::string* error) {
    int last;
    do {
      last = Bits(1);
      int type = Bits(2);
      bool ok = type == 0   ? Stored()
                : type == 1 ? Fixed()
                : type == 2 ? Dynamic()
                            : false;
      if (!ok || overrun_) {
        *error = "corrupt deflate stream";
        return false;
      }
    } while (!last);
    return true;
  }

 private:
  int Bits(int need) {
    uint32_t val = bitbuf_;
    while (bitcnt_ < need) {
      if (pos_ >= size_) {
        overrun_ = true;
        return 0;
      }
      val |= uint32_t{in_[pos_++]} << bitcnt_;
      bitcnt_ += 8;
    }
    bitbuf_ = val >> need;
    bitcnt_ -= need;
    return static_cast<int>(val & ((1u << need) - 1));
  }

  bool Stored() {
    bitbuf_ = 0;
    bitcnt_ = 0;
    if (pos_ + 4 > size_) return false;
    unsigned len = in_[pos_] | (in_[pos_ + 1] << 8);
    unsigned nlen = in_[pos_ + 2] | (in_[pos_ + 3] << 8);
    pos_ += 4;
    if (len != (~nlen & 0xffff) || pos_ + len > size_) return false;
    out_->insert(out_->end(), in_ + pos_, in_ + pos_ + len);
    pos_ += len;
    return true;
  }

  int Decode(const Huffman& h) {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len < 16; ++len) {
      code |= Bits(1);
      if (overrun_) return -1;
      int count = h.count[len];
      if (code - count < first) return h.symbol[index + (code - first)];
      index += count;
      first += count;
      first <<= 1;
      code <<= 1;
    }
    return -1;
  }

  static bool Build(Huffman* h, const uint16_t* lengths, int n) {
    h->count.fill(0);
    for (int s = 0; s < n; ++s) h->count[lengths[s]]++;
    std::array<uint16_t, 16> offs{};
    for (int len = 1; len < 15; ++len)
      offs[len + 1] = offs[len] + h->count[len];
    h->symbol.assign(n, 0);
    for (int s = 0; s < n; ++s)
      if (lengths[s] != 0) h->symbol[offs[lengths[s]]++] = s;
    return true;
  }

  bool Codes(const Huffman& lencode, const Huffman& distcode) {
    static constexpr uint16_t kLenBase[29] = {
        3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
        31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static constexpr uint16_t kLenExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1,
                                               1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                               4, 4, 4, 4, 5, 5, 5, 5, 0};
    static constexpr uint16_t kDistBase[30] = {
        1,    2,    3,    4,    5,    7,    9,    13,    17,    25,
        33,   49,   65,   97,   129,  193,  257,  385,   513,   769,
        1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    static constexpr uint16_t kDistExtra[30] = {
        0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
        6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    for (;;) {
      int sym = Decode(lencode);
      if (sym < 0) return false;
      if (sym < 256) {
        out_->push_back(static_cast<uint8_t>(sym));
      } else if (sym == 256) {
        return true;
      } else {
        sym -= 257;
        if (sym >= 29) return false;
        size_t len = kLenBase[sym] + Bits(kLenExtra[sym]);
        int dsym = Decode(distcode);
        if (dsym < 0 || dsym >= 30) return false;
        size_t dist = kDistBase[dsym] + Bits(kDistExtra[dsym]);
        if (dist > out_->size()) return false;
        size_t from = out_->size() - dist;
        for (size_t i = 0; i < len; ++i) out_->push_back((*out_)[from + i]);
      }
      if (overrun_) return false;
    }
  }

  bool Fixed() {
    static const std::pair<Huffman, Huffman> tables = [] {
      uint16_t lengths[288];
      int s = 0;
      for (; s < 144; ++s) lengths[s] = 8;
      for (; s < 256; ++s) lengths[s] = 9;
      for (; s < 280; ++s) lengths[s] = 7;
      for (; s < 288; ++s) lengths[s] = 8;
      Huffman len, dist;
      Build(&len, lengths, 288);
      for (s = 0; s < 30; ++s) lengths[s] = 5;
      Build(&dist, lengths, 30);
      return std::make_pair(len, dist);
    }();
    return Codes(tables.first, tables.second);
  }

  bool Dynamic() {
    static constexpr uint8_t kOrder[19] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                           11, 4,  12, 3, 13, 2, 14, 1, 15};
    int nlen = Bits(5) + 257, ndist = Bits(5) + 1, ncode = Bits(4) + 4;
    if (nlen > 286 || ndist > 30) return false;
    uint16_t lengths[320] = {};
    for (int i = 0; i < ncode; ++i) lengths[kOrder[i]] = Bits(3);
    Huffman lencode, distcode;
    Build(&lencode, lengths, 19);
    int index = 0;
    while (index < nlen + ndist) {
      int sym = Decode(lencode);
      if (sym < 0) return false;
      if (sym < 16) {
        lengths[index++] = sym;
      } else {
        int len = 0, repeat;
        if (sym == 16) {
          if (index == 0) return false;
          len = lengths[index - 1];
          repeat = 3 + Bits(2);
        } else if (sym == 17) {
          repeat = 3 + Bits(3);
        } else {
          repeat = 11 + Bits(7);
        }
        if (index + repeat > nlen + ndist) return false;
        while (repeat--) lengths[index++] = len;
      }
    }
    Build(&lencode, lengths, nlen);
    Build(&distcode, lengths + nlen, ndist);
    return Codes(lencode, distcode);
  }

  const uint8_t* in_;
  size_t size_;
  size_t pos_ = 0;
  uint32_t bitbuf_ = 0;
  int bitcnt_ = 0;
  bool overrun_ = false;
  std::vector<uint8_t>* out_;
};

// --- PNG / PPM decode --------------------------------------------------------

int Paeth(int a, int b, int c) {
  int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b),
      pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  return pb <= pc ? b : c;
}

bool DecodePng(const std::vector<uint8_t>& bytes, Image* out,
               std::string* error) {
  size_t pos = 8;
  int width = 0, height = 0, depth = 0, color = 0, interlace = 0;
  std::vector<uint8_t> idat, palette;
  while (pos + 12 <= bytes.size()) {
    uint32_t len = GetBe32(&bytes[pos]);
    if (pos + 12 + len > bytes.size()) break;
    std::string type(reinterpret_cast<const char*>(&bytes[pos + 4]), 4);
    const uint8_t* data = &bytes[pos + 8];
    if (type == "IHDR" && len >= 13) {
      width = GetBe32(data);
      height = GetBe32(data + 4);
      depth = data[8];
      color = data[9];
      interlace = data[12];
    } else if (type == "PLTE") {
      palette.assign(data, data + len);
    } else if (type == "IDAT") {
      idat.insert(idat.end(), data, data + len);
    } else if (type == "IEND") {
      break;
    }
    pos += 12 + len;
  }
  if (width <= 0 || height <= 0 || width > 16384 || height > 16384) {
    *error = "PNG without a valid IHDR";
    return false;
  }
  int channels = color == 0   ? 1
                 : color == 2 ? 3
                 : color == 3 ? 1
                 : color == 4 ? 2
                 : color == 6 ? 4
                              : 0;
  if (depth != 8 || channels == 0 || interlace != 0) {
    *error =
        "unsupported PNG (only 8-bit, non-interlaced grey/RGB/RGBA/palette)";
    return false;
  }
  std::vector<uint8_t> raw;
  if (idat.size() < 6 || !ZlibInflate(idat.data(), idat.size(), &raw, error)) {
    if (error->empty()) *error = "PNG without image data";
    return false;
  }
  size_t stride = size_t(width) * channels;
  if (raw.size() < (stride + 1) * height) {
    *error = "truncated PNG image data";
    return false;
  }
  std::vector<uint8_t> pix(stride * height);
  for (int y = 0; y < height; ++y) {
    int filter = raw[y * (stride + 1)];
    const uint8_t* src = &raw[y * (stride + 1) + 1];
    uint8_t* row = &pix[y * stride];
    const uint8_t* prev = y > 0 ? &pix[(y - 1) * stride] : nullptr;
    for (size_t x = 0; x < stride; ++x) {
      int a = x >= size_t(channels) ? row[x - channels] : 0;
      int b = prev ? prev[x] : 0;
      int c = (prev && x >= size_t(channels)) ? prev[x - channels] : 0;
      int v = src[x];
      switch (filter) {
        case 0:
          break;
        case 1:
          v += a;
          break;
        case 2:
          v += b;
          break;
        case 3:
          v += (a + b) / 2;
          break;
        case 4:
          v += Paeth(a, b, c);
          break;
        default:
          *error = "bad PNG filter";
          return false;
      }
      row[x] = static_cast<uint8_t>(v);
    }
  }
  out->width = width;
  out->height = height;
  out->rgb.resize(size_t(width) * height * 3);
  for (size_t i = 0; i < size_t(width) * height; ++i) {
    const uint8_t* p = &pix[i * channels];
    uint8_t* q = &out->rgb[i * 3];
    if (color == 3) {
      size_t k = size_t(p[0]) * 3;
      if (k + 2 >= palette.size()) {
        *error = "PNG palette index out of range";
        return false;
      }
      q[0] = palette[k], q[1] = palette[k + 1], q[2] = palette[k + 2];
    } else if (channels <= 2) {
      q[0] = q[1] = q[2] = p[0];
    } else {
      q[0] = p[0], q[1] = p[1], q[2] = p[2];
    }
  }
  return true;
}

bool DecodePpm(const std::vector<uint8_t>& bytes, Image* out,
               std::string* error) {
  size_t pos = 2;
  int fields[3];
  for (int& f : fields) {
    while (pos < bytes.size() && (isspace(bytes[pos]) || bytes[pos] == '#')) {
      if (bytes[pos] == '#')
        while (pos < bytes.size() && bytes[pos] != '\n') ++pos;
      else
        ++pos;
    }
    f = 0;
    while (pos < bytes.size() && isdigit(bytes[pos]))
      f = f * 10 + (bytes[pos++] - '0');
  }
  ++pos;
  size_t n = size_t(fields[0]) * fields[1] * 3;
  if (fields[2] != 255 || fields[0] <= 0 || fields[1] <= 0 ||
      pos + n > bytes.size()) {
    *error = "unsupported or truncated PPM";
    return false;
  }
  out->width = fields[0];
  out->height = fields[1];
  out->rgb.assign(bytes.begin() + pos, bytes.begin() + pos + n);
  return true;
}

}  // namespace

bool ZlibInflate(const uint8_t* data, size_t size, std::vector<uint8_t>* out,
                 std::string* error) {
  if (size < 2 || (data[0] & 0x0f) != 8 ||
      ((data[0] << 8) | data[1]) % 31 != 0) {
    *error = "not a zlib stream";
    return false;
  }
  Inflater inflater(data + 2, size - 2, out);
  return inflater.Run(error);
}

std::vector<uint8_t> EncodePng(const Image& image) {
  static constexpr uint8_t kSignature[8] = {0x89, 'P',  'N',  'G',
                                            '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> out(kSignature, kSignature + 8);
  std::vector<uint8_t> ihdr;
  PutBe32(&ihdr, image.width);
  PutBe32(&ihdr, image.height);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  PutChunk(&out, "IHDR", ihdr);

  std::vector<uint8_t> raw;
  size_t stride = size_t(image.width) * 3;
  for (int y = 0; y < image.height; ++y) {
    raw.push_back(0);  // filter: none
    raw.insert(raw.end(), image.rgb.begin() + y * stride,
               image.rgb.begin() + (y + 1) * stride);
  }
  // zlib wrapper around stored deflate blocks of at most 65535 bytes.
  std::vector<uint8_t> z = {0x78, 0x01};
  size_t pos = 0;
  do {
    size_t n = std::min<size_t>(65535, raw.size() - pos);
    bool last = pos + n == raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(n & 0xff);
    z.push_back(n >> 8);
    z.push_back(~n & 0xff);
    z.push_back((~n >> 8) & 0xff);
    z.insert(z.end(), raw.begin() + pos, raw.begin() + pos + n);
    pos += n;
  } while (pos < raw.size());
  uint32_t a = 1, b = 0;
  for (uint8_t v : raw) {
    a = (a + v) % 65521;
    b = (b + a) % 65521;
  }
  PutBe32(&z, (b << 16) | a);
  PutChunk(&out, "IDAT", z);
  PutChunk(&out, "IEND", {});
  return out;
}

bool DecodeImage(const std::vector<uint8_t>& bytes, Image* out,
                 std::string* error) {
  if (bytes.size() >= 8 && bytes[0] == 0x89 && bytes[1] == 'P' &&
      bytes[2] == 'N' && bytes[3] == 'G')
    return DecodePng(bytes, out, error);
  if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] == '6')
    return DecodePpm(bytes, out, error);
  if (bytes.size() >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 &&
      bytes[2] == 0xff)
    return DecodeJpeg(bytes, out, error);
  *error = "unknown image format (expected PNG, JPEG or PPM)";
  return false;
}

Image Resize(const Image& image, int width, int height) {
  if (image.width == width && image.height == height) return image;
  Image out{width, height, std::vector<uint8_t>(size_t(width) * height * 3)};
  if (image.width % width == 0 && image.height % height == 0) {
    int fx = image.width / width, fy = image.height / height;
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x)
        for (int c = 0; c < 3; ++c) {
          int sum = 0;
          for (int dy = 0; dy < fy; ++dy)
            for (int dx = 0; dx < fx; ++dx)
              sum +=
                  image
                      .rgb[((y * fy + dy) * size_t(image.width) + x * fx + dx) *
                               3 +
                           c];
          out.rgb[(y * size_t(width) + x) * 3 + c] =
              (sum + fx * fy / 2) / (fx * fy);
        }
    return out;
  }
  for (int y = 0; y < height; ++y) {
    float sy = std::max(0.f, (y + 0.5f) * image.height / height - 0.5f);
    int y0 = std::min(int(sy), image.height - 1),
        y1 = std::min(y0 + 1, image.height - 1);
    float wy = sy - y0;
    for (int x = 0; x < width; ++x) {
      float sx = std::max(0.f, (x + 0.5f) * image.width / width - 0.5f);
      int x0 = std::min(int(sx), image.width - 1),
          x1 = std::min(x0 + 1, image.width - 1);
      float wx = sx - x0;
      for (int c = 0; c < 3; ++c) {
        auto at = [&](int yy, int xx) {
          return float(image.rgb[(yy * size_t(image.width) + xx) * 3 + c]);
        };
        float v = (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x1)) +
                  wy * ((1 - wx) * at(y1, x0) + wx * at(y1, x1));
        out.rgb[(y * size_t(width) + x) * 3 + c] =
            static_cast<uint8_t>(v + 0.5f);
      }
    }
  }
  return out;
}

}  // namespace dcvlr::trainer
