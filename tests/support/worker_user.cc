#include "worker_user.h"

#include <pwd.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "process.h"
#include "test_token.h"

namespace keysvc::test {

using namespace std::chrono_literals;

const std::optional<WorkerUser>& worker_user() {
  static const std::optional<WorkerUser> user = []() -> std::optional<WorkerUser> {
    if (::geteuid() != 0) return std::nullopt;
    const passwd* pw = ::getpwnam("www-data");
    if (pw == nullptr) throw std::runtime_error("tests run as root need the user www-data (Debian's base-passwd)");
    return WorkerUser{pw->pw_name, pw->pw_uid, pw->pw_gid};
  }();
  return user;
}

void give_to_worker(const std::string& path) {
  const auto& user = worker_user();
  if (!user) return;
  namespace fs = std::filesystem;
  if (::chown(path.c_str(), user->uid, user->gid) != 0) throw std::runtime_error("cannot chown " + path);
  if (!fs::is_directory(path)) return;
  for (const auto& entry : fs::recursive_directory_iterator(path)) {
    if (::lchown(entry.path().c_str(), user->uid, user->gid) != 0) {
      throw std::runtime_error("cannot chown " + entry.path().string());
    }
  }
}

void share_token_with_worker() {
  const auto& user = worker_user();
  static bool shared = false;  // files made afterwards are the worker user's already
  if (!user || shared) return;
  namespace fs = std::filesystem;
  const TestToken& token = TestToken::get();
  give_to_worker(token.dir() + "/tokens");
  fs::permissions(token.dir(), fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  fs::permissions(token.dir() + "/softhsm2.conf", fs::perms::owner_read | fs::perms::owner_write |
                                                      fs::perms::group_read | fs::perms::others_read);
  RunResult r = run(as_worker({"test", "-r", token.dir() + "/softhsm2.conf"}), "", 10s);
  if (r.exit_code != std::optional<int>(0)) {
    throw std::runtime_error(user->name + " cannot reach " + token.dir() +
                             ": make the folders above it traversable (chmod o+x)");
  }
  shared = true;
}

std::vector<std::string> as_worker(std::vector<std::string> argv) {
  const auto& user = worker_user();
  if (!user) return argv;
  std::vector<std::string> wrapped = {"setpriv", "--reuid=" + std::to_string(user->uid),
                                      "--regid=" + std::to_string(user->gid), "--clear-groups", "--"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

std::vector<std::string> worker_pin_env() {
  return {std::string(kWorkerPinVariable) + "=" + TestToken::get().pin()};
}

}  // namespace keysvc::test
