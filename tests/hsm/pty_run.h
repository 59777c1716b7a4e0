// Runs a program under a pseudo-terminal and answers its PIN prompt, so that tools that
// insist on a terminal (pkcs11-tool reads the PIN from the tty) can be driven without
// ever putting the PIN on their command line. The environment is passed through.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace keysvc::test {

struct PtyResult {
  int exit_code = -1;       // the exit status, or 128 + signal
  bool timed_out = false;   // killed after the timeout
  bool pin_prompted = false;  // the program asked for a PIN and was given it
  std::string output;       // everything written to the terminal (stdout and stderr)
};

// argv[0] is looked up in PATH. `pin` is written to the terminal, followed by a newline,
// the first time the output contains "PIN:", once the program has turned terminal echo
// off (so the PIN is never echoed, and not flushed away by the prompt). Output
// post-processing is off on the terminal, so binary output arrives unchanged.
PtyResult run_under_pty(const std::vector<std::string>& argv, const std::string& pin,
                        std::chrono::milliseconds timeout = std::chrono::seconds(20));

}  // namespace keysvc::test
