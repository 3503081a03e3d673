// config.json for Qwen2-VL and Qwen2.5-VL; see qwen_vl_config.h.
#include "worker/trainer/qwen_vl_config.h"

#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "worker/trainer/hf_checkpoint.h"

namespace dcvlr::trainer {
namespace {

using nlohmann::json;

// Where a value was found, for errors: the JSON object and its key path.
struct Scope {
  const json* object = nullptr;
  std::string path;  // "" at the top, "text_config." below it
};

class Reader {
 public:
  Reader(const json& root, std::string source)
      : root_(root), source_(std::move(source)) {}

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

  // The first of `scopes` that has `key`, or null.
  const json* Find(const std::vector<Scope>& scopes, const std::string& key,
                   std::string* where) const {
    for (const Scope& s : scopes) {
      if (s.object && s.object->is_object() && s.object->contains(key) &&
          !(*s.object)[key].is_null()) {
        *where = s.path + key;
        return &(*s.object)[key];
      }
    }
    *where = (scopes.empty() ? "" : scopes.front().path) + key;
    return nullptr;
  }

  int64_t Int(const std::vector<Scope>& scopes, const std::string& key,
              int64_t fallback, bool required, int64_t min = 1) {
    std::string where;
    const json* v = Find(scopes, key, &where);
    if (!v) {
      if (required) Fail(where, "missing");
      return fallback;
    }
    if (!v->is_number_integer() || v->get<int64_t>() < min) {
      Fail(where, "must be an integer >= " + std::to_string(min) + ", not " +
                      v->dump());
      return fallback;
    }
    return v->get<int64_t>();
  }

  double Float(const std::vector<Scope>& scopes, const std::string& key,
               double fallback) {
    std::string where;
    const json* v = Find(scopes, key, &where);
    if (!v) return fallback;
    if (!v->is_number() || v->get<double>() <= 0) {
      Fail(where, "must be a positive number, not " + v->dump());
      return fallback;
    }
    return v->get<double>();
  }

  std::string String(const std::vector<Scope>& scopes, const std::string& key,
                     const std::string& fallback) {
    std::string where;
    const json* v = Find(scopes, key, &where);
    if (!v) return fallback;
    if (!v->is_string()) {
      Fail(where, "must be a string, not " + v->dump());
      return fallback;
    }
    return v->get<std::string>();
  }

  bool Bool(const std::vector<Scope>& scopes, const std::string& key,
            bool fallback) {
    std::string where;
    const json* v = Find(scopes, key, &where);
    if (!v) return fallback;
    if (!v->is_boolean()) {
      Fail(where, "must be true or false, not " + v->dump());
      return fallback;
    }
    return v->get<bool>();
  }

  std::vector<int64_t> IntList(const std::vector<Scope>& scopes,
                               const std::string& key, bool required) {
    std::string where;
    const json* v = Find(scopes, key, &where);
    std::vector<int64_t> out;
    if (!v) {
      if (required) Fail(where, "missing");
      return out;
    }
    if (!v->is_array()) {
      Fail(where, "must be a list of integers, not " + v->dump());
      return out;
    }
    for (const json& e : *v) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0) {
        Fail(where, "must be a list of integers >= 0, not " + v->dump());
        return {};
      }
      out.push_back(e.get<int64_t>());
    }
    return out;
  }

  void Fail(const std::string& key, const std::string& what) {
    if (error_.empty()) error_ = source_ + ": key '" + key + "': " + what;
  }

 private:
  const json& root_;
  std::string source_;
  std::string error_;
};

// "LINE:COL" of byte offset `byte` (1-based, as nlohmann reports) in `text`.
std::string LineColumn(const std::string& text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i + 1 < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return std::to_string(line) + ":" + std::to_string(col);
}

const json* Child(const json& parent, const char* key) {
  if (!parent.is_object() || !parent.contains(key)) return nullptr;
  const json& v = parent[key];
  return v.is_object() ? &v : nullptr;
}

}  // namespace

