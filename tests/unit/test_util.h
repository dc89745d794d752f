// Helpers shared by the unit tests: status assertions, temp directories, deterministic test data,
// a raw SQLite connection for looking into a store's catalog, and running code in a child process.
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "store/hash.h"
#include "store/objects.h"
#include "store/status.h"

namespace stashfs::test {

inline const Status& ToStatus(const Status& s) {
  return s;
}
template <typename T>
Status ToStatus(const Result<T>& r) {
  return r.status();
}

inline const char* CodeName(Code c) {
  switch (c) {
    case Code::kOk:
      return "kOk";
    case Code::kNotFound:
      return "kNotFound";
    case Code::kAlreadyExists:
      return "kAlreadyExists";
    case Code::kInvalidArgument:
      return "kInvalidArgument";
    case Code::kCorruption:
      return "kCorruption";
    case Code::kIOError:
      return "kIOError";
    case Code::kBusy:
      return "kBusy";
    case Code::kUnsupported:
      return "kUnsupported";
  }
  return "unknown code";
}

inline ::testing::AssertionResult IsOk(const char* expr, const Status& s) {
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << expr << " failed (" << CodeName(s.code()) << "): " << s.message();
}

inline ::testing::AssertionResult HasCode(const char* expr, const char*, const Status& s,
                                          Code want) {
  if (s.code() == want) return ::testing::AssertionSuccess();
  auto r = ::testing::AssertionFailure()
           << expr << ": want " << CodeName(want) << ", got " << CodeName(s.code());
  if (!s.ok()) r << " (" << s.message() << ")";
  return r;
}

}  // namespace stashfs::test

// Assert that `expr` (a Status or Result) is ok; a failure prints the message. Streamable.
#define ASSERT_OK(expr) ASSERT_PRED_FORMAT1(::stashfs::test::IsOk, ::stashfs::test::ToStatus(expr))
#define EXPECT_OK(expr) EXPECT_PRED_FORMAT1(::stashfs::test::IsOk, ::stashfs::test::ToStatus(expr))

// `ASSERT_OK_AND_ASSIGN(auto x, f());` declares x from a Result or fails the test.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(STASHFS_CONCAT(_test_res_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)                          \
  auto tmp = (expr);                                                       \
  ASSERT_TRUE(tmp.ok()) << #expr << " failed: " << tmp.status().message(); \
  lhs = std::move(tmp).value()

// Expects a Status/Result with the given Code (kOk for success). Streamable.
#define EXPECT_CODE(expr, want_code) \
  EXPECT_PRED_FORMAT2(::stashfs::test::HasCode, ::stashfs::test::ToStatus(expr), want_code)

namespace stashfs::test {

// A fresh directory under the test temp dir, removed with everything in it when destroyed.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir();
    if (tmpl.empty() || tmpl.back() != '/') tmpl += '/';
    tmpl += "stashfs-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// `n` pseudo-random bytes, the same for the same seed on every platform (mt19937_64 is fully
// specified by the standard; bytes are taken little-endian from each word).
inline std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    for (size_t j = 0; j < 8 && i + j < n; ++j)
      out[i + j] = static_cast<uint8_t>(v >> (8 * j));
  }
  return out;
}

// `n` bytes of word soup: deterministic and compresses well.
inline std::vector<uint8_t> CompressibleBytes(size_t n, uint64_t seed) {
  static const char* const kWords[] = {"stash ",   "cache ",         "wheel ",
                                       "tarball ", "chunk ",         "pack ",
                                       "tree ",    "node_modules/ ", "site-packages/ "};
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out;
  out.reserve(n + 16);
  while (out.size() < n) {
    std::string_view w = kWords[rng() % (sizeof kWords / sizeof kWords[0])];
    out.insert(out.end(), w.begin(), w.end());
  }
  out.resize(n);
  return out;
}

