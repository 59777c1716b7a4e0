// The secrets tests know, registered for the suite-wide log scan (issue 4: no PIN, key,
// derived key or IV in any log; tools/scan_logs_for_secrets.py, run by ctest after every
// other test).
//
// Each test process appends to $KEYSVC_TEST_TMPDIR/secrets/<pid>.txt one line per
// secret, hex-encoded so the registry itself never holds the raw value: "text HEX" for
// PINs, "bytes HEX" for 32-byte values (derivation vectors, derived keys), "epoch HEX" for
// epoch keys of the epoch tier (derivation.h; the scan reports them apart, so a run shows
// it looked for them). Without KEYSVC_TEST_TMPDIR nothing is written. Thread-safe; never
// throws.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace keysvc::test {

void remember_secret_text(std::string_view text) noexcept;
void remember_secret_bytes(std::span<const std::uint8_t> bytes) noexcept;
// An epoch key a test derived through the token with a generation's root key (the same
// bytes a server of that generation holds for that epoch).
void remember_epoch_key(std::span<const std::uint8_t> bytes) noexcept;

}  // namespace keysvc::test
