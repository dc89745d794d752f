#include "store/env.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>

#include "test_util.h"

namespace stashfs {
namespace {

using test::TempDir;

TEST(EnvTest, WriteFileAtomicRoundTrip) {
  TempDir tmp;
  Env* env = Env::Default();
  std::string path = tmp.Sub("config");
  std::string data("binary\0data\xff with NULs", 23);
  ASSERT_OK(WriteFileAtomic(env, path, data, 0600));
  ASSERT_OK_AND_ASSIGN(std::string back, ReadFileToString(env, path));
  EXPECT_EQ(back, data);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // Replacing: the new contents, shorter, and no temp file left behind.
  ASSERT_OK(WriteFileAtomic(env, path, "v2", 0600));
  ASSERT_OK_AND_ASSIGN(back, ReadFileToString(env, path));
  EXPECT_EQ(back, "v2");
  ASSERT_OK_AND_ASSIGN(auto names, env->List(tmp.path()));
  EXPECT_EQ(names, std::vector<std::string>{"config"});

  ASSERT_OK(WriteFileAtomic(env, path, "", 0600));
  ASSERT_OK_AND_ASSIGN(back, ReadFileToString(env, path));
  EXPECT_EQ(back, "");
  auto big = test::RandomBytes(3 << 20, 1);
  ASSERT_OK(WriteFileAtomic(env, path, test::Str(big), 0600));
  ASSERT_OK_AND_ASSIGN(back, ReadFileToString(env, path));
  EXPECT_EQ(back, test::Str(big));
}

TEST(EnvTest, ErrorsCarryErrno) {
  TempDir tmp;
  Env* env = Env::Default();
  auto r = ReadFileToString(env, tmp.Sub("nope"));
  EXPECT_CODE(r, Code::kIOError);
  EXPECT_EQ(r.status().errno_value(), ENOENT);
  EXPECT_NE(r.status().message().find(tmp.Sub("nope")), std::string::npos);
  Status w = WriteFileAtomic(env, tmp.Sub("no/such/dir/file"), "x", 0600);
  EXPECT_CODE(w, Code::kIOError);
  EXPECT_EQ(w.errno_value(), ENOENT);
  EXPECT_OK(env->Remove(tmp.Sub("nope")));  // ENOENT is not an error
  EXPECT_EQ(env->Rename(tmp.Sub("nope"), tmp.Sub("x")).errno_value(), ENOENT);
  EXPECT_EQ(env->FileSize(tmp.Sub("nope")).status().errno_value(), ENOENT);
}

TEST(EnvTest, DirectoriesAndFiles) {
  TempDir tmp;
  Env* env = Env::Default();
  ASSERT_OK(env->MakeDirs(tmp.Sub("a/b/c"), 0700));
  ASSERT_OK(env->MakeDirs(tmp.Sub("a/b/c"), 0700));  // exists: fine
  EXPECT_TRUE(env->Exists(tmp.Sub("a/b/c")));
  ASSERT_OK(env->SyncDir(tmp.Sub("a/b")));

  ASSERT_OK_AND_ASSIGN(auto f, env->Open(tmp.Sub("a/f"), O_RDWR | O_CREAT | O_EXCL));
  ASSERT_OK(f->pwrite(10, "xyz", 3));  // leaves a hole of zeros
  ASSERT_OK(f->sync(false));
  ASSERT_OK_AND_ASSIGN(uint64_t size, f->size());
  EXPECT_EQ(size, 13u);
  char buf[20];
  size_t got = 0;
  ASSERT_OK(f->pread(8, buf, sizeof buf, &got));
  EXPECT_EQ(got, 5u);  // short only at the end of the file
  EXPECT_EQ(std::string(buf, got), std::string("\0\0xyz", 5));
  ASSERT_OK(f->truncate(11));
  ASSERT_OK_AND_ASSIGN(uint64_t after, env->FileSize(tmp.Sub("a/f")));
  EXPECT_EQ(after, 11u);
  EXPECT_EQ(f->path(), tmp.Sub("a/f"));
  // O_EXCL on an existing file fails with EEXIST; a file in the way of a directory, ENOTDIR.
  EXPECT_EQ(env->Open(tmp.Sub("a/f"), O_RDWR | O_CREAT | O_EXCL).status().errno_value(), EEXIST);
  EXPECT_EQ(env->MakeDirs(tmp.Sub("a/f"), 0700).errno_value(), ENOTDIR);

  ASSERT_OK(env->Rename(tmp.Sub("a/f"), tmp.Sub("a/g")));
  ASSERT_OK_AND_ASSIGN(auto names, env->List(tmp.Sub("a")));
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"b", "g"}));
  ASSERT_OK(env->Remove(tmp.Sub("a/g")));
  EXPECT_FALSE(env->Exists(tmp.Sub("a/g")));
}

TEST(StatusTest, ContextAndErrno) {
  Status s = Status::IOError("writing x", ENOSPC);
  EXPECT_EQ(s.code(), Code::kIOError);
  EXPECT_EQ(s.errno_value(), ENOSPC);
  EXPECT_NE(s.message().find("writing x: "), std::string::npos);
  Status c = s.context("flushing");
  EXPECT_EQ(c.message().rfind("flushing: writing x: ", 0), 0u) << c.message();
  EXPECT_EQ(c.errno_value(), ENOSPC);
  EXPECT_TRUE(Status::Ok().context("anything").ok());
  EXPECT_EQ(Status::Errno(ENOTEMPTY).context("rmdir").message(), "rmdir");
  EXPECT_EQ(Status::Ok().errno_value(), 0);
  EXPECT_EQ(Status::NotFound("x").errno_value(), ENOENT);
  EXPECT_EQ(Status::Busy("x").errno_value(), EBUSY);
  Result<int> r = Status::Invalid("bad");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  Result<int> v = 5;
  EXPECT_TRUE(v.ok());
  EXPECT_EQ(*v, 5);
}

}  // namespace
}  // namespace stashfs
