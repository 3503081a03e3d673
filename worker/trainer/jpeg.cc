// JPEG decoding; see jpeg.h.
#include "worker/trainer/jpeg.h"

#ifdef DCVLR_WITH_JPEG
#include <csetjmp>
#include <cstdio>
// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#endif

namespace dcvlr::trainer {

#ifdef DCVLR_WITH_JPEG
namespace {

struct ErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void OnError(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void OnMessage(j_common_ptr) {}  // warnings: corrupt-but-decodable data

}  // namespace

bool JpegSupported() { return true; }

bool DecodeJpeg(const std::vector<uint8_t>& bytes, Image* out,
                std::string* error) {
  // Nothing with a destructor may live between setjmp and longjmp.
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.base);
  err.base.error_exit = OnError;
  err.base.output_message = OnMessage;
  err.message[0] = '\0';
  Image image;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    *error = std::string("JPEG: ") + err.message;
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, const_cast<unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  const bool cmyk =
      cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int w = int(cinfo.output_width), h = int(cinfo.output_height);
  const int comps = cinfo.output_components;
  image.width = w;
  image.height = h;
  image.rgb.resize(size_t(w) * h * 3);
  std::vector<uint8_t> row(size_t(w) * comps);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rows[1] = {row.data()};
    const int y = int(cinfo.output_scanline);
    jpeg_read_scanlines(&cinfo, rows, 1);
    uint8_t* dst = image.rgb.data() + size_t(y) * w * 3;
    for (int x = 0; x < w; ++x) {
      if (comps == 4) {
        // Adobe writes inverted CMYK; libjpeg hands it back as stored.
        const int k = row[x * 4 + 3];
        for (int c = 0; c < 3; ++c)
          dst[x * 3 + c] = uint8_t(row[x * 4 + c] * k / 255);
      } else if (comps == 3) {
        for (int c = 0; c < 3; ++c) dst[x * 3 + c] = row[x * 3 + c];
      } else {
        for (int c = 0; c < 3; ++c) dst[x * 3 + c] = row[x];
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  *out = std::move(image);
  return true;
}

#else

bool JpegSupported() { return false; }

bool DecodeJpeg(const std::vector<uint8_t>&, Image*, std::string* error) {
  *error =
      "JPEG image, but this program was built without JPEG support (install "
      "libjpeg62-turbo-dev and rebuild)";
  return false;
}

#endif

}  // namespace dcvlr::trainer
