// Little helpers for the canonical binary encodings of stored objects: LEB128 varints and
// length-prefixed strings. Decoding is bounds-checked; a short or malformed input is Corruption.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "store/hash.h"
#include "store/status.h"

namespace stashfs {

class Encoder {
 public:
  void u8(uint8_t v) { out_.push_back(v); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<uint8_t>(v | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<uint8_t>(v));
  }
  // Zig-zag so small negative numbers (pre-1970 timestamps) stay short.
  void svarint(int64_t v) {
    varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
  }
  void bytes(std::string_view s) {
    varint(s.size());
    raw(s.data(), s.size());
  }
  void hash(const Hash& h) { raw(h.bytes.data(), h.bytes.size()); }
  void raw(const void* p, size_t n) {
    auto* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  std::vector<uint8_t>& out() { return out_; }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

class Decoder {
 public:
  explicit Decoder(std::span<const uint8_t> in) : p_(in.data()), end_(in.data() + in.size()) {}
  bool done() const { return p_ == end_; }
  bool failed() const { return failed_; }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

  uint8_t u8() {
    if (p_ >= end_) return Fail(), 0;
    return *p_++;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) return Fail(), 0;
      uint8_t b = *p_++;
      v |= uint64_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) return v;
    }
    return Fail(), 0;
  }
  int64_t svarint() {
    uint64_t v = varint();
    return static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1));
  }
  std::string bytes(size_t limit = SIZE_MAX) {
    uint64_t n = varint();
    if (failed_ || n > remaining() || n > limit) return Fail(), std::string();
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  Hash hash() {
    if (remaining() < 32) return Fail(), Hash{};
    Hash h = Hash::FromBytes(p_);
    p_ += 32;
    return h;
  }
  bool expect(std::string_view magic) {
    if (remaining() < magic.size() || std::memcmp(p_, magic.data(), magic.size()) != 0)
      return Fail(), false;
    p_ += magic.size();
    return true;
  }

 private:
  void Fail() {
    failed_ = true;
    p_ = end_;
  }
  const uint8_t* p_;
  const uint8_t* end_;
  bool failed_ = false;
};

}  // namespace stashfs
