// Content-defined chunking (FastCDC with normalised chunking, Xia et al. 2016).
//
// A cut point depends only on the bytes just before it, so inserting bytes early in a file moves
// only the cuts near the insertion and the rest of the file's chunks dedup as before.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace stashfs {

struct ChunkerParams {
  size_t min_size = 128 * 1024;
  size_t avg_size = 512 * 1024;  // must be a power of two
  size_t max_size = 2 * 1024 * 1024;
};

// Returns the length of the chunk that starts at data[0]. `data` must hold either at least
// params.max_size bytes or every remaining byte of the input; the result is in [1, data.size()]
// (or 0 for empty input), never more than max_size.
size_t NextChunkLength(std::span<const uint8_t> data, const ChunkerParams& params);

}  // namespace stashfs
