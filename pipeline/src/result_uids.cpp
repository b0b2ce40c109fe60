// Deterministic UIDs for the result instances: a hash of what the instance is about under the configured root.
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "nephra/config/config.h"
#include "nephra/pipeline/results.h"

namespace nephra::pipeline {
namespace {

constexpr size_t kMaxUidLength = 64;
constexpr size_t kMinDigits = 20;  // about 66 bits: collisions stay out of reach for any archive
constexpr size_t kMaxDigits = 39;  // about 129 bits, more adds nothing

std::array<unsigned char, 32> sha256(const std::string& data) {
  std::array<unsigned char, 32> md{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr) != 1 || len != md.size()) {
    throw ResultError("SHA-256 failed");
  }
  return md;
}

// The digest as a decimal number, most significant digit first, without leading zeros.
std::string decimal(std::array<unsigned char, 32> number) {
  std::string digits;
  auto nonzero = [&] { return std::any_of(number.begin(), number.end(), [](unsigned char b) { return b != 0; }); };
  while (nonzero()) {
    unsigned int rem = 0;
    for (auto& byte : number) {
      const unsigned int cur = (rem << 8U) | byte;
      byte = static_cast<unsigned char>(cur / 10U);
      rem = cur % 10U;
    }
    digits += static_cast<char>('0' + rem);
  }
  std::reverse(digits.begin(), digits.end());
  return digits.empty() ? "0" : digits;
}

}  // namespace

bool is_valid_uid(std::string_view uid) { return config::is_valid_uid(uid, kMaxUidLength); }

std::string derive_uid(const std::string& root, std::initializer_list<std::string_view> parts) {
  if (!is_valid_uid(root)) throw ResultError("uid_root \"" + root + "\" is not a valid UID prefix");
  if (root.size() + 1 + kMinDigits > kMaxUidLength) {
    throw ResultError("uid_root \"" + root + "\" is too long: at most " +
                      std::to_string(kMaxUidLength - 1 - kMinDigits) + " characters");
  }
  // Length-prefixed, so that {"ab", "c"} and {"a", "bc"} hash differently.
  std::string message;
  for (const auto part : parts) {
    message += std::to_string(part.size());
    message += ':';
    message += part;
  }
  const size_t room = std::min(kMaxDigits, kMaxUidLength - root.size() - 1);
  return root + "." + decimal(sha256(message)).substr(0, room);
}

ResultContext make_result_context(const engine::Model& model, std::string uid_root, std::string software_version) {
  ResultContext ctx;
  ctx.uid_root = std::move(uid_root);
  ctx.software_version = std::move(software_version);
  ctx.model_name = model.name;
  ctx.model_version = model.version;
  ctx.model_sha256 = model.onnx_sha256;
  ctx.decision_key = model.decision_key;
  return ctx;
}

std::string sr_series_uid(const std::string& study_uid, const ResultContext& ctx) {
  return derive_uid(ctx.uid_root, {study_uid, ctx.model_sha256, "sr"});
}

std::string sr_instance_uid(const std::string& study_uid, const engine::StudyResult& study, const ResultContext& ctx) {
  std::string inputs;
  for (const auto& s : study.slices) {
    inputs += s.source.sop_instance_uid + "/" + std::to_string(s.source.frame) + ";";
  }
  inputs += "failed=" + std::to_string(study.failed);
  // the decision parameters change what the SR says, so they are part of which instance it is (the series stays)
  return derive_uid(ctx.uid_root, {study_uid, ctx.model_sha256, "sr", inputs, ctx.decision_key});
}

std::string sc_series_uid(const std::string& study_uid, const ResultContext& ctx) {
  return derive_uid(ctx.uid_root, {study_uid, ctx.model_sha256, "sc"});
}

std::string sc_instance_uid(const std::string& study_uid, const engine::SliceSource& source,
                            const std::string& class_name, const ResultContext& ctx) {
  return derive_uid(ctx.uid_root, {study_uid, ctx.model_sha256, ctx.decision_key, "sc", source.sop_instance_uid,
                                   std::to_string(source.frame), class_name});
}

}  // namespace nephra::pipeline
