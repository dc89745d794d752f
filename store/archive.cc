#include "store/archive.h"

#include <zstd.h>

#include <fcntl.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <vector>

namespace stashfs {

namespace {

constexpr char kMagic[8] = {'S', 'T', 'A', 'S', 'H', 'F', 'S', 'X'};
constexpr uint32_t kVersion = 1;
constexpr uint8_t kTagObject = 1;
constexpr uint8_t kTagEnd = 2;
constexpr uint32_t kMaxMeta = 1 << 20;

void PutU32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    s.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    s.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetLE(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i)
    v |= uint64_t{p[i]} << (8 * i);
  return v;
}

// Compresses what is written to it into a file, keeping the SHA-256 of the plain stream. The
// file is written through the store's Env, so fault tests reach a full disk here too.
class ArchiveWriter {
 public:
  ~ArchiveWriter() { ZSTD_freeCCtx(cctx_); }
  Status Open(Env* env, const std::string& path) {
    ASSIGN_OR_RETURN(f_, env->Open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    cctx_ = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_nbWorkers, 2);  // ignored where zstd lacks threads
    path_ = path;
    return Status::Ok();
  }
  Status Write(const void* data, size_t n, bool hash = true) {
    if (hash) sha_.update(data, n);
    return Push(data, n, ZSTD_e_continue);
  }
  Status Finish() { return Push(nullptr, 0, ZSTD_e_end); }
  Hash Digest() { return sha_.finish(); }
  // Makes the file durable before it is renamed into place (fsync with metadata: its size).
  Status Close() {
    Status st = f_->sync(true);
    f_.reset();
    return st.ok() ? st : st.context("writing " + path_);
  }

 private:
  Status Push(const void* data, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{data, n, 0};
    std::vector<char> buf(ZSTD_CStreamOutSize());
    for (;;) {
      ZSTD_outBuffer out{buf.data(), buf.size(), 0};
      size_t left = ZSTD_compressStream2(cctx_, &out, &in, mode);
      if (ZSTD_isError(left))
        return Status::IOError(std::string("zstd: ") + ZSTD_getErrorName(left), EIO);
      if (out.pos) {
        RETURN_IF_ERROR(f_->pwrite(written_, buf.data(), out.pos));
        written_ += out.pos;
      }
      bool done = mode == ZSTD_e_end ? left == 0 : in.pos == in.size;
      if (done) return Status::Ok();
    }
  }
  std::unique_ptr<File> f_;
  uint64_t written_ = 0;
  ZSTD_CCtx* cctx_ = nullptr;
  Sha256 sha_;
  std::string path_;
};

// Reads the plain stream back, checking zstd's own frame checksum as it goes.
class ArchiveReader {
 public:
  ~ArchiveReader() { ZSTD_freeDCtx(dctx_); }
  Status Open(Env* env, const std::string& path) {
    ASSIGN_OR_RETURN(f_, env->Open(path, O_RDONLY));
    dctx_ = ZSTD_createDCtx();
    in_buf_.resize(ZSTD_DStreamInSize());
    path_ = path;
    return Status::Ok();
  }
  // Reads exactly n bytes; Corruption if the stream ends first.
  Status Read(void* dst, size_t n, bool hash = true) {
    auto* p = static_cast<uint8_t*>(dst);
    size_t done = 0;
    while (done < n) {
      if (pending_pos_ < pending_.size()) {
        size_t k = std::min(n - done, pending_.size() - pending_pos_);
        std::memcpy(p + done, pending_.data() + pending_pos_, k);
        pending_pos_ += k;
        done += k;
        continue;
      }
      RETURN_IF_ERROR(Refill());
      if (pending_.empty()) return Status::Corruption(path_ + " is truncated");
    }
    if (hash) sha_.update(dst, n);
    consumed_ += n;
    return Status::Ok();
  }
  // True when nothing but the end of the zstd frame remains.
  Result<bool> AtEnd() {
    if (pending_pos_ < pending_.size()) return false;
    RETURN_IF_ERROR(Refill());
    return pending_.empty() && frame_done_;
  }
  Hash Digest() { return sha_.finish(); }
  void HashBytes(const void* p, size_t n) { sha_.update(p, n); }
  uint64_t consumed() const { return consumed_; }

