// What the Apache httpd test files share: httpd options with mod_keysvc on a test TOML.
#pragma once

#include <string>

#include "apache_instance.h"
#include "webserver_keysvc.h"
#include "worker_user.h"

namespace keysvc::test {

inline std::string apache_module_path() { return KEYSVC_APACHE_MODULE; }

// `children` children, KeysvcConfig in the main server and KeysvcTickets on in the TLS
// virtual host, the localhost certificate. The token is the worker user's
// (worker_user.h).
inline ApacheOptions keysvc_apache(int children, const std::string& toml) {
  share_token_with_worker();
  ApacheOptions o;
  o.children = children;
  o.module = apache_module_path();
  o.main = "KeysvcConfig " + toml + "\n";
  o.vhost = "    KeysvcTickets on\n";
  o.cert = localhost_cert().cert;
  o.key = localhost_cert().key;
  return o;
}

}  // namespace keysvc::test
