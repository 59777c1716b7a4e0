// keysvc-faultmod: a fault-injecting PKCS#11 module for tests (libkeysvc-faultmod.so).
//
// A real shared library exporting C_GetFunctionList. Every PKCS#11 call is forwarded to
// a real module (SoftHSM), except when a rule in the control file says otherwise. It is
// the one HSM stand-in the tests allow: everything that is not injected is SoftHSM's
// own answer.
//
// Environment (read when the module is loaded):
//   KEYSVC_FAULTMOD_TARGET   the real module (default /usr/lib/softhsm/libsofthsm2.so)
//   KEYSVC_FAULTMOD_CONTROL  the control file (unset or missing file: no faults)
//   KEYSVC_FAULTMOD_STATS    optional: a file the module rewrites with its counters
//
// The control file is re-read when it changes (inode, size or mtime; checked at most
// every 2 ms, a stat(2) each time), so a test can flip faults while a server runs.
// Replace it atomically (write a temporary file, rename it over) so a reader never sees
// half a file. One rule per line, '#' starts a comment:
//
//   FUNCTION ACTION [ARG] [times N]
//
//   FUNCTION  a PKCS#11 function name (C_Sign), or a prefix ending in '*' (C_FindObjects*
//             matches C_FindObjectsInit, C_FindObjects, C_FindObjectsFinal; C_* matches all)
//   ACTION    CKR_DEVICE_ERROR | CKR_SESSION_HANDLE_INVALID | CKR_USER_NOT_LOGGED_IN |
//             CKR_TOKEN_NOT_PRESENT | CKR_DEVICE_REMOVED | CKR_FUNCTION_FAILED |
//             CKR_GENERAL_ERROR | CKR_OBJECT_HANDLE_INVALID | CKR_KEY_HANDLE_INVALID |
//             CKR_MECHANISM_INVALID | CKR_ATTRIBUTE_TYPE_INVALID | CKR_FUNCTION_NOT_SUPPORTED
//                         the call returns this code without reaching the real module
//                         (the last three: a token that lacks a mechanism, an attribute
//                         or a function, e.g. "C_GenerateKey CKR_MECHANISM_INVALID");
//                         CKR_CRYPTOKI_ALREADY_INITIALIZED (a C_Initialize in a forked
//                         child of a module that kept the parent's state)
//             latency MS  the call sleeps MS milliseconds, then is forwarded
//             hang        the call blocks until no hang rule matches it any more (the
//                         file is polled every 2 ms), then is forwarded
//             logout      the real module's C_Logout is called on the call's session (a
//                         token that logged everyone out), then CKR_USER_NOT_LOGGED_IN
//                         is returned; only for functions that take a session
//
//   times N   the rule injects N times, then lets calls through (until the file changes)
//
// The first matching rule wins. A malformed file injects nothing: the module prints one
// line "keysvc-faultmod: FILE:LINE: reason" to stderr and counts it under "errors".
//
// Counters. Every call and every injection is counted. The stats file (if configured)
// is rewritten (temporary file + rename) at each injection and, while calls go on, at
// most every 20 ms, with lines:
//   injected N                   faults injected in total (a hang counts once)
//   errors N                     malformed control files seen
//   calls FUNCTION N             calls made to FUNCTION (injected or not)
//   rule FUNCTION ACTION N       injections per rule, as written in the control file
// In-process users can read the same text with keysvc_faultmod_stats() (dlsym).
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Writes the counters text above into buf (NUL-terminated, truncated to len) and
// returns its full length.
size_t keysvc_faultmod_stats(char* buf, size_t len);

// Faults injected so far.
unsigned long keysvc_faultmod_injected(void);

#ifdef __cplusplus
}
#endif
