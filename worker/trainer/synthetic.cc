// Synthetic shapes generator; see synthetic.h.
#include "worker/trainer/synthetic.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "worker/trainer/base64.h"

namespace dcvlr::trainer {
namespace {

constexpr int kSize = 32;
constexpr int kCell = 8;  // shapes sit in a 4x4 grid of 8px cells
const char* const kColorNames[4] = {"red", "green", "blue", "yellow"};
constexpr uint8_t kColors[4][3] = {
    {220, 30, 30}, {30, 170, 40}, {40, 60, 220}, {230, 200, 20}};
const char* const kShapeNames[3] = {"circle", "square", "triangle"};

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {  // splitmix64
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  int Uniform(int n) { return static_cast<int>(Next() % uint64_t(n)); }

 private:
  uint64_t state_;
};

struct Shape {
  int kind, color, cx, cy, r;
};

void Draw(Image* img, const Shape& s) {
  for (int y = s.cy - s.r; y <= s.cy + s.r; ++y)
    for (int x = s.cx - s.r; x <= s.cx + s.r; ++x) {
      if (x < 0 || y < 0 || x >= kSize || y >= kSize) continue;
      int dx = x - s.cx, dy = y - s.cy;
      bool in = s.kind == 0   ? dx * dx + dy * dy <= s.r * s.r + s.r
                : s.kind == 1 ? true
                              : 2 * std::abs(dx) <= dy + s.r;
      if (!in) continue;
      for (int c = 0; c < 3; ++c)
        img->rgb[(y * kSize + x) * 3 + c] = kColors[s.color][c];
    }
}

// Picks `n` distinct cells of the 4x4 grid.
std::vector<int> PickCells(Rng* rng, int n) {
  std::vector<int> cells(16);
  for (int i = 0; i < 16; ++i) cells[i] = i;
  for (int i = 0; i < n; ++i)
    std::swap(cells[i], cells[i + rng->Uniform(16 - i)]);
  cells.resize(n);
  return cells;
}

// A shape filling most of its cell, so each of tiny-vlm's 16 image tokens
// (one per 8x8 cell after the 2x2 merge) sees at most one whole shape.
Shape InCell(int cell, int kind, int color) {
  return {kind, color, (cell % 4) * kCell + 4, (cell / 4) * kCell + 4, 3};
}

}  // namespace

std::string SyntheticExample::Question() const {
  std::string q = stem;
  for (int i = 0; i < 4; ++i)
    q += std::string(" ") + char('A' + i) + ":" + options[i];
  return q;
}

SyntheticExample GenerateSynthetic(const std::string& split, uint64_t seed,
                                   int64_t index) {
  uint64_t stream = split == "train" ? 0x7472ull : 0x7465ull;
  Rng rng(seed * 0x100000001b3ull ^ (stream << 48) ^
          uint64_t(index) * 0x9e3779b97f4a7c15ull);
  rng.Next();
  SyntheticExample ex;
  ex.image.width = ex.image.height = kSize;
  // A pale background whose tint varies, so colour is not the only signal.
  int bg = 235 + rng.Uniform(20);
  ex.image.rgb.assign(kSize * kSize * 3, static_cast<uint8_t>(bg));
  int type = rng.Uniform(4);
  std::vector<Shape> shapes;
  if (type == 0) {
    // Colour of a lone shape (naming its kind; one shape keeps the task
    // learnable by tiny-vlm within the demo's few minutes on two CPU cores).
    int n = 1;
    int first_kind = rng.Uniform(3);
    std::vector<int> cells = PickCells(&rng, n);
    for (int i = 0; i < n; ++i)
      shapes.push_back(InCell(cells[i], (first_kind + i) % 3, rng.Uniform(4)));
    const Shape& target = shapes[rng.Uniform(n)];
    ex.category = "color";
    ex.stem = std::string("Color of the ") + kShapeNames[target.kind] + "?";
    for (int i = 0; i < 4; ++i) ex.options[i] = kColorNames[i];
    ex.answer = target.color;
  } else if (type == 1) {
    int n = 1 + rng.Uniform(4);
    std::vector<int> cells = PickCells(&rng, n);
    for (int i = 0; i < n; ++i)
      shapes.push_back(InCell(cells[i], rng.Uniform(3), rng.Uniform(4)));
    ex.category = "count";
    ex.stem = "How many shapes?";
    for (int i = 0; i < 4; ++i) ex.options[i] = std::to_string(i + 1);
    ex.answer = n - 1;
  } else if (type == 2) {
    // One shape in a middle cell of the left or right column, or of the top
    // or bottom row.
    int where = rng.Uniform(4);
    int kind = rng.Uniform(3);
    int mid = 1 + rng.Uniform(2);
    int col = where == 0 ? 0 : where == 1 ? 3 : mid;
    int row = where == 2 ? 0 : where == 3 ? 3 : mid;
    shapes.push_back(InCell(row * 4 + col, kind, rng.Uniform(4)));
    ex.category = "position";
    ex.stem = std::string("Where is the ") + kShapeNames[kind] + "?";
    const char* names[4] = {"left", "right", "top", "bottom"};
    for (int i = 0; i < 4; ++i) ex.options[i] = names[i];
    ex.answer = where;
  } else {
    // Which colour has the most shapes; the winner is unique by construction.
    int winner = rng.Uniform(4);
    int top = 2 + rng.Uniform(2);  // the winner's count; the total stays <= 6
    std::vector<int> counts(4, 0);
    counts[winner] = top;
    int total = top;
    for (int c = 0; c < 4; ++c)
      if (c != winner && total < 6) {
        counts[c] = std::min(rng.Uniform(top), 6 - total);
        total += counts[c];
      }
    std::vector<int> cells = PickCells(&rng, total);
    int k = 0;
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < counts[c]; ++i)
        shapes.push_back(InCell(cells[k++], rng.Uniform(3), c));
    ex.category = "comparison";
    ex.stem = "Most common color?";
    for (int i = 0; i < 4; ++i) ex.options[i] = kColorNames[i];
    ex.answer = winner;
  }
  for (const Shape& s : shapes) Draw(&ex.image, s);
  return ex;
}

