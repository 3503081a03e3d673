// Benchmark TSV loading and prompts; see benchmark.h.
#include "worker/eval/benchmark.h"

#include <unordered_map>

#include "worker/eval/tsv.h"
#include "worker/trainer/base64.h"

namespace dcvlr::eval {
namespace {

// VLMEvalKit: an image cell of at most 64 characters names another row.
constexpr size_t kMaxReferenceLength = 64;

}  // namespace

bool DecodeBenchmarkImage(const std::vector<uint8_t>& bytes,
                          trainer::Image* out, std::string* error) {
  return trainer::DecodeImage(bytes, out, error);
}

bool LoadBenchmark(const BenchmarkSpec& spec, int image_size, int64_t max_rows,
                   const std::function<bool(int64_t row)>& keep_image,
                   Benchmark* out, std::string* error) {
  *out = Benchmark();
  out->spec = spec;
  TsvTable table;
  if (!ReadTsvFile(spec.path, &table, error)) return false;
  const std::string& file = spec.path;
  for (const char* required : {"index", "image", "question", "answer"})
    if (table.Column(required) < 0) {
      *error = file + ":1: missing required column \"" + required + "\"";
      return false;
    }
  const int c_index = table.Column("index"), c_image = table.Column("image"),
            c_question = table.Column("question"),
            c_answer = table.Column("answer"),
            c_category = table.Column("category"),
            c_hint = table.Column("hint");
  out->has_category = c_category >= 0;
  out->has_hint = c_hint >= 0;
  std::vector<std::pair<char, int>> option_cols;
  for (char l = 'A'; l <= 'Z'; ++l) {
    int c = table.Column(std::string(1, l));
    if (c >= 0) {
      option_cols.push_back({l, c});
      out->option_columns.push_back(l);
    }
  }
  int64_t rows = int64_t(table.rows.size());
  if (max_rows > 0 && max_rows < rows) rows = max_rows;

  // Index -> row, over the whole file: a kept row may share the image of a
  // row past max_rows.
  std::unordered_map<std::string, int64_t> row_of;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const std::string& idx = table.rows[r][c_index];
    auto where = [&](int64_t row) {
      return file + ":" + std::to_string(table.row_lines[row]) +
             ": column \"index\"";
    };
    if (idx.empty()) {
      *error = where(r) + ": empty index";
      return false;
    }
    auto [it, inserted] = row_of.emplace(idx, int64_t(r));
    if (!inserted) {
      *error = where(r) + ": index \"" + idx + "\" repeats line " +
               std::to_string(table.row_lines[it->second]);
      return false;
    }
  }

  out->items.reserve(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const auto& f = table.rows[r];
    const int64_t line = table.row_lines[r];
    auto fail = [&](const char* column, const std::string& msg) {
      *error = file + ":" + std::to_string(line) + ": column \"" + column +
               "\": " + msg;
      return false;
    };
    BenchmarkItem item;
    item.index = f[c_index];
    item.question = f[c_question];
    item.answer = f[c_answer];
    item.line = line;
    if (c_category >= 0) item.category = f[c_category];
    if (c_hint >= 0) item.hint = f[c_hint];
    // pandas reads the text "nan" in an optional cell as missing.
    if (item.hint == "nan" || item.hint == "NaN") item.hint.clear();
    for (auto [letter, c] : option_cols)
      if (!f[c].empty() && f[c] != "nan" && f[c] != "NaN")
        item.options[letter] = f[c];
    if (item.answer.empty()) return fail("answer", "empty answer");

    // The image, following at most one reference.
    const std::string* cell = &f[c_image];
    if (cell->empty()) return fail("image", "empty image");
    if (cell->size() <= kMaxReferenceLength) {
      auto it = row_of.find(*cell);
      if (it == row_of.end())
        return fail("image", "\"" + *cell +
                                 "\" is too short for an image and names no "
                                 "row's index");
      cell = &table.rows[it->second][c_image];
      if (cell->size() <= kMaxReferenceLength)
        return fail("image", "refers to index \"" + f[c_image] +
                                 "\", whose image is itself a reference");
    }
    auto bytes = trainer::Base64Decode(*cell);
    if (!bytes || bytes->empty()) return fail("image", "not valid base64");
    trainer::Image image;
    std::string why;
    if (!DecodeBenchmarkImage(*bytes, &image, &why))
      return fail("image", "cannot decode the image: " + why);
    if (keep_image && keep_image(r)) {
      item.image = (image.width == image_size && image.height == image_size)
                       ? std::move(image)
                       : trainer::Resize(image, image_size, image_size);
    }
    out->items.push_back(std::move(item));
  }
  return true;
}

std::string BuildPrompt(const BenchmarkItem& item, PromptStyle style) {
  std::string p;
  if (style == PromptStyle::kInline) {
    if (!item.hint.empty()) p += item.hint + "\n";
    p += item.question;
    for (const auto& [letter, text] : item.options)
      p += std::string(" ") + letter + ":" + text;
    return p;
  }
  // VLMEvalKit's ImageMCQDataset.build_prompt.
  if (!item.hint.empty()) p += "Hint: " + item.hint + "\n";
  p += "Question: " + item.question + "\n";
  if (!item.options.empty()) {
    p += "Options:\n";
    for (const auto& [letter, text] : item.options)
      p += std::string(1, letter) + ". " + text + "\n";
    p += "Please select the correct answer from the options above. \n";
  }
  return p;
}

}  // namespace dcvlr::eval
