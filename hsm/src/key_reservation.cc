#include "keysvc/hsm/key_reservation.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string_view>
#include <utility>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "token_write.h"

extern char** environ;

namespace keysvc::hsm {

namespace {

// Appends `s` as a JSON string. The request carries the PIN, so it is built by hand in a
// buffer the caller wipes, rather than in a JSON library's copies.
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Runs `tool reserve` with `request` on its stdin; returns its stderr's first line if it
// failed ("" on success). Bounded: the tool is killed after `timeout`.
std::string run_tool(const std::string& tool, const std::string& request, std::chrono::seconds timeout) {
  int in[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw Error("cannot run " + tool + ": pipe failed");
  Fd in_read{in[0]}, in_write{in[1]};
  if (::pipe2(err, O_CLOEXEC) != 0) throw Error("cannot run " + tool + ": pipe failed");
  Fd err_read{err[0]}, err_write{err[1]};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_read.fd, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, err_write.fd, 2);
  std::string arg0 = tool, arg1 = "reserve";
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, tool.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw UnsupportedError("cannot run the token's key tool " + tool + " (" + std::strerror(rc) + ")");
  ::close(std::exchange(in_read.fd, -1));
  ::close(std::exchange(err_write.fd, -1));
  // The request is far below a pipe's capacity: written at once, then EOF.
  const ssize_t written = ::write(in_write.fd, request.data(), request.size());
  ::close(std::exchange(in_write.fd, -1));
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{err_read.fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[512];
    const ssize_t n = ::read(err_read.fd, buf, sizeof buf);
    if (n <= 0) break;
    if (text.size() < 4096) text.append(buf, static_cast<std::size_t>(n));
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) return "timed out after " + std::to_string(timeout.count()) + " s";
  if (written != static_cast<ssize_t>(request.size())) return "could not hand it the request";
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "failed without a message" : line;
}

std::mutex g_claim_mutex;  // two threads of one process never claim the same key

}  // namespace

const std::string& reserved_key_label() {
  static const std::string label = [] {
    unsigned char r[4] = {};
    RAND_bytes(r, sizeof r);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%d-%02x%02x%02x%02x", kReservedKeyLabelPrefix, static_cast<int>(::getpid()),
                  r[0], r[1], r[2], r[3]);
    return std::string(buf);
  }();
  return label;
}

KeyReservation::KeyReservation(const Token& token, const PinSource& pin, std::size_t count) : token_(token) {
  const ModuleProfile& profile = token.profile();
  if (profile.key_source != KeySource::kReserved)
    throw UnsupportedError(profile.name + " generates keys itself: nothing to reserve");
  if (!token.module()->only_user())
    throw UnsupportedError(profile.name + ": reserving keys needs a re-initialise of the module, which another "
                                          "user of it in this process forbids");
  if (count == 0) return;
  std::string request;
  WipeOnExit wipe_request(request);
  {
    SecretString user_pin = pin.read();
    request = "{\"token\": ";
    append_json_string(request, token.info().label);
    request += ", \"key_label\": ";
    append_json_string(request, reserved_key_label());
    request += ", \"count\": " + std::to_string(count) + ", \"algorithm\": \"hmac:sha256\", \"userpin\": ";
    append_json_string(request, user_pin.reveal());
    request += "}";
  }
  // tpm2_ptool's addkey takes about 0.3-1 s per key.
  const std::string failure = run_tool(profile.key_tool, request, std::chrono::seconds(30 + 10 * count));
  if (!failure.empty()) throw Error(profile.key_tool + ": " + failure);
  if (!token.module()->restart(std::chrono::seconds(5)))
    throw UnsupportedError(profile.name + ": the module could not be re-initialised to see the reserved keys");
}

KeyReservation::~KeyReservation() {
  if (Module::process_exiting()) return;
  try {
    Session session(token_, true);
    for (auto h : find_objects(session, {.object_class = CKO_SECRET_KEY, .label = reserved_key_label()}))
      destroy_object(session, h);
  } catch (const Error&) {
    // Unclaimed keys are never used; leaving them costs only space.
  }
}

CK_OBJECT_HANDLE claim_reserved_key(Session& session, std::span<const std::uint8_t> id, const std::string& label) {
  std::lock_guard lock(g_claim_mutex);
  auto found = find_objects(session, {.object_class = CKO_SECRET_KEY, .label = reserved_key_label()});
  if (found.empty())
    throw UnsupportedError(session.profile().name +
                           " cannot generate keys through PKCS#11 (C_GenerateKey: CKR_FUNCTION_NOT_SUPPORTED) and "
                           "this process reserved none: keysvcctl creates them (rotation.self_rotate = false)");
  CK_ATTRIBUTE name[] = {
      {CKA_ID, const_cast<std::uint8_t*>(id.data()), static_cast<CK_ULONG>(id.size())},
      {CKA_LABEL, const_cast<char*>(label.data()), static_cast<CK_ULONG>(label.size())},
  };
  // tpm2-pkcs11 answers CKR_GENERAL_ERROR while another process reads its store (at its
  // C_Initialize): asked again (token_write.h), it names the key.
  checked_write(session, Call::kSetAttributeValue, session.fn()->C_SetAttributeValue, session.handle(), found.front(),
                name, std::size(name));
  return found.front();
}

}  // namespace keysvc::hsm