bool ParseQwenVlConfig(const std::string& text, const std::string& source,
                       QwenVlConfig* out, std::string* error) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    *error = source + ":" + LineColumn(text, e.byte) + ": not valid JSON (" +
             e.what() + ")";
    return false;
  }
  if (!root.is_object()) {
    *error = source + ": not a JSON object";
    return false;
  }
  Reader r(root, source);
  QwenVlConfig c;
  const std::vector<Scope> top = {{&root, ""}};
  std::vector<std::string> archs;
  if (root.contains("architectures") && root["architectures"].is_array())
    for (const json& a : root["architectures"])
      if (a.is_string()) archs.push_back(a.get<std::string>());
  c.model_type = r.String(top, "model_type", "");
  for (const std::string& a : archs) {
    if (a == "Qwen2VLForConditionalGeneration") {
      c.kind = QwenVlKind::kQwen2Vl;
      c.architecture = a;
    } else if (a == "Qwen2_5_VLForConditionalGeneration") {
      c.kind = QwenVlKind::kQwen2_5Vl;
      c.architecture = a;
    }
  }
  if (c.architecture.empty()) {
    if (c.model_type == "qwen2_vl") {
      c.kind = QwenVlKind::kQwen2Vl;
      c.architecture = "Qwen2VLForConditionalGeneration";
    } else if (c.model_type == "qwen2_5_vl") {
      c.kind = QwenVlKind::kQwen2_5Vl;
      c.architecture = "Qwen2_5_VLForConditionalGeneration";
    } else {
      *error = source +
               ": key 'architectures': not a Qwen2-VL or Qwen2.5-VL model "
               "(want Qwen2VLForConditionalGeneration or "
               "Qwen2_5_VLForConditionalGeneration, or model_type qwen2_vl / "
               "qwen2_5_vl)";
      return false;
    }
  }
  if (c.model_type.empty())
    c.model_type = c.kind == QwenVlKind::kQwen2Vl ? "qwen2_vl" : "qwen2_5_vl";

  // Text keys: transformers 5 nests them under text_config; the Hub's files
  // keep them at the top. Rotary settings: rope_parameters (5) or
  // rope_scaling + rope_theta (4 and the Hub).
  const json* text_config = Child(root, "text_config");
  std::vector<Scope> tx;
  if (text_config) tx.push_back({text_config, "text_config."});
  tx.push_back({&root, ""});
  std::vector<Scope> rope;
  for (const Scope& s : tx) {
    for (const char* k : {"rope_parameters", "rope_scaling"})
      if (const json* o = Child(*s.object, k))
        rope.push_back({o, s.path + k + "."});
  }
  std::vector<Scope> rope_then_text = rope;
  rope_then_text.insert(rope_then_text.end(), tx.begin(), tx.end());

  QwenTextConfig& t = c.text;
  t.vocab_size = r.Int(tx, "vocab_size", 0, true);
  t.hidden = r.Int(tx, "hidden_size", 0, true);
  t.intermediate = r.Int(tx, "intermediate_size", 0, true);
  t.layers = r.Int(tx, "num_hidden_layers", 0, true);
  t.heads = r.Int(tx, "num_attention_heads", 0, true);
  t.kv_heads = r.Int(tx, "num_key_value_heads", t.heads, false);
  t.rms_eps = r.Float(tx, "rms_norm_eps", 1e-6);
  t.rope_theta = r.Float(rope_then_text, "rope_theta", 1000000.0);
  t.act = r.String(tx, "hidden_act", "silu");
  t.max_positions = r.Int(tx, "max_position_embeddings", 32768, false);
  // tie_word_embeddings is a top-level key in every layout; some files
  // also repeat it in text_config.
  std::vector<Scope> tie = {{&root, ""}};
  if (text_config) tie.push_back({text_config, "text_config."});
  t.tie_embeddings = r.Bool(tie, "tie_word_embeddings", false);
  std::vector<int64_t> section = r.IntList(rope, "mrope_section", false);
  if (r.ok() && t.heads > 0) {
    if (t.hidden % t.heads != 0)
      r.Fail(tx.front().path + "hidden_size", std::to_string(t.hidden) +
                                                  " is not a multiple of "
                                                  "num_attention_heads " +
                                                  std::to_string(t.heads));
    t.head_dim = t.hidden / t.heads;
    if (t.kv_heads > 0 && t.heads % t.kv_heads != 0)
      r.Fail(tx.front().path + "num_key_value_heads",
             std::to_string(t.kv_heads) +
                 " does not divide "
                 "num_attention_heads " +
                 std::to_string(t.heads));
    if (section.empty()) {
      // transformers' default for M-RoPE.
      section = {16, 24, 24};
    }
    int64_t sum = 0;
    for (int64_t s : section) sum += s;
    if (section.size() != 3 || sum * 2 != t.head_dim)
      r.Fail(rope.empty() ? "rope_scaling.mrope_section"
                          : rope.front().path + "mrope_section",
             "want 3 sections adding up to head_dim / 2 = " +
                 std::to_string(t.head_dim / 2));
    else
      t.mrope_section = {section[0], section[1], section[2]};
  }
  if (r.ok() && t.act != "silu")
    r.Fail(tx.front().path + "hidden_act",
           "only silu is supported, not " + t.act);

  const json* vision_json = Child(root, "vision_config");
  if (!vision_json) {
    *error = source + ": key 'vision_config': missing";
    return false;
  }
  const std::vector<Scope> vs = {{vision_json, "vision_config."}};
  QwenVisionConfig& v = c.vision;
  v.depth = r.Int(vs, "depth", 0, true);
  v.heads = r.Int(vs, "num_heads", 0, true);
  v.in_channels = r.Int(vs, "in_channels", 0, false);
  if (v.in_channels == 0) v.in_channels = r.Int(vs, "in_chans", 3, false);
  v.patch_size = r.Int(vs, "patch_size", 14, false);
  v.temporal_patch_size = r.Int(vs, "temporal_patch_size", 2, false);
  v.spatial_merge_size = r.Int(vs, "spatial_merge_size", 2, false);
  std::vector<Scope> vrope;
  if (const json* o = Child(*vision_json, "rope_parameters"))
    vrope.push_back({o, "vision_config.rope_parameters."});
  vrope.insert(vrope.end(), vs.begin(), vs.end());
  v.rope_theta = r.Float(vrope, "rope_theta", 10000.0);
  if (c.kind == QwenVlKind::kQwen2Vl) {
    v.width = r.Int(vs, "embed_dim", 0, true);
    v.out_width = r.Int(vs, "hidden_size", t.hidden, false);
    v.mlp_hidden =
        static_cast<int64_t>(v.width * r.Float(vs, "mlp_ratio", 4.0));
    v.act = r.String(vs, "hidden_act", "quick_gelu");
  } else {
    v.width = r.Int(vs, "hidden_size", 0, true);
    v.out_width = r.Int(vs, "out_hidden_size", t.hidden, false);
    v.mlp_hidden = r.Int(vs, "intermediate_size", 0, true);
    v.act = r.String(vs, "hidden_act", "silu");
    v.window_size = r.Int(vs, "window_size", 112, false);
    v.fullatt_blocks = r.IntList(vs, "fullatt_block_indexes", false);
    v.tokens_per_second = r.Int(vs, "tokens_per_second", 2, false, 0);
  }
  if (r.ok()) {
    if (v.width % v.heads != 0 || v.head_dim() % 4 != 0)
      r.Fail("vision_config.num_heads",
             "the vision width " + std::to_string(v.width) + " / " +
                 std::to_string(v.heads) +
                 " heads must be a whole multiple of 4 (2D rotary)");
    else if (v.out_width != t.hidden)
      r.Fail(c.kind == QwenVlKind::kQwen2Vl ? "vision_config.hidden_size"
                                            : "vision_config.out_hidden_size",
             std::to_string(v.out_width) +
                 " is not the decoder's hidden_size " +
                 std::to_string(t.hidden));
    else if (v.act != "quick_gelu" && v.act != "silu" && v.act != "gelu")
      r.Fail("vision_config.hidden_act",
             "want quick_gelu, silu or gelu, not " + v.act);
    else if (c.kind == QwenVlKind::kQwen2_5Vl &&
             v.window_size % (v.patch_size * v.spatial_merge_size) != 0)
      r.Fail("vision_config.window_size",
             "must be a multiple of patch_size * spatial_merge_size = " +
                 std::to_string(v.patch_size * v.spatial_merge_size));
    for (int64_t b : v.fullatt_blocks)
      if (b >= v.depth)
        r.Fail("vision_config.fullatt_block_indexes",
               "block " + std::to_string(b) + " is past depth " +
                   std::to_string(v.depth));
  }

  // Special tokens sit at the top (both layouts); bos/eos may also be in
  // text_config.
  std::vector<Scope> tokens = {{&root, ""}};
  if (text_config) tokens.push_back({text_config, "text_config."});
  c.image_token_id = r.Int(tokens, "image_token_id", 151655, false, 0);
  c.video_token_id = r.Int(tokens, "video_token_id", 151656, false, 0);
  c.vision_start_token_id =
      r.Int(tokens, "vision_start_token_id", 151652, false, 0);
  c.vision_end_token_id =
      r.Int(tokens, "vision_end_token_id", 151653, false, 0);
  c.bos_token_id = r.Int(tokens, "bos_token_id", 151643, false, 0);
  c.eos_token_id = r.Int(tokens, "eos_token_id", 151645, false, 0);
  for (auto [key, id] : {std::pair{"image_token_id", c.image_token_id},
                         {"vision_start_token_id", c.vision_start_token_id},
                         {"vision_end_token_id", c.vision_end_token_id}})
    if (r.ok() && id >= t.vocab_size)
      r.Fail(key, std::to_string(id) + " is past vocab_size " +
                      std::to_string(t.vocab_size));
  std::vector<Scope> dtype_scopes = {{&root, ""}};
  c.dtype = r.String(dtype_scopes, "torch_dtype", "");
  if (c.dtype.empty()) c.dtype = r.String(dtype_scopes, "dtype", "float32");

  if (!r.ok()) {
    *error = r.error();
    return false;
  }
  *out = std::move(c);
  return true;
}

