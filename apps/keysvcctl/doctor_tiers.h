// What the latencies keysvcctl doctor measured mean for keysvc's three kinds of HSM work
// (its "tiers"), at the configured settings:
//   ticket path  every resumption derives its ticket's keys in the token (two HMACs with
//                derivation 1, one with derivation 2), and every full handshake issues
//                tickets.per_handshake tickets, each as many HMACs: the handshakes per
//                second one session sustains, and hsm.sessions of them if the token
//                serves sessions in parallel (an upper bound: a TPM serves one at a time);
//   rescans      every rotation.refresh_interval each server searches the token and reads
//                each generation (about 1 + 3 per generation operations; 3 generations
//                assumed): HSM operations and HSM time per hour and server;
//   rotation     every rotation.encrypt_period the rotator makes a generation (two keys
//                and a record): operations and time per hour.
#pragma once

#include <vector>

#include "doctor.h"
#include "keysvc/hsm/module_profile.h"

namespace keysvcctl {

// Appends one "tiers" finding per kind of work (nothing for latencies not measured: 0).
void add_tier_findings(const keysvc::Config& config, const keysvc::hsm::ModuleProfile& profile, double hmac_us,
                       double keygen_us, double find_us, double data_us, std::vector<Finding>& out);

}  // namespace keysvcctl
