// Splits a file that grows (a job's metrics file) into lines as its bytes
// arrive: linear in the bytes fed, and holding at most max_line bytes of a
// line not yet complete. A longer line is skipped whole, however long it
// grows, and counted: a job cannot make the agent buffer or rescan it.
#ifndef DCVLR_WORKER_AGENT_LINE_SPLITTER_H_
#define DCVLR_WORKER_AGENT_LINE_SPLITTER_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace dcvlr {

// Metrics lines longer than this are skipped (a metrics line is a JSON
// object of a few numbers).
inline constexpr size_t kMaxMetricsLineBytes = 64 * 1024;

class LineSplitter {
 public:
  explicit LineSplitter(size_t max_line = kMaxMetricsLineBytes)
      : max_line_(max_line) {}

  // Calls on_line(std::string_view) for every line that `data` completes,
  // without its '\n'.
  template <typename OnLine>
  void Feed(std::string_view data, OnLine&& on_line) {
    size_t begin = 0;
    while (begin < data.size()) {
      const void* found =
          memchr(data.data() + begin, '\n', data.size() - begin);
      if (found == nullptr) break;
      const size_t newline = static_cast<const char*>(found) - data.data();
      const std::string_view piece = data.substr(begin, newline - begin);
      begin = newline + 1;
      if (skipping_) {
        skipping_ = false;
      } else if (partial_.size() + piece.size() > max_line_) {
        partial_.clear();
        ++skipped_;
      } else if (partial_.empty()) {
        on_line(piece);
      } else {
        partial_.append(piece);
        on_line(std::string_view(partial_));
        partial_.clear();
      }
    }
    const std::string_view rest = data.substr(begin);
    if (skipping_ || rest.empty()) return;
    if (partial_.size() + rest.size() > max_line_) {
      partial_.clear();
      skipping_ = true;  // until the line's newline
      ++skipped_;
    } else {
      partial_.append(rest);
    }
  }

  // Lines skipped for being longer than max_line.
  int64_t skipped() const { return skipped_; }
  // Bytes held of the line not yet complete.
  size_t pending_bytes() const { return partial_.size(); }

 private:
  const size_t max_line_;
  std::string partial_;
  bool skipping_ = false;
  int64_t skipped_ = 0;
};

}  // namespace dcvlr

#endif  // DCVLR_WORKER_AGENT_LINE_SPLITTER_H_
