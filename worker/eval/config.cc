// Config parsing; see config.h.
#include "worker/eval/config.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace dcvlr::eval {
namespace {

namespace fs = std::filesystem;

std::string Resolve(const std::string& path, const std::string& base_dir) {
  if (path.empty() || fs::path(path).is_absolute() || base_dir.empty())
    return path;
  return (fs::path(base_dir) / path).lexically_normal().string();
}

// Integers may be given as numbers or numeric strings ("32").
bool GetInt(const nlohmann::json& v, const std::string& key, int64_t min,
            int64_t* out, std::string* error) {
  int64_t x = 0;
  if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    char* end = nullptr;
    x = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0') {
      *error = key + ": expected an integer, got " + v.dump();
      return false;
    }
  } else {
    *error = key + ": expected an integer, got " + v.dump();
    return false;
  }
  if (x < min) {
    *error = key + ": must be at least " + std::to_string(min) + ", got " +
             std::to_string(x);
    return false;
  }
  *out = x;
  return true;
}

bool GetString(const nlohmann::json& v, const std::string& key,
               std::string* out, std::string* error) {
  if (!v.is_string()) {
    *error = key + ": expected a string, got " + v.dump();
    return false;
  }
  *out = v.get<std::string>();
  return true;
}

bool ParsePrompt(const std::string& value, const std::string& key,
                 const std::string& benchmark, PromptStyle* out,
                 std::string* error) {
  if (value == "vlmevalkit") {
    *out = PromptStyle::kVlmEvalKit;
  } else if (value == "inline") {
    *out = PromptStyle::kInline;
  } else if (value == "auto") {
    // The trainer's own synthetic benchmark is asked in the format its rows
    // are trained on; every other benchmark in VLMEvalKit's.
    *out = benchmark == "synthetic_shapes" ? PromptStyle::kInline
                                           : PromptStyle::kVlmEvalKit;
  } else {
    *error =
        key + ": expected auto, vlmevalkit or inline, got \"" + value + "\"";
    return false;
  }
  return true;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ||
          c == '.'))
      return false;
  return true;
}

}  // namespace

