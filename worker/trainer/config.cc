// Config parsing; see config.h.
#include "worker/trainer/config.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace dcvlr::trainer {
namespace {

using nlohmann::json;

// Reads typed values out of one JSON object, remembering which keys it used
// so the rest can be reported as unknown.
class Section {
 public:
  Section(const json& obj, std::string path, std::string* error)
      : obj_(obj), path_(std::move(path)), error_(error) {}

  bool ok() const { return error_->empty(); }

  template <typename T>
  void Int(const char* key, T* out) {
    const json* v = Find(key);
    if (!v) return;
    if (v->is_number_integer()) {
      *out = v->get<T>();
      return;
    }
    if (v->is_number_float() &&
        std::floor(v->get<double>()) == v->get<double>()) {
      *out = static_cast<T>(v->get<double>());
      return;
    }
    if (v->is_string()) {
      const std::string& s = v->get_ref<const std::string&>();
      char* end = nullptr;
      errno = 0;
      long long n = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && *end == '\0' && errno == 0) {
        *out = static_cast<T>(n);
        return;
      }
    }
    Fail(key, "an integer", *v);
  }

  void Double(const char* key, double* out) {
    const json* v = Find(key);
    if (!v) return;
    if (v->is_number()) {
      *out = v->get<double>();
      return;
    }
    if (v->is_string()) {
      const std::string& s = v->get_ref<const std::string&>();
      char* end = nullptr;
      double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && *end == '\0' && std::isfinite(d)) {
        *out = d;
        return;
      }
    }
    Fail(key, "a number", *v);
  }

  void Bool(const char* key, bool* out) {
    const json* v = Find(key);
    if (!v) return;
    if (v->is_boolean()) {
      *out = v->get<bool>();
      return;
    }
    if (v->is_string()) {
      const std::string& s = v->get_ref<const std::string&>();
      if (s == "true" || s == "True") {
        *out = true;
        return;
      }
      if (s == "false" || s == "False") {
        *out = false;
        return;
      }
    }
    Fail(key, "a boolean", *v);
  }

  void String(const char* key, std::string* out) {
    const json* v = Find(key);
    if (!v) return;
    if (v->is_string())
      *out = v->get<std::string>();
    else if (v->is_number())
      *out = v->dump();
    else
      Fail(key, "a string", *v);
  }

  // Marks a key as known without reading it (the caller handles it).
  const json* Raw(const char* key) { return Find(key); }

  // Keys known to Oumi that this trainer accepts silently but does not use.
  void Ignore(std::initializer_list<const char*> keys) {
    for (const char* k : keys) used_.insert(k);
  }

  void WarnUnknown(std::vector<std::string>* warnings) const {
    for (const auto& [key, value] : obj_.items())
      if (!used_.count(key))
        warnings->push_back(path_ + "." + key + ": unknown key, ignored");
  }

  void Fail(const std::string& key, const std::string& expected,
            const json& got) {
    if (error_->empty())
      *error_ =
          path_ + "." + key + ": expected " + expected + ", got " + got.dump();
  }

 private:
  const json* Find(const char* key) {
    used_.insert(key);
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  const json& obj_;
  std::string path_;
  std::string* error_;
  std::set<std::string> used_;
};

bool RequireObject(const json& v, const std::string& path, std::string* error) {
  if (v.is_object()) return true;
  *error = path + ": expected a mapping, got " + v.dump();
  return false;
}

std::string Resolve(const std::string& path, const std::string& base) {
  if (path.empty() || path[0] == '/' || base.empty()) return path;
  return (std::filesystem::path(base) / path).lexically_normal().string();
}

