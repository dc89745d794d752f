#include "store/codec.h"

#include <zstd.h>

#include <cstring>

namespace stashfs {

namespace {
// zstd contexts are costly to create and not thread-safe; keep one per thread.
struct Contexts {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_DCtx* d = ZSTD_createDCtx();
  ~Contexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};
Contexts& ThreadContexts() {
  thread_local Contexts ctx;
  return ctx;
}
}  // namespace

size_t CompressInto(std::span<const uint8_t> raw, int level, uint8_t* out) {
  if (raw.empty() || level <= 0) return 0;
  // Bound below raw.size(): anything that does not fit is not worth storing compressed.
  size_t n = ZSTD_compressCCtx(ThreadContexts().c, out, CompressBound(raw.size()), raw.data(),
                               raw.size(), level);
  return ZSTD_isError(n) ? 0 : n;
}

Status Decompress(Codec codec, std::span<const uint8_t> stored, size_t raw_size,
                  std::vector<uint8_t>* out) {
  out->resize(raw_size);
  return DecompressInto(codec, stored, std::span<uint8_t>(*out));
}

Status DecompressInto(Codec codec, std::span<const uint8_t> stored, std::span<uint8_t> out) {
  const size_t raw_size = out.size();
  if (codec == Codec::kRaw) {
    if (stored.size() != raw_size) return Status::Corruption("raw block has the wrong length");
    if (raw_size) std::memcpy(out.data(), stored.data(), raw_size);
    return Status::Ok();
  }
  if (codec != Codec::kZstd) return Status::Corruption("unknown block codec");
  size_t n =
      ZSTD_decompressDCtx(ThreadContexts().d, out.data(), raw_size, stored.data(), stored.size());
  if (ZSTD_isError(n)) {
    return Status::Corruption(std::string("zstd could not decompress a block: ") +
                              ZSTD_getErrorName(n));
  }
  if (n != raw_size) return Status::Corruption("block decompressed to the wrong length");
  return Status::Ok();
}

}  // namespace stashfs
