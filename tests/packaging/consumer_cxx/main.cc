// An out-of-tree C++ program built against the installed keysvc (find_package(keysvc),
// keysvc::openssl): opens the ticket key service from a keysvc TOML file, derives the
// keys for one new ticket in the token and opens them again under the same name and
// IV, and checks they agree. Prints "derived=1 opened=1 generations=N" and exits 0,
// or one error line and exits 1.
//
//   usage: consumer_cxx KEYSVC_TOML
#include <cstdio>
#include <exception>

#include "keysvc/config.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/ticket_key_service.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "consumer_cxx: usage: consumer_cxx KEYSVC_TOML\n");
    return 1;
  }
  try {
    auto service = keysvc::TicketKeyService::open(keysvc::Config::load_file(argv[1]));
    keysvc::IssueKeys issued;
    if (!service->derive_for_issue(issued)) throw std::runtime_error("derive_for_issue failed");
    keysvc::TicketKeys opened;
    const keysvc::OpenStatus status = service->derive_for_open(issued.name, issued.iv, opened);
    if (status != keysvc::OpenStatus::kOk) throw std::runtime_error("derive_for_open refused the new ticket's keys");
    if (opened.aes_key != issued.keys.aes_key || opened.hmac_key != issued.keys.hmac_key)
      throw std::runtime_error("issue and open derived different keys");
    std::printf("derived=1 opened=1 generations=%zu\n", service->ring()->generations().size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer_cxx: %s\n", e.what());
    return 1;
  }
}
