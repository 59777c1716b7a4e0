// Debian's chromium, headless, for tests of HTML pages keysvc writes: render a local file,
// dump its DOM after its scripts ran, take a screenshot.
//
// Every run gets a fresh profile folder (removed afterwards) and the flags that keep a
// headless chromium from reaching the network on its own (no component updates, sync,
// background networking or QUIC); --no-sandbox because the suite runs as root.
#pragma once

#include <string>
#include <vector>

#include "process.h"

namespace keysvc::test {

// The chromium binary ("" if none is installed: tools/install-deps.sh installs it).
std::string chromium_binary();

// chromium --headless ... ARGS... file://PATH (a timeout of 60 s).
RunResult chromium(const std::vector<std::string>& args, const std::string& path);

// The page's DOM as serialised after load (its inline scripts have run).
RunResult chromium_dump_dom(const std::string& path);

// A PNG screenshot of the page at width x height pixels.
RunResult chromium_screenshot(const std::string& path, const std::string& png, int width, int height);

}  // namespace keysvc::test
