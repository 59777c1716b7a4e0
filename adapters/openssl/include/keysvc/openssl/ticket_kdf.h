// The "KEYSVC-TICKET-KDF" algorithm of keysvc's in-process OpenSSL provider.
//
// This KDF is the ticket callback's only way to the HSM: it is fetched from the
// SSL_CTX's library context with the property query "provider=keysvc-N" and answers
// with per-ticket keys, never with long-term keys or PKCS#11 handles.
//
// Settable context parameters:
//   "operation"  UTF8 string  "issue" or "open"
//   "key-name"   octets (16)  open: the key name from the ticket
//   "iv"         octets (16)  open: the IV from the ticket
// EVP_KDF_derive output:
//   issue: 96 bytes = key_name(16) | iv(16) | aes_256_key(32) | hmac_sha256_key(32)
//          (the provider picks the encrypting generation and a fresh random IV)
//   open:  64 bytes = aes_256_key(32) | hmac_sha256_key(32)
// Gettable context parameters:
//   "open-status"       int    after an open: one of KEYSVC_OPEN_* below
//   "encrypt-key-name"  octets the name new tickets are issued under (16 bytes)
// The caller wipes the output with OPENSSL_cleanse once its EVP contexts hold the keys.
#pragma once

#define KEYSVC_TICKET_KDF_NAME "KEYSVC-TICKET-KDF"
#define KEYSVC_KDF_PARAM_OPERATION "operation"
#define KEYSVC_KDF_PARAM_KEY_NAME "key-name"
#define KEYSVC_KDF_PARAM_IV "iv"
#define KEYSVC_KDF_PARAM_OPEN_STATUS "open-status"
#define KEYSVC_KDF_PARAM_ENCRYPT_KEY_NAME "encrypt-key-name"

#define KEYSVC_KDF_ISSUE_OUTPUT_BYTES 96
#define KEYSVC_KDF_OPEN_OUTPUT_BYTES 64

#define KEYSVC_OPEN_OK 1          /* keys derived, generation still encrypts */
#define KEYSVC_OPEN_RENEW 2       /* keys derived, renew under the current generation */
#define KEYSVC_OPEN_UNKNOWN_KEY 3 /* no generation has this name */
#define KEYSVC_OPEN_HSM_ERROR 4   /* the token failed */
#define KEYSVC_OPEN_RETIRED 5     /* the generation is expired or revoked */
