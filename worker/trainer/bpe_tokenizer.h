// Hugging Face tokenizer.json byte-level BPE, as Qwen2 / Qwen2.5 (and GPT-2
// style models) define it: added and special tokens matched first (longest
// match wins) and never split, NFC normalisation of the text between them,
// the pre-tokenizer's split regex (Qwen2's, read from the file), byte-level
// mapping, then merges by rank. Token ids are uint32.
//
// Supported tokenizer.json shapes: model BPE without dropout or byte
// fallback; normalizer null or NFC; pre_tokenizer ByteLevel (with its
// built-in GPT-2 regex) or a Sequence of Split (Regex, Isolated) and
// ByteLevel without regex. Anything else is an error naming the key.
//
// Thread-safe after Load.
#ifndef DCVLR_WORKER_TRAINER_BPE_TOKENIZER_H_
#define DCVLR_WORKER_TRAINER_BPE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dcvlr::trainer {

class BpeTokenizer {
 public:
  // `path` is a tokenizer.json or a directory holding one. Null with an
  // error when it cannot be read or is not a supported tokenizer (and in
  // builds without ICU, which the Unicode steps need).
  static std::unique_ptr<BpeTokenizer> Load(const std::string& path,
                                            std::string* error);
  ~BpeTokenizer();

  // Token ids of UTF-8 `text`; special tokens in the text are recognised.
  // Invalid UTF-8 is replaced by U+FFFD first, as Python's decoding would.
  std::vector<uint32_t> Encode(std::string_view text) const;
  // Text of `ids`; special tokens are dropped with skip_special. Ids past
  // the vocabulary are skipped.
  std::string Decode(const std::vector<uint32_t>& ids,
                     bool skip_special = false) const;

  std::optional<uint32_t> TokenId(std::string_view token) const;
  // Every id up to the largest, added tokens included.
  uint32_t vocab_size() const;

 private:
  BpeTokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_BPE_TOKENIZER_H_
