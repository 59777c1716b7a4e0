// libkeysvc.so's own translation unit. The exported functions are keysvc_openssl's
// c_api.cc (linked whole); this file only anchors the shared library target and checks
// that the C header stays valid C++ too.
#include "keysvc/openssl/keysvc_openssl.h"
