// Hugging Face checkpoint directories; see hf_checkpoint.h.
#include "worker/trainer/hf_checkpoint.h"

#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace dcvlr::trainer {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

std::string CanonicalTensorName(const std::string& name) {
  if (StartsWith(name, "model.language_model."))
    return "model." + name.substr(sizeof("model.language_model.") - 1);
  if (StartsWith(name, "model.visual."))
    return name.substr(sizeof("model.") - 1);
  return name;
}

bool ReadCheckpointFile(const std::string& path, const char* name,
                        size_t max_bytes, std::string* file, std::string* text,
                        std::string* error) {
  *file = path;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    *file = path + "/" + name;
  std::ifstream in(*file, std::ios::binary);
  if (!in) {
    *error = *file + ": cannot open";
    return false;
  }
  text->assign(max_bytes + 1, '\0');
  in.read(text->data(), static_cast<std::streamsize>(text->size()));
  text->resize(static_cast<size_t>(in.gcount()));
  if (text->size() > max_bytes) {
    *error = *file + ": larger than " + std::to_string(max_bytes >> 20) +
             " MiB; not a " + name;
    return false;
  }
  return true;
}

size_t DtypeSize(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16")
    return 2;
  if (dtype == "U8" || dtype == "I8" || dtype == "BOOL") return 1;
  return 0;
}

bool ReadHfCheckpoint(const std::string& dir, HfCheckpoint* out,
                      std::string* error) {
  out->dir = dir;
  std::vector<std::string> shards;
  // name -> shard, as the index says
  std::map<std::string, std::string> index;
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (Exists(index_path)) {
    std::ifstream in(index_path);
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
        !j["weight_map"].is_object()) {
      *error = index_path + ": not an index (no \"weight_map\" object)";
      return false;
    }
    std::set<std::string> seen;
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) {
        *error = index_path + ": weight_map[\"" + name + "\"] is not a string";
        return false;
      }
      std::string f = file.get<std::string>();
      // Shards are plain file names next to the index.
      if (f.empty() || f.find('/') != std::string::npos || f == "." ||
          f == "..") {
        *error = index_path + ": weight_map[\"" + name + "\"]: shard \"" + f +
                 "\" is not a file name in " + dir;
        return false;
      }
      index[name] = f;
      if (seen.insert(f).second) shards.push_back(f);
    }
  } else if (Exists(dir + "/model.safetensors")) {
    shards.push_back("model.safetensors");
  } else {
    *error = dir +
             ": no model.safetensors or model.safetensors.index.json (not a "
             "Hugging Face checkpoint directory)";
    return false;
  }
  for (const std::string& shard : shards) {
    std::string path = dir + "/" + shard;
    if (!Exists(path)) {
      *error = path + ": missing (listed in model.safetensors.index.json)";
      return false;
    }
    auto file = std::make_unique<SafetensorsFile>();
    if (!ReadSafetensors(path, file.get(), error)) return false;
    for (const auto& [name, t] : file->tensors) {
      size_t elem = DtypeSize(t.dtype);
      if (elem == 0) {
        *error = path + ": tensor " + name + ": unknown dtype " + t.dtype;
        return false;
      }
      uint64_t numel = 1;
      for (int64_t d : t.shape) {
        if (d < 0 || (d > 0 && numel > (uint64_t{1} << 48) / d)) {
          *error = path + ": tensor " + name + ": bad shape";
          return false;
        }
        numel *= d;
      }
      if (numel * elem != t.nbytes) {
        *error = path + ": tensor " + name + ": " + std::to_string(t.nbytes) +
                 " bytes, but its " + t.dtype + " shape needs " +
                 std::to_string(numel * elem);
        return false;
      }
      if (!index.empty()) {
        auto it = index.find(name);
        if (it == index.end() || it->second != shard) {
          *error =
              path + ": tensor " + name +
              (it == index.end() ? " is not in model.safetensors.index.json"
                                 : " is listed under " + it->second);
          return false;
        }
      }
      std::string canonical = CanonicalTensorName(name);
      if (out->tensors.count(canonical)) {
        *error =
            path + ": tensor " + name + " is also in " + out->source[canonical];
        return false;
      }
      out->tensors[canonical] = &t;
      out->source[canonical] = path;
    }
    out->files.push_back(std::move(file));
  }
  for (const auto& [name, shard] : index) {
    if (!out->tensors.count(CanonicalTensorName(name))) {
      *error = dir + "/" + shard + ": has no tensor " + name +
               " (model.safetensors.index.json lists it there)";
      return false;
    }
  }
  return true;
}

}  // namespace dcvlr::trainer
