// Prediction scoring; see score.h.
#include "worker/eval/score.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <vector>

namespace dcvlr::eval {
namespace {

constexpr double kRelativeTolerance = 1e-4;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlnum(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         static_cast<unsigned char>(c) >= 0x80;
}
bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)); }

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && IsSpace(s[b])) ++b;
  while (e > b && IsSpace(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool NumbersEqual(double a, double b) {
  if (a == b) return true;
  return std::fabs(a - b) <=
         kRelativeTolerance * std::max(std::fabs(a), std::fabs(b));
}

// The option letter a candidate names: "B", "(B)", "B.", "B)", "[B]",
// "Option B" (case of the letter must match an option; lower-case letters
// count only when written alone).
bool AsLetter(std::string_view candidate, const Options& options, char* out) {
  std::string c = Trim(candidate);
  if (c.size() >= 7 && Lower(c.substr(0, 7)) == "option ")
    c = Trim(c.substr(7));
  while (!c.empty() && (c.back() == '.' || c.back() == ':' || c.back() == ')' ||
                        c.back() == ']'))
    c.pop_back();
  while (!c.empty() && (c.front() == '(' || c.front() == '['))
    c.erase(c.begin());
  if (c.size() != 1) return false;
  char l = static_cast<char>(std::toupper(static_cast<unsigned char>(c[0])));
  if (options.count(l) == 0) return false;
  *out = l;
  return true;
}

// Equal as normalised text or as numbers.
bool TextEquals(std::string_view a, std::string_view b) {
  const std::string na = NormalizeAnswer(a);
  if (!na.empty() && na == NormalizeAnswer(b)) return true;
  double x = 0, y = 0;
  return ParseNumber(a, &x) && ParseNumber(b, &y) && NumbersEqual(x, y);
}

// Does `candidate` match the answer? A letter answer ("B") is matched by its
// letter or its option's text; a text answer by itself or by the letter of
// an option holding that text.
bool Matches(std::string_view candidate, std::string_view answer,
             const Options& options) {
  char cand_letter = 0, answer_letter = 0;
  const bool cand_is_letter = AsLetter(candidate, options, &cand_letter);
  const std::string a = Trim(answer);
  if (a.size() == 1 && AsLetter(a, options, &answer_letter)) {
    if (cand_is_letter)
      return cand_letter == answer_letter ||
             TextEquals(options.at(cand_letter), options.at(answer_letter));
    return TextEquals(candidate, options.at(answer_letter));
  }
  if (TextEquals(candidate, a)) return true;
  return cand_is_letter && TextEquals(options.at(cand_letter), a);
}

// The last \boxed{...} (braces balanced), if any.
bool LastBoxed(std::string_view p, std::string* out) {
  size_t pos = p.rfind("\\boxed{");
  if (pos == std::string_view::npos) return false;
  size_t i = pos + 7;
  int depth = 1;
  std::string content;
  for (; i < p.size(); ++i) {
    if (p[i] == '{') ++depth;
    if (p[i] == '}' && --depth == 0) break;
    content += p[i];
  }
  *out = Trim(content);
  return true;
}

// The text after the last "the answer is" / "answer:" (to the end of that
// line or sentence), if any.
bool LastAnswerPhrase(std::string_view p, std::string* out) {
  const std::string lower = Lower(p);
  size_t best = std::string::npos, best_end = 0;
  for (std::string_view key : {"the answer is", "answer is", "answer:"}) {
    size_t pos = lower.rfind(key);
    if (pos != std::string::npos && (best == std::string::npos || pos > best)) {
      best = pos;
      best_end = pos + key.size();
    }
  }
  if (best == std::string::npos) return false;
  std::string rest(p.substr(best_end));
  size_t nl = rest.find('\n');
  if (nl != std::string::npos) rest.resize(nl);
  rest = Trim(rest);
  if (!rest.empty() && rest.front() == ':') rest = Trim(rest.substr(1));
  // End at a sentence break ". " but keep decimals ("3.5").
  for (size_t i = 0; i + 1 < rest.size(); ++i)
    if (rest[i] == '.' && IsSpace(rest[i + 1])) {
      rest.resize(i);
      break;
    }
  while (!rest.empty() && (rest.back() == '.' || rest.back() == '!'))
    rest.pop_back();
  *out = Trim(rest);
  return !out->empty();
}

// The last option letter standing alone: not touching a letter or digit on
// either side. A lower-case letter does not count (it is usually a word).
bool LastLetter(std::string_view p, const Options& options, std::string* out) {
  for (size_t i = p.size(); i-- > 0;) {
    char c = p[i];
    if (options.count(c) == 0) continue;
    bool left_ok = i == 0 || !IsAlnum(p[i - 1]);
    bool right_ok = i + 1 >= p.size() || !IsAlnum(p[i + 1]);
    if (!left_ok || !right_ok) continue;
    // "A" as an English article ("A dog") is followed by a space and a word.
    if (c == 'A' || c == 'I') {
      size_t j = i + 1;
      if (j < p.size() && p[j] == ' ' && j + 1 < p.size() &&
          std::isalpha(static_cast<unsigned char>(p[j + 1])))
        continue;
    }
    *out = std::string(1, c);
    return true;
  }
  return false;
}

// The one option whose (normalised) text occurs as whole words in the
// prediction, if exactly one does.
bool OnlyOptionText(std::string_view p, const Options& options,
                    std::string* out) {
  const std::string hay = " " + NormalizeAnswer(p) + " ";
  int found = 0;
  char letter = 0;
  for (const auto& [l, text] : options) {
    std::string needle = NormalizeAnswer(text);
    if (needle.empty()) continue;
    if (hay.find(" " + needle + " ") != std::string::npos) {
      ++found;
      letter = l;
    }
  }
  if (found != 1) return false;
  *out = std::string(1, letter);
  return true;
}

// The last number in the prediction.
bool LastNumber(std::string_view p, std::string* out) {
  for (size_t i = p.size(); i-- > 0;) {
    if (!IsDigit(p[i])) continue;
    size_t end = i + 1, start = i;
    while (start > 0 && (IsDigit(p[start - 1]) ||
                         ((p[start - 1] == '.' || p[start - 1] == ',') &&
                          start >= 2 && IsDigit(p[start - 2]))))
      --start;
    if (start > 0 && p[start - 1] == '-') --start;
    *out = std::string(p.substr(start, end - start));
    return true;
  }
  return false;
}

}  // namespace

std::string NormalizeAnswer(std::string_view text) {
  std::string out;
  bool space = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (IsSpace(c)) {
      space = true;
      continue;
    }
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x80 && std::ispunct(u)) {
      const bool prev_digit = i > 0 && IsDigit(text[i - 1]);
      const bool next_digit = i + 1 < text.size() && IsDigit(text[i + 1]);
      const bool keep = ((c == '.' || c == ',') && prev_digit && next_digit) ||
                        (c == '-' && next_digit && !prev_digit);
      if (!keep) {
        space = true;
        continue;
      }
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += static_cast<char>(std::tolower(u));
  }
  return out;
}

