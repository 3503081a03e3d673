// A safetensors reader written from the format's specification alone, for
// tests: it shares no code with safetensors.cc, so a writer bug cannot hide
// behind a matching reader bug. It checks what the spec requires: an 8-byte
// little-endian header length, a JSON object header whose entries give
// dtype, shape and [begin, end) data_offsets relative to the byte after the
// header, offsets that tile the data area exactly, and an optional
// "__metadata__" map of strings.
#ifndef DCVLR_WORKER_TRAINER_SAFETENSORS_SPEC_PARSER_H_
#define DCVLR_WORKER_TRAINER_SAFETENSORS_SPEC_PARSER_H_

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace dcvlr::trainer::testing {

struct SpecTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

struct SpecFile {
  std::map<std::string, SpecTensor> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t header_size = 0;
};

inline size_t SpecDtypeSize(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL") return 1;
  return 0;
}

// Returns an empty string on success, else what is wrong.
inline std::string ParseSafetensorsBySpec(const std::string& path,
                                          SpecFile* out) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string file = buf.str();
  if (file.size() < 8) return "file shorter than 8 bytes";
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(file[i])) << (8 * i);
  out->header_size = n;
  if (8 + n > file.size()) return "header length past end of file";
  auto header = nlohmann::json::parse(file.substr(8, n), nullptr, false);
  if (header.is_discarded() || !header.is_object())
    return "header is not a JSON object";
  const size_t data_size = file.size() - 8 - n;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return "__metadata__ is not an object";
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return "__metadata__ value is not a string";
        out->metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") ||
        !entry.contains("shape") || !entry.contains("data_offsets"))
      return name + ": entry lacks dtype, shape or data_offsets";
    SpecTensor t;
    t.dtype = entry["dtype"].get<std::string>();
    t.shape = entry["shape"].get<std::vector<int64_t>>();
    auto offs = entry["data_offsets"].get<std::vector<uint64_t>>();
    if (offs.size() != 2 || offs[0] > offs[1] || offs[1] > data_size)
      return name + ": bad data_offsets";
    uint64_t elems = 1;
    for (int64_t d : t.shape) elems *= uint64_t(d);
    if (SpecDtypeSize(t.dtype) == 0) return name + ": unknown dtype " + t.dtype;
    if (elems * SpecDtypeSize(t.dtype) != offs[1] - offs[0])
      return name + ": byte length does not match dtype and shape";
    t.bytes = file.substr(8 + n + offs[0], offs[1] - offs[0]);
    ranges.push_back({offs[0], offs[1]});
    out->tensors[name] = std::move(t);
  }
  // The spec forbids holes and overlaps: the ranges must tile the data area.
  std::sort(ranges.begin(), ranges.end());
  uint64_t at = 0;
  for (const auto& [b, e] : ranges) {
    if (b != at) return "data_offsets leave a hole or overlap";
    at = e;
  }
  if (at != data_size) return "data area has trailing bytes";
  return "";
}

}  // namespace dcvlr::trainer::testing

#endif  // DCVLR_WORKER_TRAINER_SAFETENSORS_SPEC_PARSER_H_
