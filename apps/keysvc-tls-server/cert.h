// The server's certificate and key: loaded from files, or generated once if both are
// absent.
#pragma once

#include <string>

namespace tls_server {

// If neither file exists, generates a self-signed EC P-256 certificate (CN=localhost,
// SAN DNS:localhost and IP:127.0.0.1, one year) and writes it to `cert_path` (0644)
// and the key to `key_path` (0600). Returns true if it generated them. Throws
// std::runtime_error (one line) if only one of the files exists or anything fails.
bool ensure_certificate(const std::string& cert_path, const std::string& key_path);

}  // namespace tls_server
