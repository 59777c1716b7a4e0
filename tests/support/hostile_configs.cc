#include "hostile_configs.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "test_token.h"

namespace keysvc::test {

namespace {
void write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ::chmod(path.c_str(), 0600);
}
}  // namespace

std::vector<HostileConfig> write_hostile_configs(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const TestToken& t = TestToken::get();
  const std::string module = std::string("module = \"") + kSoftHsmModule + "\"\n";
  const std::string token = "token = \"" + t.token_uri() + "\"\n";
  const std::string pin = "pin = \"file:" + t.pin_path() + "\"\n";
  const std::string good_hsm = "[hsm]\n" + module + token + pin;
  const std::string wrong_pin = "wrong-" + random_text(12);
  const std::string literal_pin = "lit-" + random_text(12);
  write(dir + "/wrong-pin", wrong_pin + "\n");
  write(dir + "/empty-pin", "");

  struct Case {
    std::string name, text, secret;
    std::vector<std::pair<std::string, std::string>> env;
  };
  std::vector<Case> cases = {
      {"toml-syntax", "[hsm\nmodule = \n", "", {}},
      {"unknown-key", good_hsm + "[tickets]\nlifetme = \"2h\"\n", "", {}},
      {"unknown-section", good_hsm + "[ticket]\nlifetime = \"2h\"\n", "", {}},
      {"bad-duration", good_hsm + "[tickets]\nlifetime = \"2 hours\"\n", "", {}},
      {"huge-duration", good_hsm + "[tickets]\nlifetime = \"99999999999999d\"\n", "", {}},
      {"negative-sessions", good_hsm + "sessions = -1\n", "", {}},
      {"wrong-type", good_hsm + "sessions = \"four\"\n", "", {}},
      {"window-shorter-than-lifetime", good_hsm + "[tickets]\nlifetime = \"2h\"\n[rotation]\ndecrypt_window = \"1m\"\n",
       "", {}},
      {"bad-log-level", good_hsm + "[log]\nlevel = \"loud\"\n", "", {}},
      {"missing-module", "[hsm]\n" + token + pin, "", {}},
      {"module-not-found", "[hsm]\nmodule = \"/nonexistent/libpkcs11.so\"\n" + token + pin, "", {}},
      {"module-not-pkcs11", "[hsm]\nmodule = \"/lib/x86_64-linux-gnu/libz.so.1\"\n" + token + pin, "", {}},
      {"uri-malformed", "[hsm]\n" + module + "token = \"pkcs11:token=%zz\"\n" + pin, "", {}},
      {"uri-not-pkcs11", "[hsm]\n" + module + "token = \"https://example.com/\"\n" + pin, "", {}},
      {"uri-names-objects", "[hsm]\n" + module + "token = \"" + t.token_uri() + ";object=x;type=secret-key\"\n" + pin,
       "", {}},
      {"token-absent", "[hsm]\n" + module + "token = \"pkcs11:token=no-such-token\"\n" + pin, "", {}},
      {"uri-pin-value-wrong", "[hsm]\n" + module + "token = \"" + t.token_uri() + "?pin-value=" + literal_pin + "\"\n",
       literal_pin, {}},
      {"pin-wrong", "[hsm]\n" + module + token + "pin = \"file:" + dir + "/wrong-pin\"\n", wrong_pin, {}},
      {"pin-file-missing", "[hsm]\n" + module + token + "pin = \"file:" + dir + "/no-such-pin\"\n", "", {}},
      {"pin-file-empty", "[hsm]\n" + module + token + "pin = \"file:" + dir + "/empty-pin\"\n", "", {}},
      {"pin-env-unset", "[hsm]\n" + module + token + "pin = \"env:KEYSVC_SWEEP_UNSET\"\n", "",
       {{"KEYSVC_SWEEP_UNSET", ""}}},
      {"pin-env-wrong", "[hsm]\n" + module + token + "pin = \"env:KEYSVC_SWEEP_PIN\"\n", wrong_pin,
       {{"KEYSVC_SWEEP_PIN", wrong_pin}}},
      {"pin-literal", "[hsm]\n" + module + token + "pin = \"" + literal_pin + "\"\n", literal_pin, {}},
      {"no-pin", "[hsm]\n" + module + token, "", {}},
      {"binary-garbage", std::string("\x00\xff\xfe[hsm]\x01\n\x80\x81module = \"\xc3\x28\"\n", 26), "", {}},
      {"empty-file", "", "", {}},
  };
  std::vector<HostileConfig> out;
  for (const auto& c : cases) {
    std::string path = dir + "/" + c.name + ".toml";
    write(path, c.text);
    out.push_back({c.name, path, c.secret, c.env});
  }
  std::filesystem::create_directories(dir + "/a-folder.toml");
  out.push_back({"config-is-a-folder", dir + "/a-folder.toml", "", {}});
  out.push_back({"config-missing", dir + "/no-such.toml", "", {}});
  return out;
}

}  // namespace keysvc::test