bool ParseDatasets(const json& split, const std::string& path,
                   const std::string& base, std::vector<DatasetSpec>* out,
                   std::string* error, std::vector<std::string>* warnings) {
  if (!RequireObject(split, path, error)) return false;
  Section s(split, path, error);
  const json* list = s.Raw("datasets");
  s.Ignore({"collation_fn", "pack", "stream", "target_col", "mixture_strategy",
            "seed", "use_async_dataset", "use_torchdata", "collator_name",
            "collator_kwargs"});
  s.WarnUnknown(warnings);
  if (!list) return true;
  if (!list->is_array()) {
    *error = path + ".datasets: expected a list, got " + list->dump();
    return false;
  }
  for (size_t i = 0; i < list->size(); ++i) {
    std::string dpath = path + ".datasets[" + std::to_string(i) + "]";
    const json& d = (*list)[i];
    if (!RequireObject(d, dpath, error)) return false;
    DatasetSpec spec;
    Section ds(d, dpath, error);
    ds.String("dataset_name", &spec.name);
    const json* kwargs = ds.Raw("dataset_kwargs");
    ds.Ignore({"split", "subset", "sample_count", "mixture_proportion",
               "shuffle", "seed", "shuffle_buffer_size", "trust_remote_code",
               "transform_num_workers", "dataset_path"});
    ds.WarnUnknown(warnings);
    if (!ds.ok()) return false;
    if (spec.name != "hf_vision" && spec.name != "synthetic_shapes") {
      *error = dpath +
               ".dataset_name: expected hf_vision or synthetic_shapes, got \"" +
               spec.name + "\"";
      return false;
    }
    if (kwargs) {
      std::string kpath = dpath + ".dataset_kwargs";
      if (!RequireObject(*kwargs, kpath, error)) return false;
      Section k(*kwargs, kpath, error);
      std::string file;
      k.String("hf_dataset_path", &file);
      if (!file.empty()) spec.files.push_back(Resolve(file, base));
      if (const json* files = k.Raw("data_files")) {
        if (files->is_string()) {
          spec.files.push_back(Resolve(files->get<std::string>(), base));
        } else if (files->is_array()) {
          for (const json& f : *files) {
            if (!f.is_string()) {
              k.Fail("data_files", "a list of paths", *files);
              break;
            }
            spec.files.push_back(Resolve(f.get<std::string>(), base));
          }
        } else {
          k.Fail("data_files", "a path or a list of paths", *files);
        }
      }
      k.String("image_column", &spec.image_column);
      k.String("question_column", &spec.question_column);
      k.String("answer_column", &spec.answer_column);
      k.String("system_prompt", &spec.system_prompt);
      k.String("system_prompt_column", &spec.system_prompt_column);
      if (!spec.system_prompt.empty() && !spec.system_prompt_column.empty())
        k.Fail("system_prompt_column",
               "only one of system_prompt and system_prompt_column",
               (*kwargs)["system_prompt_column"]);
      k.String("split", &spec.split);
      k.Int("num_samples", &spec.num_samples);
      k.Int("seed", &spec.seed);
      k.Ignore({"processor_name", "return_tensors", "limit",
                "return_conversations"});
      k.WarnUnknown(warnings);
      if (!k.ok()) return false;
    }
    if (spec.name == "hf_vision" && spec.files.empty()) {
      *error = dpath +
               ".dataset_kwargs: hf_vision needs hf_dataset_path or data_files";
      return false;
    }
    if (spec.name == "synthetic_shapes") {
      if (spec.split != "train" && spec.split != "test") {
        *error = dpath +
                 ".dataset_kwargs.split: expected train or test, got \"" +
                 spec.split + "\"";
        return false;
      }
      if (spec.num_samples <= 0) {
        *error =
            dpath + ".dataset_kwargs.num_samples: expected a positive integer";
        return false;
      }
    }
    out->push_back(std::move(spec));
  }
  return true;
}

}  // namespace

