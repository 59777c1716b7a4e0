// A child process for tests: spawned with posix_spawnp, stdin from a string, stdout
// and stderr captured to files in a private temporary folder, every wait bounded.
//
//   keysvc::test::Process server({bin, "--listen", "127.0.0.1:0"});
//   auto m = server.wait_for_stderr(std::regex("listening on 127.0.0.1:(\\d+)"), 10s);
//   ...
//   server.signal(SIGTERM);
//   auto code = server.wait(10s);  // std::nullopt on timeout
//
// A Process still running when destroyed is killed with SIGKILL and reaped.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include <chrono>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace keysvc::test {

class Process {
 public:
  // Starts argv[0] (looked up in PATH if it has no '/') with `stdin_data` as its
  // standard input (then EOF). Inherits the environment, plus `extra_env` ("NAME=VALUE",
  // replacing an inherited NAME): a value only this child sees, never in its argv (a
  // PIN for env:NAME). Throws std::runtime_error.
  explicit Process(std::vector<std::string> argv, const std::string& stdin_data = {},
                   const std::vector<std::string>& extra_env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Sends `sig` unless the process has already been reaped.
  void signal(int sig);

  // Waits up to `timeout` for the process to end. Returns its exit code, 128 + N if
  // killed by signal N, or std::nullopt if it is still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // The exit code if it has ended (reaping it), std::nullopt while it runs.
  std::optional<int> poll();

  // What the process has written so far.
  std::string out() const;
  std::string err() const;

  // Waits until stderr matches `pattern` (searched in the whole text) or the timeout
  // passes or the process exits. Returns the match and its groups ([0] is the whole
  // match), or std::nullopt.
  std::optional<std::vector<std::string>> wait_for_stderr(const std::regex& pattern,
                                                          std::chrono::milliseconds timeout);

  // "argv[0] arg1 ..." for messages.
  std::string command_line() const;

 private:
  // Copies stdout and stderr to $KEYSVC_TEST_TMPDIR/logs/processes (the secret scan).
  void keep_output() const noexcept;

  std::vector<std::string> argv_;
  std::string dir_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

struct RunResult {
  std::optional<int> exit_code;  // std::nullopt: timed out (the process was killed)
  std::string out;
  std::string err;
};

// Runs a command to completion, killing it if it takes longer than `timeout`.
RunResult run(std::vector<std::string> argv, const std::string& stdin_data, std::chrono::milliseconds timeout,
              const std::vector<std::string>& extra_env = {});

// Runs child() in a forked child of this process and returns its exit code: what child()
// returned (0..255), or 128 + N if a signal N ended it. For tests of what a process does
// to itself (prctl, setuid, rlimits) or what a child sees after fork().
template <class F>
int in_forked_child(F child) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(child());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Waits up to `timeout` for the forked child `pid`: its exit code, or 128 + N if signal N
// ended it; -1 if it is still running then (it is killed with SIGKILL and reaped). For
// fork() children of a test, whose hang must be a failure with its reason rather than
// a ctest timeout.
int wait_for_child(pid_t pid, std::chrono::milliseconds timeout);

// Number of lines in `text` (a final line without '\n' counts).
std::size_t count_lines(const std::string& text);

// The whole content of the file at `path` ("" if it cannot be read).
std::string read_file(const std::string& path);

}  // namespace keysvc::test
