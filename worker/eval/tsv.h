// Tab-separated tables as VLMEvalKit reads and writes them (pandas' default
// dialect with sep='\t'): the first line is the header; a field may be
// double-quoted, in which case it may hold tabs, newlines and doubled quotes
// (""). Lines may end in \r\n.
#ifndef DCVLR_WORKER_EVAL_TSV_H_
#define DCVLR_WORKER_EVAL_TSV_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dcvlr::eval {

struct TsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // each has header.size() fields
  std::vector<int64_t> row_lines;  // 1-based line where each row starts

  // Index of column `name` in the header, or -1.
  int Column(std::string_view name) const;
};

// Parses `text`; `source` names it in errors ("FILE:LINE: ...").
bool ParseTsv(std::string_view text, const std::string& source, TsvTable* out,
              std::string* error);
bool ReadTsvFile(const std::string& path, TsvTable* out, std::string* error);

// One field as pandas would write it: quoted when it holds a tab, newline,
// carriage return or quote.
std::string TsvField(std::string_view value);
// Fields joined by tabs, ending in a newline.
std::string TsvLine(const std::vector<std::string>& fields);

}  // namespace dcvlr::eval

#endif  // DCVLR_WORKER_EVAL_TSV_H_
