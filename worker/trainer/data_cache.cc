// Shard cache; see data_cache.h.
//
// File layout (little-endian):
//   magic "DCVLRSH1", u32 format, u32 image_size, u64 examples,
//   u64 index_offset, u64 tokens_offset, u64 images_offset,
//   index: examples x {u64 first_token, u32 length, u32 answer_start},
//   tokens: u16 ids, images: examples x image_size^2 x 3 bytes.
#include "worker/trainer/data_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "worker/trainer/base64.h"
#include "worker/trainer/image.h"
#include "worker/trainer/synthetic.h"
#include "worker/trainer/tokenizer.h"

namespace dcvlr::trainer {
namespace {

constexpr char kMagic[8] = {'D', 'C', 'V', 'L', 'R', 'S', 'H', '1'};
// Bump when the conversion changes, so old caches are not reused.
constexpr uint32_t kFormat = 1;
constexpr size_t kHeaderSize = 8 + 4 + 4 + 8 * 4;
constexpr size_t kIndexEntry = 16;

namespace fs = std::filesystem;

uint64_t Fnv1a(const void* data, size_t n, uint64_t h) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

template <typename T>
T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream buf;
  buf << in.rdbuf();
  *out = buf.str();
  return true;
}

// The string a row holds for its image: base64, a data URL, a path, or
// HF's {"bytes": ..., "path": ...}.
bool LoadRowImage(const nlohmann::json& v, const fs::path& dir, Image* out,
                  std::string* error) {
  if (v.is_array() && !v.empty()) return LoadRowImage(v[0], dir, out, error);
  if (v.is_object()) {
    if (v.contains("bytes") && v["bytes"].is_string())
      return LoadRowImage(v["bytes"], dir, out, error);
    if (v.contains("path") && v["path"].is_string())
      return LoadRowImage(v["path"], dir, out, error);
    *error = "image object without bytes or path";
    return false;
  }
  if (!v.is_string()) {
    *error = "image must be a string (base64 or path)";
    return false;
  }
  std::string s = v.get<std::string>();
  if (s.rfind("data:", 0) == 0) s = s.substr(s.find(',') + 1);
  std::vector<uint8_t> bytes;
  // Short strings with a dot or slash are paths; long ones are base64.
  bool looks_like_path =
      s.size() < 1024 &&
      (s.find('/') != std::string::npos || s.find('.') != std::string::npos) &&
      s.find('=') == std::string::npos;
  fs::path p = fs::path(s).is_absolute() ? fs::path(s) : dir / s;
  if (looks_like_path && fs::exists(p)) {
    std::string raw;
    if (!ReadFile(p.string(), &raw)) {
      *error = p.string() + ": cannot read image";
      return false;
    }
    bytes.assign(raw.begin(), raw.end());
  } else if (auto decoded = Base64Decode(s)) {
    bytes = std::move(*decoded);
  } else {
    *error = "image is neither an existing path nor base64";
    return false;
  }
  return DecodeImage(bytes, out, error);
}

std::string FirstString(const nlohmann::json& row,
                        std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    auto it = row.find(k);
    if (it != row.end()) {
      if (it->is_string()) return it->get<std::string>();
      if (!it->is_null()) return it->dump();
    }
  }
  return {};
}

}  // namespace

VisionColumns ColumnsOf(const DatasetSpec& spec) {
  return {spec.image_column, spec.question_column, spec.answer_column,
          spec.system_prompt_column, spec.system_prompt};
}

