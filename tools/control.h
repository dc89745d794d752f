// The control channel of a mount daemon: an abstract unix socket named after its PID, accepting
// only its own user (and root). Requests and replies are single JSON lines; `stashfs umount`,
// `save` and `status` talk to the daemon through it.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "store/status.h"

namespace stashfs::cli {

using Json = nlohmann::json;

class ControlConnection {
 public:
  explicit ControlConnection(int fd) : fd_(fd) {}
  ~ControlConnection();
  // Sends one reply line; false when the client went away.
  bool Send(const Json& reply);

 private:
  std::mutex mu_;
  int fd_;
};

class ControlServer {
 public:
  // Called on the server's thread with one request; it replies through the connection, now or
  // later (keeping the shared_ptr), and the connection closes when the last reference goes.
  using Handler = std::function<void(const Json& request, std::shared_ptr<ControlConnection>)>;
  static Result<std::unique_ptr<ControlServer>> Start(Handler handler);
  ~ControlServer();

 private:
  explicit ControlServer(int fd, Handler h) : fd_(fd), handler_(std::move(h)) {}
  void Serve();
  int fd_;
  Handler handler_;
  std::thread thread_;
  int wake_[2] = {-1, -1};
};

// Sends `request` to the daemon `pid` and returns its reply line. With `until_final`, keeps
// reading reply lines until one has "final": true (umount replies once unmounted and committed).
Result<Json> ControlRequest(pid_t pid, const Json& request, bool until_final = false);

}  // namespace stashfs::cli
