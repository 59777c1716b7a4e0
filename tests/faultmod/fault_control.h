// Test-side control of keysvc-faultmod (faultmod.h): where the module is, the control
// and stats files of one fault scenario, and the counters the module reports.
//
//   keysvc::test::FaultControl faults(dir);   // dir/faults.conf, dir/faults.stats
//   faults.export_env();                      // before the module is loaded
//   faults.set("C_Sign CKR_DEVICE_ERROR\n");  // takes effect within 2 ms
//   ...
//   faults.clear();
//   EXPECT_GT(faults.stats().injected, 0u);
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace keysvc::test {

// Counters read from the module's stats file.
struct FaultStats {
  std::uint64_t injected = 0;
  std::uint64_t errors = 0;                      // malformed control files seen
  std::map<std::string, std::uint64_t> calls;    // function -> calls
  std::map<std::string, std::uint64_t> by_rule;  // "FUNCTION ACTION [ARG]" -> injections
  std::uint64_t calls_to(const std::string& function) const {
    auto it = calls.find(function);
    return it == calls.end() ? 0 : it->second;
  }
};

class FaultControl {
 public:
  // Paths of a scenario in `dir` (created if missing). Starts with no faults.
  explicit FaultControl(const std::string& dir);

  // The built module (libkeysvc-faultmod.so).
  static std::string module_path();

  // Sets KEYSVC_FAULTMOD_CONTROL / KEYSVC_FAULTMOD_STATS (and KEYSVC_FAULTMOD_TARGET to
  // SoftHSM) in this process's environment, for the module loaded here or in children.
  void export_env() const;

  // Replaces the rules atomically (temporary file + rename).
  void set(const std::string& rules) const;
  void clear() const { set(""); }

  // The module's counters as last written to the stats file (zeros if none yet).
  FaultStats stats() const;

 private:
  std::string control_;
  std::string stats_;
};

}  // namespace keysvc::test
