// open_for_append(): a writable folder cannot redirect keysvc's appends elsewhere.
#include "keysvc/safe_file.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "process.h"

namespace keysvc {
namespace {

namespace fs = std::filesystem;

class SafeFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("KEYSVC_TEST_TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/safe-file-XXXXXX";
    fs::create_directories(fs::path(tmpl).parent_path());
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The FileError message of open_for_append(path), or "(opened)".
  static std::string refusal(const std::string& path) {
    try {
      open_for_append(path);
    } catch (const FileError& e) {
      return e.what();
    }
    return "(opened)";
  }
  static void append(const UniqueFd& fd, const std::string& text) {
    ASSERT_EQ(::write(fd.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  static void expect_one_line(const std::string& msg, const std::string& path, const std::string& why) {
    EXPECT_EQ(msg.rfind("cannot open " + path + " for appending: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(why), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }

  std::string dir_;
};

TEST_F(SafeFileTest, CreatesWithTheModeAndAppends) {
  const std::string path = dir_ + "/audit.log";
  {
    UniqueFd fd = open_for_append(path, 0640);
    append(fd, "one\n");
  }
  UniqueFd again = open_for_append(path);
  append(again, "two\n");
  EXPECT_EQ(test::read_file(path), "one\ntwo\n");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u & ~static_cast<unsigned>(::umask(::umask(0))));
  EXPECT_NE(::fcntl(again.get(), F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_EQ(::fcntl(again.get(), F_GETFL) & O_NONBLOCK, 0);  // blocking writes from here on
  EXPECT_NE(::fcntl(again.get(), F_GETFL) & O_APPEND, 0);
}

// The attack: the log folder is writable by someone else, who plants the log's name as a
// link to a file root owns. The target is untouched; a link to a missing file creates
// nothing.
TEST_F(SafeFileTest, RefusesASymbolicLinkAndLeavesItsTargetAlone) {
  const std::string target = dir_ + "/passwd";
  test::run({"sh", "-c", "printf 'root:x:0:0\\n' > " + target}, "", std::chrono::seconds(10));
  const std::string link = dir_ + "/audit.log";
  fs::create_symlink(target, link);
  expect_one_line(refusal(link), link, "it is a symbolic link");
  EXPECT_EQ(test::read_file(target), "root:x:0:0\n");

  const std::string dangling = dir_ + "/dangling.log";
  fs::create_symlink(dir_ + "/created-through-link", dangling);
  expect_one_line(refusal(dangling), dangling, "it is a symbolic link");
  EXPECT_FALSE(fs::exists(dir_ + "/created-through-link"));
}

TEST_F(SafeFileTest, RefusesAHardLinkToAnotherFile) {
  const std::string target = dir_ + "/other";
  { UniqueFd fd = open_for_append(target); }
  const std::string link = dir_ + "/audit.log";
  fs::create_hard_link(target, link);
  expect_one_line(refusal(link), link, "it has 2 hard links");
}

TEST_F(SafeFileTest, RefusesFifoSocketFolderAndDeviceWithoutBlocking) {
  const std::string fifo = dir_ + "/fifo.log";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_one_line(refusal(fifo), fifo, "it is a FIFO");  // no reader: would block a plain open

  const std::string sock = dir_ + "/sock.log";
  int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(sock.size(), sizeof addr.sun_path);
  sock.copy(addr.sun_path, sock.size());
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  expect_one_line(refusal(sock), sock, "it is a socket");
  ::close(s);

  expect_one_line(refusal(dir_), dir_, "it is a folder");
  expect_one_line(refusal("/dev/null"), "/dev/null", "it is a device");
}

TEST_F(SafeFileTest, MissingFolderIsOneLine) {
  const std::string path = dir_ + "/no/such/audit.log";
  expect_one_line(refusal(path), path, "No such file or directory");
}

TEST_F(SafeFileTest, SameFileTellsWhetherTheNameStillLeadsToTheOpenFile) {
  const std::string path = dir_ + "/audit.log";
  UniqueFd fd = open_for_append(path);
  EXPECT_TRUE(same_file(fd.get(), path));
  // Swapped for a link to the very same file: still refused, a link is not the file.
  fs::rename(path, dir_ + "/moved.log");
  fs::create_symlink(dir_ + "/moved.log", path);
  EXPECT_FALSE(same_file(fd.get(), path));
  fs::remove(path);
  { UniqueFd other = open_for_append(path); }
  EXPECT_FALSE(same_file(fd.get(), path));
  EXPECT_FALSE(same_file(-1, path));
}

TEST(UniqueFd, ClosesOnceAndMoves) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    UniqueFd a(raw);
    UniqueFd b(std::move(a));
    EXPECT_FALSE(a);
    EXPECT_EQ(b.get(), raw);
    UniqueFd c;
    c = std::move(b);
    EXPECT_EQ(c.get(), raw);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);  // closed
  EXPECT_EQ(errno, EBADF);
}

}  // namespace
}  // namespace keysvc