 private:
  Status Refill() {
    pending_.clear();
    pending_pos_ = 0;
    std::vector<uint8_t> out(ZSTD_DStreamOutSize());
    while (pending_.empty()) {
      if (in_.pos == in_.size) {
        size_t r = 0;
        RETURN_IF_ERROR(f_->pread(read_, in_buf_.data(), in_buf_.size(), &r));
        read_ += r;
        if (r == 0) {
          if (!frame_done_) return Status::Corruption(path_ + " is truncated");
          return Status::Ok();
        }
        in_ = {in_buf_.data(), r, 0};
      }
      ZSTD_outBuffer o{out.data(), out.size(), 0};
      size_t ret = ZSTD_decompressStream(dctx_, &o, &in_);
      if (ZSTD_isError(ret)) {
        return Status::Corruption(path_ + " is damaged (" + ZSTD_getErrorName(ret) + ")");
      }
      frame_done_ = ret == 0;
      pending_.assign(out.data(), out.data() + o.pos);
      if (frame_done_ && pending_.empty() && in_.pos == in_.size) {
        // Anything after the one frame we write would be foreign.
        uint8_t extra;
        size_t got = 0;
        RETURN_IF_ERROR(f_->pread(read_, &extra, 1, &got));
        if (got == 1) return Status::Corruption(path_ + " has trailing data after the archive");
        return Status::Ok();
      }
    }
    return Status::Ok();
  }
  std::unique_ptr<File> f_;
  uint64_t read_ = 0;  // file offset of the next read
  ZSTD_DCtx* dctx_ = nullptr;
  std::vector<char> in_buf_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  std::vector<uint8_t> pending_;
  size_t pending_pos_ = 0;
  bool frame_done_ = false;
  Sha256 sha_;
  uint64_t consumed_ = 0;
  std::string path_;
};

struct KeyHash {
  size_t operator()(const ObjectKey& k) const { return ObjectKeyHasher()(k); }
};

}  // namespace

std::string ExportTempPath(const std::string& path) {
  return path + ".tmp";
}

Result<ArchiveInfo> ExportSnapshot(Store& store, const SnapshotInfo& snap, const std::string& path,
                                   const ProgressFn& progress) {
  ArchiveInfo info;
  info.key = snap.key;
  info.root = snap.root;
  info.logical_bytes = snap.logical_bytes;
  info.files = snap.files;
  std::string tmp = ExportTempPath(path);
  ArchiveWriter w;
  RETURN_IF_ERROR(w.Open(store.env(), tmp));
  // A failed export (damaged store, full disk) must not leave a partial file behind.
  struct RemoveUnlessDone {
    Env* env;
    const std::string& file;
    bool done = false;
    ~RemoveUnlessDone() {
      if (!done) env->Remove(file);
    }
  } cleanup{store.env(), tmp};
  nlohmann::json meta = {{"key", snap.key},           {"root", snap.root.hex()},
                         {"created", snap.created},   {"logical_bytes", snap.logical_bytes},
                         {"files", snap.files},       {"format", kVersion},
                         {"stashfs", STASHFS_VERSION}};
  std::string head(kMagic, 8);
  PutU32(head, kVersion);
  std::string m = meta.dump();
  PutU32(head, static_cast<uint32_t>(m.size()));
  head += m;
  RETURN_IF_ERROR(w.Write(head.data(), head.size()));

  std::unordered_set<ObjectKey, KeyHash> seen;
  std::vector<ChildRef> stack{{ObjectKind::kRoot, snap.root}};
  uint64_t done = 0;
  while (!stack.empty()) {
    ChildRef c = stack.back();
    stack.pop_back();
    if (!seen.insert(ObjectKey{c.hash, c.kind}).second) continue;
    // Get() verifies the bytes: a damaged store cannot export damage.
    auto data = store.objects().Get(c.kind, c.hash);
    if (!data.ok()) return data.status().context("exporting '" + snap.key + "'");
    std::string rec;
    rec.push_back(static_cast<char>(kTagObject));
    rec.push_back(static_cast<char>(c.kind));
    rec.append(reinterpret_cast<const char*>(c.hash.bytes.data()), 32);
    PutU32(rec, static_cast<uint32_t>(data->bytes.size()));
    RETURN_IF_ERROR(w.Write(rec.data(), rec.size()));
    RETURN_IF_ERROR(w.Write(data->bytes.data(), data->bytes.size()));
    ++info.objects;
    done += data->bytes.size();
    if (progress) progress(done, snap.logical_bytes);
    if (KindHasChildren(c.kind)) {
      ASSIGN_OR_RETURN(auto children, ChildrenOf(c.kind, data->bytes));
      stack.insert(stack.end(), children.begin(), children.end());
    }
  }
  Hash digest = w.Digest();
  std::string end;
  end.push_back(static_cast<char>(kTagEnd));
  PutU64(end, info.objects);
  end.append(reinterpret_cast<const char*>(digest.bytes.data()), 32);
  RETURN_IF_ERROR(w.Write(end.data(), end.size(), false));
  RETURN_IF_ERROR(w.Finish());
  RETURN_IF_ERROR(w.Close());
  RETURN_IF_ERROR(store.env()->Rename(tmp, path));
  cleanup.done = true;
  // The new name is durable too: a CI job that uploads the file after a crash finds it whole.
  auto slash = path.find_last_of('/');
  RETURN_IF_ERROR(store.env()->SyncDir(slash == std::string::npos ? "."
                                       : slash == 0               ? "/"
                                                                  : path.substr(0, slash)));
  auto size = store.env()->FileSize(path);
  info.file_bytes = size.ok() ? *size : 0;
  return info;
}