bool ParseEvalConfig(const nlohmann::json& j, const std::string& base_dir,
                     EvalConfig* out, std::string* error,
                     std::vector<std::string>* warnings) {
  *out = EvalConfig();
  if (!j.is_object()) {
    *error = "expected a JSON object at the top level";
    return false;
  }
  std::string default_prompt = "auto";
  for (const auto& [key, v] : j.items()) {
    int64_t n = 0;
    if (key == "model") {
      if (!v.is_object() || !v.contains("checkpoint")) {
        *error = "model: expected {\"checkpoint\": DIR}";
        return false;
      }
      for (const auto& [mk, mv] : v.items()) {
        if (mk == "checkpoint") {
          if (!GetString(mv, "model.checkpoint", &out->checkpoint, error))
            return false;
        } else if (mk == "from_job") {
          // Which train job the checkpoint came from; for people.
        } else {
          warnings->push_back("model." + mk +
                              ": unknown key (the model comes from the "
                              "checkpoint), ignored");
        }
      }
    } else if (key == "benchmarks") {
      if (!v.is_array()) {
        *error = "benchmarks: expected a list, got " + v.dump();
        return false;
      }
    } else if (key == "output_dir") {
      if (!GetString(v, key, &out->output_dir, error)) return false;
    } else if (key == "batch_size") {
      if (!GetInt(v, key, 1, &n, error)) return false;
      out->batch_size = int(n);
    } else if (key == "max_new_tokens") {
      if (!GetInt(v, key, 1, &n, error)) return false;
      out->max_new_tokens = int(n);
    } else if (key == "seed") {
      if (!GetInt(v, key, INT64_MIN, &out->seed, error)) return false;
    } else if (key == "num_threads") {
      if (!GetInt(v, key, 0, &n, error)) return false;
      out->num_threads = int(n);
    } else if (key == "max_samples") {
      if (!GetInt(v, key, 0, &out->max_samples, error)) return false;
    } else if (key == "dtype") {
      if (!GetString(v, key, &out->dtype, error)) return false;
      if (out->dtype != "auto" && out->dtype != "fp32" &&
          out->dtype != "bf16") {
        *error =
            "dtype: expected auto, fp32 or bf16, got \"" + out->dtype + "\"";
        return false;
      }
    } else if (key == "prompt") {
      if (!GetString(v, key, &default_prompt, error)) return false;
      PromptStyle unused;
      if (!ParsePrompt(default_prompt, key, "", &unused, error)) return false;
    } else {
      warnings->push_back(key + ": unknown key, ignored");
    }
  }
  if (out->checkpoint.empty()) {
    *error = "model.checkpoint: required";
    return false;
  }
  out->checkpoint = Resolve(out->checkpoint, base_dir);
  if (!j.contains("benchmarks") || j["benchmarks"].empty()) {
    *error = "benchmarks: required, a non-empty list";
    return false;
  }
  std::set<std::string> names;
  const auto& list = j["benchmarks"];
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = "benchmarks[" + std::to_string(i) + "]";
    const auto& b = list[i];
    if (!b.is_object()) {
      *error =
          at + ": expected {\"name\": ..., \"path\": ...}, got " + b.dump();
      return false;
    }
    BenchmarkSpec spec;
    std::string prompt = default_prompt;
    for (const auto& [bk, bv] : b.items()) {
      if (bk == "name") {
        if (!GetString(bv, at + ".name", &spec.name, error)) return false;
      } else if (bk == "path") {
        if (!GetString(bv, at + ".path", &spec.path, error)) return false;
      } else if (bk == "prompt") {
        if (!GetString(bv, at + ".prompt", &prompt, error)) return false;
      } else if (bk == "synthetic") {
        if (!bv.is_object()) {
          *error = at +
                   ".synthetic: expected {\"split\", \"num_samples\", "
                   "\"seed\"}, got " +
                   bv.dump();
          return false;
        }
        spec.synthetic = true;
        for (const auto& [sk, sv] : bv.items()) {
          const std::string skey = at + ".synthetic." + sk;
          if (sk == "split") {
            if (!GetString(sv, skey, &spec.source.split, error)) return false;
            if (spec.source.split != "train" && spec.source.split != "test") {
              *error = skey + ": expected train or test, got \"" +
                       spec.source.split + "\"";
              return false;
            }
          } else if (sk == "num_samples") {
            if (!GetInt(sv, skey, 1, &spec.source.num_samples, error))
              return false;
          } else if (sk == "seed") {
            if (!GetInt(sv, skey, 0, &spec.source.seed, error)) return false;
          } else {
            warnings->push_back(skey + ": unknown key, ignored");
          }
        }
      } else {
        warnings->push_back(at + "." + bk + ": unknown key, ignored");
      }
    }
    if (!ValidName(spec.name)) {
      *error = at + ".name: required, letters, digits and _ . - only, got \"" +
               spec.name + "\"";
      return false;
    }
    if (!names.insert(spec.name).second) {
      *error = at + ".name: \"" + spec.name + "\" is used twice";
      return false;
    }
    if (spec.synthetic && !spec.path.empty()) {
      *error = at + ": give either path or synthetic, not both";
      return false;
    }
    if (!spec.synthetic && spec.path.empty()) {
      *error = at + ".path: required (or synthetic: {...})";
      return false;
    }
    if (!spec.synthetic) spec.path = Resolve(spec.path, base_dir);
    if (!ParsePrompt(prompt, at + ".prompt", spec.name, &spec.prompt, error))
      return false;
    // Generated rows are asked the way the trainer trained on them.
    if (spec.synthetic && prompt == "auto") spec.prompt = PromptStyle::kInline;
    out->benchmarks.push_back(spec);
  }
  return true;
}

bool LoadEvalConfigFile(const std::string& path, EvalConfig* out,
                        std::string* error,
                        std::vector<std::string>* warnings) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open";
    return false;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is 1-based; turn it into a line and column.
    size_t byte = e.byte > 0 ? e.byte - 1 : 0;
    int line = 1, col = 1;
    for (size_t i = 0; i < byte && i < text.size(); ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    std::string what = e.what();
    size_t colon = what.rfind(": ");
    *error = path + ":" + std::to_string(line) + ":" + std::to_string(col) +
             ": invalid JSON" +
             (colon != std::string::npos ? what.substr(colon) : "");
    return false;
  }
  std::string base = fs::path(path).parent_path().string();
  if (!ParseEvalConfig(j, base, out, error, warnings)) {
    *error = path + ": " + *error;
    return false;
  }
  return true;
}

}  // namespace dcvlr::eval
