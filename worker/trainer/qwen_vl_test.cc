// Qwen2-VL and Qwen2.5-VL against transformers. The fixtures in
// testdata/qwen_vl were written by make_fixtures.py with transformers: two
// tiny random models saved with save_pretrained (one F32 file with tied
// embeddings; BF16 shards with an index and window attention), one batch
// with three images of different grids, and transformers' outputs on it.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "worker/trainer/hf_checkpoint.h"
#include "worker/trainer/hf_export.h"
#include "worker/trainer/qwen_vl_config.h"
#include "worker/trainer/qwen_vl_model.h"
#include "worker/trainer/safetensors.h"

namespace dcvlr::trainer {
namespace {

const std::string kDir = std::string(DCVLR_TESTDATA) + "/qwen_vl";

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every tensor of a safetensors file, copied out as at::Tensors.
std::map<std::string, at::Tensor> ReadTensors(const std::string& path) {
  SafetensorsFile file;
  std::string error;
  EXPECT_TRUE(ReadSafetensors(path, &file, &error)) << error;
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : file.tensors) out[name] = TensorFromView(t);
  return out;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

struct Fixture {
  QwenVlConfig config;
  std::unique_ptr<QwenVlModel> model;
  std::map<std::string, at::Tensor> inputs, reference;
  QwenVlInputs in;
};

Fixture Load(const std::string& name) {
  Fixture f;
  const std::string dir = kDir + "/" + name;
  std::string error;
  EXPECT_TRUE(LoadQwenVlConfig(dir, &f.config, &error)) << error;
  HfCheckpoint ckpt;
  EXPECT_TRUE(ReadHfCheckpoint(dir, &ckpt, &error)) << error;
  f.model = QwenVlModel::Load(f.config, ckpt, at::kCPU, at::kFloat, &error);
  EXPECT_NE(f.model, nullptr) << error;
  f.inputs = ReadTensors(kDir + "/inputs.safetensors");
  f.reference = ReadTensors(dir + "/reference.safetensors");
  f.in.input_ids = f.inputs.at("input_ids");
  f.in.attention_mask = f.inputs.at("attention_mask");
  f.in.pixel_values = f.inputs.at("pixel_values");
  f.in.image_grid_thw = f.inputs.at("image_grid_thw");
  return f;
}

class QwenVlParity : public ::testing::TestWithParam<std::string> {};

TEST_P(QwenVlParity, VisionTowerMatchesTransformers) {
  Fixture f = Load(GetParam());
  ASSERT_NE(f.model, nullptr);
  c10::NoGradGuard no_grad;
  at::Tensor got =
      f.model->ImageEmbeddings(f.in.pixel_values, f.in.image_grid_thw);
  EXPECT_LT(MaxAbsDiff(got, f.reference.at("image_embeds")), 1e-4);
}

TEST_P(QwenVlParity, RopeIndexMatchesTransformers) {
  Fixture f = Load(GetParam());
  ASSERT_NE(f.model, nullptr);
  auto [pos, deltas] = f.model->RopeIndex(f.in);
  at::Tensor valid =
      f.in.attention_mask.to(at::kBool).unsqueeze(0).expand_as(pos);
  // Padding positions are unspecified; real tokens must match exactly.
  EXPECT_TRUE(pos.masked_select(valid).equal(
      f.reference.at("position_ids").masked_select(valid)));
  EXPECT_TRUE(deltas.equal(f.reference.at("rope_deltas").reshape({-1})));
}

TEST_P(QwenVlParity, LogitsHiddenStatesAndLossMatchTransformers) {
  Fixture f = Load(GetParam());
  ASSERT_NE(f.model, nullptr);
  c10::NoGradGuard no_grad;
  std::vector<at::Tensor> hidden;
  at::Tensor logits = f.model->Forward(f.in, &hidden);
  at::Tensor valid = f.in.attention_mask.to(at::kBool).unsqueeze(-1);
  auto real = [&](const at::Tensor& t) {
    return t.masked_select(valid.expand_as(t));
  };
  ASSERT_EQ(hidden.size(), static_cast<size_t>(f.config.text.layers + 1));
  for (size_t i = 0; i < hidden.size(); ++i)
    EXPECT_LT(MaxAbsDiff(real(hidden[i]),
                         real(f.reference.at("hidden_" + std::to_string(i)))),
              1e-4)
        << "hidden state " << i;
  const double diff = MaxAbsDiff(real(logits), real(f.reference.at("logits")));
  std::printf("%s: max |logits - transformers'| = %.3g (logits up to %.3g)\n",
              GetParam().c_str(), diff, logits.abs().max().item<double>());
  EXPECT_LT(diff, 1e-4);
  at::Tensor loss = CausalLmLoss(logits, f.inputs.at("labels"));
  EXPECT_NEAR(loss.item<double>(), f.reference.at("loss").item<double>(), 1e-5);
}

TEST_P(QwenVlParity, GradientsAndOneAdamWStepMatchTransformers) {
  Fixture f = Load(GetParam());
  ASSERT_NE(f.model, nullptr);
  std::vector<at::Tensor> params;
  for (const auto& [name, p] : f.model->parameters()) {
    p.requires_grad_(true);
    params.push_back(p);
  }
  at::Tensor loss = CausalLmLoss(f.model->Forward(f.in), f.inputs.at("labels"));
  loss.backward();
  double sq = 0;
  for (const at::Tensor& p : params) sq += p.grad().pow(2).sum().item<double>();
  const double ref_norm = f.reference.at("grad_norm").item<double>();
  EXPECT_NEAR(std::sqrt(sq), ref_norm, 1e-4 * ref_norm);
  {
    // torch.optim.AdamW's first step (lr 1e-3, betas 0.9/0.999, eps 1e-8,
    // weight decay 0.1): decay, then g / (|g| + eps) after bias correction.
    c10::NoGradGuard no_grad;
    for (at::Tensor& p : params) {
      at::Tensor g = p.grad();
      p.mul_(1 - 1e-3 * 0.1);
      p.sub_(1e-3 * g / (g.abs() + 1e-8));
    }
    at::Tensor after =
        CausalLmLoss(f.model->Forward(f.in), f.inputs.at("labels"));
    EXPECT_NEAR(after.item<double>(),
                f.reference.at("loss_after_step").item<double>(), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, QwenVlParity,
                         ::testing::Values("qwen2-vl-tiny", "qwen2_5-vl-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (!isalnum(static_cast<unsigned char>(c)))
                               c = '_';
                           return n;
                         });

TEST(QwenVlConfig, HubAndTransformers5LayoutsReadTheSame) {
  for (const char* name : {"qwen2-vl-tiny", "qwen2_5-vl-tiny"}) {
    QwenVlConfig hub, written;
    std::string error;
    const std::string dir = kDir + "/" + name;
    ASSERT_TRUE(ParseQwenVlConfig(ReadText(dir + "/hub_config.json"),
                                  "hub_config.json", &hub, &error))
        << error;
    ASSERT_TRUE(LoadQwenVlConfig(dir, &written, &error)) << error;
    // Written back in the Hub's layout, both read the same again.
    QwenVlConfig again;
    ASSERT_TRUE(
        ParseQwenVlConfig(QwenVlConfigJson(written), "export", &again, &error))
        << error;
    for (const QwenVlConfig* c : {&written, &again}) {
      EXPECT_EQ(c->kind, hub.kind);
      EXPECT_EQ(c->text.hidden, hub.text.hidden);
      EXPECT_EQ(c->text.kv_heads, hub.text.kv_heads);
      EXPECT_EQ(c->text.mrope_section, hub.text.mrope_section);
      EXPECT_EQ(c->text.rope_theta, hub.text.rope_theta);
      EXPECT_EQ(c->text.tie_embeddings, hub.text.tie_embeddings);
      EXPECT_EQ(c->vision.width, hub.vision.width);
      EXPECT_EQ(c->vision.mlp_hidden, hub.vision.mlp_hidden);
      EXPECT_EQ(c->vision.out_width, hub.vision.out_width);
      EXPECT_EQ(c->vision.window_size, hub.vision.window_size);
      EXPECT_EQ(c->vision.fullatt_blocks, hub.vision.fullatt_blocks);
      EXPECT_EQ(c->image_token_id, hub.image_token_id);
    }
    EXPECT_EQ(hub.text.mrope_section, (std::array<int64_t, 3>{2, 3, 3}));
    EXPECT_EQ(hub.image_token_id, 251);
  }
}

TEST(QwenVlConfig, ErrorsSayWhere) {
  QwenVlConfig c;
  std::string error;
  const std::string hub = ReadText(kDir + "/qwen2-vl-tiny/hub_config.json");
  EXPECT_FALSE(
      ParseQwenVlConfig("{\n  \"a\": 1,\n  oops\n}", "c.json", &c, &error));
  EXPECT_EQ(error.rfind("c.json:3:", 0), 0u) << error;

  auto without = [&](const std::string& key) {
    std::string s = hub;
    size_t at = s.find("\"" + key + "\"");
    EXPECT_NE(at, std::string::npos) << key;
    s.replace(at, key.size() + 2, "\"x_" + key + "\"");
    return s;
  };
  EXPECT_FALSE(
      ParseQwenVlConfig(without("num_hidden_layers"), "c.json", &c, &error));
  EXPECT_NE(error.find("key 'num_hidden_layers': missing"), std::string::npos)
      << error;
  EXPECT_FALSE(ParseQwenVlConfig(without("embed_dim"), "c.json", &c, &error));
  EXPECT_NE(error.find("'vision_config.embed_dim'"), std::string::npos)
      << error;

  std::string bad = hub;
  size_t at = bad.find("\"mrope_section\"");
  ASSERT_NE(at, std::string::npos);
  size_t end = bad.find(']', at);
  bad.replace(at, end + 1 - at, "\"mrope_section\": [2, 2, 2]");
  EXPECT_FALSE(ParseQwenVlConfig(bad, "c.json", &c, &error));
  EXPECT_NE(error.find("rope_scaling.mrope_section"), std::string::npos)
      << error;
  EXPECT_NE(error.find("head_dim / 2 = 8"), std::string::npos) << error;

  EXPECT_FALSE(ParseQwenVlConfig("{\"architectures\": [\"LlamaForCausalLM\"]}",
                                 "c.json", &c, &error));
  EXPECT_NE(error.find("not a Qwen2-VL or Qwen2.5-VL"), std::string::npos);
}

TEST(QwenVlCheckpoint, ShardedAndSingleFilesReadUnderHubNames) {
  HfCheckpoint sharded, single;
  std::string error;
  ASSERT_TRUE(ReadHfCheckpoint(kDir + "/qwen2_5-vl-tiny", &sharded, &error))
      << error;
  ASSERT_TRUE(ReadHfCheckpoint(kDir + "/qwen2-vl-tiny", &single, &error))
      << error;
  EXPECT_EQ(sharded.files.size(), 3u);
  EXPECT_EQ(single.files.size(), 1u);
  EXPECT_EQ(sharded.tensors.at("visual.merger.mlp.0.weight")->dtype, "BF16");
  EXPECT_EQ(single.tensors.at("visual.merger.mlp.0.weight")->dtype, "F32");
  EXPECT_EQ(
      CanonicalTensorName("model.language_model.layers.3.mlp.up_proj.weight"),
      "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(CanonicalTensorName("model.visual.blocks.0.norm1.weight"),
            "visual.blocks.0.norm1.weight");
  EXPECT_EQ(CanonicalTensorName("lm_head.weight"), "lm_head.weight");
}

// A copy of a fixture directory to break.
std::string CopyFixture(const std::string& name) {
  char tmpl[] = "/tmp/qwen_vl_test.XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string cmd = "cp -r " + kDir + "/" + name + "/. " + dir;
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  return dir;
}

TEST(QwenVlCheckpoint, BrokenCheckpointsAreErrorsNamingTheTensor) {
  std::string error;
  QwenVlConfig config;
  ASSERT_TRUE(LoadQwenVlConfig(kDir + "/qwen2_5-vl-tiny", &config, &error));
  HfCheckpoint ckpt;
  ASSERT_TRUE(ReadHfCheckpoint(kDir + "/qwen2_5-vl-tiny", &ckpt, &error));

  QwenVlConfig deeper = config;
  deeper.text.layers = 3;
  EXPECT_EQ(QwenVlModel::Load(deeper, ckpt, at::kCPU, at::kFloat, &error),
            nullptr);
  EXPECT_NE(error.find("missing tensor model.layers.2.input_layernorm.weight"),
            std::string::npos)
      << error;

  QwenVlConfig shallower = config;
  shallower.vision.depth = 2;
  shallower.vision.fullatt_blocks = {1};
  EXPECT_EQ(QwenVlModel::Load(shallower, ckpt, at::kCPU, at::kFloat, &error),
            nullptr);
  EXPECT_NE(error.find("unexpected tensor visual.blocks.2."), std::string::npos)
      << error;

  QwenVlConfig wider = config;
  wider.text.intermediate = 128;
  EXPECT_EQ(QwenVlModel::Load(wider, ckpt, at::kCPU, at::kFloat, &error),
            nullptr);
  EXPECT_NE(
      error.find("tensor model.layers.0.mlp.gate_proj.weight is [96, 64], "
                 "the config needs [128, 64]"),
      std::string::npos)
      << error;
  EXPECT_NE(error.find(".safetensors: "), std::string::npos) << error;

  // A shard the index lists is gone.
  std::string dir = CopyFixture("qwen2_5-vl-tiny");
  std::remove((dir + "/model-00002-of-00003.safetensors").c_str());
  HfCheckpoint broken;
  EXPECT_FALSE(ReadHfCheckpoint(dir, &broken, &error));
  EXPECT_NE(error.find("model-00002-of-00003.safetensors: missing"),
            std::string::npos)
      << error;
  // A shard name that leaves the directory.
  std::string index = ReadText(dir + "/model.safetensors.index.json");
  size_t at = index.find("model-00001-of-00003.safetensors");
  index.replace(at, 0, "../");
  std::ofstream(dir + "/model.safetensors.index.json") << index;
  EXPECT_FALSE(ReadHfCheckpoint(dir, &broken, &error));
  EXPECT_NE(error.find("is not a file name in"), std::string::npos) << error;
  std::system(("rm -rf " + dir).c_str());
}

// Exported, read back and run: the same logits, bit for bit, when the
// export dtype holds the weights exactly (BF16 weights as BF16, F32 as F32).
TEST(QwenVlExport, ReadsBackToTheSameLogits) {
  struct Case {
    const char* model;
    at::ScalarType dtype;
    int64_t max_shard_bytes;
    size_t files;
  };
  for (const Case& c :
       {Case{"qwen2_5-vl-tiny", at::kBFloat16, 100000, 4},
        Case{"qwen2-vl-tiny", at::kFloat, int64_t{1} << 30, 1}}) {
    Fixture f = Load(c.model);
    ASSERT_NE(f.model, nullptr);
    char tmpl[] = "/tmp/qwen_vl_export.XXXXXX";
    const std::string root = mkdtemp(tmpl);
    const std::string out = root + "/export";
    HfExportOptions options;
    options.dtype = c.dtype;
    options.max_shard_bytes = c.max_shard_bytes;
    options.assets_dir = kDir + "/" + c.model;
    std::string error;
    ASSERT_TRUE(ExportHfCheckpoint(*f.model, out, options, &error)) << error;
    EXPECT_FALSE(ExportHfCheckpoint(*f.model, out, options, &error));
    EXPECT_NE(error.find("already exists"), std::string::npos) << error;

    QwenVlConfig config;
    HfCheckpoint ckpt;
    ASSERT_TRUE(LoadQwenVlConfig(out, &config, &error)) << error;
    ASSERT_TRUE(ReadHfCheckpoint(out, &ckpt, &error)) << error;
    EXPECT_EQ(ckpt.files.size(), c.files);
    EXPECT_EQ(ReadText(out + "/generation_config.json"),
              ReadText(options.assets_dir + "/generation_config.json"));
    auto back = QwenVlModel::Load(config, ckpt, at::kCPU, at::kFloat, &error);
    ASSERT_NE(back, nullptr) << error;
    c10::NoGradGuard no_grad;
    EXPECT_TRUE(back->Forward(f.in).equal(f.model->Forward(f.in))) << c.model;
    std::system(("rm -rf " + root).c_str());
  }
}

TEST(QwenVlModel, MismatchedImagesAndTokensAreErrors) {
  Fixture f = Load("qwen2-vl-tiny");
  ASSERT_NE(f.model, nullptr);
  c10::NoGradGuard no_grad;
  QwenVlInputs in = f.in;
  in.image_grid_thw = f.in.image_grid_thw.narrow(0, 0, 2);
  in.pixel_values = f.in.pixel_values.narrow(0, 0, 60 + 16);
  EXPECT_THROW(f.model->Forward(in), std::invalid_argument);
  in = f.in;
  in.pixel_values = at::Tensor();
  EXPECT_THROW(f.model->Forward(in), std::invalid_argument);
  in = f.in;
  in.input_ids = f.in.input_ids.clone();
  in.input_ids[0][0] = 100000;
  EXPECT_THROW(f.model->Forward(in), std::invalid_argument);
}

// The real models' shapes (configs/models): the parameter counts their
// Hub checkpoints have (the index's total_size / 2 bytes per BF16 value).
TEST(QwenVlConfig, RealModelShapesGiveTheHubParameterCounts) {
  const std::string dir = std::string(DCVLR_CONFIGS) + "/models/";
  for (auto [name, count] : {std::pair{"qwen2-vl-2b", int64_t{2208985600}},
                             {"qwen2-vl-7b", int64_t{8291375616}},
                             {"qwen2_5-vl-3b", int64_t{3754622976}},
                             {"qwen2_5-vl-7b", int64_t{8292166656}}}) {
    QwenVlConfig config;
    std::string error;
    ASSERT_TRUE(LoadQwenVlConfig(dir + name, &config, &error)) << error;
    int64_t total = 0;
    for (const auto& [param, shape] : QwenVlModel::ParameterShapes(config)) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      total += n;
    }
    EXPECT_EQ(total, count) << name;
  }
}

}  // namespace
}  // namespace dcvlr::trainer
