#include "dipaco/io/run_lock.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <sstream>
#include <thread>

#include "dipaco/io/deck.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/io/key_lines.hpp"

namespace dipaco {
namespace {

std::string host_name() {
  char h[256] = {0};
  gethostname(h, sizeof h - 1);
  return h;
}

std::string now_text() {
  std::time_t t = std::time(nullptr);
  char s[64];
  std::strftime(s, sizeof s, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&t));
  return s;
}

// The holder's "key = value" lines.
std::map<std::string, std::string> read_holder(int fd) {
  std::string text(4096, '\0');
  const ssize_t n = pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? size_t(n) : 0);
  return parse_key_lines(text);
}

std::string holder_text(const std::map<std::string, std::string>& h) {
  auto get = [&](const char* k) { return h.count(k) ? h.at(k) : std::string("?"); };
  std::string job = h.count("slurm_job") && h.at("slurm_job") != "none" ? " (Slurm job " + h.at("slurm_job") + ")" : "";
  return "host " + get("host") + " pid " + get("pid") + job + " since " + get("since");
}

bool pid_alive(long pid) {
  if (pid <= 0) return false;
  return kill(pid_t(pid), 0) == 0 || errno != ESRCH;  // EPERM: alive, owned by someone else
}

}  // namespace

std::string take_run_lock(const std::string& file, int* fd_out) {
  const std::string dir = file.substr(0, file.rfind('/'));
  int fd = -1;
  int locked = 0;  // 1 held, 0 busy, -1 the file system has no flock
  for (;;) {
    fd = open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw WriteError("cannot create the lock file " + file + ": " + std::strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) locked = 1;
    else locked = errno == EWOULDBLOCK ? 0 : -1;
    // The holder may have removed the file between our open and flock: lock the file that is there now.
    struct stat a, b;
    if (locked != 1 || (fstat(fd, &a) == 0 && stat(file.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev))
      break;
    close(fd);
  }
  auto holder = read_holder(fd);
  if (locked == 0 && holder.empty()) {  // the holder has just taken it and not yet written its name
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    holder = read_holder(fd);
  }
  const std::string me = host_name();
  if (!holder.empty() || locked == 0) {
    const long pid = holder.count("pid") ? std::atol(holder["pid"].c_str()) : 0;
    const bool here = holder.count("host") && holder["host"] == me;
    std::string refusal;
    if (locked == 0) refusal = "run directory " + dir + " is in use by " + holder_text(holder);
    else if (!here)
      refusal = "run directory " + dir + " is in use by " + holder_text(holder) +
                " (a lock from another host is kept: if no run uses the directory any more, remove " + file + " by hand)";
    else if (locked == -1 && pid_alive(pid))  // no flock here: the pid is all there is to go by
      refusal = "run directory " + dir + " is in use by " + holder_text(holder);
    if (!refusal.empty()) {
      close(fd);
      return refusal;
    }
    std::printf("dipaco: taking over the stale lock of pid %ld (started %s; that process is gone)\n", pid,
                holder.count("since") ? holder["since"].c_str() : "?");
    std::fflush(stdout);
  }
  const char* job = std::getenv("SLURM_JOB_ID");
  const std::string text = "host = " + me + "\npid = " + std::to_string(getpid()) + "\nslurm_job = " +
                           (job && *job ? job : "none") + "\nsince = " + now_text() + "\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, text.data(), text.size(), 0) != ssize_t(text.size())) {
    const std::string why = std::strerror(errno);
    close(fd);
    throw WriteError("cannot write the lock file " + file + ": " + why);
  }
  fsync(fd);
  *fd_out = fd;
  return "";
}

namespace {
std::atomic<RunLock*> g_held{nullptr};  // the lock this process holds, for release_run_lock
}

void release_run_lock() {
  if (RunLock* l = g_held.exchange(nullptr)) l->release();
}

RunLock::RunLock(const std::string& dir, int rank, MPI_Comm comm) {
  // Rank 0's outcome: the directory in use (bad input, exit 2) or the lock
  // file not written (a failure, exit 1), with its message.
  enum : int { kTaken, kInUse, kNotWritten };
  int outcome = kTaken;
  std::string why;
  if (rank == 0) {
    try {
      why = take_run_lock(dir + "/lock", &fd_);
      if (!why.empty()) outcome = kInUse;
      if (fd_ >= 0) file_ = dir + "/lock", g_held = this;
    } catch (const WriteError& e) {
      outcome = kNotWritten, why = e.what();
    }
  }
  // Every rank learns the outcome, so all of them stop together with the same message and code.
  int head[2] = {outcome, int(why.size())};
  MPI_Bcast(head, 2, MPI_INT, 0, comm);
  why.resize(size_t(head[1]));
  if (head[1] > 0) MPI_Bcast(why.data(), head[1], MPI_CHAR, 0, comm);
  if (head[0] == kInUse) throw DeckError(why);
  if (head[0] == kNotWritten) throw WriteError(why);
}

RunLock::~RunLock() {
  RunLock* self = this;
  if (g_held.compare_exchange_strong(self, nullptr)) release();  // else release_run_lock took it
}

void RunLock::release() {
  if (fd_ < 0) return;
  // Remove only our own file (not one made after a removal by hand), before the flock goes.
  struct stat a, b;
  if (fstat(fd_, &a) == 0 && stat(file_.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
    unlink(file_.c_str());
  close(fd_);
  fd_ = -1;
}

}  // namespace dipaco