inline std::vector<uint8_t> Bytes(std::string_view s) {
  return {s.begin(), s.end()};
}
inline std::span<const uint8_t> Span(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
inline std::string Str(std::span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A plain SQLite connection of the test's own, to look into (or tamper with) a catalog without
// going through the code under test.
class SqliteDb {
 public:
  using Value = std::variant<int64_t, std::string, Hash>;

  explicit SqliteDb(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << "cannot open " << path << ": " << sqlite3_errmsg(db_);
    }
    sqlite3_busy_timeout(db_, 10000);
  }
  ~SqliteDb() { sqlite3_close(db_); }
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs `sql` with `args` bound to its ?s and returns every row, each column as an integer
  // (blobs and text that are not numbers read as 0). Records a test failure on an SQL error.
  std::vector<std::vector<int64_t>> Rows(const std::string& sql, std::vector<Value> args = {}) {
    std::vector<std::vector<int64_t>> rows;
    sqlite3_stmt* s = Prepare(sql, args);
    if (!s) return rows;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      auto& row = rows.emplace_back();
      for (int i = 0; i < sqlite3_column_count(s); ++i)
        row.push_back(sqlite3_column_int64(s, i));
    }
    if (rc != SQLITE_DONE) ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
    sqlite3_finalize(s);
    return rows;
  }
  // The single integer `sql` returns, or `missing` when it returns no row.
  int64_t Int(const std::string& sql, std::vector<Value> args = {}, int64_t missing = -1) {
    auto rows = Rows(sql, std::move(args));
    if (rows.empty()) return missing;
    EXPECT_EQ(rows.size(), 1u) << sql;
    return rows[0].at(0);
  }
  // Every row with every column as text (blobs through hex() in the SQL).
  std::vector<std::vector<std::string>> TextRows(const std::string& sql,
                                                 std::vector<Value> args = {}) {
    std::vector<std::vector<std::string>> rows;
    sqlite3_stmt* s = Prepare(sql, args);
    if (!s) return rows;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      auto& row = rows.emplace_back();
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        auto* p = sqlite3_column_text(s, i);
        row.push_back(p ? reinterpret_cast<const char*>(p) : "");
      }
    }
    if (rc != SQLITE_DONE) ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
    sqlite3_finalize(s);
    return rows;
  }
  std::string Text(const std::string& sql, std::vector<Value> args = {}) {
    std::string out;
    sqlite3_stmt* s = Prepare(sql, args);
    if (!s) return out;
    if (sqlite3_step(s) == SQLITE_ROW) {
      auto* p = sqlite3_column_text(s, 0);
      if (p) out = reinterpret_cast<const char*>(p);
    }
    sqlite3_finalize(s);
    return out;
  }
  void Exec(const std::string& sql, std::vector<Value> args = {}) { Rows(sql, std::move(args)); }

  // The reference count of an object, or -1 when the catalog has no such object.
  int64_t Refs(ObjectKind kind, const Hash& h) {
    return Int("SELECT refs FROM objects WHERE hash=? AND kind=?", {h, static_cast<int64_t>(kind)});
  }
  // The generation `mount_id` pins an object at, or -1 when it does not pin it.
  int64_t PinGen(int64_t mount_id, ObjectKind kind, const Hash& h) {
    return Int(
        "SELECT p.gen FROM pins p JOIN objects o ON o.id = p.object_id "
        "WHERE p.mount_id=? AND o.hash=? AND o.kind=?",
        {mount_id, h, static_cast<int64_t>(kind)});
  }
  int64_t Count(const std::string& table) { return Int("SELECT count(*) FROM " + table); }

 private:
  sqlite3_stmt* Prepare(const std::string& sql, const std::vector<Value>& args) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
      return nullptr;
    }
    for (size_t i = 0; i < args.size(); ++i) {
      int col = static_cast<int>(i) + 1;
      if (auto* v = std::get_if<int64_t>(&args[i])) {
        sqlite3_bind_int64(s, col, *v);
      } else if (auto* t = std::get_if<std::string>(&args[i])) {
        sqlite3_bind_text(s, col, t->data(), static_cast<int>(t->size()), SQLITE_TRANSIENT);
      } else {
        const Hash& h = std::get<Hash>(args[i]);
        sqlite3_bind_blob(s, col, h.bytes.data(), 32, SQLITE_TRANSIENT);
      }
    }
    return s;
  }
  sqlite3* db_ = nullptr;
};

// Runs `fn` in a forked child that ends with _exit(fn()) — no atexit handlers or destructors of
// statics, like a killed process — and returns its exit code (128 + signal if it was killed).
// Objects local to `fn` are still destroyed when it returns: leak what must not be.
inline int RunInChild(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) ::_exit(fn());
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace stashfs::test
