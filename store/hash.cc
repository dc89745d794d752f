#include "store/hash.h"

#include <openssl/evp.h>

#include <stdexcept>

namespace stashfs {

namespace {
constexpr char kHexDigits[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

Hash Hash::Of(std::span<const uint8_t> data) {
  Hash h;
  unsigned int len = 0;
  // EVP_Digest fetches the implementation each call; cheap next to hashing even 100-byte objects.
  if (EVP_Digest(data.data(), data.size(), h.bytes.data(), &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("EVP_Digest(sha256) failed");
  return h;
}

Hash Hash::Of(std::string_view data) {
  return Of(std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

Result<Hash> Hash::FromHex(std::string_view hex) {
  if (hex.size() != 64)
    return Status::Invalid("a SHA-256 is 64 hex digits, got '" + std::string(hex) + "'");
  Hash h;
  for (size_t i = 0; i < 32; ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::Invalid("not a hex digest: '" + std::string(hex) + "'");
    h.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return h;
}

std::string Hash::hex() const {
  std::string s(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    s[2 * i] = kHexDigits[bytes[i] >> 4];
    s[2 * i + 1] = kHexDigits[bytes[i] & 15];
  }
  return s;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("EVP_DigestInit(sha256) failed");
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void Sha256::update(const void* data, size_t n) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n);
}

Hash Sha256::finish() {
  Hash h;
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), h.bytes.data(), &len);
  return h;
}

}  // namespace stashfs