bool ReadVisionRows(const std::vector<std::string>& files,
                    const VisionColumns& columns, const VisionRowFn& fn,
                    std::string* error) {
  // A named column's text: it must be in the row and hold a string or null.
  auto named = [](const nlohmann::json& row, const std::string& column,
                  const char* kwarg, std::string* out, std::string* why) {
    auto it = row.find(column);
    if (it == row.end()) {
      std::string keys;
      for (const auto& [k, v] : row.items())
        keys += (keys.empty() ? "" : ", ") + k;
      *why = "column '" + column + "' (" + kwarg +
             ") is not in the row; it has: " + keys;
      return false;
    }
    if (it->is_null()) return true;
    if (!it->is_string()) {
      *why = "column '" + column + "' (" + kwarg + ") is not text";
      return false;
    }
    *out = it->get<std::string>();
    return true;
  };
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) {
      *error = file + ": cannot open dataset file";
      return false;
    }
    fs::path dir = fs::path(file).parent_path();
    std::string line;
    for (int lineno = 1; std::getline(in, line); ++lineno) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::string where = file + ":" + std::to_string(lineno) + ": ";
      auto row = nlohmann::json::parse(line, nullptr, false);
      if (row.is_discarded() || !row.is_object()) {
        *error = where + "not a JSON object";
        return false;
      }
      VisionRow r;
      std::string why;
      if (row.contains("messages") && columns.question.empty()) {
        if (!ParseChatMessages(row["messages"], &r.messages, &why)) {
          *error = where + why;
          return false;
        }
        // The image parts' data, in order, else the row's "images" list.
        size_t next = 0;
        const nlohmann::json* list =
            row.contains("images") && row["images"].is_array() ? &row["images"]
                                                               : nullptr;
        for (const auto& m : row["messages"]) {
          if (!m.contains("content") || !m["content"].is_array()) continue;
          for (const auto& p : m["content"]) {
            const std::string type = p.value("type", "");
            if (!(type == "image" || p.contains("image") ||
                  p.contains("image_url")))
              continue;
            const nlohmann::json* data = nullptr;
            if (p.contains("image") && !p["image"].is_null())
              data = &p["image"];
            else if (p.contains("image_url")) {
              data = &p["image_url"];
              if (data->is_object() && data->contains("url"))
                data = &(*data)["url"];
            } else if (list && next < list->size()) {
              data = &(*list)[next++];
            }
            if (!data) {
              *error = where + "image " + std::to_string(r.images.size()) +
                       " has no data (no \"image\" in the part, no \"images\" "
                       "entry left)";
              return false;
            }
            Image img;
            if (!LoadRowImage(*data, dir, &img, &why)) {
              *error = where + "image " + std::to_string(r.images.size()) +
                       ": " + why;
              return false;
            }
            r.images.push_back(std::move(img));
          }
        }
        if (!fn(where, std::move(r), &why)) {
          *error = where + why;
          return false;
        }
        continue;
      }
      if (columns.question.empty())
        r.question = FirstString(row, {"question", "prompt", "query"});
      else if (!named(row, columns.question, "question_column", &r.question,
                      &why)) {
        *error = where + why;
        return false;
      }
      if (columns.answer.empty())
        r.answer = FirstString(row, {"answer", "response", "label"});
      else if (!named(row, columns.answer, "answer_column", &r.answer, &why)) {
        *error = where + why;
        return false;
      }
      r.system = columns.system_prompt;
      if (!columns.system.empty() &&
          !named(row, columns.system, "system_prompt_column", &r.system,
                 &why)) {
        *error = where + why;
        return false;
      }
      const nlohmann::json* img = nullptr;
      if (!columns.image.empty()) {
        if (!row.contains(columns.image)) {
          *error = where + "column '" + columns.image +
                   "' (image_column) is not in the row";
          return false;
        }
        img = &row[columns.image];
      } else {
        for (const char* k : {"image", "images", "image_path"})
          if (row.contains(k)) {
            img = &row[k];
            break;
          }
      }
      if (!img || r.answer.empty()) {
        *error = where + "row needs image, question and answer";
        return false;
      }
      if (!LoadRowImage(*img, dir, &r.image, &why)) {
        *error = where + why;
        return false;
      }
      if (!fn(where, std::move(r), &why)) {
        *error = where + why;
        return false;
      }
    }
  }
  return true;
}