namespace {

struct Scan {
  nlohmann::json meta;
  std::string key;
  Hash root;
  uint64_t objects = 0;
  uint64_t bytes = 0;
};

// Reads the whole archive. With `store_objects`, puts each object (second pass); without, checks
// everything and collects what the objects refer to.
Result<Scan> ReadArchive(Store& store, const std::string& path, bool store_objects,
                         std::unordered_set<ObjectKey, KeyHash>* present,
                         std::vector<ObjectKey>* referenced, uint64_t* new_objects,
                         const ProgressFn& progress) {
  std::string bad = path + " is not a valid stashfs export";
  ArchiveReader r;
  RETURN_IF_ERROR(r.Open(store.env(), path));
  Scan s;
  uint8_t head[16];
  auto rd = r.Read(head, 16);
  if (!rd.ok()) return Status::Corruption(bad + ": " + rd.message());
  if (std::memcmp(head, kMagic, 8) != 0) return Status::Corruption(bad + " (wrong magic)");
  if (GetLE(head + 8, 4) != kVersion) {
    return Status::Unsupported(path + " is an export of format " +
                               std::to_string(GetLE(head + 8, 4)) +
                               ", which this stashfs does not read; upgrade stashfs");
  }
  uint32_t mlen = static_cast<uint32_t>(GetLE(head + 12, 4));
  if (mlen > kMaxMeta) return Status::Corruption(bad + " (oversized header)");
  std::string m(mlen, '\0');
  RETURN_IF_ERROR(r.Read(m.data(), mlen));
  s.meta = nlohmann::json::parse(m, nullptr, false);
  if (s.meta.is_discarded() || !s.meta.is_object() || !s.meta.contains("key") ||
      !s.meta["key"].is_string() || !s.meta.contains("root") || !s.meta["root"].is_string())
    return Status::Corruption(bad + " (bad header)");
  s.key = s.meta["key"].get<std::string>();
  auto root = Hash::FromHex(s.meta["root"].get<std::string>());
  if (!root.ok()) return Status::Corruption(bad + " (bad root)");
  s.root = *root;
  uint64_t total = s.meta.value("logical_bytes", uint64_t{0});
  std::vector<uint8_t> data;
  for (;;) {
    uint8_t tag = 0;
    RETURN_IF_ERROR(r.Read(&tag, 1, false));
    if (tag == kTagEnd) break;  // the end record is not part of the checksum: see ExportSnapshot
    if (tag != kTagObject) return Status::Corruption(bad + " (unknown record)");
    r.HashBytes(&tag, 1);
    uint8_t rec[37];
    RETURN_IF_ERROR(r.Read(rec, 37));
    uint8_t kind = rec[0];
    if (kind < 1 || kind > 5) return Status::Corruption(bad + " (unknown object kind)");
    Hash h = Hash::FromBytes(rec + 1);
    uint32_t size = static_cast<uint32_t>(GetLE(rec + 33, 4));
    if (size > kMaxBlockBytes) return Status::Corruption(bad + " (oversized object)");
    data.resize(size);
    RETURN_IF_ERROR(r.Read(data.data(), size));
    ObjectKind k = static_cast<ObjectKind>(kind);
    if (Hash::Of(data) != h)
      return Status::Corruption(bad + ": object " + h.hex() + " does not match its SHA-256");
    ++s.objects;
    s.bytes += size;
    if (progress) progress(s.bytes, total);
    if (store_objects) {
      ASSIGN_OR_RETURN(bool have, store.objects().Has(k, h));
      if (!have) ++*new_objects;
      // Put pins even objects the store has, so gc cannot take them before the snapshot exists.
      RETURN_IF_ERROR(store.objects().PutHashed(k, h, data));
      continue;
    }
    if (!present->insert(ObjectKey{h, k}).second)
      return Status::Corruption(bad + " (object listed twice)");
    if (KindHasChildren(k)) {
      // Decoding validates structure: names with '/' or "..", unsorted entries, bad sizes.
      auto children = ChildrenOf(k, data);
      if (!children.ok()) return Status::Corruption(bad + ": " + children.status().message());
      for (const auto& c : *children)
        referenced->push_back(ObjectKey{c.hash, c.kind});
    }
  }
  if (store_objects) return s;
  Hash digest = r.Digest();
  uint8_t trailer[40];
  auto tr = r.Read(trailer, 40, false);
  if (!tr.ok()) return Status::Corruption(bad + ": " + tr.message());
  if (GetLE(trailer, 8) != s.objects) return Status::Corruption(bad + " (object count mismatch)");
  if (Hash::FromBytes(trailer + 8) != digest)
    return Status::Corruption(bad + " (checksum mismatch: the file is damaged)");
  ASSIGN_OR_RETURN(bool end, r.AtEnd());
  if (!end) return Status::Corruption(bad + " (data after the end record)");
  return s;
}

}  // namespace

