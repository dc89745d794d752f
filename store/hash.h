// SHA-256 identities for stored objects.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "store/status.h"

namespace stashfs {

struct Hash {
  std::array<uint8_t, 32> bytes{};

  static Hash Of(std::span<const uint8_t> data);
  static Hash Of(std::string_view data);
  static Result<Hash> FromHex(std::string_view hex);
  static Hash FromBytes(const void* p) {
    Hash h;
    std::memcpy(h.bytes.data(), p, 32);
    return h;
  }
  std::string hex() const;
  std::string short_hex() const { return hex().substr(0, 12); }
  bool is_zero() const {
    for (uint8_t b : bytes)
      if (b) return false;
    return true;
  }
  auto operator<=>(const Hash&) const = default;
};

// Streaming SHA-256 (OpenSSL EVP; uses the CPU's SHA extensions where present).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  Hash finish();

 private:
  void* ctx_;  // EVP_MD_CTX*, kept opaque so OpenSSL headers stay out of ours
};

struct HashHasher {
  size_t operator()(const Hash& h) const {
    size_t v;
    std::memcpy(&v, h.bytes.data(), sizeof v);  // already uniformly distributed
    return v;
  }
};

}  // namespace stashfs
