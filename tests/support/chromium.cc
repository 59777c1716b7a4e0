#include "chromium.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace keysvc::test {

namespace fs = std::filesystem;

std::string chromium_binary() {
  for (const char* candidate : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
    if (::access(candidate, X_OK) == 0) return candidate;
  return {};
}

RunResult chromium(const std::vector<std::string>& args, const std::string& path) {
  const std::string bin = chromium_binary();
  if (bin.empty()) return {std::nullopt, "", "chromium is not installed (tools/install-deps.sh)"};
  std::string profile = (fs::temp_directory_path() / "keysvc-chromium-XXXXXX").string();
  if (::mkdtemp(profile.data()) == nullptr) return {std::nullopt, "", "mkdtemp failed"};
  std::vector<std::string> argv = {bin,
                                   "--headless",
                                   "--no-sandbox",
                                   "--disable-gpu",
                                   "--disable-quic",
                                   "--no-first-run",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   "--user-data-dir=" + profile};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("file://" + fs::absolute(path).string());
  RunResult r = run(argv, "", std::chrono::seconds(60));
  std::error_code ignored;
  fs::remove_all(profile, ignored);
  return r;
}

RunResult chromium_dump_dom(const std::string& path) { return chromium({"--dump-dom"}, path); }

RunResult chromium_screenshot(const std::string& path, const std::string& png, int width, int height) {
  return chromium({"--hide-scrollbars", "--window-size=" + std::to_string(width) + "," + std::to_string(height),
                   "--screenshot=" + png},
                  path);
}

}  // namespace keysvc::test
