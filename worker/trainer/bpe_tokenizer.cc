// Byte-level BPE from tokenizer.json; see bpe_tokenizer.h.
#include "worker/trainer/bpe_tokenizer.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <climits>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "worker/trainer/hf_checkpoint.h"

#ifdef DCVLR_WITH_ICU
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>
#endif

namespace dcvlr::trainer {

#ifdef DCVLR_WITH_ICU
namespace {

using nlohmann::json;

// GPT-2's byte-to-character table: printable bytes map to themselves, the
// rest to U+0100 onwards, so that every byte is a visible character.
std::array<std::string, 256> ByteToSymbol() {
  std::array<int, 256> cp{};
  std::array<bool, 256> direct{};
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  int next = 256;
  for (int b = 0; b < 256; ++b) cp[b] = direct[b] ? b : next++;
  std::array<std::string, 256> out;
  for (int b = 0; b < 256; ++b) {
    icu::UnicodeString(static_cast<UChar32>(cp[b])).toUTF8String(out[b]);
  }
  return out;
}

constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|"
    "\\s+(?!\\S)|\\s+";

// Length in bytes of the UTF-8 sequence starting with `c` (1 for a stray
// continuation byte, which the caller then treats as one symbol).
int Utf8Length(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 1;
}

}  // namespace

struct BpeTokenizer::Impl {
  std::unordered_map<std::string, uint32_t> vocab;
  std::vector<std::string> id_to_token;  // "" where no token has the id
  std::unordered_map<std::string, int> merge_rank;  // "left right" -> rank
  struct Added {
    std::string content;
    uint32_t id;
    bool special;
  };
  std::vector<Added> added;                          // longest first
  std::unordered_map<uint32_t, size_t> added_by_id;  // id -> index in added
  std::array<bool, 256> added_first{};  // bytes an added token starts with
  bool nfc = false;
  bool add_prefix_space = false;
  std::unique_ptr<icu::RegexPattern> split;
  const icu::Normalizer2* normalizer = nullptr;
  std::array<std::string, 256> byte_to_symbol;
  std::unordered_map<std::string, unsigned char> symbol_to_byte;

  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<uint32_t>> cache;

