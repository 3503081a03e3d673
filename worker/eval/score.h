// Scoring a model's free-text prediction against a benchmark answer, in the
// stages of the DCVLR standalone scorer (without its LLM-judge stage):
//
//   1. exact: the whole prediction equals the answer, or the answer letter's
//      option text, after normalisation (case, whitespace, punctuation);
//   then a candidate is extracted from the END of the prediction, and the
//   first stage that finds one decides hit or miss:
//   2. boxed: the last \boxed{...};
//   3. phrase: the last "the answer is X" / "answer: X";
//   4. option: the last option letter standing alone (B, (B), B., B)), or
//      else the one option whose text the prediction contains;
//   5. number: the last number, equal within a relative 1e-4.
// A candidate matches when it equals the answer (normalised or as a number),
// is the answer letter, or is a letter whose option text equals the
// answer's option text (or the answer itself when the answer is text).
//
// Torch-free; thread-compatible (pure functions).
#ifndef DCVLR_WORKER_EVAL_SCORE_H_
#define DCVLR_WORKER_EVAL_SCORE_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace dcvlr::eval {

// Option letter -> option text ('A' -> "red"); absent options are left out.
using Options = std::map<char, std::string>;

struct ScoreResult {
  bool hit = false;
  // Which stage decided: exact, boxed, phrase, option, number, or none (no
  // stage found a candidate; a miss).
  std::string stage = "none";
  std::string extracted;  // the candidate that was compared
};

ScoreResult ScorePrediction(std::string_view prediction,
                            std::string_view answer, const Options& options);

// Lower-cases ASCII, drops punctuation (but keeps '.' and ',' between digits
// and a '-' before a digit), collapses whitespace and trims.
std::string NormalizeAnswer(std::string_view text);

// Parses a whole string as a number ("3.50", "-2", "1,000", "50%", "$3");
// false if it is not one.
bool ParseNumber(std::string_view text, double* out);

}  // namespace dcvlr::eval

#endif  // DCVLR_WORKER_EVAL_SCORE_H_
