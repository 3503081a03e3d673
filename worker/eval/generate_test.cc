// The model's inference path: cached greedy decoding gives exactly the
// tokens of recomputing the whole sequence at every step, padding changes
// nothing, and the cached path agrees with the training forward pass.
#include "worker/eval/generate.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <set>

#include "worker/trainer/presets.h"
#include "worker/trainer/tokenizer.h"

namespace dcvlr::eval {
namespace {

using trainer::Image;
using trainer::ModelPreset;
using trainer::VlmModel;

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(1);
    ASSERT_TRUE(trainer::FindPreset("tiny-vlm", &preset_));
    model_ = std::make_unique<VlmModel>(preset_, 7, at::Device(at::kCPU),
                                        at::kFloat);
    const trainer::ByteTokenizer tok(preset_.image_tokens());
    for (const char* q :
         {"Color of the circle?", "How many shapes? A:1 B:2", "Where?"}) {
      auto ex = tok.EncodeExample(q, "", preset_.max_seq_len);
      ex.tokens.pop_back();
      prompts_.push_back(ex.tokens);
    }
    for (int i = 0; i < 3; ++i) {
      Image img;
      img.width = img.height = preset_.image_size;
      img.rgb.resize(size_t(img.width) * img.height * 3);
      for (size_t j = 0; j < img.rgb.size(); ++j)
        img.rgb[j] = uint8_t((j * 37 + i * 101) % 251);
      images_.push_back(img);
    }
  }

  std::vector<const Image*> ImagePtrs(std::vector<int> rows) {
    std::vector<const Image*> out;
    for (int r : rows) out.push_back(&images_[r]);
    return out;
  }

  // Greedy decoding with no cache: every step runs the whole sequence.
  std::vector<int64_t> Recompute(int row, int max_new,
                                 std::vector<at::Tensor>* step_logits) {
    c10::NoGradGuard no_grad;
    std::vector<uint16_t> seq = prompts_[row];
    std::vector<int64_t> out;
    const int limit = std::min<int>(max_new, preset_.max_seq_len - seq.size());
    while (int(out.size()) < limit) {
      trainer::KvCache fresh;
      at::Tensor logits = model_->Prefill(
          MakePromptBatch({seq}, ImagePtrs({row}), at::Device(at::kCPU)),
          &fresh);
      step_logits->push_back(logits[0]);
      const int64_t next = logits[0].argmax().item<int64_t>();
      if (next == trainer::kImEndId || next == trainer::kEndOfTextId) break;
      out.push_back(next);
      seq.push_back(uint16_t(next));
    }
    return out;
  }

  ModelPreset preset_;
  std::unique_ptr<VlmModel> model_;
  std::vector<std::vector<uint16_t>> prompts_;
  std::vector<Image> images_;
};

TEST_F(GenerateTest, CachedDecodingEqualsFullRecompute) {
  const int kMaxNew = 12;
  std::vector<std::vector<int64_t>> cached;
  ASSERT_TRUE(GenerateGreedy(*model_, prompts_, ImagePtrs({0, 1, 2}), kMaxNew,
                             at::Device(at::kCPU), nullptr, &cached));
  ASSERT_EQ(cached.size(), 3u);
  std::set<int64_t> distinct;
  for (int r = 0; r < 3; ++r) {
    std::vector<at::Tensor> logits;
    std::vector<int64_t> full = Recompute(r, kMaxNew, &logits);
    EXPECT_EQ(cached[r], full) << "row " << r;
    distinct.insert(full.begin(), full.end());
  }
  // The comparison means something only if decoding ran several steps and
  // produced varied tokens.
  EXPECT_GE(cached[0].size() + cached[1].size() + cached[2].size(), 12u);
  EXPECT_GE(distinct.size(), 3u);
}

