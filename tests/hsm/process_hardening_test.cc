// harden_process(): non-dumpable with RLIMIT_CORE 0, or untouched when core dumps are
// allowed. Each case runs in a forked child, which it changes for good.
#include "keysvc/hsm/process_hardening.h"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>

#include "process.h"

namespace keysvc::hsm {
namespace {


TEST(ProcessHardening, MakesTheProcessNonDumpable) {
  EXPECT_EQ(test::in_forked_child([] {
              rlimit core{RLIM_INFINITY, RLIM_INFINITY};
              ::setrlimit(RLIMIT_CORE, &core);
              if (::prctl(PR_GET_DUMPABLE) != 1) return 1;
              ProcessHardening h = harden_process(false);
              if (h.dumpable || !h.core_limit_zero) return 2;
              if (::prctl(PR_GET_DUMPABLE) != 0) return 3;
              ::getrlimit(RLIMIT_CORE, &core);
              if (core.rlim_cur != 0 || core.rlim_max != RLIM_INFINITY) return 4;  // the hard limit stays
              h = harden_process(false);  // idempotent
              return h.dumpable ? 5 : 0;
            }),
            0);
}

TEST(ProcessHardening, CoreDumpsAllowedChangesNothing) {
  EXPECT_EQ(test::in_forked_child([] {
              rlimit core{RLIM_INFINITY, RLIM_INFINITY};
              ::setrlimit(RLIMIT_CORE, &core);
              ProcessHardening h = harden_process(true);
              if (!h.dumpable || h.core_limit_zero) return 1;
              return ::prctl(PR_GET_DUMPABLE) == 1 ? 0 : 2;
            }),
            0);
}

}  // namespace
}  // namespace keysvc::hsm
