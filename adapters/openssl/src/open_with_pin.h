// Opening a TicketKeyService with a PIN held in memory instead of read from the
// configuration's PIN source: what keysvc_service_open_preloaded() (c_api_preload.cc)
// needs.
//
// TEMPORARY: this stands in for TicketKeyService::open(config, OpenOptions{.pin = ...}),
// which is being added to keysvc/ticket_key_service.h. Once it is on main, open_with_pin()
// becomes that call and pin_source_of() the service's own selection.
#pragma once

#include <memory>

#include "keysvc/config.h"
#include "keysvc/hsm/pin_source.h"
#include "keysvc/hsm/secret.h"
#include "keysvc/ticket_key_service.h"

namespace keysvc::openssl::detail {

// The PIN source the configuration names, in the order open_session_pool() looks:
// hsm.pin, then the token URI's pin-source, then its pin-value. Throws ConfigError if
// there is none.
hsm::PinSource pin_source_of(const Config& config);

// TicketKeyService::open(config) with `pin` as the PIN: the configuration's own PIN
// source is not read.
std::shared_ptr<TicketKeyService> open_with_pin(const Config& config, const hsm::SecretString& pin);

}  // namespace keysvc::openssl::detail