namespace {

bool BuildShard(const std::vector<std::string>& files,
                const VisionColumns& columns, const ModelPreset& preset,
                const std::string& path, std::string* error) {
  ByteTokenizer tokenizer(preset.image_tokens());
  std::string index, tokens, images;
  uint64_t examples = 0, truncated = 0;
  const int s = preset.image_size;
  auto add = [&](const std::string&, VisionRow row, std::string* why) {
    if (!row.messages.empty()) {
      *why =
          "conversation rows (\"messages\") need a Hugging Face checkpoint "
          "directory as model.model_name; presets take image, question and "
          "answer";
      return false;
    }
    Image image = Resize(row.image, s, s);
    EncodedExample ex =
        tokenizer.EncodeExample(row.question, row.answer, preset.max_seq_len);
    truncated += ex.truncated;
    Put<uint64_t>(&index, tokens.size() / 2);
    Put<uint32_t>(&index, ex.tokens.size());
    Put<uint32_t>(&index, ex.answer_start);
    tokens.append(reinterpret_cast<const char*>(ex.tokens.data()),
                  ex.tokens.size() * 2);
    images.append(reinterpret_cast<const char*>(image.rgb.data()),
                  image.rgb.size());
    ++examples;
    return true;
  };
  if (!ReadVisionRows(files, columns, add, error)) return false;
  if (examples == 0) {
    *error = "no examples in " + files.front();
    return false;
  }
  if (truncated > 0)
    fprintf(stderr,
            "dcvlr-train: %llu of %llu questions cut to fit max_seq_len=%d\n",
            (unsigned long long)truncated, (unsigned long long)examples,
            preset.max_seq_len);
  std::string header(kMagic, 8);
  Put<uint32_t>(&header, kFormat);
  Put<uint32_t>(&header, s);
  Put<uint64_t>(&header, examples);
  uint64_t index_off = kHeaderSize;
  uint64_t tokens_off = index_off + index.size();
  uint64_t images_off = (tokens_off + tokens.size() + 63) / 64 * 64;
  Put<uint64_t>(&header, index_off);
  Put<uint64_t>(&header, tokens_off);
  Put<uint64_t>(&header, images_off);
  fs::create_directories(fs::path(path).parent_path());
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << header << index << tokens;
    out << std::string(images_off - tokens_off - tokens.size(), '\0') << images;
    if (!out.flush()) {
      *error = tmp + ": write failed";
      return false;
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    *error = path + ": " + ec.message();
    return false;
  }
  return true;
}

bool WaitForFile(const std::string& path, int timeout_s, std::string* error) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (!fs::exists(path)) {
    if (std::chrono::steady_clock::now() > deadline) {
      *error = path + ": timed out waiting for another process to build it";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

}  // namespace

std::unique_ptr<Shard> Shard::Open(const std::string& path,
                                   std::string* error) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    *error = path + ": cannot open shard";
    return nullptr;
  }
  struct stat st;
  ::fstat(fd, &st);
  size_t size = st.st_size;
  void* map = size >= kHeaderSize
                  ? ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0)
                  : MAP_FAILED;
  ::close(fd);
  if (map == MAP_FAILED) {
    *error = path + ": cannot map shard";
    return nullptr;
  }
  std::unique_ptr<Shard> shard(new Shard);
  shard->map_ = map;
  shard->map_size_ = size;
  const uint8_t* p = static_cast<const uint8_t*>(map);
  if (std::memcmp(p, kMagic, 8) != 0 || Get<uint32_t>(p + 8) != kFormat) {
    *error = path + ": not a shard of this format";
    return nullptr;
  }
  shard->image_size_ = Get<uint32_t>(p + 12);
  shard->num_examples_ = Get<uint64_t>(p + 16);
  shard->index_ = p + Get<uint64_t>(p + 24);
  shard->tokens_ = reinterpret_cast<const uint16_t*>(p + Get<uint64_t>(p + 32));
  shard->images_ = p + Get<uint64_t>(p + 40);
  size_t need = Get<uint64_t>(p + 40) + size_t(shard->num_examples_) *
                                            shard->image_size_ *
                                            shard->image_size_ * 3;
  if (need > size) {
    *error = path + ": truncated shard";
    return nullptr;
  }
  return shard;
}