TEST_F(GenerateTest, DecodeStepLogitsMatchRecomputedLogits) {
  c10::NoGradGuard no_grad;
  trainer::KvCache cache;
  // Rows of different lengths, so the shorter ones are left-padded.
  at::Tensor logits = model_->Prefill(
      MakePromptBatch(prompts_, ImagePtrs({0, 1, 2}), at::Device(at::kCPU)),
      &cache);
  std::vector<std::vector<uint16_t>> seqs = prompts_;
  for (int step = 0; step < 5; ++step) {
    auto next = logits.argmax(-1);
    for (int r = 0; r < 3; ++r) {
      trainer::KvCache fresh;
      at::Tensor ref = model_->Prefill(
          MakePromptBatch({seqs[r]}, ImagePtrs({r}), at::Device(at::kCPU)),
          &fresh);
      EXPECT_TRUE(at::allclose(logits[r], ref[0], 1e-4, 1e-4))
          << "step " << step << " row " << r << " max diff "
          << (logits[r] - ref[0]).abs().max().item<float>();
      seqs[r].push_back(uint16_t(next[r].item<int64_t>()));
    }
    logits = model_->DecodeStep(next, &cache);
  }
}

TEST_F(GenerateTest, PrefillAgreesWithTheTrainingForwardPass) {
  c10::NoGradGuard no_grad;
  trainer::KvCache cache;
  at::Tensor logits = model_->Prefill(
      MakePromptBatch(prompts_, ImagePtrs({0, 1, 2}), at::Device(at::kCPU)),
      &cache);
  auto log_probs = at::log_softmax(logits, -1);
  for (int r = 0; r < 3; ++r) {
    // The training path scores the token after the prompt; its loss is the
    // negative log-probability the inference path gives that token.
    const int64_t target = 'x';
    const int64_t len = int64_t(prompts_[r].size());
    std::vector<int64_t> ids(prompts_[r].begin(), prompts_[r].end());
    ids.push_back(target);
    trainer::Batch batch;
    batch.tokens = at::tensor(ids, at::kLong).view({1, len + 1});
    batch.images =
        MakePromptBatch({prompts_[r]}, ImagePtrs({r}), at::Device(at::kCPU))
            .images;
    batch.loss_index = at::tensor(std::vector<int64_t>{len - 1}, at::kLong);
    batch.targets = at::tensor(std::vector<int64_t>{target}, at::kLong);
    batch.loss_row = at::tensor(std::vector<int64_t>{0}, at::kLong);
    batch.rows = 1;
    const float train_loss = model_->Loss(batch).item<float>();
    const float infer_loss = -log_probs[r][target].item<float>();
    EXPECT_NEAR(train_loss, infer_loss, 1e-4 * std::max(1.0f, train_loss))
        << "row " << r;
  }
}

TEST_F(GenerateTest, StopsAtMaxNewTokensAndMaxSeqLen) {
  std::vector<std::vector<int64_t>> out;
  ASSERT_TRUE(GenerateGreedy(*model_, prompts_, ImagePtrs({0, 1, 2}), 2,
                             at::Device(at::kCPU), nullptr, &out));
  for (const auto& row : out) EXPECT_LE(row.size(), 2u);
  // A prompt two tokens short of max_seq_len has room for two tokens.
  std::vector<uint16_t> long_prompt = prompts_[2];
  long_prompt.insert(long_prompt.begin() + 1,
                     preset_.max_seq_len - 2 - long_prompt.size(), 'a');
  ASSERT_TRUE(GenerateGreedy(*model_, {long_prompt}, ImagePtrs({2}), 16,
                             at::Device(at::kCPU), nullptr, &out));
  EXPECT_LE(out[0].size(), 2u);
}

TEST_F(GenerateTest, StopFlagInterrupts) {
  std::atomic<bool> stop{true};
  std::vector<std::vector<int64_t>> out;
  std::vector<std::vector<uint16_t>> one = {prompts_[0]};
  // A row that ends at once is done before the flag is looked at; only a
  // batch that still has steps to run reports the stop.
  bool finished = GenerateGreedy(*model_, one, ImagePtrs({0}), 12,
                                 at::Device(at::kCPU), &stop, &out);
  if (finished) {
    EXPECT_TRUE(out[0].empty());
  } else {
    EXPECT_EQ(out[0].size(), 1u);
  }
}

}  // namespace
}  // namespace dcvlr::eval