bool LoadQwenVlConfig(const std::string& path, QwenVlConfig* out,
                      std::string* error) {
  // A config.json is a few KB; refuse anything that is clearly not one.
  std::string file, text;
  if (!ReadCheckpointFile(path, "config.json", 4 << 20, &file, &text, error))
    return false;
  return ParseQwenVlConfig(text, file, out, error);
}

std::string QwenVlConfigJson(const QwenVlConfig& c) {
  const QwenTextConfig& t = c.text;
  const QwenVisionConfig& v = c.vision;
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = c.model_type;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["vision_start_token_id"] = c.vision_start_token_id;
  j["vision_end_token_id"] = c.vision_end_token_id;
  j["image_token_id"] = c.image_token_id;
  j["video_token_id"] = c.video_token_id;
  j["hidden_act"] = t.act;
  j["hidden_size"] = t.hidden;
  j["intermediate_size"] = t.intermediate;
  j["max_position_embeddings"] = t.max_positions;
  j["num_attention_heads"] = t.heads;
  j["num_hidden_layers"] = t.layers;
  j["num_key_value_heads"] = t.kv_heads;
  j["rms_norm_eps"] = t.rms_eps;
  j["rope_theta"] = t.rope_theta;
  j["rope_scaling"] = {
      {"type", "mrope"},
      {"mrope_section",
       {t.mrope_section[0], t.mrope_section[1], t.mrope_section[2]}}};
  j["tie_word_embeddings"] = t.tie_embeddings;
  j["torch_dtype"] = c.dtype;
  j["use_cache"] = true;
  j["vocab_size"] = t.vocab_size;
  nlohmann::ordered_json vj;
  vj["depth"] = v.depth;
  vj["num_heads"] = v.heads;
  vj["in_chans"] = v.in_channels;
  vj["patch_size"] = v.patch_size;
  vj["spatial_merge_size"] = v.spatial_merge_size;
  vj["spatial_patch_size"] = v.patch_size;
  vj["temporal_patch_size"] = v.temporal_patch_size;
  vj["hidden_act"] = v.act;
  if (c.kind == QwenVlKind::kQwen2Vl) {
    vj["embed_dim"] = v.width;
    vj["hidden_size"] = v.out_width;
    vj["mlp_ratio"] = v.mlp_hidden / v.width;
  } else {
    vj["hidden_size"] = v.width;
    vj["out_hidden_size"] = v.out_width;
    vj["intermediate_size"] = v.mlp_hidden;
    vj["window_size"] = v.window_size;
    vj["fullatt_block_indexes"] = v.fullatt_blocks;
    vj["tokens_per_second"] = v.tokens_per_second;
  }
  j["vision_config"] = vj;
  return j.dump(2) + "\n";
}

}  // namespace dcvlr::trainer
