// A real prefork server for tests (nginx, Apache httpd): a master process started in
// the foreground under keysvc::test::Process with its configuration written into a
// private folder, waited for until it accepts connections on 127.0.0.1 and runs all its
// workers, and stopped (its graceful stop signal, then SIGKILL for master and workers)
// when destroyed. nginx_instance.h and apache_instance.h say what each writes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "process.h"

namespace keysvc::test {

class PreforkServer {
 public:
  virtual ~PreforkServer();
  PreforkServer(const PreforkServer&) = delete;
  PreforkServer& operator=(const PreforkServer&) = delete;

  int port() const { return port_; }
  // "workers" (nginx) or "children" (httpd), for messages and figures.
  const std::string& worker_noun() const { return worker_noun_; }
  const std::string& dir() const { return dir_; }
  pid_t master_pid() const;
  // The master's current worker processes.
  std::vector<pid_t> worker_pids() const;

  // The error log so far (the server's stderr ends up there too once it has read its
  // configuration).
  std::string error_log() const;
  const std::string& error_log_path() const { return error_log_path_; }
  // The first line of a sanitizer report (ASan, LSan, UBSan) in the error log, "" if
  // none. A worker that hits one exits and the master starts another, so the report in
  // the log is the only trace of it.
  std::string sanitizer_report() const;
  // Waits until the error log has at least `count` matches of `pattern`. False on timeout.
  bool wait_for_log(const std::regex& pattern, std::size_t count, std::chrono::milliseconds timeout) const;

  // Waits until every worker in `old` is gone and as many new ones run (after a reload
  // or graceful restart). False on timeout.
  bool wait_for_new_workers(const std::vector<pid_t>& old, std::chrono::milliseconds timeout) const;

  // Graceful stop (workers finish their connections and run their exit hooks). Returns
  // the master's exit code, or std::nullopt if it had to be killed.
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  bool running() const;

 protected:
  // What to start for a given port: the command, the configuration file to write first,
  // how many workers it runs, and the signal that stops it gracefully.
  struct Launch {
    std::vector<std::string> argv;
    std::string config_path, config_text;
    std::size_t workers = 1;
    int stop_signal = 0;
  };

  // `dir` is created (absolute) and the error log is dir/error_log_file.
  PreforkServer(std::string dir, const std::string& error_log_file, std::string worker_noun);

  // Starts the server on a free port of 127.0.0.1 and returns once it accepts
  // connections and runs its workers; tries another port if the one chosen was taken
  // meanwhile. Throws std::runtime_error (with the error log) if it does not start.
  // Derived constructors call it.
  void launch(const std::function<Launch(int port)>& make);

 private:
  void start(const Launch& launch);
  void kill_all();

  std::string dir_;
  std::string error_log_path_;
  std::string worker_noun_;
  int port_ = 0;
  int stop_signal_ = 0;
  std::size_t workers_ = 0;
  std::unique_ptr<Process> process_;
  std::vector<pid_t> last_workers_;
};

// A free TCP port on 127.0.0.1 (bound and released; another process could take it
// before the caller binds it).
int free_port();

// Children of `parent` (from /proc).
std::vector<pid_t> child_pids(pid_t parent);

// The processes of session `sid` (from /proc), e.g. a daemon and everything it forked,
// even after their parent is gone.
std::vector<pid_t> session_pids(pid_t sid);

// True if /proc/PID/maps of `pid` maps a file whose path contains `needle`.
bool maps_file(pid_t pid, const std::string& needle);

// The real user ID of `pid` (from /proc/PID/status), -1 if it cannot be read.
long process_uid(pid_t pid);

// The command line that starts `binary` with `args`. In an ASan build the modules need
// ASan's runtime, which must be the process's first library (it replaces malloc), and
// libstdc++ loaded before ASan starts (adapters/nginx/CMakeLists.txt): env(1) starts the
// uninstrumented server with both in LD_PRELOAD, and the workers inherit them by fork.
// Only the servers get them, never the clients the tests run. `sanitizer_env`
// ("NAME=VALUE") is added in such builds only.
std::vector<std::string> server_command(const std::string& binary, std::vector<std::string> args,
                                        const std::vector<std::string>& sanitizer_env = {});

// True in the sanitizer builds whose servers server_command() starts with a preloaded
// runtime.
bool servers_use_sanitizer_preload();

// Writes `text` to `path` (throws if it cannot).
void write_text_file(const std::string& path, const std::string& text);

}  // namespace keysvc::test