bool ParseNumber(std::string_view text, double* out) {
  std::string s = Trim(text);
  if (!s.empty() && s[0] == '$') s.erase(s.begin());
  if (!s.empty() && s.back() == '%') s.pop_back();
  while (!s.empty() && s.back() == '.') s.pop_back();
  std::string digits;
  for (size_t i = 0; i < s.size(); ++i) {
    // Thousands separators: "1,000".
    if (s[i] == ',' && i > 0 && IsDigit(s[i - 1]) && i + 1 < s.size() &&
        IsDigit(s[i + 1]))
      continue;
    digits += s[i];
  }
  if (digits.empty()) return false;
  for (char c : digits)
    if (!(IsDigit(c) || c == '.' || c == '-' || c == '+' || c == 'e' ||
          c == 'E'))
      return false;
  char* end = nullptr;
  double v = std::strtod(digits.c_str(), &end);
  if (end != digits.c_str() + digits.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

ScoreResult ScorePrediction(std::string_view prediction,
                            std::string_view answer, const Options& options) {
  ScoreResult r;
  const std::string pred = Trim(prediction);
  if (pred.empty()) return r;
  // Stage 1: the whole prediction.
  if (Matches(pred, answer, options)) {
    r.hit = true;
    r.stage = "exact";
    r.extracted = pred;
    return r;
  }
  // Stages 2-5: the first stage that extracts a candidate decides.
  std::string cand;
  auto decide = [&](const char* stage) {
    r.stage = stage;
    r.extracted = cand;
    r.hit = Matches(cand, answer, options);
    return r;
  };
  if (LastBoxed(pred, &cand)) {
    // A boxed letter or phrase goes through the same comparisons.
    return decide("boxed");
  }
  if (LastAnswerPhrase(pred, &cand)) {
    // "The answer is (B) green": prefer a letter at the phrase's start.
    char l;
    std::string first = cand.substr(0, cand.find(' '));
    if (AsLetter(first, options, &l)) cand = std::string(1, l);
    return decide("phrase");
  }
  if (!options.empty() && (LastLetter(pred, options, &cand) ||
                           OnlyOptionText(pred, options, &cand)))
    return decide("option");
  if (LastNumber(pred, &cand)) return decide("number");
  return r;
}

}  // namespace dcvlr::eval
