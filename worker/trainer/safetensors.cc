// safetensors writer and reader; see safetensors.h.
#include "worker/trainer/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

namespace dcvlr::trainer {

bool WriteSafetensors(const std::string& path,
                      const std::vector<TensorView>& tensors,
                      const std::map<std::string, std::string>& metadata,
                      std::string* error) {
  // nlohmann's ordered_json keeps the header in data order, which is what
  // the reference implementation writes too (it sorts by dtype then name,
  // but readers accept any order).
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorView& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  // Pad with spaces so the data starts 8-byte aligned.
  while ((8 + text.size()) % 8 != 0) text += ' ';
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    *error = path + ": cannot open for writing";
    return false;
  }
  uint8_t size_le[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) size_le[i] = (n >> (8 * i)) & 0xff;
  bool ok = std::fwrite(size_le, 1, 8, f) == 8 &&
            std::fwrite(text.data(), 1, n, f) == n;
  for (const TensorView& t : tensors)
    ok = ok &&
         (t.nbytes == 0 || std::fwrite(t.data, 1, t.nbytes, f) == t.nbytes);
  ok = ok && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) *error = path + ": write failed";
  return ok;
}

bool ReadSafetensors(const std::string& path, SafetensorsFile* out,
                     std::string* error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = path + ": cannot open";
    return false;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size < 8) {
    ::close(fd);
    *error = path + ": shorter than the 8-byte header size";
    return false;
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    *error = path + ": cannot map";
    return false;
  }
  out->mapping = std::shared_ptr<const uint8_t>(
      static_cast<const uint8_t*>(map),
      [size](const uint8_t* p) { ::munmap(const_cast<uint8_t*>(p), size); });
  out->size = size;
  const uint8_t* bytes = out->mapping.get();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > size - 8) {
    *error = path + ": header size past end of file";
    return false;
  }
  auto header = nlohmann::json::parse(bytes + 8, bytes + 8 + n, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    *error = path + ": header is not a JSON object";
    return false;
  }
  size_t data_start = 8 + n;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      for (const auto& [k, m] : v.items())
        if (m.is_string()) out->metadata[k] = m.get<std::string>();
      continue;
    }
    TensorView t;
    t.name = name;
    std::vector<uint64_t> offs;
    try {
      t.dtype = v.value("dtype", "");
      t.shape = v.value("shape", std::vector<int64_t>{});
      offs = v.value("data_offsets", std::vector<uint64_t>{});
    } catch (const nlohmann::json::exception&) {
      *error = path + ": bad header entry for " + name;
      return false;
    }
    if (offs.size() != 2 || offs[0] > offs[1] || data_start + offs[1] > size) {
      *error = path + ": bad data_offsets for " + name;
      return false;
    }
    t.data = bytes + data_start + offs[0];
    t.nbytes = offs[1] - offs[0];
    out->tensors[name] = std::move(t);
  }
  return true;
}

}  // namespace dcvlr::trainer
