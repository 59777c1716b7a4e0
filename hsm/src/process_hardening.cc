#include "keysvc/hsm/process_hardening.h"

#include <sys/prctl.h>
#include <sys/resource.h>

namespace keysvc::hsm {

ProcessHardening harden_process(bool allow_core_dumps) noexcept {
  if (!allow_core_dumps) {
    (void)::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    rlimit core{};
    if (::getrlimit(RLIMIT_CORE, &core) == 0 && core.rlim_cur != 0) {
      core.rlim_cur = 0;
      (void)::setrlimit(RLIMIT_CORE, &core);
    }
  }
  ProcessHardening state;
  state.dumpable = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1;
  rlimit core{};
  state.core_limit_zero = ::getrlimit(RLIMIT_CORE, &core) == 0 && core.rlim_cur == 0;
  return state;
}

}  // namespace keysvc::hsm
