#include "store/hash.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>

namespace stashfs {

namespace {
constexpr char kHexDigits[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
// OpenSSL's SHA-256 fails only when it cannot allocate a context or libcrypto is broken. No
// caller could go on: a content-addressed store without its hash can neither name what it writes
// nor verify what it reads, and a made-up digest would silently corrupt the catalog. So this is
// not a Status (nothing could handle it) and not an exception (nothing throws across store and
// fs): the process stops with one line saying why.
[[noreturn]] void HashUnavailable(const char* what) {
  std::fprintf(stderr,
               "stashfs: fatal: OpenSSL SHA-256 failed in %s (out of memory, or a broken "
               "libcrypto); reinstall libssl3\n",
               what);
  std::abort();
}
}  // namespace

Hash Hash::Of(std::span<const uint8_t> data) {
  Hash h;
  unsigned int len = 0;
  // EVP_Digest fetches the implementation each call; cheap next to hashing even 100-byte objects.
  if (EVP_Digest(data.data(), data.size(), h.bytes.data(), &len, EVP_sha256(), nullptr) != 1)
    HashUnavailable("EVP_Digest");
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
    HashUnavailable("EVP_DigestInit_ex");
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void Sha256::update(const void* data, size_t n) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n) != 1)
    HashUnavailable("EVP_DigestUpdate");
}

Hash Sha256::finish() {
  Hash h;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), h.bytes.data(), &len) != 1)
    HashUnavailable("EVP_DigestFinal_ex");
  return h;
}

}  // namespace stashfs