namespace {
bool WriteAtomically(const std::string& path,
                     const std::function<void(std::ofstream&)>& body,
                     std::string* error) {
  std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      *error = tmp + ": cannot write";
      return false;
    }
    body(out);
    if (!out.flush()) {
      *error = tmp + ": write failed";
      return false;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    *error = path + ": " + ec.message();
    return false;
  }
  return true;
}
}  // namespace

bool WriteSyntheticJsonl(const std::string& path, const std::string& split,
                         uint64_t seed, int64_t count, std::string* error) {
  return WriteAtomically(
      path,
      [&](std::ofstream& out) {
        for (int64_t i = 0; i < count; ++i) {
          SyntheticExample ex = GenerateSynthetic(split, seed, i);
          nlohmann::json row = {{"image", Base64Encode(EncodePng(ex.image))},
                                {"question", ex.Question()},
                                {"answer", ex.AnswerText()},
                                {"answer_letter", ex.AnswerLetter()},
                                {"category", ex.category}};
          out << row.dump() << '\n';
        }
      },
      error);
}

bool WriteSyntheticTsv(const std::string& path, const std::string& split,
                       uint64_t seed, int64_t count, std::string* error) {
  return WriteAtomically(
      path,
      [&](std::ofstream& out) {
        out << "index\timage\tquestion\tA\tB\tC\tD\tanswer\tcategory\n";
        for (int64_t i = 0; i < count; ++i) {
          SyntheticExample ex = GenerateSynthetic(split, seed, i);
          out << i << '\t' << Base64Encode(EncodePng(ex.image)) << '\t'
              << ex.stem;
          for (const auto& o : ex.options) out << '\t' << o;
          out << '\t' << ex.AnswerLetter() << '\t' << ex.category << '\n';
        }
      },
      error);
}

}  // namespace dcvlr::trainer
