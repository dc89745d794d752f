#include "store/backend.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

namespace stashfs {

Status ValidateBlobName(const std::string& name) {
  auto bad = [&](const std::string& why) {
    return Status::Invalid("blob name '" + name + "' " + why);
  };
  if (name.empty()) return bad("is empty");
  if (name.size() > 1024) return bad("is longer than 1024 characters");
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              std::string_view("._+=:@/-").find(c) != std::string_view::npos;
    if (!ok) return bad("has a character outside [A-Za-z0-9._+=:@/-]");
  }
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string_view part(name.data() + start, end - start);
    if (part.empty()) return bad("has an empty component");
    // A leading '.' is reserved: DirBackend's temporary files start with one, and it also
    // excludes "." and "..".
    if (part.front() == '.') return bad("has a component starting with '.'");
    start = end + 1;
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> Backend::ReadAll(const std::string& name) {
  ASSIGN_OR_RETURN(auto info, Stat(name));
  if (!info) return Status::NotFound(Describe() + ": no blob " + name);
  std::vector<uint8_t> out;
  RETURN_IF_ERROR(ReadRange(name, 0, info->size, &out));
  return out;
}

namespace {
std::string DirOf(const std::string& path) {
  return path.substr(0, path.find_last_of('/'));
}
}  // namespace

Result<std::string> DirBackend::WriteTemp(const std::string& name, std::span<const uint8_t> data) {
  RETURN_IF_ERROR(ValidateBlobName(name));
  std::string path = PathOf(name);
  std::string dir = DirOf(path);
  RETURN_IF_ERROR(env_->MakeDirs(dir, 0700));
  // Unique per process and call, so concurrent writers of one name never share a temp file.
  static std::atomic<uint64_t> seq{0};
  std::string tmp = dir + "/.tmp-" + std::to_string(::getpid()) + "-" +
                    std::to_string(seq.fetch_add(1)) + "-" + path.substr(dir.size() + 1);
  Status st = [&]() -> Status {
    ASSIGN_OR_RETURN(auto f, env_->Open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600));
    if (!data.empty()) RETURN_IF_ERROR(f->pwrite(0, data.data(), data.size()));
    return f->sync(false);
  }();
  if (!st.ok()) {
    env_->Remove(tmp);
    return st.context("storing " + path);
  }
  return tmp;
}

Status DirBackend::Put(const std::string& name, std::span<const uint8_t> data) {
  ASSIGN_OR_RETURN(std::string tmp, WriteTemp(name, data));
  std::string path = PathOf(name);
  Status st = env_->Rename(tmp, path);
  if (!st.ok()) {
    env_->Remove(tmp);
    return st;
  }
  return env_->SyncDir(DirOf(path));
}

Status DirBackend::PutIfAbsent(const std::string& name, std::span<const uint8_t> data) {
  ASSIGN_OR_RETURN(std::string tmp, WriteTemp(name, data));
  std::string path = PathOf(name);
  Status st = env_->Link(tmp, path);
  env_->Remove(tmp);
  if (!st.ok()) {
    if (st.errno_value() == EEXIST) return Status::AlreadyExists(path + " already exists");
    return st;
  }
  return env_->SyncDir(DirOf(path));
}

Status DirBackend::ReadRange(const std::string& name, uint64_t offset, size_t n,
                             std::vector<uint8_t>* out) {
  RETURN_IF_ERROR(ValidateBlobName(name));
  std::string path = PathOf(name);
  auto f = env_->Open(path, O_RDONLY);
  if (!f.ok()) {
    if (f.status().errno_value() == ENOENT) return Status::NotFound("no blob " + path);
    return f.status();
  }
  out->resize(n);
  size_t got = 0;
  RETURN_IF_ERROR((*f)->pread(offset, out->data(), n, &got));
  out->resize(got);
  return Status::Ok();
}

Result<std::optional<BlobInfo>> DirBackend::Stat(const std::string& name) {
  RETURN_IF_ERROR(ValidateBlobName(name));
  auto st = env_->Stat(PathOf(name));
  if (!st.ok()) {
    if (st.status().code() == Code::kNotFound) return std::optional<BlobInfo>();
    return st.status();
  }
  if (st->is_dir) return std::optional<BlobInfo>();  // a name prefix, not a blob
  return std::optional<BlobInfo>(BlobInfo{name, st->size, st->modified});
}

Status DirBackend::ListUnder(const std::string& rel_dir, const std::string& prefix,
                             std::vector<BlobInfo>* out) {
  std::string dir = rel_dir.empty() ? root_ : root_ + "/" + rel_dir;
  auto names = env_->List(dir);
  if (!names.ok()) {
    // A prefix no blob was ever stored under has no directory: an empty listing, as in S3.
    if (names.status().errno_value() == ENOENT) return Status::Ok();
    return names.status();
  }
  for (const std::string& n : *names) {
    if (n.empty() || n.front() == '.') continue;  // temporary files of Put and PutIfAbsent
    std::string rel = rel_dir.empty() ? n : rel_dir + "/" + n;
    // Descend only where the prefix can still match: a listing of "refs/" never walks packs.
    size_t common = std::min(rel.size(), prefix.size());
    if (rel.compare(0, common, prefix, 0, common) != 0) continue;
    auto st = env_->Stat(root_ + "/" + rel);
    if (!st.ok()) {
      if (st.status().code() == Code::kNotFound) continue;  // deleted while we listed
      return st.status();
    }
    if (st->is_dir) {
      RETURN_IF_ERROR(ListUnder(rel, prefix, out));
    } else if (rel.size() >= prefix.size() && ValidateBlobName(rel).ok()) {
      out->push_back({rel, st->size, st->modified});
    }
  }
  return Status::Ok();
}

Result<std::vector<BlobInfo>> DirBackend::List(const std::string& prefix) {
  std::vector<BlobInfo> out;
  RETURN_IF_ERROR(ListUnder("", prefix, &out));
  std::sort(out.begin(), out.end(),
            [](const BlobInfo& a, const BlobInfo& b) { return a.name < b.name; });
  return out;
}

Status DirBackend::Delete(const std::string& name) {
  RETURN_IF_ERROR(ValidateBlobName(name));
  std::string path = PathOf(name);
  RETURN_IF_ERROR(env_->Remove(path));  // an absent blob is not an error
  Status st = env_->SyncDir(DirOf(path));
  return st.errno_value() == ENOENT ? Status::Ok() : st;  // nor is a prefix never stored under
}

}  // namespace stashfs
