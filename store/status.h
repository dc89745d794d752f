// Error values for the store layer. The store returns values, never throws across its API; the
// FUSE adapter turns a Status into an errno in one place and the CLI prints Status::message().
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace stashfs {

enum class Code {
  kOk = 0,
  kNotFound,         // no such key, volume, object or file
  kAlreadyExists,    // key or volume already exists
  kInvalidArgument,  // bad user input: a size string, a key, a path
  kCorruption,       // stored bytes do not match their hash, or a catalog row is inconsistent
  kIOError,          // the OS failed a call; errno() says which
  kBusy,             // held by another process (a mounted volume, a lock)
  kUnsupported,      // e.g. a store of a newer format
};

class Status {
 public:
  Status() = default;
  static Status Ok() { return {}; }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m), ENOENT}; }
  static Status AlreadyExists(std::string m) {
    return {Code::kAlreadyExists, std::move(m), EEXIST};
  }
  static Status Invalid(std::string m) { return {Code::kInvalidArgument, std::move(m), EINVAL}; }
  static Status Corruption(std::string m) { return {Code::kCorruption, std::move(m), EIO}; }
  static Status Busy(std::string m) { return {Code::kBusy, std::move(m), EBUSY}; }
  static Status Unsupported(std::string m) { return {Code::kUnsupported, std::move(m), ENOTSUP}; }
  // An OS failure: `what` says what we were doing, `err` is the errno it failed with.
  static Status IOError(std::string what, int err);
  // A failure another process (a mount's daemon) already put into words: its message is the
  // whole line, with no strerror appended.
  static Status Relayed(std::string m, int err = EIO) {
    return {Code::kIOError, std::move(m), err};
  }
  // A filesystem-level errno with no message (e.g. ENOTEMPTY from rmdir); cheap, for hot paths.
  static Status Errno(int err) { return {Code::kIOError, {}, err}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  int errno_value() const { return ok() ? 0 : err_; }
  const std::string& message() const { return msg_; }
  // Prefixes context: "opening store /x: " + message.
  Status context(const std::string& what) const;

 private:
  Status(Code c, std::string m, int e) : code_(c), msg_(std::move(m)), err_(e) {}
  Code code_ = Code::kOk;
  std::string msg_;
  int err_ = 0;
};

// A value or the Status explaining why there is none. Small on purpose: C++20 has no std::expected.
template <typename T>
class Result {
 public:
  Result(T v) : v_(std::move(v)) {}       // NOLINT: implicit by design, like expected
  Result(Status s) : v_(std::move(s)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  Status status() const { return ok() ? Status::Ok() : std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

#define STASHFS_CONCAT_INNER(a, b) a##b
#define STASHFS_CONCAT(a, b) STASHFS_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` failed.
#define RETURN_IF_ERROR(expr)       \
  do {                              \
    ::stashfs::Status _st = (expr); \
    if (!_st.ok()) return _st;      \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

// `ASSIGN_OR_RETURN(auto x, f());` declares x from a Result or returns its Status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(STASHFS_CONCAT(_res_, __LINE__), lhs, expr)

}  // namespace stashfs