Shard::~Shard() {
  if (map_) ::munmap(map_, map_size_);
}

const uint16_t* Shard::tokens(int64_t i) const {
  return tokens_ + Get<uint64_t>(index_ + i * kIndexEntry);
}
int Shard::length(int64_t i) const {
  return Get<uint32_t>(index_ + i * kIndexEntry + 8);
}
int Shard::answer_start(int64_t i) const {
  return Get<uint32_t>(index_ + i * kIndexEntry + 12);
}
const uint8_t* Shard::image(int64_t i) const {
  return images_ + size_t(i) * image_size_ * image_size_ * 3;
}

void Dataset::Add(std::unique_ptr<Shard> shard) {
  starts_.push_back(total_);
  total_ += shard->size();
  shards_.push_back(std::move(shard));
}

const Shard& Dataset::Locate(int64_t i, int64_t* local) const {
  size_t k =
      std::upper_bound(starts_.begin(), starts_.end(), i) - starts_.begin() - 1;
  *local = i - starts_[k];
  return *shards_[k];
}

bool EnsureShard(const std::vector<std::string>& files,
                 const VisionColumns& columns, const ModelPreset& preset,
                 const CacheOptions& options, std::string* shard_path,
                 std::string* error) {
  uint64_t h = 0xcbf29ce484222325ull;
  int params[] = {int(kFormat), preset.image_size, preset.image_tokens(),
                  preset.max_seq_len};
  h = Fnv1a(params, sizeof(params), h);
  // Named columns change what is read (the defaults hash as before).
  for (const std::string* c :
       {&columns.image, &columns.question, &columns.answer, &columns.system,
        &columns.system_prompt})
    if (!c->empty()) {
      h = Fnv1a(c->data(), c->size(), h);
      h = Fnv1a("\0", 1, h);
    }
  for (const std::string& f : files) {
    std::string content;
    if (!ReadFile(f, &content)) {
      *error = f + ": cannot read dataset file";
      return false;
    }
    h = Fnv1a(content.data(), content.size(), h);
    // Relative image paths resolve against the file's directory.
    std::string dir = fs::absolute(f).parent_path().string();
    h = Fnv1a(dir.data(), dir.size(), h);
  }
  char name[32];
  snprintf(name, sizeof(name), "%016llx", (unsigned long long)h);
  *shard_path =
      (fs::path(options.cache_dir) / "shards" / name / "shard.bin").string();
  if (fs::exists(*shard_path)) return true;
  if (!options.builder)
    return WaitForFile(*shard_path, options.wait_timeout_s, error);
  return BuildShard(files, columns, preset, *shard_path, error);
}

bool ResolveDatasetFiles(const DatasetSpec& spec, const CacheOptions& options,
                         std::vector<std::string>* files, std::string* error) {
  if (spec.name != "synthetic_shapes") {
    *files = spec.files;
    return true;
  }
  std::string path = (fs::path(options.cache_dir) / "synthetic" /
                      (spec.split + "-seed" + std::to_string(spec.seed) + "-n" +
                       std::to_string(spec.num_samples) + ".jsonl"))
                         .string();
  files->assign(1, path);
  if (fs::exists(path)) return true;
  if (!options.builder) return WaitForFile(path, options.wait_timeout_s, error);
  return WriteSyntheticJsonl(path, spec.split, spec.seed, spec.num_samples,
                             error);
}

bool LoadDataset(const std::vector<DatasetSpec>& specs,
                 const ModelPreset& preset, const CacheOptions& options,
                 Dataset* out, std::string* error) {
  for (const DatasetSpec& spec : specs) {
    std::vector<std::string> files;
    std::string shard_path;
    if (!ResolveDatasetFiles(spec, options, &files, error) ||
        !EnsureShard(files, ColumnsOf(spec), preset, options, &shard_path,
                     error))
      return false;
    auto shard = Shard::Open(shard_path, error);
    if (!shard) return false;
    out->Add(std::move(shard));
  }
  return true;
}

}  // namespace dcvlr::trainer
