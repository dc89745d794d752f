#include "tools/control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace stashfs::cli {

namespace {

socklen_t Address(pid_t pid, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  std::string name = "stashfs-daemon-" + std::to_string(pid);
  // Abstract namespace: no file to clean up after a crash, gone with the process.
  std::memcpy(addr->sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

bool ReadLine(int fd, std::string* line) {
  line->clear();
  char c;
  for (;;) {
    ssize_t r = ::read(fd, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    if (c == '\n') return true;
    line->push_back(c);
    if (line->size() > (1 << 20)) return false;
  }
}

}  // namespace

ControlConnection::~ControlConnection() {
  ::close(fd_);
}

bool ControlConnection::Send(const Json& reply) {
  std::lock_guard lock(mu_);
  std::string s = reply.dump() + "\n";
  size_t done = 0;
  while (done < s.size()) {
    ssize_t r = ::send(fd_, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

Result<std::unique_ptr<ControlServer>> ControlServer::Start(Handler handler) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError("creating control socket", errno);
  sockaddr_un addr;
  socklen_t len = Address(getpid(), &addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 16) != 0) {
    int err = errno;
    ::close(fd);
    return Status::IOError("binding control socket", err);
  }
  std::unique_ptr<ControlServer> s(new ControlServer(fd, std::move(handler)));
  if (::pipe2(s->wake_, O_CLOEXEC) != 0) return Status::IOError("pipe", errno);
  s->thread_ = std::thread([p = s.get()] { p->Serve(); });
  return s;
}

ControlServer::~ControlServer() {
  if (wake_[1] >= 0) {
    char c = 0;
    (void)!::write(wake_[1], &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
  for (int f : wake_)
    if (f >= 0) ::close(f);
}

void ControlServer::Serve() {
  for (;;) {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    auto conn = std::make_shared<ControlConnection>(c);
    ucred cred{};
    socklen_t cl = sizeof cred;
    if (::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
        (cred.uid != 0 && cred.uid != getuid())) {
      conn->Send({{"ok", false},
                  {"final", true},
                  {"error", "permission denied: this mount belongs to another user"}});
      continue;
    }
    // A client that connects and sends nothing must not stall the daemon's control channel.
    timeval tv{5, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string line;
    if (!ReadLine(c, &line)) continue;
    Json req = Json::parse(line, nullptr, false);
    if (req.is_discarded() || !req.is_object()) {
      conn->Send({{"ok", false}, {"final", true}, {"error", "malformed control request"}});
      continue;
    }
    handler_(req, conn);
  }
}

Result<Json> ControlRequest(pid_t pid, const Json& request, bool until_final) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError("creating socket", errno);
  sockaddr_un addr;
  socklen_t len = Address(pid, &addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    int err = errno;
    ::close(fd);
    return Status::IOError("contacting the stashfs daemon (pid " + std::to_string(pid) + ")", err);
  }
  std::string s = request.dump() + "\n";
  if (::send(fd, s.data(), s.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(s.size())) {
    int err = errno;
    ::close(fd);
    return Status::IOError("talking to the stashfs daemon", err);
  }
  std::string line;
  Json reply;
  for (;;) {
    if (!ReadLine(fd, &line)) {
      ::close(fd);
      return Status::IOError("the stashfs daemon (pid " + std::to_string(pid) +
                                 ") closed the connection without answering; it may have died "
                                 "(see the store's stashfs.log)",
                             EPIPE);
    }
    reply = Json::parse(line, nullptr, false);
    if (reply.is_discarded()) continue;
    if (!until_final || reply.value("final", false)) break;
  }
  ::close(fd);
  return reply;
}

}  // namespace stashfs::cli
