// Where a store's immutable blobs live: sealed packs, and the small "ref" objects that name
// snapshots. The local store keeps them in a directory (DirBackend); the remote tier keeps them
// in an S3 bucket shared by many machines. Both answer the same few questions, the ones the store
// really asks, and nothing that only one of them could do cheaply:
//
//   Put          store a whole blob; a reader sees all of it or nothing (S3 PUT; temp + rename)
//   PutIfAbsent  create a blob only if no blob has that name: how a ref is taken without a
//                lock (S3's If-None-Match: *; link(2) here). Losing the race is AlreadyExists
//   ReadRange    bytes [offset, offset + n) of a blob: a block of a pack (S3 range GET; pread)
//   Stat / List  size and modification time, one blob or every blob under a name prefix, in
//                name order (S3 HEAD, ListObjectsV2; stat and a directory walk)
//   Delete       remove a blob; removing an absent one succeeds, so gc can be re-run
//
// Not here on purpose: appending, renaming, and listing by anything but prefix. Packs are
// written in full before they are put (the local store appends to its open pack in its own
// directory and hands the sealed file over), and S3 has no rename or append.
//
// Names are relative, '/'-separated, of the characters keys may use ([A-Za-z0-9._+=:@/-]),
// with no empty, "." or ".." component: "packs/3f/12345.pack", "refs/snapshots/pip-abc". A name
// is a path in DirBackend and a key (under a prefix) in S3, so neither can escape its root.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "store/env.h"
#include "store/status.h"

namespace stashfs {

struct BlobInfo {
  std::string name;
  uint64_t size = 0;
  int64_t modified = 0;  // seconds since the epoch; gc's grace period compares against it
};

// Invalid naming the rule a blob name breaks, else Ok.
Status ValidateBlobName(const std::string& name);

class Backend {
 public:
  virtual ~Backend() = default;

  // Where the blobs are, for messages: a directory, or s3://bucket/prefix. Never a credential.
  virtual std::string Describe() const = 0;

  virtual Status Put(const std::string& name, std::span<const uint8_t> data) = 0;
  virtual Status PutIfAbsent(const std::string& name, std::span<const uint8_t> data) = 0;
  // Replaces *out with the bytes read: n of them, fewer only where the blob ends. NotFound if
  // there is no such blob; reading at or past the end gives no bytes.
  virtual Status ReadRange(const std::string& name, uint64_t offset, size_t n,
                           std::vector<uint8_t>* out) = 0;
  virtual Result<std::optional<BlobInfo>> Stat(const std::string& name) = 0;
  // Every blob whose name starts with `prefix` (a plain string prefix, as in S3), by name.
  virtual Result<std::vector<BlobInfo>> List(const std::string& prefix) = 0;
  virtual Status Delete(const std::string& name) = 0;

  // The whole blob (Stat, then one ReadRange).
  Result<std::vector<uint8_t>> ReadAll(const std::string& name);
};

// Blobs as files under a root directory, through an Env (so fault tests reach every call).
// Put and PutIfAbsent write a temporary file beside the target and fsync it, then rename (Put)
// or link (PutIfAbsent, which fails with EEXIST when the name is taken: atomic without a lock),
// then fsync the directory: a blob that a call reported stored survives a power loss, and a crash
// part-way leaves only a temporary file, which List does not show and the next Put of the same
// name replaces.
class DirBackend final : public Backend {
 public:
  DirBackend(Env* env, std::string root) : env_(env), root_(std::move(root)) {}
  std::string Describe() const override { return root_; }
  const std::string& root() const { return root_; }
  // The file a blob is kept in.
  std::string PathOf(const std::string& name) const { return root_ + "/" + name; }

  Status Put(const std::string& name, std::span<const uint8_t> data) override;
  Status PutIfAbsent(const std::string& name, std::span<const uint8_t> data) override;
  Status ReadRange(const std::string& name, uint64_t offset, size_t n,
                   std::vector<uint8_t>* out) override;
  Result<std::optional<BlobInfo>> Stat(const std::string& name) override;
  Result<std::vector<BlobInfo>> List(const std::string& prefix) override;
  Status Delete(const std::string& name) override;

 private:
  // Writes `data` to a fresh temporary file in name's directory and syncs it; returns its path.
  Result<std::string> WriteTemp(const std::string& name, std::span<const uint8_t> data);
  Status ListUnder(const std::string& rel_dir, const std::string& prefix,
                   std::vector<BlobInfo>* out);

  Env* env_;
  std::string root_;
};

}  // namespace stashfs
