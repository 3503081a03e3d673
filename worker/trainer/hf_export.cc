// Hugging Face checkpoint export; see hf_export.h.
#include "worker/trainer/hf_export.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/trainer/safetensors.h"

namespace dcvlr::trainer {

const char* const kHfAssetFiles[] = {"tokenizer.json",
                                     "tokenizer_config.json",
                                     "vocab.json",
                                     "merges.txt",
                                     "special_tokens_map.json",
                                     "added_tokens.json",
                                     "preprocessor_config.json",
                                     "chat_template.json",
                                     "chat_template.jinja",
                                     "generation_config.json",
                                     nullptr};

namespace {

bool WriteFileSynced(const std::string& path, const std::string& text,
                     std::string* error) {
  FILE* f = std::fopen(path.c_str(), "wb");
  bool ok = f && std::fwrite(text.data(), 1, text.size(), f) == text.size() &&
            std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  if (f) ok = std::fclose(f) == 0 && ok;
  if (!ok) *error = path + ": write failed";
  return ok;
}

bool SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

const char* DtypeName(at::ScalarType t) {
  return t == at::kBFloat16 ? "BF16" : t == at::kHalf ? "F16" : "F32";
}

const char* TorchDtypeName(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16"
         : t == at::kHalf   ? "float16"
                            : "float32";
}

}  // namespace

bool ExportHfCheckpoint(const QwenVlModel& model, const std::string& dir,
                        const HfExportOptions& options, std::string* error) {
  namespace fs = std::filesystem;
  if (options.dtype != at::kBFloat16 && options.dtype != at::kHalf &&
      options.dtype != at::kFloat) {
    *error = "export dtype must be bf16, f16 or f32";
    return false;
  }
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    *error = dir + ": already exists; export writes a new directory";
    return false;
  }
  const std::string tmp = dir + ".partial";
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) {
    *error = tmp + ": cannot create (" + ec.message() + ")";
    return false;
  }

  // Host copies in the export dtype, grouped into shards by size in
  // parameter order (which keeps each block's tensors together).
  struct Item {
    std::string name;
    at::Tensor host;
  };
  std::vector<std::vector<Item>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0, total_params = 0;
  for (const auto& [name, p] : model.parameters()) {
    at::Tensor host =
        p.detach().to(at::kCPU, options.dtype, false, true).contiguous();
    const int64_t bytes = host.numel() * host.element_size();
    if (shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back({name, host});
    shard_bytes += bytes;
    total_bytes += bytes;
    total_params += host.numel();
  }
  nlohmann::ordered_json weight_map;
  const size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    if (n == 1)
      std::snprintf(name, sizeof(name), "model.safetensors");
    else
      std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors",
                    i + 1, n);
    std::vector<TensorView> views;
    for (const Item& item : shards[i]) {
      TensorView v;
      v.name = item.name;
      v.dtype = DtypeName(options.dtype);
      v.shape.assign(item.host.sizes().begin(), item.host.sizes().end());
      v.data = item.host.data_ptr();
      v.nbytes = item.host.numel() * item.host.element_size();
      views.push_back(std::move(v));
      weight_map[item.name] = name;
    }
    if (!WriteSafetensors(tmp + "/" + name, views, {{"format", "pt"}}, error))
      return false;
  }
  if (n > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total_bytes},
                         {"total_parameters", total_params}};
    index["weight_map"] = weight_map;
    if (!WriteFileSynced(tmp + "/model.safetensors.index.json",
                         index.dump(2) + "\n", error))
      return false;
  }
  QwenVlConfig config = model.config();
  config.dtype = TorchDtypeName(options.dtype);
  if (!WriteFileSynced(tmp + "/config.json", QwenVlConfigJson(config), error))
    return false;
  if (!options.assets_dir.empty()) {
    for (const char* const* f = kHfAssetFiles; *f; ++f) {
      const std::string from = options.assets_dir + "/" + *f;
      if (!fs::exists(from, ec)) continue;
      std::ifstream in(from, std::ios::binary);
      std::string text((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
      if (!in.good() && !in.eof()) {
        *error = from + ": cannot read";
        return false;
      }
      if (!WriteFileSynced(tmp + "/" + *f, text, error)) return false;
    }
  }
  if (!SyncDir(tmp)) {
    *error = tmp + ": fsync failed";
    return false;
  }
  fs::rename(tmp, dir, ec);
  if (ec) {
    *error = dir + ": cannot rename into place (" + ec.message() + ")";
    return false;
  }
  SyncDir(fs::path(dir).parent_path().empty()
              ? "."
              : fs::path(dir).parent_path().string());
  return true;
}

}  // namespace dcvlr::trainer
