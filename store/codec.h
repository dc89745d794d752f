// Block compression: zstd, or raw when zstd does not make the data smaller.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "store/status.h"

namespace stashfs {

enum class Codec : uint8_t { kRaw = 0, kZstd = 1 };

// Compresses with zstd at `level` into a caller's buffer of at least CompressBound(raw.size())
// bytes: returns the compressed length, or 0 when the block is to be stored raw (zstd does not
// make it smaller than the bound, or level 0). EncodeBlock (pack.h) builds whole blocks with it.
size_t CompressInto(std::span<const uint8_t> raw, int level, uint8_t* out);
inline size_t CompressBound(size_t raw_size) {
  return raw_size - raw_size / 64;
}

// Decompresses into exactly `raw_size` bytes; anything else is corruption.
Status Decompress(Codec codec, std::span<const uint8_t> stored, size_t raw_size,
                  std::vector<uint8_t>* out);
// The same into a caller's buffer of exactly the raw size (a pooled buffer that may be larger
// than the block, so that nothing resizes, and so zero-fills, it).
Status DecompressInto(Codec codec, std::span<const uint8_t> stored, std::span<uint8_t> out);

}  // namespace stashfs
