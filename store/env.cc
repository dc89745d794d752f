#include "store/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

namespace stashfs {

namespace {

class PosixFile final : public File {
 public:
  PosixFile(std::string path, int fd) : File(std::move(path)), fd_(fd) {}
  ~PosixFile() override { ::close(fd_); }

  Status pread(uint64_t offset, void* buf, size_t n, size_t* got) override {
    size_t done = 0;
    auto* p = static_cast<char*>(buf);
    while (done < n) {
      ssize_t r = ::pread(fd_, p + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::IOError("reading " + path_, errno);
      }
      if (r == 0) break;
      done += static_cast<size_t>(r);
    }
    *got = done;
    return Status::Ok();
  }

  Status pwrite(uint64_t offset, const void* buf, size_t n) override {
    size_t done = 0;
    auto* p = static_cast<const char*>(buf);
    while (done < n) {
      ssize_t r = ::pwrite(fd_, p + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::IOError("writing " + path_, errno);
      }
      done += static_cast<size_t>(r);
    }
    return Status::Ok();
  }

  Status sync(bool metadata) override {
    int r = metadata ? ::fsync(fd_) : ::fdatasync(fd_);
    if (r != 0) return Status::IOError("syncing " + path_, errno);
    return Status::Ok();
  }

  void start_writeback(uint64_t offset, uint64_t n) override {
    ::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(n),
                      SYNC_FILE_RANGE_WRITE);
  }

  void drop_written(uint64_t offset, uint64_t n) override {
    ::sync_file_range(
        fd_, static_cast<off_t>(offset), static_cast<off_t>(n),
        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(n), POSIX_FADV_DONTNEED);
  }

  Status truncate(uint64_t size) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
      return Status::IOError("truncating " + path_, errno);
    return Status::Ok();
  }

  Status punch_hole(uint64_t offset, uint64_t n) override {
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(n)) != 0)
      return Status::IOError("punching a hole in " + path_, errno);
    return Status::Ok();
  }

  int64_t seek(uint64_t offset, int whence) override {
    return ::lseek(fd_, static_cast<off_t>(offset), whence);
  }

  Result<uint64_t> size() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return Status::IOError("stat " + path_, errno);
    return static_cast<uint64_t>(st.st_size);
  }

  Result<uint64_t> link_count() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return Status::IOError("stat " + path_, errno);
    return static_cast<uint64_t>(st.st_nlink);
  }

 private:
  int fd_;
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<File>> Open(const std::string& path, int flags, mode_t mode) override {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd < 0) return Status::IOError("opening " + path, errno);
    return std::unique_ptr<File>(new PosixFile(path, fd));
  }

  Status MakeDirs(const std::string& path, mode_t mode) override {
    if (path.empty()) return Status::Ok();
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) return Status::Ok();
      return Status::IOError("creating directory " + path, ENOTDIR);
    }
    auto slash = path.find_last_of('/');
    if (slash != std::string::npos && slash > 0)
      RETURN_IF_ERROR(MakeDirs(path.substr(0, slash), mode));
    if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
      return Status::IOError("creating directory " + path, errno);
    return Status::Ok();
  }

  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return Status::IOError("removing " + path, errno);
    return Status::Ok();
  }

  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0)
      return Status::IOError("renaming " + from + " to " + to, errno);
    return Status::Ok();
  }

  Status Link(const std::string& from, const std::string& to) override {
    if (::link(from.c_str(), to.c_str()) != 0)
      return Status::IOError("linking " + from + " to " + to, errno);
    return Status::Ok();
  }

  Status SyncDir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::IOError("opening directory " + path, errno);
    int r = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (r != 0) return Status::IOError("syncing directory " + path, err);
    return Status::Ok();
  }

  Result<std::vector<std::string>> List(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (!d) return Status::IOError("listing " + dir, errno);
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(std::move(n));
    }
    ::closedir(d);
    return names;
  }

  bool Exists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }

  Result<uint64_t> FileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return Status::IOError("stat " + path, errno);
    return static_cast<uint64_t>(st.st_size);
  }

  Result<FileStat> Stat(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return Status::NotFound(path + " does not exist");
      return Status::IOError("stat " + path, errno);
    }
    return FileStat{static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime),
                    S_ISDIR(st.st_mode)};
  }
};

}  // namespace

int64_t Env::NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Env* Env::Default() {
  static PosixEnv env;
  return &env;
}

Status WriteFileAtomic(Env* env, const std::string& path, const std::string& data, mode_t mode) {
  std::string tmp = path + ".tmp";
  {
    ASSIGN_OR_RETURN(auto f, env->Open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode));
    RETURN_IF_ERROR(f->pwrite(0, data.data(), data.size()));
    RETURN_IF_ERROR(f->sync(true));
  }
  RETURN_IF_ERROR(env->Rename(tmp, path));
  auto slash = path.find_last_of('/');
  return env->SyncDir(slash == std::string::npos ? "." : path.substr(0, slash));
}

Result<std::string> ReadFileToString(Env* env, const std::string& path) {
  ASSIGN_OR_RETURN(auto f, env->Open(path, O_RDONLY));
  ASSIGN_OR_RETURN(uint64_t size, f->size());
  std::string s(size, '\0');
  size_t got = 0;
  RETURN_IF_ERROR(f->pread(0, s.data(), s.size(), &got));
  s.resize(got);
  return s;
}

}  // namespace stashfs