  void EncodeWord(const std::string& word, std::vector<uint32_t>* out) const;
  void EncodeSegment(const std::string& text, std::vector<uint32_t>* out) const;
};

// BPE of one pre-tokenized word (already byte-mapped): repeatedly merge the
// adjacent pair of lowest rank, every non-overlapping occurrence left to
// right.
void BpeTokenizer::Impl::EncodeWord(const std::string& word,
                                    std::vector<uint32_t>* out) const {
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(word);
    if (it != cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<std::string> parts;
  for (size_t i = 0; i < word.size();) {
    size_t n = std::min<size_t>(Utf8Length(word[i]), word.size() - i);
    parts.push_back(word.substr(i, n));
    i += n;
  }
  std::string key;
  while (parts.size() > 1) {
    int best = INT_MAX;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      key.assign(parts[i]).append(" ").append(parts[i + 1]);
      auto it = merge_rank.find(key);
      if (it != merge_rank.end() && it->second < best) best = it->second;
    }
    if (best == INT_MAX) break;
    std::vector<std::string> merged;
    merged.reserve(parts.size());
    for (size_t i = 0; i < parts.size();) {
      if (i + 1 < parts.size()) {
        key.assign(parts[i]).append(" ").append(parts[i + 1]);
        auto it = merge_rank.find(key);
        if (it != merge_rank.end() && it->second == best) {
          merged.push_back(parts[i] + parts[i + 1]);
          i += 2;
          continue;
        }
      }
      merged.push_back(std::move(parts[i]));
      ++i;
    }
    parts = std::move(merged);
  }
  std::vector<uint32_t> ids;
  for (const std::string& p : parts) {
    auto it = vocab.find(p);
    // Every byte symbol is in a byte-level vocabulary; a part missing from
    // it means a broken file, and is dropped like an unknown token.
    if (it != vocab.end()) ids.push_back(it->second);
  }
  out->insert(out->end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mu);
  if (cache.size() > 200000) cache.clear();
  cache.emplace(word, std::move(ids));
}

// Text between added tokens: normalise, split by the regex (matches and the
// gaps between them are words), byte-map each word, BPE it.
void BpeTokenizer::Impl::EncodeSegment(const std::string& text,
                                       std::vector<uint32_t>* out) const {
  if (text.empty()) return;
  UErrorCode status = U_ZERO_ERROR;
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(text);
  if (nfc) {
    icu::UnicodeString n = normalizer->normalize(u, status);
    if (U_SUCCESS(status)) u = n;
    status = U_ZERO_ERROR;
  }
  if (add_prefix_space && !u.isEmpty() && u.charAt(0) != u' ')
    u.insert(0, u' ');
  auto emit = [&](int32_t a, int32_t b) {
    if (a >= b) return;
    std::string piece, mapped;
    u.tempSubStringBetween(a, b).toUTF8String(piece);
    for (unsigned char c : piece) mapped += byte_to_symbol[c];
    EncodeWord(mapped, out);
  };
  std::unique_ptr<icu::RegexMatcher> m(split->matcher(u, status));
  int32_t last = 0;
  while (U_SUCCESS(status) && m->find(status)) {
    int32_t s = m->start(status), e = m->end(status);
    if (e == s) continue;
    emit(last, s);
    emit(s, e);
    last = e;
  }
  emit(last, u.length());
}

BpeTokenizer::BpeTokenizer() : impl_(std::make_unique<Impl>()) {}
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::Load(const std::string& path,
                                                 std::string* error) {
  // Qwen's is 11 MB; the bound only keeps a wrong file from costing much.
  std::string file, text;
  if (!ReadCheckpointFile(path, "tokenizer.json", size_t{256} << 20, &file,
                          &text, error))
    return nullptr;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    *error = file + ": not valid JSON (" + e.what() + ")";
    return nullptr;
  }
  auto fail = [&](const std::string& key, const std::string& what) {
    *error = file + ": key '" + key + "': " + what;
    return nullptr;
  };
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  Impl& t = *tok->impl_;
  std::string pattern;
  try {
    const json& model = j.at("model");
    if (model.value("type", "") != "BPE")
      return fail("model.type", "only BPE is supported");
    if (model.contains("dropout") && !model["dropout"].is_null())
      return fail("model.dropout", "BPE dropout is not supported");
    if (model.value("byte_fallback", false))
      return fail("model.byte_fallback", "byte fallback is not supported");
    for (const auto& [token, id] : model.at("vocab").items()) {
      if (!id.is_number_unsigned())
        return fail("model.vocab." + token, "id must be an integer >= 0");
      uint32_t i = id.get<uint32_t>();
      t.vocab[token] = i;
      if (i >= t.id_to_token.size()) t.id_to_token.resize(i + 1);
      t.id_to_token[i] = token;
    }
    int rank = 0;
    for (const json& m : model.at("merges")) {
      std::string key;
      if (m.is_string()) {
        key = m.get<std::string>();
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() &&
                 m[1].is_string()) {
        key = m[0].get<std::string>() + " " + m[1].get<std::string>();
      } else {
        return fail("model.merges[" + std::to_string(rank) + "]",
                    "want \"a b\" or [\"a\", \"b\"]");
      }
      t.merge_rank.emplace(key, rank++);
    }
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& a : j["added_tokens"]) {
        Impl::Added added{a.at("content").get<std::string>(),
                          a.at("id").get<uint32_t>(),
                          a.value("special", false)};
        if (added.content.empty()) continue;
        if (added.id >= t.id_to_token.size())
          t.id_to_token.resize(added.id + 1);
        t.id_to_token[added.id] = added.content;
        t.vocab[added.content] = added.id;
        t.added.push_back(std::move(added));
      }
    }
    std::stable_sort(t.added.begin(), t.added.end(),
                     [](const Impl::Added& a, const Impl::Added& b) {
                       return a.content.size() > b.content.size();
                     });
    for (size_t i = 0; i < t.added.size(); ++i) {
      t.added_by_id[t.added[i].id] = i;
      t.added_first[static_cast<unsigned char>(t.added[i].content[0])] = true;
    }

    const json& norm = j.contains("normalizer") ? j["normalizer"] : json();
    if (!norm.is_null()) {
      if (norm.value("type", "") != "NFC")
        return fail("normalizer.type", "only NFC (or null) is supported, not " +
                                           norm.value("type", "?"));
      t.nfc = true;
    }
    const json& pre = j.at("pre_tokenizer");
    auto byte_level = [&](const json& p, bool regex_allowed) -> bool {
      if (p.value("type", "") != "ByteLevel") return false;
      t.add_prefix_space = p.value("add_prefix_space", false);
      if (p.value("use_regex", true)) {
        if (!regex_allowed) return false;
        pattern = kGpt2Pattern;
      }
      return true;
    };
    if (pre.value("type", "") == "Sequence") {
      const json& seq = pre.at("pretokenizers");
      if (seq.size() != 2 || seq[0].value("type", "") != "Split" ||
          !seq[0].contains("pattern") || !seq[0]["pattern"].contains("Regex") ||
          seq[0].value("behavior", "") != "Isolated" ||
          seq[0].value("invert", false) || !byte_level(seq[1], false))
        return fail("pre_tokenizer",
                    "want [Split(Regex, Isolated), ByteLevel(use_regex: "
                    "false)]");
      pattern = seq[0]["pattern"]["Regex"].get<std::string>();
    } else if (!byte_level(pre, true)) {
      return fail("pre_tokenizer.type",
                  "want ByteLevel or Sequence[Split, ByteLevel]");
    }
  } catch (const json::exception& e) {
    *error = file + ": not a supported tokenizer.json (" + e.what() + ")";
    return nullptr;
  }

  UErrorCode status = U_ZERO_ERROR;
  UParseError perr;
  t.split.reset(icu::RegexPattern::compile(
      icu::UnicodeString::fromUTF8(pattern), 0, perr, status));
  if (U_FAILURE(status))
    return fail("pre_tokenizer.pretokenizers[0].pattern.Regex",
                std::string("does not compile: ") + u_errorName(status) +
                    " at offset " + std::to_string(perr.offset));
  t.normalizer = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) {
    *error =
        std::string("ICU NFC normaliser unavailable: ") + u_errorName(status);
    return nullptr;
  }
  t.byte_to_symbol = ByteToSymbol();
  for (int b = 0; b < 256; ++b)
    t.symbol_to_byte[t.byte_to_symbol[b]] = static_cast<unsigned char>(b);
  return tok;
}