bool ParseConfig(const json& doc, const std::string& config_dir,
                 TrainerConfig* out, std::string* error,
                 std::vector<std::string>* warnings) {
  error->clear();
  *out = TrainerConfig{};
  out->config_dir = config_dir;
  if (!RequireObject(doc, "config", error)) return false;
  for (const auto& [key, value] : doc.items())
    if (key != "model" && key != "data" && key != "training")
      warnings->push_back(key + ": unknown top-level key, ignored");

  // model
  std::string model_name = "tiny-vlm";
  if (auto it = doc.find("model"); it != doc.end()) {
    if (!RequireObject(*it, "model", error)) return false;
    Section m(*it, "model", error);
    m.String("model_name", &model_name);
    const json* overrides = m.Raw("model_config");
    int max_len = 0;
    m.Int("model_max_length", &max_len);
    m.Ignore({"torch_dtype_str", "trust_remote_code", "attn_implementation",
              "tokenizer_name", "chat_template", "freeze_layers",
              "load_pretrained_weights", "tokenizer_pad_token", "model_kwargs",
              "adapter_model", "device_map", "shard_for_eval",
              "enable_liger_kernel", "processor_kwargs"});
    m.WarnUnknown(warnings);
    if (!m.ok()) return false;
    // A directory with a Hugging Face config.json (a Qwen2-VL or Qwen2.5-VL
    // checkpoint, or just its config for training from scratch) instead of
    // a preset name; relative to the config file.
    std::filesystem::path dir(model_name);
    if (dir.is_relative() && !config_dir.empty()) dir = config_dir / dir;
    std::error_code ec;
    if (std::filesystem::exists(dir / "config.json", ec)) {
      if (overrides) {
        *error =
            "model.model_config: applies to presets; a checkpoint's "
            "architecture comes from its config.json";
        return false;
      }
      out->hf_model_dir = std::filesystem::absolute(dir).lexically_normal();
      FindPreset("tiny-vlm", &out->model);  // unused beyond max_seq_len
      out->model.max_seq_len = max_len > 0 ? max_len : 2048;
    } else if (!FindPreset(model_name, &out->model)) {
      std::string names;
      for (const auto& n : PresetNames())
        names += (names.empty() ? "" : ", ") + n;
      *error = "model.model_name: unknown model \"" + model_name +
               "\" (presets: " + names + ")";
      return false;
    }
    if (out->hf_model_dir.empty()) {
      if (overrides && !ApplyPresetOverrides(*overrides, &out->model, error))
        return false;
      if (max_len > 0) out->model.max_seq_len = max_len;
    }
  } else {
    FindPreset(model_name, &out->model);
  }
  if (!ValidatePreset(out->model, error)) return false;

  // data
  if (auto it = doc.find("data"); it != doc.end()) {
    if (!RequireObject(*it, "data", error)) return false;
    for (const auto& [key, value] : it->items()) {
      if (key == "train") {
        if (!ParseDatasets(value, "data.train", config_dir, &out->train, error,
                           warnings))
          return false;
      } else if (key == "validation" || key == "test") {
        if (!ParseDatasets(value, "data." + key, config_dir, &out->validation,
                           error, warnings))
          return false;
      } else {
        warnings->push_back("data." + key + ": unknown key, ignored");
      }
    }
  }
  if (out->train.empty()) {
    *error = "data.train.datasets: at least one training dataset is required";
    return false;
  }

  // training
  TrainingConfig& t = out->training;
  if (auto it = doc.find("training"); it != doc.end()) {
    if (!RequireObject(*it, "training", error)) return false;
    Section s(*it, "training", error);
    s.Double("learning_rate", &t.learning_rate);
    s.Int("max_steps", &t.max_steps);
    s.Double("num_train_epochs", &t.num_train_epochs);
    s.Int("per_device_train_batch_size", &t.per_device_train_batch_size);
    s.Int("per_device_eval_batch_size", &t.per_device_eval_batch_size);
    s.Int("gradient_accumulation_steps", &t.gradient_accumulation_steps);
    s.Int("warmup_steps", &t.warmup_steps);
    s.Double("warmup_ratio", &t.warmup_ratio);
    s.Double("max_grad_norm", &t.max_grad_norm);
    s.Double("weight_decay", &t.weight_decay);
    s.Double("adam_beta1", &t.adam_beta1);
    s.Double("adam_beta2", &t.adam_beta2);
    s.Double("adam_epsilon", &t.adam_epsilon);
    s.String("lr_scheduler_type", &t.lr_scheduler_type);
    if (const json* kw = s.Raw("lr_scheduler_kwargs")) {
      if (!RequireObject(*kw, "training.lr_scheduler_kwargs", error))
        return false;
      Section k(*kw, "training.lr_scheduler_kwargs", error);
      k.Double("min_lr_ratio", &t.min_lr_ratio);
      k.WarnUnknown(warnings);
    }
    s.Int("seed", &t.seed);
    s.Int("logging_steps", &t.logging_steps);
    s.Int("save_steps", &t.save_steps);
    s.Int("eval_steps", &t.eval_steps);
    s.Int("save_total_limit", &t.save_total_limit);
    s.Int("eval_max_samples", &t.eval_max_samples);
    s.String("output_dir", &t.output_dir);
    s.String("mixed_precision_dtype", &t.mixed_precision_dtype);
    s.Int("num_threads", &t.num_threads);
    s.Bool("pad_to_max_length", &t.pad_to_max_length);
    s.Bool("save_final_model", &t.save_final_model);
    s.Double("ddp_bucket_cap_mb", &t.ddp_bucket_cap_mb);
    std::string optimizer = "adamw_torch";
    s.String("optimizer", &optimizer);
    s.Ignore({"trainer_type",
              "enable_wandb",
              "enable_tensorboard",
              "enable_mlflow",
              "include_performance_metrics",
              "log_model_summary",
              "dataloader_num_workers",
              "dataloader_prefetch_factor",
              "ddp_find_unused_parameters",
              "enable_gradient_checkpointing",
              "gradient_checkpointing_kwargs",
              "compile",
              "use_peft",
              "run_name",
              "log_level",
              "dep_log_level",
              "logging_strategy",
              "save_epoch",
              "eval_strategy",
              "empty_device_cache_steps",
              "trainer_kwargs",
              "try_resume_from_last_checkpoint",
              "resume_from_checkpoint",
              "data_seed",
              "logging_first_step",
              "label_ignore_index",
              "nccl_default_timeout_minutes",
              "include_alternative_mfu_metrics",
              "telemetry_dir",
              "verbose_nan_check",
              "log_examples",
              "use_cuda_graphs"});
    s.WarnUnknown(warnings);
    if (!s.ok()) return false;
    if (optimizer != "adamw_torch" && optimizer != "adamw" &&
        optimizer != "adamw_torch_fused")
      warnings->push_back("training.optimizer: \"" + optimizer +
                          "\" not supported, using AdamW");
  }
  auto positive = [&](int64_t v, const char* key) {
    if (v > 0) return true;
    *error = std::string("training.") + key +
             ": expected a positive integer, got " + std::to_string(v);
    return false;
  };
  if (!positive(t.per_device_train_batch_size, "per_device_train_batch_size") ||
      !positive(t.gradient_accumulation_steps, "gradient_accumulation_steps") ||
      !positive(t.logging_steps, "logging_steps"))
    return false;
  if (t.max_steps <= 0 && t.num_train_epochs <= 0) {
    *error = "training: set max_steps or num_train_epochs to a positive value";
    return false;
  }
  if (t.learning_rate < 0 || !std::isfinite(t.learning_rate)) {
    *error = "training.learning_rate: expected a non-negative number";
    return false;
  }
  if (t.lr_scheduler_type != "cosine" && t.lr_scheduler_type != "linear" &&
      t.lr_scheduler_type != "constant" &&
      t.lr_scheduler_type != "constant_with_warmup" &&
      t.lr_scheduler_type != "cosine_with_min_lr") {
    *error =
        "training.lr_scheduler_type: expected cosine, linear or constant, got "
        "\"" +
        t.lr_scheduler_type + "\"";
    return false;
  }
  for (char& c : t.mixed_precision_dtype) c = std::tolower(c);
  if (t.mixed_precision_dtype == "bfloat16") t.mixed_precision_dtype = "bf16";
  if (t.mixed_precision_dtype != "auto" && t.mixed_precision_dtype != "none" &&
      t.mixed_precision_dtype != "bf16") {
    *error = "training.mixed_precision_dtype: expected none or bf16, got \"" +
             t.mixed_precision_dtype + "\"";
    return false;
  }
  if (t.per_device_eval_batch_size <= 0)
    t.per_device_eval_batch_size = t.per_device_train_batch_size;
  t.output_dir = Resolve(t.output_dir, config_dir);
  return true;
}

bool LoadConfigFile(const std::string& path, TrainerConfig* out,
                    std::string* error, std::vector<std::string>* warnings) {
  std::ifstream in(path);
  if (!in) {
    *error = path + ": cannot open config file";
    return false;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  json doc = json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    *error = path + ": not valid JSON";
    return false;
  }
  std::string dir = std::filesystem::absolute(path).parent_path().string();
  if (!ParseConfig(doc, dir, out, error, warnings)) {
    *error = path + ": " + *error;
    return false;
  }
  return true;
}

ConfigArgs ParseConfigArgs(int argc, char** argv, const char* program,
                           void (*usage)(FILE*), std::string* config_path) {
  config_path->clear();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      *config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      *config_path = a.substr(9);
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return ConfigArgs::kHelpShown;
    } else {
      fprintf(stderr, "%s: unknown argument %s\n", program, a.c_str());
      usage(stderr);
      return ConfigArgs::kBad;
    }
  }
  if (config_path->empty()) {
    usage(stderr);
    return ConfigArgs::kBad;
  }
  return ConfigArgs::kRun;
}

}  // namespace dcvlr::trainer
