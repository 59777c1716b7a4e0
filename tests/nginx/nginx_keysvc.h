// What the nginx test files share: nginx options with the keysvc module on a test TOML.
#pragma once

#include <string>

#include "nginx_instance.h"
#include "webserver_keysvc.h"
#include "worker_user.h"

namespace keysvc::test {

inline std::string nginx_module_path() { return KEYSVC_NGINX_MODULE; }

// `workers` workers, keysvc_config in http and keysvc_tickets on in the server, the
// localhost certificate. The token is the worker user's (worker_user.h).
inline NginxOptions keysvc_nginx(int workers, const std::string& toml) {
  share_token_with_worker();
  NginxOptions o;
  o.workers = workers;
  o.load_modules = {nginx_module_path()};
  o.http = "    keysvc_config " + toml + ";\n";
  o.server = "        keysvc_tickets on;\n";
  o.cert = localhost_cert().cert;
  o.key = localhost_cert().key;
  return o;
}

}  // namespace keysvc::test
