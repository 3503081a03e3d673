// Scoring stages on hand-made predictions.
#include "worker/eval/score.h"

#include <gtest/gtest.h>

namespace dcvlr::eval {
namespace {

const Options kColors = {
    {'A', "red"}, {'B', "green"}, {'C', "blue"}, {'D', "yellow"}};

TEST(ScoreTest, BareLetterMatchesAnswerLetter) {
  ScoreResult r = ScorePrediction("B", "B", kColors);
  EXPECT_TRUE(r.hit);
  EXPECT_EQ(r.stage, "exact");
  EXPECT_FALSE(ScorePrediction("C", "B", kColors).hit);
}

TEST(ScoreTest, LetterFormsAreRecognised) {
  for (const char* p : {"(B)", "B.", "B)", " b ", "Option B"}) {
    EXPECT_TRUE(ScorePrediction(p, "B", kColors).hit) << p;
    EXPECT_FALSE(ScorePrediction(p, "C", kColors).hit) << p;
  }
}

TEST(ScoreTest, LetterAtTheEndOfAnExplanation) {
  ScoreResult r =
      ScorePrediction("The shape is drawn in green, so (B)", "B", kColors);
  EXPECT_TRUE(r.hit);
  EXPECT_EQ(r.stage, "option");
  EXPECT_EQ(r.extracted, "B");
  // The last letter decides, not an earlier one.
  EXPECT_FALSE(ScorePrediction("Not (B) but (C)", "B", kColors).hit);
}

TEST(ScoreTest, ArticleAIsNotAnOption) {
  ScoreResult r = ScorePrediction("C, as in A green circle", "C", kColors);
  EXPECT_TRUE(r.hit);
  EXPECT_EQ(r.extracted, "C");
}

TEST(ScoreTest, OptionTextMatchesLetterAnswer) {
  ScoreResult r = ScorePrediction("Green.", "B", kColors);
  EXPECT_TRUE(r.hit);
  EXPECT_EQ(r.stage, "exact");
  EXPECT_FALSE(ScorePrediction("yellow", "B", kColors).hit);
  // Text naming exactly one option inside a sentence.
  ScoreResult s = ScorePrediction("it looks blue to me", "C", kColors);
  EXPECT_TRUE(s.hit);
  EXPECT_EQ(s.stage, "option");
}

TEST(ScoreTest, LetterMatchesTextAnswer) {
  EXPECT_TRUE(ScorePrediction("B", "green", kColors).hit);
  EXPECT_FALSE(ScorePrediction("A", "green", kColors).hit);
}

TEST(ScoreTest, DuplicateOptionTextCountsAsTheAnswer) {
  Options dup = {{'A', "3"}, {'B', "4"}, {'C', "3"}};
  EXPECT_TRUE(ScorePrediction("C", "A", dup).hit);
  EXPECT_FALSE(ScorePrediction("B", "A", dup).hit);
}

TEST(ScoreTest, BoxedAnswer) {
  ScoreResult r = ScorePrediction("so we get \\boxed{42}", "42", {});
  EXPECT_TRUE(r.hit);
  EXPECT_EQ(r.stage, "boxed");
  EXPECT_EQ(r.extracted, "42");
  EXPECT_FALSE(ScorePrediction("\\boxed{41} (42 was wrong)", "42", {}).hit);
  // The last box counts; nested braces stay inside.
  ScoreResult f = ScorePrediction("\\boxed{1} then \\boxed{\\frac{1}{2}}",
                                  "\\frac{1}{2}", {});
  EXPECT_TRUE(f.hit);
  EXPECT_EQ(f.extracted, "\\frac{1}{2}");
  EXPECT_TRUE(ScorePrediction("\\boxed{B}", "B", kColors).hit);
}

TEST(ScoreTest, AnswerPhraseWithNumberTolerance) {
  ScoreResult r = ScorePrediction("Adding up, the answer is 3.5.", "3.50", {});
  EXPECT_TRUE(r.hit);
  EXPECT_EQ(r.stage, "phrase");
  EXPECT_EQ(r.extracted, "3.5");
  EXPECT_TRUE(ScorePrediction("Answer: 3.50004", "3.5", {}).hit);
  EXPECT_FALSE(ScorePrediction("Answer: 3.51", "3.5", {}).hit);
  EXPECT_TRUE(ScorePrediction("The answer is (C) blue", "C", kColors).hit);
}

TEST(ScoreTest, LastNumber) {
  ScoreResult r = ScorePrediction("I count 2 red and 1,000 blue", "1000", {});
  EXPECT_TRUE(r.hit);
  EXPECT_EQ(r.stage, "number");
  EXPECT_FALSE(ScorePrediction("about 7 of them", "8", {}).hit);
  EXPECT_TRUE(ScorePrediction("-2", "-2.0", {}).hit);
  EXPECT_FALSE(ScorePrediction("2", "-2", {}).hit);
}

TEST(ScoreTest, NormalisedExactMatch) {
  ScoreResult r = ScorePrediction("  New   York! ", "new york", {});
  EXPECT_TRUE(r.hit);
  EXPECT_EQ(r.stage, "exact");
  EXPECT_FALSE(ScorePrediction("3.5", "35", {}).hit);
}

TEST(ScoreTest, NoMatch) {
  ScoreResult r = ScorePrediction("purple", "B", kColors);
  EXPECT_FALSE(r.hit);
  EXPECT_EQ(r.stage, "none");
  EXPECT_FALSE(ScorePrediction("I cannot tell", "42", {}).hit);
}

TEST(ScoreTest, EmptyPredictionMisses) {
  ScoreResult r = ScorePrediction("", "B", kColors);
  EXPECT_FALSE(r.hit);
  EXPECT_EQ(r.stage, "none");
  EXPECT_FALSE(ScorePrediction("   \n", "B", kColors).hit);
}

TEST(ScoreTest, ParseNumberForms) {
  double v = 0;
  EXPECT_TRUE(ParseNumber("3.50", &v));
  EXPECT_DOUBLE_EQ(v, 3.5);
  EXPECT_TRUE(ParseNumber("$1,250", &v));
  EXPECT_DOUBLE_EQ(v, 1250);
  EXPECT_TRUE(ParseNumber("50%", &v));
  EXPECT_DOUBLE_EQ(v, 50);
  EXPECT_FALSE(ParseNumber("3 apples", &v));
  EXPECT_FALSE(ParseNumber("", &v));
}

}  // namespace
}  // namespace dcvlr::eval
