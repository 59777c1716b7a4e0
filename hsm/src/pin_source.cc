#include "keysvc/hsm/pin_source.h"

#include <cstdlib>
#include <fstream>
#include <iterator>

#include "keysvc/hsm/error.h"

namespace keysvc::hsm {

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

SecretString PinSource::read() const {
  std::string pin;
  WipeOnExit wipe_pin(pin);
  switch (kind_) {
    case Kind::kFile: {
      std::ifstream in(where_, std::ios::binary);
      if (!in) throw ConfigError("cannot read PIN file " + where_);
      pin.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      break;
    }
    case Kind::kEnv: {
      const char* v = std::getenv(where_.c_str());
      if (v == nullptr) throw ConfigError("PIN environment variable " + where_ + " is not set");
      pin = v;
      break;
    }
    case Kind::kLiteral:
      pin.assign(literal_->reveal());
      break;
  }
  while (!pin.empty() && (pin.back() == '\n' || pin.back() == '\r')) pin.pop_back();
  SecretString secret(std::move(pin));
  if (secret.empty()) throw ConfigError("PIN from " + describe() + " is empty");
  return secret;
}

}  // namespace keysvc::hsm
