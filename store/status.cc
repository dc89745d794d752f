#include "store/status.h"

#include <cstring>

namespace stashfs {

Status Status::IOError(std::string what, int err) {
  return {Code::kIOError, what + ": " + std::strerror(err), err};
}

Status Status::context(const std::string& what) const {
  if (ok()) return *this;
  Status s = *this;
  s.msg_ = msg_.empty() ? what : what + ": " + msg_;
  return s;
}

}  // namespace stashfs