std::vector<uint32_t> BpeTokenizer::Encode(std::string_view text) const {
  const Impl& t = *impl_;
  std::vector<uint32_t> out;
  size_t segment = 0;
  for (size_t i = 0; i < text.size();) {
    const Impl::Added* hit = nullptr;
    if (t.added_first[static_cast<unsigned char>(text[i])]) {
      for (const Impl::Added& a : t.added) {
        if (text.compare(i, a.content.size(), a.content) == 0) {
          hit = &a;  // longest first
          break;
        }
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    t.EncodeSegment(std::string(text.substr(segment, i - segment)), &out);
    out.push_back(hit->id);
    i += hit->content.size();
    segment = i;
  }
  t.EncodeSegment(std::string(text.substr(segment)), &out);
  return out;
}

std::string BpeTokenizer::Decode(const std::vector<uint32_t>& ids,
                                 bool skip_special) const {
  const Impl& t = *impl_;
  std::string out;
  for (uint32_t id : ids) {
    if (id >= t.id_to_token.size()) continue;
    auto added = t.added_by_id.find(id);
    if (added != t.added_by_id.end()) {
      if (!(skip_special && t.added[added->second].special))
        out += t.added[added->second].content;
      continue;
    }
    const std::string& token = t.id_to_token[id];
    for (size_t i = 0; i < token.size();) {
      size_t n = std::min<size_t>(Utf8Length(token[i]), token.size() - i);
      auto it = t.symbol_to_byte.find(token.substr(i, n));
      if (it != t.symbol_to_byte.end()) out += static_cast<char>(it->second);
      i += n;
    }
  }
  return out;
}

std::optional<uint32_t> BpeTokenizer::TokenId(std::string_view token) const {
  auto it = impl_->vocab.find(std::string(token));
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

uint32_t BpeTokenizer::vocab_size() const {
  return static_cast<uint32_t>(impl_->id_to_token.size());
}

#else  // !DCVLR_WITH_ICU

struct BpeTokenizer::Impl {};
BpeTokenizer::BpeTokenizer() = default;
BpeTokenizer::~BpeTokenizer() = default;
std::unique_ptr<BpeTokenizer> BpeTokenizer::Load(const std::string& path,
                                                 std::string* error) {
  *error = path +
           ": this build has no ICU (libicu-dev), which tokenizer.json "
           "tokenizers need";
  return nullptr;
}
std::vector<uint32_t> BpeTokenizer::Encode(std::string_view) const {
  return {};
}
std::string BpeTokenizer::Decode(const std::vector<uint32_t>&, bool) const {
  return {};
}
std::optional<uint32_t> BpeTokenizer::TokenId(std::string_view) const {
  return std::nullopt;
}
uint32_t BpeTokenizer::vocab_size() const { return 0; }

#endif  // DCVLR_WITH_ICU

}  // namespace dcvlr::trainer
