// Audit logs as keysvc versions before anchors wrote them (docs/AUDIT.md, "Logs from
// before anchors"), for tests of how this version treats them: a chain_start at every
// open (no chain id), v2 seals (seal_message_v2) computed in the token with its audit
// key, and no anchor in the token.
#pragma once

#include <cstdint>
#include <string>

#include "keysvc/token_gateway.h"

namespace keysvc::test {

// Writes `runs` writer runs to `path` (replacing it), each: chain_start, config_loaded,
// an hsm_error record, seal; timestamps from `start_ms`, one second apart. Returns the
// number of lines.
std::size_t write_legacy_log(TokenGateway& gateway, const std::string& path, int runs, std::int64_t start_ms);

}  // namespace keysvc::test
