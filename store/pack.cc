#include "store/pack.h"

#include <fcntl.h>

#include <cstdio>
#include <cstring>

namespace stashfs {

namespace {
void PutU32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
}  // namespace

size_t BlockHeaderLength(size_t n_entries) {
  return kBlockFixedHeader + n_entries * kBlockEntrySize + kBlockCheckSize;
}

std::vector<uint8_t> EncodeBlockHeader(const BlockHeader& h) {
  std::vector<uint8_t> out;
  out.reserve(BlockHeaderLength(h.entries.size()));
  PutU32(out, kBlockMagic);
  out.push_back(static_cast<uint8_t>(h.codec));
  out.insert(out.end(), 3, 0);
  PutU32(out, static_cast<uint32_t>(h.entries.size()));
  PutU32(out, h.raw_len);
  PutU32(out, h.stored_len);
  for (const auto& e : h.entries) {
    out.push_back(static_cast<uint8_t>(e.kind));
    out.insert(out.end(), 3, 0);
    PutU32(out, e.offset);
    PutU32(out, e.size);
    out.insert(out.end(), e.hash.bytes.begin(), e.hash.bytes.end());
  }
  // The header's own check: objects are verified by their hashes, but a scan for fsck needs to
  // know a header is intact before trusting its lengths.
  Hash check = Hash::Of(std::span<const uint8_t>(out));
  out.insert(out.end(), check.bytes.begin(), check.bytes.begin() + kBlockCheckSize);
  return out;
}

size_t EncodeBlock(std::span<const uint8_t> raw, int level, BlockHeader* h,
                   std::vector<uint8_t>* out) {
  // The header's length depends only on the number of entries, so the payload is compressed
  // straight into place behind it and the header written in front afterwards.
  const size_t header_len = BlockHeaderLength(h->entries.size());
  out->resize(header_len + CompressBound(raw.size()));
  size_t n = CompressInto(raw, level, out->data() + header_len);
  if (n) {
    h->codec = Codec::kZstd;
    out->resize(header_len + n);
  } else {
    h->codec = Codec::kRaw;
    out->resize(header_len + raw.size());
    if (!raw.empty()) std::memcpy(out->data() + header_len, raw.data(), raw.size());
  }
  h->raw_len = static_cast<uint32_t>(raw.size());
  h->stored_len = static_cast<uint32_t>(out->size() - header_len);
  std::vector<uint8_t> header = EncodeBlockHeader(*h);
  std::memcpy(out->data(), header.data(), header_len);
  return header_len;
}

Result<BlockHeader> DecodeBlockHeader(std::span<const uint8_t> data, size_t* header_len) {
  auto bad = [](const char* why) {
    return Status::Corruption(std::string("bad block header: ") + why);
  };
  if (data.size() < kBlockFixedHeader) return bad("truncated");
  const uint8_t* p = data.data();
  if (GetU32(p) != kBlockMagic) return bad("wrong magic");
  BlockHeader h;
  uint8_t codec = p[4];
  if (codec > 1) return bad("unknown codec");
  h.codec = static_cast<Codec>(codec);
  uint32_t n = GetU32(p + 8);
  h.raw_len = GetU32(p + 12);
  h.stored_len = GetU32(p + 16);
  if (n == 0 || n > kMaxBlockObjects || h.raw_len > kMaxBlockBytes || h.stored_len > kMaxBlockBytes)
    return bad("implausible sizes");
  size_t len = BlockHeaderLength(n);
  if (data.size() < len) return bad("truncated");
  Hash check = Hash::Of(data.subspan(0, len - kBlockCheckSize));
  if (std::memcmp(check.bytes.data(), p + len - kBlockCheckSize, kBlockCheckSize) != 0)
    return bad("checksum mismatch");
  h.entries.resize(n);
  const uint8_t* e = p + kBlockFixedHeader;
  for (auto& ent : h.entries) {
    if (e[0] < 1 || e[0] > 5) return bad("unknown object kind");
    ent.kind = static_cast<ObjectKind>(e[0]);
    ent.offset = GetU32(e + 4);
    ent.size = GetU32(e + 8);
    ent.hash = Hash::FromBytes(e + 12);
    if (uint64_t{ent.offset} + ent.size > h.raw_len) return bad("object outside block");
    e += kBlockEntrySize;
  }
  *header_len = len;
  return h;
}

std::vector<uint8_t> EncodePackHeader() {
  std::vector<uint8_t> out(kPackMagic, kPackMagic + 8);
  PutU32(out, kPackVersion);
  PutU32(out, 0);
  return out;
}

Status CheckPackHeader(std::span<const uint8_t> data) {
  if (data.size() < kPackHeaderSize || std::memcmp(data.data(), kPackMagic, 8) != 0)
    return Status::Corruption("not a stashfs pack file");
  if (GetU32(data.data() + 8) != kPackVersion)
    return Status::Unsupported("pack file of an unknown format version");
  return Status::Ok();
}

std::string PackPath(const std::string& packs_dir, int64_t pack_id) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "/%02x/%016llx.pack", static_cast<unsigned>(pack_id & 0xff),
                static_cast<unsigned long long>(pack_id));
  return packs_dir + buf;
}

Result<std::shared_ptr<File>> PackFiles::Get(int64_t pack_id) {
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(pack_id);
    if (it != open_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.pos);
      return it->second.file;
    }
  }
  // Open outside the lock; a racing opener just wastes one open.
  ASSIGN_OR_RETURN(auto f, env_->Open(PackPath(dir_, pack_id), O_RDONLY));
  std::shared_ptr<File> file(std::move(f));
  std::lock_guard lock(mu_);
  auto it = open_.find(pack_id);
  if (it != open_.end()) return it->second.file;
  lru_.push_front(pack_id);
  open_[pack_id] = {file, lru_.begin()};
  while (open_.size() > capacity_) {
    open_.erase(lru_.back());
    lru_.pop_back();
  }
  return file;
}

void PackFiles::Drop(int64_t pack_id) {
  std::lock_guard lock(mu_);
  auto it = open_.find(pack_id);
  if (it == open_.end()) return;
  lru_.erase(it->second.pos);
  open_.erase(it);
}

std::vector<int64_t> PackFiles::Deleted() {
  std::vector<int64_t> out;
  std::lock_guard lock(mu_);
  for (const auto& [id, slot] : open_) {
    auto links = slot.file->link_count();
    if (links.ok() && *links == 0) out.push_back(id);
  }
  return out;
}

Status PackFiles::ReadPayload(const BlockLocation& loc, std::vector<uint8_t>* out) {
  out->resize(loc.stored_len);
  return ReadPayloadInto(loc, std::span<uint8_t>(*out));
}

Status PackFiles::ReadPayloadInto(const BlockLocation& loc, std::span<uint8_t> out) {
  if (out.size() != loc.stored_len) return Status::Invalid("payload buffer of the wrong size");
  ASSIGN_OR_RETURN(auto file, Get(loc.pack_id));
  size_t got = 0;
  RETURN_IF_ERROR(file->pread(loc.offset + loc.header_len, out.data(), loc.stored_len, &got));
  if (got != loc.stored_len) {
    return Status::Corruption("pack " + PackPath(dir_, loc.pack_id) +
                              " is shorter than the catalog says");
  }
  return Status::Ok();
}

}  // namespace stashfs
