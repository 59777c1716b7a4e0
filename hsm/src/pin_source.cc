#include "keysvc/hsm/pin_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "keysvc/hsm/error.h"

namespace keysvc::hsm {

namespace {

// The file's bytes, straight into secure memory: no stream buffer, no std::string.
SecretString read_pin_file(const std::string& path, PinSource::Stamp* stamp) {
  // O_NONBLOCK: a FIFO put in the file's place must not hang the login.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) throw ConfigError("cannot read PIN file " + path + ": " + std::strerror(errno));
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_fd{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw ConfigError("cannot read PIN file " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw ConfigError("cannot read PIN file " + path + ": not a regular file");
  if (stamp != nullptr)
    *stamp = {st.st_dev, st.st_ino, static_cast<unsigned long long>(st.st_size),
              st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec, st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec};
  SecretString pin = SecretString::with_capacity(kMaxSecretBytes);
  std::span<char> room = pin.buffer();
  std::size_t got = 0;
  for (;;) {
    // One byte more than the room would take shows that the file is too long.
    char probe = 0;
    const bool full = got == room.size();
    ssize_t n = full ? ::read(fd, &probe, 1) : ::read(fd, room.data() + got, room.size() - got);
    wipe(&probe, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw ConfigError("cannot read PIN file " + path + ": " + std::strerror(errno));
    if (n == 0) break;
    if (full) throw ConfigError("PIN file " + path + " is longer than " + std::to_string(kMaxSecretBytes) + " bytes");
    got += static_cast<std::size_t>(n);
  }
  pin.resize(got);
  return pin;
}

// env: PINs read so far in this process, by variable name (secure memory).
std::mutex g_env_mutex;
std::map<std::string, std::shared_ptr<const SecretString>>& env_pins() {
  static auto* pins = new std::map<std::string, std::shared_ptr<const SecretString>>();
  return *pins;
}

SecretString read_pin_env(const std::string& name) {
  std::lock_guard lock(g_env_mutex);
  auto& pins = env_pins();
  if (char* value = std::getenv(name.c_str())) {
    const std::size_t n = std::strlen(value);
    if (n > kMaxSecretBytes)
      throw ConfigError("PIN environment variable " + name + " is longer than " + std::to_string(kMaxSecretBytes) +
                        " bytes");
    pins[name] = std::make_shared<const SecretString>(SecretString::copy_of(std::string_view(value, n)));
    // Overwritten where it is (the process's initial environment block is what
    // /proc/PID/environ shows), then unset so no child process inherits it.
    wipe(value, n);
    ::unsetenv(name.c_str());
  }
  auto it = pins.find(name);
  if (it == pins.end()) throw ConfigError("PIN environment variable " + name + " is not set");
  return SecretString::copy_of(it->second->reveal());
}

}  // namespace

PinSource PinSource::parse(std::string_view spec) {
  PinSource p;
  if (spec.starts_with("file:")) {
    p.kind_ = Kind::kFile;
    p.where_ = std::string(spec.substr(5));
  } else if (spec.starts_with("env:")) {
    p.kind_ = Kind::kEnv;
    p.where_ = std::string(spec.substr(4));
  } else if (spec.starts_with("/")) {
    p.kind_ = Kind::kFile;
    p.where_ = std::string(spec);
  } else {
    // Do not echo the value: a user may have pasted the PIN itself here.
    throw ConfigError("PIN source must be file:PATH or env:NAME");
  }
  if (p.where_.empty()) throw ConfigError("PIN source '" + std::string(spec) + "' names nothing");
  return p;
}

PinSource PinSource::literal(SecretString pin) {
  PinSource p;
  p.kind_ = Kind::kLiteral;
  p.literal_ = std::make_shared<const SecretString>(std::move(pin));
  return p;
}

std::string PinSource::describe() const {
  switch (kind_) {
    case Kind::kFile:
      return "file:" + where_;
    case Kind::kEnv:
      return "env:" + where_;
    case Kind::kLiteral:
      return "pin-value";
  }
  return "?";
}

SecretString PinSource::read(Stamp* stamp) const {
  if (stamp != nullptr) *stamp = Stamp{};
  SecretString pin;
  switch (kind_) {
    case Kind::kFile:
      pin = read_pin_file(where_, stamp);
      break;
    case Kind::kEnv:
      pin = read_pin_env(where_);
      break;
    case Kind::kLiteral:
      pin = SecretString::copy_of(literal_->reveal());
      break;
  }
  std::string_view text = pin.reveal();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  pin.resize(text.size());
  if (pin.empty()) throw ConfigError("PIN from " + describe() + " is empty");
  return pin;
}

}  // namespace keysvc::hsm
