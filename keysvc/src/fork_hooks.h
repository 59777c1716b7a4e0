// pthread_atfork handlers for every open TicketKeyService (ticket_key_service.h, "Fork
// safety"). Private to keysvc_core.
#pragma once

namespace keysvc {

class TicketKeyService;

struct ForkHooks {
  // Registers / unregisters a service (open() and the destructor). remove() waits for a
  // fork in progress to finish with the service.
  static void add(TicketKeyService* service);
  static void remove(TicketKeyService* service) noexcept;

  // The handlers (installed once, on the first add()).
  static void prepare() noexcept;
  static void parent() noexcept;
  static void child() noexcept;
};

}  // namespace keysvc
