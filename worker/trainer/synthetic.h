// A deterministic synthetic visual-reasoning dataset: 32x32 images of
// coloured shapes with four-option multiple-choice questions about colour,
// count, position and comparison. Same seed, same bytes, on every machine:
// the generator uses its own integer RNG, not <random>'s distributions,
// whose output the C++ standard leaves to the library.
#ifndef DCVLR_WORKER_TRAINER_SYNTHETIC_H_
#define DCVLR_WORKER_TRAINER_SYNTHETIC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "worker/trainer/image.h"

namespace dcvlr::trainer {

struct SyntheticExample {
  Image image;
  std::string category;  // color | count | position | comparison
  std::string stem;      // the question without its options
  std::string options[4];
  int answer = 0;  // 0..3 for A..D
  // The stem followed by the options, as the model sees it.
  std::string Question() const;
  std::string AnswerLetter() const {
    return std::string(1, char('A' + answer));
  }
  // The chosen option's text: what the JSONL's `answer` holds (see below).
  const std::string& AnswerText() const { return options[answer]; }
};

// Example `index` of a split; the splits draw from disjoint RNG streams.
SyntheticExample GenerateSynthetic(const std::string& split, uint64_t seed,
                                   int64_t index);

// Writes `count` examples as JSONL rows {image (base64 PNG), question,
// answer, answer_letter, category}, atomically (temp file, then rename).
// False on IO error.
//
// `answer` is the chosen option's text ("green", "3"), not its letter: the
// options' order is fixed per category, so a letter target would make every
// category share the same four outputs and the model would have to learn
// category x image interactions before any category improves; with option
// text, count and position answers are disjoint token sets and tiny-vlm
// learns the four categories within the demo's few minutes of CPU time.
// Exact match of the text is as strict as of the letter.
bool WriteSyntheticJsonl(const std::string& path, const std::string& split,
                         uint64_t seed, int64_t count, std::string* error);

// Writes a VLMEvalKit-style TSV (index, image, question, A, B, C, D, answer,
// category; image is base64 PNG).
bool WriteSyntheticTsv(const std::string& path, const std::string& split,
                       uint64_t seed, int64_t count, std::string* error);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_SYNTHETIC_H_
