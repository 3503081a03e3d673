// TSV reading and writing; see tsv.h.
#include "worker/eval/tsv.h"

#include <fstream>
#include <sstream>

namespace dcvlr::eval {

int TsvTable::Column(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return int(i);
  return -1;
}

bool ParseTsv(std::string_view text, const std::string& source, TsvTable* out,
              std::string* error) {
  *out = TsvTable();
  // A UTF-8 byte order mark is not part of the first column's name.
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  size_t i = 0;
  int64_t line = 1;
  bool first = true;
  while (i < text.size()) {
    const int64_t start_line = line;
    std::vector<std::string> fields;
    std::string field;
    bool end_of_record = false;
    while (!end_of_record) {
      field.clear();
      if (i < text.size() && text[i] == '"') {
        // Quoted field: runs to the closing quote; "" is a literal quote.
        ++i;
        bool closed = false;
        while (i < text.size()) {
          char c = text[i++];
          if (c == '"') {
            if (i < text.size() && text[i] == '"') {
              field += '"';
              ++i;
            } else {
              closed = true;
              break;
            }
          } else {
            if (c == '\n') ++line;
            field += c;
          }
        }
        if (!closed) {
          *error = source + ":" + std::to_string(start_line) + ": column " +
                   std::to_string(fields.size() + 1) +
                   ": quoted field is not closed before the end of the file";
          return false;
        }
        // Text after the closing quote (pandas keeps it) up to the separator.
        while (i < text.size() && text[i] != '\t' && text[i] != '\n') {
          if (text[i] != '\r') field += text[i];
          ++i;
        }
      } else {
        size_t end = i;
        while (end < text.size() && text[end] != '\t' && text[end] != '\n')
          ++end;
        field.assign(text.substr(i, end - i));
        if (!field.empty() && field.back() == '\r') field.pop_back();
        i = end;
      }
      fields.push_back(field);
      if (i >= text.size()) {
        end_of_record = true;
      } else if (text[i] == '\t') {
        ++i;
      } else {  // '\n'
        ++i;
        ++line;
        end_of_record = true;
      }
    }
    // Blank lines are skipped, as pandas does.
    if (fields.size() == 1 && fields[0].empty()) continue;
    if (first) {
      out->header = std::move(fields);
      first = false;
      continue;
    }
    if (fields.size() != out->header.size()) {
      *error = source + ":" + std::to_string(start_line) + ": row has " +
               std::to_string(fields.size()) + " fields, the header has " +
               std::to_string(out->header.size());
      return false;
    }
    out->rows.push_back(std::move(fields));
    out->row_lines.push_back(start_line);
  }
  if (first) {
    *error = source + ": empty file (no header line)";
    return false;
  }
  return true;
}

bool ReadTsvFile(const std::string& path, TsvTable* out, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open";
    return false;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  if (in.bad()) {
    *error = path + ": read failed";
    return false;
  }
  return ParseTsv(buf.str(), path, out, error);
}

std::string TsvField(std::string_view value) {
  if (value.find_first_of("\t\n\r\"") == std::string_view::npos)
    return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string TsvLine(const std::vector<std::string>& fields) {
  std::string out;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) out += '\t';
    out += TsvField(fields[i]);
  }
  out += '\n';
  return out;
}

}  // namespace dcvlr::eval