Result<ArchiveInfo> ImportSnapshot(Store& store, const std::string& path,
                                   const std::string& key_override, const ProgressFn& progress) {
  std::unordered_set<ObjectKey, KeyHash> present;
  std::vector<ObjectKey> referenced;
  uint64_t unused = 0;
  // Pass 1: check everything; nothing is written.
  ASSIGN_OR_RETURN(Scan s,
                   ReadArchive(store, path, false, &present, &referenced, &unused, progress));
  std::string key = key_override.empty() ? s.key : key_override;
  if (Status v = ValidateName("key", key, kMaxKeyLength); !v.ok()) {
    return Status::Invalid(path + " names its snapshot with an invalid " + v.message() +
                           "; import it under another key with --key NAME");
  }
  if (!present.count(ObjectKey{s.root, ObjectKind::kRoot}))
    return Status::Corruption(path + " is not a valid stashfs export: its root object is missing");
  for (const auto& ref : referenced) {
    if (present.count(ref)) continue;
    ASSIGN_OR_RETURN(bool have, store.objects().Has(ref.kind, ref.hash));
    if (!have) {
      return Status::Corruption(path + " is not a valid stashfs export: it refers to " +
                                KindName(ref.kind) + " " + ref.hash.hex() + ", which it lacks");
    }
  }
  ASSIGN_OR_RETURN(auto existing, store.FindSnapshot(key));
  if (existing) return Status::AlreadyExists("key '" + key + "' already exists");
  // Pass 2: store the objects and name the snapshot.
  ArchiveInfo info;
  ASSIGN_OR_RETURN(Scan s2,
                   ReadArchive(store, path, true, nullptr, nullptr, &info.new_objects, progress));
  RETURN_IF_ERROR(store.objects().Flush());
  ASSIGN_OR_RETURN(auto snap, store.CreateSnapshot(key, s2.root, false));
  info.key = key;
  info.root = snap.root;
  info.objects = s2.objects;
  info.logical_bytes = snap.logical_bytes;
  info.files = snap.files;
  auto size = store.env()->FileSize(path);
  info.file_bytes = size.ok() ? *size : 0;
  return info;
}

}  // namespace stashfs
