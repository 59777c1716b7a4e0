#include "pty_run.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace keysvc::test {

PtyResult run_under_pty(const std::vector<std::string>& argv, const std::string& pin,
                        std::chrono::milliseconds timeout) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) throw std::runtime_error("forkpty failed");
  if (pid == 0) {
    // Child: the slave is stdin/stdout/stderr. No output processing: binary output must
    // arrive byte for byte. Echo stays on: the program turns it off to read the PIN,
    // which is how the parent knows it is safe to type.
    struct termios tio {};
    if (::tcgetattr(STDIN_FILENO, &tio) == 0) {
      tio.c_oflag &= ~static_cast<tcflag_t>(OPOST);
      ::tcsetattr(STDIN_FILENO, TCSANOW, &tio);
    }
    ::execvp(args[0], args.data());
    ::_exit(127);
  }

  PtyResult result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd p{master, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;  // timeout: checked at the top
    char buf[4096];
    ssize_t got = ::read(master, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EIO: every slave descriptor is closed, the child is done
    result.output.append(buf, static_cast<std::size_t>(got));
    if (!result.pin_prompted && result.output.find("PIN:") != std::string::npos) {
      // A PIN prompt flushes pending input when it turns echo off (TCSAFLUSH), so a PIN
      // typed before that would be lost: wait for echo to go off. If it never does, never
      // type the PIN (it would be echoed into the output).
      bool echo_off = false;
      while (!echo_off && std::chrono::steady_clock::now() < deadline) {
        struct termios tio {};
        if (::tcgetattr(master, &tio) == 0 && !(tio.c_lflag & ECHO)) {
          echo_off = true;
        } else {
          ::usleep(2000);
        }
      }
      if (!echo_off) continue;  // times out at the top of the loop
      std::string line = pin + "\n";
      if (::write(master, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
        throw std::runtime_error("cannot write the PIN to the terminal");
      result.pin_prompted = true;
    }
  }
  if (result.timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::close(master);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) result.exit_code = 128 + WTERMSIG(status);
  return result;
}

}  // namespace keysvc::test
