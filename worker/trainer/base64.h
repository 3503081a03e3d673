// Base64 (RFC 4648, standard alphabet) for images embedded in JSONL rows and
// in the VLMEvalKit TSV the synthetic generator writes.
#ifndef DCVLR_WORKER_TRAINER_BASE64_H_
#define DCVLR_WORKER_TRAINER_BASE64_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dcvlr::trainer {

std::string Base64Encode(const std::vector<uint8_t>& bytes);

// Returns nullopt on characters outside the alphabet. Whitespace is skipped
// and padding is optional, as data-URL and dataset encoders vary.
std::optional<std::vector<uint8_t>> Base64Decode(std::string_view text);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_BASE64_H_
